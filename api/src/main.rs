//! `sparkwatch`: thin entry point — parse the command line, set up logging, dispatch.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sparkwatch_api::auth::Principal;
use sparkwatch_api::auth::rate_limit::Limits;
use sparkwatch_api::config::{Broker, Cli, Command, ImportCommand, TenantCommand, UserCommand};
use sparkwatch_api::ingest::mqtt::MqttSettings;
use sparkwatch_api::service::SystemClock;
use sparkwatch_api::service::users::NewUser;
use sparkwatch_api::{demo, graphql, import};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SPARKWATCH_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn")),
        )
        .with_writer(std::io::stderr)
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
    let config = cli.settings.resolve()?;
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
                    tracing::info!("seeded the demo tenants");
                }
                tracing::warn!(
                    "DEMO MODE: accounts admin@demo.local, manager@demo.local, electrician@demo.local and \
                     admin@demo-b.local all use the password `{}` — never expose this server",
                    demo::DEMO_PASSWORD
                );
            }
            if !config.listen.ip().is_loopback() {
                tracing::warn!(listen = %config.listen, "listening beyond this machine");
            }
            let mqtt = match &config.broker {
                Broker::External(url) => Some(MqttSettings::from_url(
                    url,
                    &config.mqtt_client_id,
                    &config.mqtt_prefix,
                    config.mqtt_shared_group.clone(),
                )?),
                Broker::Embedded(addr) => {
                    tracing::warn!(%addr, "the embedded MQTT broker is not built yet; give --mqtt-url to ingest from Mosquitto or EMQX");
                    None
                }
            };
            let (_queue, stop_ingest) = sparkwatch_api::start_ingest(&services, &config.mqtt_prefix, mqtt);
            let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
                format!(
                    "cannot listen on {} (--listen / SPARKWATCH_LISTEN); is another server using it?",
                    config.listen
                )
            })?;
            let served = sparkwatch_api::run(services, listener, shutdown_signal()).await;
            let _ = stop_ingest.send(true);
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
        Command::Import(ImportCommand::Devices { file, tenant }) => {
            let tenant = services.tenant_by_name(&tenant).await.with_context(|| format!("tenant `{tenant}`"))?;
            import::import_devices_file(&services, &Principal::system(tenant.id, "cli import"), &file).await
        }
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
