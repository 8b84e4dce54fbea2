//! Device-identity benchmark (not a test): the embedded broker's device gate, in one run,
//! on SQLite and (with `SPARKWATCH_TEST_DATABASE_URL`) PostgreSQL.
//!
//! 1. Onboarding: `import devices --credentials-out` of N MQTT devices (N secrets issued).
//! 2. Reconnect storm: N devices connect at once with their credentials through the gate
//!    (auth on), against the same N connecting straight to rumqttd's internal port (auth
//!    off, the same-run floor): time until the last CONNACK, and the server's CPU seconds
//!    (the clients run in a child process, so this process's CPU is the server's). A device
//!    waits `--attempt-timeout` seconds (default 10) for its CONNACK, then closes and tries
//!    again, for 60 s at most; the connection errors are printed by kind.
//! 3. Ingestion: D devices publishing M telemetry messages each (QoS 1, as fast as the
//!    window allows) through the gate and straight to rumqttd: PUBACKed messages/s at the
//!    devices, readings/s stored, server CPU.
//!
//! `cargo run --release -p sparkwatch-tests --bin bench-identity -- [--devices 5000]
//! [--publishers 50] [--messages 2000] [--attempt-timeout 10]`
//! (`SPARKWATCH_BENCH_LOG=warn` shows the server's log on stderr)

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sea_orm::{EntityTrait, PaginatorTrait};
use sparkwatch_api::auth::Principal;
use sparkwatch_tests::bench::{ProcStats, arg};
use sparkwatch_tests::{Backend, TestServer, backends};

/// `connect PORT CREDS_CSV INTERNAL_PASSWORD|- ATTEMPT_S`: connects every device of the CSV
/// at once (with its own secret, or with the internal login when a password is given); a
/// device waits at most ATTEMPT_S seconds for its CONNACK, then closes and tries again, until
/// 60 s have passed. Prints `connected failed millis_to_last_connack retries` on stdout and
/// the connection errors by kind on stderr.
async fn connector(args: &[String]) -> anyhow::Result<()> {
    let port: u16 = args[2].parse()?;
    let creds = read_creds(Path::new(&args[3]))?;
    let internal = (args[4] != "-").then(|| args[4].clone());
    let attempt_s: u64 = args[5].parse()?;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for (serial, secret) in creds {
        let internal = internal.clone();
        tasks.push(tokio::spawn(async move {
            let mut opts = MqttOptions::new(serial.clone(), "127.0.0.1", port);
            opts.set_keep_alive(Duration::from_secs(120));
            match internal {
                Some(p) => opts.set_credentials("sparkwatch-internal", p),
                None => opts.set_credentials(serial, secret),
            };
            let (client, mut lp) = AsyncClient::new(opts, 4);
            // rumqttc's CONNACK wait (TCP connect + CONNECT + CONNACK), 5 s by default.
            lp.network_options.set_connection_timeout(attempt_s);
            let mut errors = Vec::new();
            let connected = loop {
                match tokio::time::timeout_at(deadline, lp.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break Some(start.elapsed()),
                    Ok(Ok(_)) => {}
                    // An attempt that ends with the whole run's deadline is no retry (with a
                    // 60 s attempt its own timeout fires in the same timer tick).
                    Ok(Err(_)) if tokio::time::Instant::now() >= deadline => break None,
                    Ok(Err(e)) => errors.push((error_kind(&e), start.elapsed())),
                    Err(_) => break None,
                }
            };
            (connected, errors, client, lp)
        }));
    }
    let mut held = Vec::new();
    let (mut ok, mut failed, mut last) = (0, 0, Duration::ZERO);
    let mut kinds: std::collections::BTreeMap<String, (u32, Duration, Duration)> = Default::default();
    for t in tasks {
        let (connected, errors, client, lp) = t.await?;
        match connected {
            Some(at) => (ok, last) = (ok + 1, last.max(at)),
            None => failed += 1,
        }
        for (kind, at) in errors {
            let e = kinds.entry(kind).or_insert((0, at, at));
            *e = (e.0 + 1, e.1.min(at), e.2.max(at));
        }
        held.push((client, lp));
    }
    let retries: u32 = kinds.values().map(|k| k.0).sum();
    println!("{ok} {failed} {} {retries}", last.as_millis());
    for (kind, (n, first, latest)) in &kinds {
        eprintln!("  connection errors: {n} × {kind} (between {} and {} ms)", first.as_millis(), latest.as_millis());
    }
    for (c, _) in &held {
        let _ = c.try_disconnect();
    }
    Ok(())
}

