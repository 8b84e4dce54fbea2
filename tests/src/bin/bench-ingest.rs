//! Ingestion benchmark (not a test): publishes single-detector telemetry through a private
//! Mosquitto and reports, in one run, the broker's raw relay rate, Sparkwatch's sustained
//! stored readings/s into SQLite and PostgreSQL, CPU per 1k messages, peak RSS and
//! publish → hazard latency at half load.
//!
//! `cargo run --release -p sparkwatch-tests --bin bench-ingest -- [--devices N] [--seconds S] [--rates 5000,10000,…] [--latency-rate N]`
//! PostgreSQL is measured when `SPARKWATCH_TEST_DATABASE_URL` is set. The publisher runs as
//! a child process (`bench-ingest publish …`) so that CPU figures are the server's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{EntityTrait, PaginatorTrait};
use sparkwatch_api::auth::Principal;
use sparkwatch_api::ingest::mqtt::MqttSettings;
use sparkwatch_api::service::thresholds::ThresholdTarget;
use sparkwatch_domain::site::{DetectorInput, DeviceInput, ProjectDraft};
use sparkwatch_tests::bench::{Broker, ProcStats, arg, pct, publisher, relay_rate, spawn_publisher};

/// CPU seconds (user + system) and peak RSS (KiB) of this process.
fn usage() -> (f64, u64) {
    let own = ProcStats::own();
    (own.cpu_s, own.peak_kib)
}

struct Outcome {
    backend: String,
    offered: u64,
    stored_per_s: f64,
    cpu_per_1k: f64,
    peak_rss_mib: f64,
}

async fn setup(
    database_url: Option<String>,
    dir: &std::path::Path,
    devices: u64,
) -> anyhow::Result<sparkwatch_api::service::Services> {
    let config = sparkwatch_api::config::Settings {
        data_dir: Some(dir.to_owned()),
        database_url,
        jwt_secret: Some("b".repeat(40)),
        ..Default::default()
    }
    .resolve()?;
    let services =
        sparkwatch_api::services(&config, Arc::new(sparkwatch_api::service::SystemClock), Default::default()).await?;
    let tenant = services.create_tenant(&Principal::platform_system("bench"), "Bench").await?;
    let who = Principal::system(tenant.id, "bench");
    let project =
        services.create_project(&who, ProjectDraft { name: "Bench site".into(), ..Default::default() }).await?;
    // Alarms fire on the first reading over 300 mA, so latency is publish → hazard only.
    services.set_thresholds(&who, ThresholdTarget::Tenant, |t| t.leak_delay_s = Some(0.0)).await?;
    eprint!("  creating {devices} devices");
    for d in 0..devices {
        let dev = services
            .create_device(
                &who,
                project.id,
                DeviceInput {
                    serial: format!("BENCH-{d}"),
                    name: format!("Bench {d}"),
                    transport: "MQTT".into(),
                    interval_s: Some(60),
                    ..Default::default()
                },
            )
            .await?;
        services.create_detector(&who, dev.id, DetectorInput { address: 1, ..Default::default() }).await?;
        if d % 500 == 0 {
            eprint!(".");
        }
    }
    eprintln!();
    Ok(services)
}

