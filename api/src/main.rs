//! `sparkwatch`: thin entry point — parse the command line, set up logging, dispatch.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sparkwatch_api::auth::Principal;
use sparkwatch_api::auth::rate_limit::Limits;
use sparkwatch_api::config::{
    Broker, ClaimsCommand, Cli, Command, DevicesCommand, ImportCommand, TenantCommand, UserCommand,
};
use sparkwatch_api::ingest::dynsec::{self, DynsecSettings};
use sparkwatch_api::ingest::mqtt::MqttSettings;
use sparkwatch_api::ingest::pipeline::PipelineConfig;
use sparkwatch_api::service::SystemClock;
use sparkwatch_api::service::users::NewUser;
use sparkwatch_api::{demo, graphql, import};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SPARKWATCH_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,rumqttd=warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files and journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::PrintSchema = cli.command {
        print!("{}", graphql::sdl());
        return Ok(());
    }
    let mut config = cli.settings.resolve()?;
    if matches!(cli.command, Command::Serve { demo: true })
        && !config.modbus_allow_networks_set
        && config.modbus_allow_networks.is_empty()
    {
        // The demo's simulated gateway is on loopback; a hosted default polls nothing.
        tracing::warn!("demo: polling Modbus gateways on loopback only (--modbus-allow-networks is not set)");
        config.modbus_allow_networks =
            sparkwatch_api::ingest::modbus::network::AllowedNetworks::parse("127.0.0.0/8,::1")
                .map_err(anyhow::Error::msg)?;
    }
    let services = sparkwatch_api::services(&config, Arc::new(SystemClock), Limits::default()).await?;
    match cli.command {
        Command::PrintSchema => Ok(()),
        Command::Migrate => {
            println!("database {} is up to date", config.database_url_for_log());
            Ok(())
        }
        Command::Serve { demo: with_demo } => {
            if with_demo {
                if demo::seed(&services).await? {
                    demo::seed_field_work(&services).await?;
                    tracing::info!("seeded the demo tenants and their field work");
                }
                tracing::warn!(
                    "DEMO MODE: accounts admin@demo.local, manager@demo.local, electrician@demo.local and \
                     admin@demo-b.local all use the password `{}` — never expose this server",
                    demo::DEMO_PASSWORD
                );
            }
            raise_open_file_limit();
            if !config.listen.ip().is_loopback() {
                tracing::warn!(listen = %config.listen, "listening beyond this machine");
            }
            if matches!(config.broker, Broker::External(_)) && !config.mqtt_dynsec && config.mqtt_hook_secret.is_none()
            {
                tracing::warn!(
                    "the external MQTT broker is not told of device credentials: unless it enforces device identity \
                     itself, any client that reaches it can publish for any device — use --mqtt-dynsec (Mosquitto) or \
                     --mqtt-hook-secret (EMQX), see the README"
                );
            }
            if let Some(settings) = DynsecSettings::from_config(&config)? {
                // Issues wait for the administrator connection; the keeper reconciles once
                // it is up (the broker may start after Sparkwatch).
                let accounts = dynsec::open(&settings);
                services.set_broker_accounts(accounts.clone());
                tokio::spawn(dynsec::keep(services.clone(), accounts, settings));
                tracing::info!("device accounts are kept in Mosquitto's dynamic-security plugin");
            }
            if let Some(secret) = &config.mqtt_hook_secret {
                services.set_mqtt_hooks(sparkwatch_api::service::identity::HookSettings {
                    secret: secret.expose().to_owned(),
                    prefix: config.mqtt_prefix.clone(),
                    reserved_client_ids: vec![
                        config.mqtt_client_id.clone(),
                        format!("{}-dynsec", config.mqtt_client_id),
                    ],
                });
                tracing::info!("EMQX authentication and authorisation hooks enabled at POST /mqtt/auth and /mqtt/acl");
            }
            // Where the demo's simulated devices connect, as devices.
            let mut device_broker = None;
            let mqtt = match &config.broker {
                Broker::External(url) => Some(MqttSettings::from_url(
                    url,
                    &config.mqtt_client_id,
                    &config.mqtt_prefix,
                    config.mqtt_shared_group.clone(),
                )?),
                Broker::Embedded(addr) => {
                    #[cfg(feature = "embedded-broker")]
                    {
                        if config.mqtt_shared_group.is_some() {
                            tracing::warn!("--mqtt-shared is ignored with the embedded broker");
                        }
                        match sparkwatch_api::start_embedded_broker(
                            &services,
                            *addr,
                            config.mqtt_tls.as_ref(),
                            &config.mqtt_prefix,
                            &config.mqtt_client_id,
                        ) {
                            Ok(broker) => {
                                let gate = broker.connect_addr();
                                device_broker = Some((gate.ip().to_string(), gate.port()));
                                Some(broker.subscriber_settings(&config.mqtt_client_id, &config.mqtt_prefix))
                            }
                            // The demo's simulated devices feed ingestion directly, so a port
                            // taken by another broker must not stop the first command a new
                            // user runs; a real site still fails loudly.
                            Err(e) if with_demo => {
                                tracing::warn!(
                                    "{e}; the demo runs without an MQTT broker (its simulated devices do not need one)"
                                );
                                None
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    #[cfg(not(feature = "embedded-broker"))]
                    anyhow::bail!(
                        "this build has no embedded MQTT broker (feature `embedded-broker`); give --mqtt-url {addr}"
                    )
                }
            };
            if let (Broker::External(_), Some(m)) = (&config.broker, &mqtt) {
                device_broker = Some((m.host.clone(), m.port));
            }
            // Jobs first: the push router must be listening before the first event is recorded.
            let stop_jobs = sparkwatch_api::start_jobs(&services, Default::default());
            let ingestion = sparkwatch_api::start_ingestion(
                &services,
                PipelineConfig {
                    prefix: config.mqtt_prefix.clone(),
                    raw_retention: config.raw_retention,
                    dead_letter_retention: config.limits.dead_letter_retention,
                    ..Default::default()
                },
                mqtt,
            );
            tokio::spawn(sparkwatch_api::ingest::modbus::run(
                services.store().clone(),
                ingestion.queue.clone(),
                services.metrics().clone(),
                services.commands().clone(),
                sparkwatch_api::ingest::modbus::PollerConfig {
                    allowed: config.modbus_allow_networks.clone(),
                    ..Default::default()
                },
                ingestion.stop_signal(),
            ));
            if with_demo {
                let prefix = config.mqtt_prefix.clone();
                tokio::spawn(demo::simulate(
                    services.clone(),
                    ingestion.queue.clone(),
                    prefix,
                    device_broker,
                    ingestion.stop_signal(),
                ));
            }
            let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
                format!(
                    "cannot listen on {} (--listen / SPARKWATCH_LISTEN); is another server using it?",
                    config.listen
                )
            })?;
            let metrics_listener = match config.limits.metrics_listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr} (--metrics-listen / SPARKWATCH_METRICS_LISTEN)")
                })?),
                None => None,
            };
            if config.limits.metrics_token.is_none() && !config.listen.ip().is_loopback() && metrics_listener.is_none()
            {
                tracing::warn!(
                    "/metrics is open to anyone who reaches --listen: give --metrics-token or --metrics-listen"
                );
            }
            let served = sparkwatch_api::Serve::new(services, listener)
                .http_limits(config.limits.http)
                .ws_limits(config.limits.ws())
                .metrics_listener(metrics_listener)
                .metrics_token(config.limits.metrics_token.as_ref().map(|t| t.expose().to_owned()))
                .run(shutdown_signal())
                .await;
            // The pipeline's last batches, rollups and last-seen times are written before the
            // process ends; what it could not store by then stays unacknowledged.
            tracing::info!("stopping ingestion: storing what it has taken");
            ingestion.shutdown(std::time::Duration::from_secs(30)).await;
            let _ = stop_jobs.send(true);
            served
        }
        Command::Tenant(TenantCommand::Create { name }) => {
            let t = services.create_tenant(&Principal::platform_system("cli"), &name).await?;
            println!("created tenant {} ({})", t.name, t.id);
            Ok(())
        }
        Command::User(UserCommand::Create { email, phone, name, tenant, role, locale }) => {
            let who = match &tenant {
                Some(t) => Principal::system(
                    services.tenant_by_name(t).await.with_context(|| format!("tenant `{t}`"))?.id,
                    "cli",
                ),
                None => Principal::platform_system("cli"),
            };
            let password = match std::env::var("SPARKWATCH_USER_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("password (from standard input):");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line).context("reading the password")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let user = services
                .create_user(
                    &who,
                    NewUser {
                        email,
                        phone,
                        display_name: name,
                        password,
                        locale: Some(locale),
                        role,
                        project_ids: vec![],
                    },
                )
                .await?;
            println!("created user {} ({})", user.display_name, user.id);
            Ok(())
        }
        Command::Simulate { devices, detectors, scenario, interval_s, tenant, modbus_listen } => {
            if tenant.is_some() {
                dynsec_for_command(&services, &config)?;
            }
            let opts = SimulateOptions { count: devices, detectors, scenario, interval_s, tenant, modbus_listen };
            simulate(&services, &config, opts).await
        }
        Command::Import(ImportCommand::Devices { file, tenant, credentials_out }) => {
            if credentials_out.is_some() {
                dynsec_for_command(&services, &config)?;
            }
            let tenant = services.tenant_by_name(&tenant).await.with_context(|| format!("tenant `{tenant}`"))?;
            let who = Principal::system(tenant.id, "cli import");
            import::import_devices_file(&services, &who, &file, credentials_out.as_deref()).await
        }
        Command::Claims(ClaimsCommand::Load { file }) => {
            let who = Principal::platform_system("cli claims load");
            let n = import::load_claims_file(&services, &who, &file).await?;
            println!("loaded {n} serial claims from {}", file.display());
            Ok(())
        }
        Command::Devices(DevicesCommand::Credentials { tenant, serials, without_credentials, out }) => {
            dynsec_for_command(&services, &config)?;
            let tenant = services.tenant_by_name(&tenant).await.with_context(|| format!("tenant `{tenant}`"))?;
            let who = Principal::system(tenant.id, "cli");
            anyhow::ensure!(
                without_credentials || !serials.is_empty(),
                "name devices with --serial SERIAL (repeatable) or pass --without-credentials"
            );
            anyhow::ensure!(!out.exists(), "{} exists already; --out must name a new file", out.display());
            let issued = if without_credentials {
                services.issue_missing_credentials(&who).await?
            } else {
                services.issue_credentials_for_serials(&who, &serials).await?
            };
            import::write_credentials(&out, &issued)?;
            println!("issued MQTT credentials for {} devices into {}", issued.len(), out.display());
            Ok(())
        }
    }
}