/// A connection error without its details (an I/O error by its kind).
fn error_kind(e: &rumqttc::ConnectionError) -> String {
    match e {
        rumqttc::ConnectionError::Io(io) => format!("Io({:?})", io.kind()),
        rumqttc::ConnectionError::ConnectionRefused(code) => format!("ConnectionRefused({code:?})"),
        other => format!("{other:?}").split(['(', ' ', '{']).next().unwrap_or_default().to_owned(),
    }
}

/// `flood PORT CREDS_CSV INTERNAL_PASSWORD|- DEVICES MESSAGES`: the first DEVICES devices
/// each publish MESSAGES telemetry messages (QoS 1); prints `acked millis`.
async fn flood(args: &[String]) -> anyhow::Result<()> {
    let port: u16 = args[2].parse()?;
    let creds = read_creds(Path::new(&args[3]))?;
    let internal = (args[4] != "-").then(|| args[4].clone());
    let (devices, messages): (usize, u64) = (args[5].parse()?, args[6].parse()?);
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (serial, secret) in creds.into_iter().take(devices) {
        let internal = internal.clone();
        tasks.push(tokio::spawn(async move {
            let mut opts = MqttOptions::new(serial.clone(), "127.0.0.1", port);
            opts.set_keep_alive(Duration::from_secs(120)).set_inflight(100);
            match internal {
                Some(p) => opts.set_credentials("sparkwatch-internal", p),
                None => opts.set_credentials(serial.clone(), secret),
            };
            let (client, mut lp) = AsyncClient::new(opts, 200);
            lp.network_options.set_connection_timeout(60);
            let topic = format!("sw/{serial}/telemetry");
            let sender = tokio::spawn(async move {
                for i in 0..messages {
                    // 1 ms apart: one flood spans 2 s of device time and the next starts
                    // seconds later, so two floods never share a (detector, time) key (10 ms
                    // steps overlapped whenever the floods' start times differed by a multiple
                    // of 10 ms, and the second flood's readings were refused as conflicts).
                    let ts = base + i as i64;
                    let body =
                        format!(r#"{{"ts":{ts},"seq":{i},"detectors":[{{"addr":1,"leak":[{}]}}]}}"#, 20 + i % 50);
                    if client.publish(topic.clone(), QoS::AtLeastOnce, false, body).await.is_err() {
                        break;
                    }
                }
            });
            let mut acked = 0;
            while acked < messages {
                match tokio::time::timeout(Duration::from_secs(60), lp.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
            let _ = sender.await;
            acked
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await?;
    }
    println!("{acked} {}", start.elapsed().as_millis());
    Ok(())
}

fn read_creds(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for r in csv::Reader::from_path(path)?.records() {
        let r = r?;
        out.push((r[0].to_owned(), r[2].to_owned()));
    }
    Ok(out)
}

/// Runs this executable as a client child; returns its output words and the server's CPU.
async fn child(args: &[String]) -> anyhow::Result<(Vec<f64>, f64)> {
    let before = ProcStats::own().cpu_s;
    let out = tokio::process::Command::new(std::env::current_exe()?).args(args).output().await?;
    let cpu = ProcStats::own().cpu_s - before;
    anyhow::ensure!(out.status.success(), "client child failed: {}", String::from_utf8_lossy(&out.stderr));
    // Tokio's `output` captures stderr whatever was asked: pass the child's report on.
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let words = String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|w| w.parse().ok()).collect();
    Ok((words, cpu))
}

async fn readings(server: &TestServer) -> u64 {
    sparkwatch_entity::reading::Entity::find().count(server.services.store().db()).await.unwrap_or(0)
}

async fn run(backend: &Backend, n: u64, publishers: u64, messages: u64, attempt_s: u64) -> anyhow::Result<()> {
    let server = TestServer::start(backend).await?;
    let tenant = server.services.create_tenant(&Principal::platform_system("bench"), "Bench").await?;
    let who = Principal::system(tenant.id, "bench");
    let none = server
        .services
        .projects(&who, &Default::default(), sparkwatch_api::service::page_request(Some(0), None)?)
        .await?;
    let mut draft = none.items.into_iter().next().map(|p| p.draft).unwrap_or_default();
    draft.name = "Bench site".into();
    server.services.create_project(&who, draft).await?;
    let dir = tempfile::tempdir()?;
    let mut csv = String::from("project,serial,device_name,transport,address\n");
    for i in 0..n {
        csv.push_str(&format!("Bench site,BENCH-{i:05},Panel {i},MQTT,1\n"));
    }
    let (file, creds) = (dir.path().join("devices.csv"), dir.path().join("creds.csv"));
    std::fs::write(&file, csv)?;
    let t = Instant::now();
    sparkwatch_api::import::import_devices_file(&server.services, &who, &file, Some(&creds)).await?;
    let onboarding = t.elapsed();

    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let broker = sparkwatch_api::start_embedded_broker(&server.services, listen, None, "sw", "sparkwatch-bench")?;
    let (_queue, _stop) = sparkwatch_api::start_ingest(
        &server.services,
        "sw",
        Some(broker.subscriber_settings("sparkwatch-bench", "sw")),
    );
    let (gate, internal) = (broker.local_addr().port().to_string(), broker.internal_addr().port().to_string());
    let password = broker.internal_login().1;
    let creds = creds.display().to_string();
    let s = |v: &str| v.to_owned();

    let attempt = attempt_s.to_string();
    eprintln!("{n} devices connecting at once, auth off (straight to rumqttd):");
    let (off, off_cpu) =
        child(&[s("connect"), internal.clone(), creds.clone(), password.clone(), attempt.clone()]).await?;
    eprintln!("{n} devices connecting at once, auth on (through the gate):");
    let (on, on_cpu) = child(&[s("connect"), gate.clone(), creds.clone(), s("-"), attempt]).await?;
    println!(
        "{:<8} onboarding {n} devices (import + credentials): {:>7.0} ms",
        backend_name(backend),
        onboarding.as_secs_f64() * 1e3
    );
    println!(
        "         {n} devices connecting at once ({attempt_s} s per attempt)\n\
         \x20          auth off: {:>5} ok {:>4} failed, last CONNACK at {:>6} ms ({} retries), server CPU {:>5.2} s\n\
         \x20          auth on:  {:>5} ok {:>4} failed, last CONNACK at {:>6} ms ({} retries), server CPU {:>5.2} s",
        off[0],
        off[1],
        off[2],
        off.get(3).copied().unwrap_or(0.0),
        off_cpu,
        on[0],
        on[1],
        on[2],
        on.get(3).copied().unwrap_or(0.0),
        on_cpu
    );
    for (label, port, pw) in [("auth off", internal.clone(), password.clone()), ("auth on ", gate.clone(), s("-"))] {
        let before = readings(&server).await;
        let t = Instant::now();
        let (out, cpu) =
            child(&[s("flood"), port, creds.clone(), pw, publishers.to_string(), messages.to_string()]).await?;
        let expected = before + publishers * messages;
        let deadline = Instant::now() + Duration::from_secs(120);
        while readings(&server).await < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stored = readings(&server).await - before;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "         ingestion {label}: {:>7.0} msg/s acked at the devices, {:>7.0} readings/s stored ({stored} of {}), server CPU {:>5.2} s",
            out[0] / (out[1] / 1e3),
            stored as f64 / secs,
            publishers * messages,
            cpu
        );
    }
    Ok(())
}

fn backend_name(b: &Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.get(1).map(String::as_str) {
        Some("connect") => return rt.block_on(connector(&args)),
        Some("flood") => return rt.block_on(flood(&args)),
        _ => {}
    }
    // `SPARKWATCH_BENCH_LOG=warn` (an EnvFilter) shows the server's log on stderr.
    if let Ok(filter) = std::env::var("SPARKWATCH_BENCH_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    }
    let (n, publishers, messages) = (arg("--devices", 5000), arg("--publishers", 50), arg("--messages", 2000));
    // How long a device waits for its CONNACK before it closes and tries again: 10 s, as
    // ESP-IDF's MQTT client (rumqttc: 5 s, Paho: 30 s).
    let attempt_s = arg("--attempt-timeout", 10);
    rt.block_on(async {
        for backend in backends() {
            run(&backend, n, publishers, messages, attempt_s).await?;
        }
        anyhow::Ok(())
    })
}