async fn measure(
    label: &str,
    database_url: Option<String>,
    broker: &Broker,
    devices: u64,
    seconds: u64,
    rates: &[u64],
) -> anyhow::Result<(Vec<Outcome>, Vec<f64>)> {
    let dir = tempfile::tempdir()?;
    eprintln!("{label}:");
    let services = setup(database_url, dir.path(), devices).await?;
    let prefix = "sw";
    let settings = MqttSettings {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: format!("bench-{label}"),
        prefix: prefix.into(),
        shared_group: None,
        credentials: None,
    };
    let (_queue, stop) = sparkwatch_api::start_ingest(&services, prefix, Some(settings));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = services.metrics().readings_stored.clone();
    let mut outcomes = Vec::new();
    for &rate in rates {
        let before = stored.get();
        let (cpu0, _) = usage();
        let t0 = Instant::now();
        let mut child = spawn_publisher(broker.port, prefix, devices, rate, seconds, false)?;
        // Rate = readings stored ÷ time from the first publish to the last reading stored
        // (the publisher lingers 2 s after its last message; that is not ingestion time).
        let target = before + rate * seconds;
        let mut last = stored.get();
        let mut last_progress = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = stored.get();
            if now != last {
                last = now;
                last_progress = Instant::now();
            }
            let publisher_done = child.try_wait().ok().flatten().is_some();
            if now >= target || (publisher_done && last_progress.elapsed() > Duration::from_secs(5)) {
                break;
            }
        }
        let _ = child.wait();
        let elapsed = (last_progress - t0).as_secs_f64();
        let (cpu1, rss) = usage();
        let n = stored.get() - before;
        let o = Outcome {
            backend: label.into(),
            offered: rate,
            stored_per_s: n as f64 / elapsed,
            cpu_per_1k: (cpu1 - cpu0) / (n.max(1) as f64) * 1000.0,
            peak_rss_mib: rss as f64 / 1024.0,
        };
        let m = services.metrics();
        eprintln!(
            "  offered {rate:>6}/s → stored {:>8.0}/s ({n} of {}), CPU {:.3} s per 1k [received {}, duplicates {}]",
            o.stored_per_s,
            rate * seconds,
            o.cpu_per_1k,
            m.messages.with_label_values(&["telemetry"]).get(),
            m.duplicates.get()
        );
        outcomes.push(o);
    }
    // Let the pipeline finish any backlog so latency is measured at the intended load.
    let mut last = stored.get();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if stored.get() == last {
            break;
        }
        last = stored.get();
    }
    // Latency at half the best sustained rate: background load plus one alarm per device.
    // `--latency-rate N` fixes it instead, so that runs of different builds compare at the same load.
    let best = outcomes.iter().map(|o| o.stored_per_s).fold(0.0, f64::max);
    let half = match arg("--latency-rate", 0) {
        0 => ((best / 2.0) as u64).max(100),
        fixed => fixed,
    };
    let stages_before = stages(&services);
    let mut load = spawn_publisher(broker.port, prefix, devices, half, seconds.max(5), false)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alarms = devices.min(500);
    let mut burst = spawn_publisher(broker.port, prefix, alarms, 100, alarms.div_ceil(100), true)?;
    let _ = burst.wait();
    let _ = load.wait();
    for _ in 0..30 {
        let n = sparkwatch_entity::hazard::Entity::find().count(services.store().db()).await?;
        if n >= alarms {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let hazards = sparkwatch_entity::hazard::Entity::find().all(services.store().db()).await?;
    // Publish → hazard, and where the time went: publish → received by the subscriber
    // (broker and socket), and received → hazard opened (queue and pipeline).
    let ms = |span: fn(&sparkwatch_entity::hazard::Model) -> chrono::TimeDelta| {
        let mut v: Vec<f64> = hazards.iter().map(|h| span(h).num_microseconds().unwrap_or(0) as f64 / 1000.0).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let lat = ms(|h| h.opened_at - h.device_at);
    let recv = ms(|h| h.ingested_at - h.device_at);
    let open = ms(|h| h.opened_at - h.ingested_at);
    eprintln!(
        "  publish → received p50 {:.1} p99 {:.1} ms; received → hazard p50 {:.1} p99 {:.1} ms",
        pct(&recv, 0.5),
        pct(&recv, 0.99),
        pct(&open, 0.5),
        pct(&open, 0.99)
    );
    eprintln!("  latency sample: {} hazards at {half}/s background load", lat.len());
    eprintln!("  per batch while measuring (ingest_stage_seconds): stage batches mean p50≤ p99≤ ms");
    for (now, before) in stages(&services).iter().zip(&stages_before) {
        eprintln!("    {}", now.since(before));
    }
    // Acknowledgements that found the MQTT client's request channel full wait for room
    // (written in order, never dropped): how often that happened in the whole run.
    eprintln!("  acknowledgements deferred in the run: {}", services.metrics().acks_deferred.get());
    let total = sparkwatch_entity::reading::Entity::find().count(services.store().db()).await?;
    eprintln!("  readings in the database: {total}");
    let _ = stop.send(true);
    Ok((outcomes, lat))
}

/// One stage of `ingest_stage_seconds`: batches, total seconds, cumulative bucket counts.
struct Stage {
    name: &'static str,
    count: u64,
    sum: f64,
    buckets: Vec<(f64, u64)>,
}

impl Stage {
    /// The batches observed between `before` and this snapshot: count, mean, and the upper
    /// bounds of the buckets holding p50 and p99.
    fn since(&self, before: &Stage) -> String {
        let n = self.count - before.count;
        let bound = |q: f64| {
            let want = (n as f64 * q).ceil() as u64;
            self.buckets
                .iter()
                .zip(&before.buckets)
                .find(|((_, now), (_, was))| now - was >= want.max(1))
                .map_or(f64::INFINITY, |((le, _), _)| le * 1e3)
        };
        let mean = if n == 0 { 0.0 } else { (self.sum - before.sum) / n as f64 * 1e3 };
        format!("{:<10} {n:>6} {mean:>7.2} {:>6} {:>6}", self.name, bound(0.5), bound(0.99))
    }
}

fn stages(services: &sparkwatch_api::service::Services) -> Vec<Stage> {
    use prometheus::core::Metric;
    ["queued", "validate", "handover", "alarm_path", "lane", "settle"]
        .into_iter()
        .map(|name| {
            let h = services.metrics().stage_seconds.with_label_values(&[name]);
            let proto = h.metric();
            let buckets = proto.get_histogram().get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count()));
            Stage { name, count: h.get_sample_count(), sum: h.get_sample_sum(), buckets: buckets.collect() }
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "publish") {
        return publisher(&args).await;
    }
    // `SPARKWATCH_BENCH_LOG=warn` (an EnvFilter) shows the server's log on stderr.
    if let Ok(filter) = std::env::var("SPARKWATCH_BENCH_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    }
    let devices = arg("--devices", 2000);
    let seconds = arg("--seconds", 10);
    // `--rates 5000,10000,50000` measures other steps (a step that cannot be parsed is an error).
    let rates: Vec<u64> = match sparkwatch_tests::bench::arg_text("--rates") {
        Some(list) => list.split(',').map(|r| r.trim().parse()).collect::<Result<_, _>>()?,
        None => vec![5_000, 10_000, 20_000, 40_000],
    };
    let broker = Broker::start()?;
    eprintln!("private mosquitto on 127.0.0.1:{}", broker.port);
    let relay = relay_rate(&broker, devices, 200_000).await?;
    eprintln!("baseline: mosquitto relays {relay:.0} msg/s (QoS 1, one plain subscriber)");
    let mut results = Vec::new();
    if let Ok(url) = std::env::var("SPARKWATCH_TEST_DATABASE_URL") {
        let db = sparkwatch_tests::fresh_postgres(&url).await?;
        results.push(measure("postgres", Some(db), &broker, devices, seconds, &rates).await?);
    }
    results.push(measure("sqlite", None, &broker, devices, seconds, &rates).await?);

    println!(
        "\n## bench-ingest ({} devices, {} s per step, {} cores)",
        devices,
        seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("baseline: mosquitto QoS 1 relay to a plain subscriber: {relay:.0} msg/s\n");
    println!("| backend | offered msg/s | stored readings/s | CPU s per 1k msgs | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    for (outcomes, _) in &results {
        for o in outcomes {
            println!(
                "| {} | {} | {:.0} | {:.3} | {:.0} |",
                o.backend, o.offered, o.stored_per_s, o.cpu_per_1k, o.peak_rss_mib
            );
        }
    }
    println!("\n| backend | hazards | publish → hazard p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (outcomes, lat) in &results {
        let name = outcomes.first().map_or("?", |o| o.backend.as_str());
        println!("| {name} | {} | {:.1} | {:.1} |", lat.len(), pct(lat, 0.5), pct(lat, 0.99));
    }
    Ok(())
}