/// Commands that issue credentials tell the external Mosquitto too (`--mqtt-dynsec`), as
/// `serve` does: without it a device would get a secret its broker does not know.
fn dynsec_for_command(
    services: &sparkwatch_api::service::Services,
    config: &sparkwatch_api::config::Config,
) -> anyhow::Result<()> {
    if let Some(settings) = DynsecSettings::from_config(config)? {
        services.set_broker_accounts(dynsec::open(&settings));
    }
    Ok(())
}

/// What `sparkwatch simulate` was asked to run.
struct SimulateOptions {
    count: u32,
    detectors: u8,
    scenario: String,
    interval_s: u64,
    tenant: Option<String>,
    modbus_listen: Option<std::net::SocketAddr>,
}

/// `sparkwatch simulate`: simulated devices publishing to the configured broker, and
/// optionally a simulated Modbus gateway.
async fn simulate(
    services: &sparkwatch_api::service::Services,
    config: &sparkwatch_api::config::Config,
    opts: SimulateOptions,
) -> anyhow::Result<()> {
    let SimulateOptions { count, detectors, scenario, interval_s, tenant, modbus_listen } = opts;
    let (scenario, tenant) = (scenario.as_str(), tenant.as_deref());
    use sparkwatch_api::simulate::scenarios::{Scenario, SimDevice};
    let pick = |i: u32| -> anyhow::Result<Scenario> {
        if scenario == "mixed" {
            return Ok(Scenario::ALL[i as usize % Scenario::ALL.len()]);
        }
        Scenario::parse(scenario).with_context(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            format!("--scenario must be `mixed` or one of {}", names.join(", "))
        })
    };
    anyhow::ensure!((1..=100_000).contains(&count), "--devices must be between 1 and 100000");
    anyhow::ensure!((1..=64).contains(&detectors), "--detectors must be between 1 and 64");
    anyhow::ensure!((1..=3600).contains(&interval_s), "--interval-s must be between 1 and 3600");
    let mut devices = Vec::new();
    for i in 0..count {
        devices.push(SimDevice::new(format!("SIM-{:04}", i + 1), detectors, pick(i)?, u64::from(i)));
    }
    if let Some(t) = tenant {
        register_simulated(services, t, &devices).await?;
        // Each simulated device connects with its own identity (DEVICE-PROTOCOL.md §3).
        let t = services.tenant_by_name(t).await.with_context(|| format!("tenant `{t}`"))?;
        let serials: Vec<String> = devices.iter().map(|d| d.serial.clone()).collect();
        let issued = services.issue_credentials_for_serials(&Principal::system(t.id, "simulate"), &serials).await?;
        for (device, c) in devices.iter_mut().zip(issued) {
            device.secret = Some(c.password);
        }
    } else {
        eprintln!(
            "note: without --tenant the simulated devices are not registered and have no credentials; a broker that \
             checks device identity (the embedded one) refuses them"
        );
    }
    if let Some(addr) = modbus_listen {
        let (sim, bound) = sparkwatch_api::simulate::modbus_server::start(addr)
            .await
            .with_context(|| format!("cannot start the simulated Modbus gateway on {addr} (--modbus-listen)"))?;
        for unit in 1..=detectors {
            sim.add_unit(unit);
        }
        if let Some(t) = tenant {
            register_gateway(services, t, bound, detectors).await?;
        }
        println!("simulated Modbus gateway on {bound} with units 1..={detectors}");
        tokio::spawn(async move {
            let mut tick: u64 = 0;
            loop {
                for unit in 1..=detectors {
                    // Unit 1 creeps past the 300 mA set-point every few minutes; the others idle.
                    let leak = if unit == 1 { 100.0 + (tick % 80) as f64 * 3.5 } else { 30.0 + f64::from(unit) };
                    let temp = 32.0 + f64::from(unit % 5) + (tick % 9) as f64 * 0.4;
                    sim.set_reading(
                        unit,
                        leak,
                        [Some(temp), Some(temp + 0.5), None, None],
                        [220.5, 219.8, 221.2],
                        [6.1, 5.9, 6.4],
                    );
                }
                tick += 1;
                tokio::time::sleep(std::time::Duration::from_secs(interval_s)).await;
            }
        });
    }
    let url = match &config.broker {
        Broker::External(url) => url.clone(),
        // A broker listening on every interface is reached through loopback.
        Broker::Embedded(addr) if addr.ip().is_unspecified() => format!("mqtt://127.0.0.1:{}", addr.port()),
        Broker::Embedded(addr) => format!("mqtt://{addr}"),
    };
    let settings = MqttSettings::from_url(&url, "unused", &config.mqtt_prefix, None)?;
    println!(
        "simulating {count} devices against {} every {interval_s} s; Ctrl-C stops",
        sparkwatch_api::config::redact_url(&url)
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let run = sparkwatch_api::simulate::run::run(
        devices,
        config.mqtt_prefix.clone(),
        std::time::Duration::from_secs(interval_s),
        sparkwatch_api::simulate::run::Sink::Mqtt(settings),
        stop_rx,
    );
    tokio::pin!(run);
    tokio::select! {
        () = &mut run => {},
        () = shutdown_signal() => {
            let _ = stop.send(true);
            run.await;
        }
    }
    Ok(())
}

/// Registers simulated devices (and their project) in a tenant, skipping existing serials.
async fn register_simulated(
    services: &sparkwatch_api::service::Services,
    tenant: &str,
    devices: &[sparkwatch_api::simulate::scenarios::SimDevice],
) -> anyhow::Result<()> {
    use sparkwatch_domain::site::{DetectorInput, DeviceInput, ProjectDraft};
    let t = services.tenant_by_name(tenant).await.with_context(|| format!("tenant `{tenant}`"))?;
    let who = Principal::system(t.id, "simulate");
    let filter = sparkwatch_api::store::sites::ProjectFilter { search: Some("Simulated site".into()), region: None };
    let existing = services.projects(&who, &filter, sparkwatch_api::service::page_request(Some(1), None)?).await?;
    let project = match existing.items.into_iter().next() {
        Some(p) => p,
        None => {
            services.create_project(&who, ProjectDraft { name: "Simulated site".into(), ..Default::default() }).await?
        }
    };
    let mut created = 0;
    for d in devices {
        let input = DeviceInput {
            serial: d.serial.clone(),
            name: format!("Simulated {}", d.serial),
            transport: "MQTT".into(),
            interval_s: Some(10),
            ..Default::default()
        };
        match services.create_device(&who, project.id, input).await {
            Ok(device) => {
                for addr in 1..=d.detectors {
                    services
                        .create_detector(
                            &who,
                            device.id,
                            DetectorInput { address: i64::from(addr), ..Default::default() },
                        )
                        .await?;
                }
                created += 1;
            }
            Err(sparkwatch_api::error::AppError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    println!("registered {created} new simulated devices in tenant {tenant}");
    Ok(())
}

/// Registers the simulated gateway as a MODBUS_TCP device (skipped when it exists).
async fn register_gateway(
    services: &sparkwatch_api::service::Services,
    tenant: &str,
    addr: std::net::SocketAddr,
    detectors: u8,
) -> anyhow::Result<()> {
    use sparkwatch_domain::site::{DetectorInput, DeviceInput};
    let t = services.tenant_by_name(tenant).await.with_context(|| format!("tenant `{tenant}`"))?;
    let who = Principal::system(t.id, "simulate");
    let filter = sparkwatch_api::store::sites::ProjectFilter { search: Some("Simulated site".into()), region: None };
    let page = services.projects(&who, &filter, sparkwatch_api::service::page_request(Some(1), None)?).await?;
    let Some(project) = page.items.into_iter().next() else { return Ok(()) };
    let input = DeviceInput {
        serial: "SIM-GW-1".into(),
        name: "Simulated Modbus gateway".into(),
        transport: "MODBUS_TCP".into(),
        host: Some(addr.ip().to_string()),
        port: Some(i64::from(addr.port())),
        interval_s: Some(10),
        ..Default::default()
    };
    match services.create_device(&who, project.id, input).await {
        Ok(device) => {
            for a in 1..=detectors {
                services
                    .create_detector(&who, device.id, DetectorInput { address: i64::from(a), ..Default::default() })
                    .await?;
            }
            Ok(())
        }
        Err(sparkwatch_api::error::AppError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Raises the soft limit on open files to the hard limit the operator allows. Every device
/// through the gate holds three descriptors and every WebSocket one, so the soft limit of
/// 1024 that systemd and most shells start with would refuse a site beyond ~330 devices
/// while the hard limit (`LimitNOFILE=`, `ulimit -Hn`) allows far more.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 16_384 => tracing::warn!(
            open_files = n,
            "the open-file limit allows about {} devices through the gate; raise the hard limit (LimitNOFILE= in a \
             systemd unit, ulimit -Hn) for more",
            n / 3
        ),
        Ok(n) => tracing::info!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
}
