//! Live-delivery benchmark (not a test): runs the real `sparkwatch serve` binary as a child
//! process against a private Mosquitto and reports, in one run, with ingestion under load:
//! publish → `alarmEvents` latency to 1k/5k/10k WebSocket subscribers and the deliveries
//! they missed, publish → push latency and the push dispatch rate (at a local FCM
//! stand-in), and the server's memory per open subscription — beside the raw Mosquitto
//! relay rate measured in the same run as the baseline.
//!
//! ```sh
//! cargo build --release --workspace   # builds `sparkwatch` next to `bench-live`
//! cargo run --release -p sparkwatch-tests --bin bench-live -- \
//!     [--subscribers 1000,5000,10000] [--seconds 20] [--ingest-rate 8000] [--devices 1000] \
//!     [--alarm-every-ms 200] [--latency-tokens 10] [--push-tokens 2000] [--documents 1] [--floor 1]
//! ```
//! `--documents N` spreads the subscribers over N distinct subscription documents, so the
//! server runs N shared executions per event instead of one (all subscribers sign in as
//! the same manager; distinct documents cost what distinct accesses cost).
//! PostgreSQL when `SPARKWATCH_TEST_DATABASE_URL` is set (a fresh database, dropped at the
//! end), SQLite in a temp dir otherwise. `--ingest-rate` is the maximum sustained ingestion
//! rate (from `bench-ingest`); the background load runs at half of it. The telemetry
//! publisher is a child process (`bench-live publish …`); the WebSocket clients, the FCM
//! stand-in and the alarm publisher run in this process, whose CPU is reported too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use sparkwatch_tests::bench::{Broker, KillOnDrop, ProcStats, arg, arg_text, machine_cpu, pct, publisher, relay_rate};
use sparkwatch_tests::push_standin::{FcmStandIn, TestKeys};
use tokio::sync::{Semaphore, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod alarms;
mod floor;
mod measure;
mod server;
mod subscribers;

use alarms::*;
use floor::*;
use measure::*;
use server::*;
use subscribers::*;

const PREFIX: &str = "sw";
const JWT_SECRET: &str = "bench-live-secret-0123456789abcdefghij";
const PASSWORD: &str = "Bench-pass-2026!";
const ADMIN: &str = "admin@bench.local";
const MANAGER: &str = "manager@bench.local";
const SUBSCRIPTION: &str = "subscription { alarmEvents { id kind at } }";
/// WebSocket handshakes in flight at once while opening subscribers.
const OPEN_CONCURRENCY: usize = 200;
/// File descriptors kept free besides one per subscriber.
const FD_RESERVE: u64 = 512;
/// Targets the figures are compared with.
const TARGET_SUB_P99_MS: f64 = 50.0;
const TARGET_PUSH_P99_MS: f64 = 100.0;
const TARGET_SUBSCRIPTIONS: usize = 10_000;
const TARGET_KIB_PER_SUB: f64 = 20.0;

/// What the command line asked for.
struct Opts {
    counts: Vec<usize>,
    seconds: u64,
    max_rate: u64,
    devices: u64,
    alarm_every: Duration,
    latency_tokens: usize,
    push_tokens: usize,
    documents: usize,
    /// Measure the raw fan-out floor before each step.
    floor: bool,
}

impl Opts {
    fn parse() -> anyhow::Result<Opts> {
        let counts = match arg_text("--subscribers") {
            Some(list) => list
                .split(',')
                .map(|n| n.trim().parse::<usize>().with_context(|| format!("--subscribers: `{n}` is not a number")))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => vec![1000, 5000, 10_000],
        };
        let opts = Opts {
            counts,
            seconds: arg("--seconds", 20).max(1),
            max_rate: arg("--ingest-rate", 8000),
            devices: arg("--devices", 1000).max(1),
            alarm_every: Duration::from_millis(arg("--alarm-every-ms", 200).max(10)),
            latency_tokens: arg("--latency-tokens", 10) as usize,
            documents: (arg("--documents", 1) as usize).max(1),
            floor: arg("--floor", 1) != 0,
            push_tokens: arg("--push-tokens", 2000) as usize,
        };
        ensure!(opts.push_tokens >= opts.latency_tokens, "--push-tokens must be at least --latency-tokens");
        Ok(opts)
    }

    fn alarms_per_step(&self) -> usize {
        ((self.seconds * 1000) / self.alarm_every.as_millis().max(1) as u64).max(1) as usize
    }
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Raises this process's open-file limit to its hard limit (children inherit it); returns
/// the soft limit in force.
fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // The kernel refuses more than fs.nr_open, whatever the hard limit says (None = unlimited).
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1_048_576u64);
    let soft = limit.current.unwrap_or(u64::MAX);
    let want = limit.maximum.unwrap_or(u64::MAX).min(nr_open);
    if want > soft && setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: limit.maximum }).is_ok() {
        want
    } else {
        soft
    }
}

// The run

async fn run(opts: &Opts, db: &Db) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?.with_file_name("sparkwatch");
    ensure!(
        exe.exists(),
        "{} not found: build the server too (`cargo build --release --workspace`); bench-live runs the real binary",
        exe.display()
    );
    let nofile = raise_nofile();
    eprintln!("open-file limit {nofile} (this process and the server)");
    let broker = Broker::start()?;
    eprintln!("private mosquitto on 127.0.0.1:{}", broker.port);
    let relay = relay_rate(&broker, opts.devices, 200_000).await?;
    eprintln!("baseline: mosquitto relays {relay:.0} msg/s (QoS 1, one plain subscriber)");

    let keys = TestKeys::generate()?;
    let fcm = FcmStandIn::start(&keys).await?;
    let credentials = keys.write_fcm_credentials(fcm.token_url())?;
    let dir = tempfile::tempdir()?;
    eprintln!("starting {} serve on {} …", exe.display(), db.label());
    let mut server = Server::start(&exe, dir.path(), db.url(), broker.port, &fcm, &credentials).await?;
    let outcome = measure(opts, db, (relay, nofile), &mut server, &broker, &fcm).await;
    if outcome.is_err() {
        eprintln!("server log (last lines):\n{}", server.log_tail(20));
    }
    outcome
}

async fn measure(
    opts: &Opts,
    db: &Db,
    (relay, nofile): (f64, u64),
    server: &mut Server,
    broker: &Broker,
    fcm: &FcmStandIn,
) -> anyhow::Result<()> {
    let alarm_count = opts.counts.len() * opts.alarms_per_step() + 2;
    eprintln!("seeding over GraphQL:");
    let site = seed(server, opts, alarm_count).await?;
    register_tokens(server, &site.manager, 0, opts.latency_tokens).await?;

    // Background load for the whole run (half the maximum), from a child process.
    let load = opts.max_rate / 2;
    eprintln!("background load: {load} msg/s over {} devices", opts.devices);
    let _publisher = KillOnDrop(sparkwatch_tests::bench::spawn_publisher(
        broker.port,
        PREFIX,
        opts.devices,
        load,
        365 * 24 * 3600,
        false,
    )?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("sparkwatch_ingest_readings_stored_total").await? < opts.devices as f64 {
        server.check_alive()?;
        ensure!(Instant::now() < deadline, "no readings were stored within 30 s:\n{}", server.log_tail(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut alarms = Alarms::connect(broker.port, opts.devices, site.alarm_detectors.clone()).await?;
    // A first alarm end to end (also fetches the FCM access token before anything is timed).
    let first = [alarms.raise().await?];
    let deadline = Instant::now() + Duration::from_secs(30);
    while push_latencies(fcm, &first).len() < opts.latency_tokens {
        server.check_alive()?;
        ensure!(Instant::now() < deadline, "the warm-up alarm was not pushed within 30 s:\n{}", server.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss0 = server.stats().rss_kib;
    eprintln!("server RSS before subscribers: {:.1} MiB", rss0 as f64 / 1024.0);

    let ws_url = format!("{}/graphql", server.base.replace("http://", "ws://"));
    let pool = Pool {
        url: ws_url,
        token: site.manager.clone(),
        documents: opts.documents,
        conns: Vec::new(),
        tally: Arc::default(),
    };
    let mut rig = Rig { opts, server, fcm, alarms, pool, rss0_kib: rss0, db_url: db.url().map(str::to_owned) };
    let mut steps = Vec::new();
    for &n in &opts.counts {
        eprintln!("{n} subscribers:");
        if n as u64 + FD_RESERVE > nofile {
            let why = format!(
                "skipped: {n} connections need {} open files, the limit is {nofile} (raise `ulimit -Hn`)",
                n as u64 + FD_RESERVE
            );
            eprintln!("  {why}");
            steps.push(Step { subscribers: n, skipped: Some(why), ..Step::default() });
            continue;
        }
        steps.push(rig.step(n).await?);
    }
    let dispatch = rig.dispatch(&site.manager).await?;
    report(opts, db, relay, rss0, &steps, &dispatch);
    Ok(())
}

fn report(opts: &Opts, db: &Db, relay: f64, rss0: u64, steps: &[Step], dispatch: &Dispatch) {
    let load = opts.max_rate / 2;
    println!(
        "\n## bench-live ({}, {} devices, background load {load} msg/s = half of --ingest-rate {}, one alarm every {} ms for {} s per step, {} cores)",
        db.label(),
        opts.devices,
        opts.max_rate,
        opts.alarm_every.as_millis(),
        opts.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("subscription documents: {} (the server's shared executions per event)", opts.documents);
    println!("baseline: mosquitto QoS 1 relay to a plain subscriber: {relay:.0} msg/s");
    println!("server RSS before subscribers: {:.1} MiB\n", rss0 as f64 / 1024.0);
    println!(
        "| subscribers | alarms | deliveries | missing | raw TCP fan-out floor p50 / p99 ms | → subscriber p50 ms | p99 ms (≤ {TARGET_SUB_P99_MS:.0}) | max ms | pushes | → push p50 ms | p99 ms (≤ {TARGET_PUSH_P99_MS:.0}) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in steps {
        if let Some(why) = &s.skipped {
            println!("| {} | {why} ||||||||||", s.subscribers);
            continue;
        }
        println!("{}", s.latency_row());
    }
    println!(
        "\n| subscribers | opened in s | failed | server RSS MiB | KiB per subscription (≤ {TARGET_KIB_PER_SUB:.0}) | peak RSS MiB | stored readings/s | server cores | bench cores | machine busy % |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in steps.iter().filter(|s| s.skipped.is_none()) {
        println!(
            "| {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {:.0} |",
            s.subscribers,
            s.open_s,
            s.open_failed,
            s.rss_kib as f64 / 1024.0,
            s.kib_per_sub,
            s.peak_kib as f64 / 1024.0,
            s.stored_per_s,
            s.server_cores,
            s.bench_cores,
            s.machine_busy * 100.0
        );
    }
    println!(
        "\npush dispatch: {} of {} sends for one alarm, first after {:.0} ms, last after {:.0} ms → {:.0} sends/s",
        dispatch.received,
        dispatch.expected,
        dispatch.first_ms,
        dispatch.last_ms,
        dispatch.rate()
    );
    println!("\ntargets:");
    for s in steps.iter().filter(|s| s.skipped.is_none()) {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let sub = pct(&s.sub_ms, 0.99);
        let push = pct(&s.push_ms, 0.99);
        let missing = s.missing();
        println!(
            "- {} subscribers: subscriber p99 {sub:.1} ms ≤ {TARGET_SUB_P99_MS:.0}: {}{}; push p99 {push:.1} ms ≤ {TARGET_PUSH_P99_MS:.0}: {}; {:.1} KiB per subscription ≤ {TARGET_KIB_PER_SUB:.0}: {}",
            s.subscribers,
            verdict(sub <= TARGET_SUB_P99_MS && missing == 0),
            if missing > 0 { format!(" ({missing} deliveries missing)") } else { String::new() },
            verdict(push <= TARGET_PUSH_P99_MS && s.push_ms.len() as u64 >= s.push_expected),
            s.kib_per_sub,
            verdict(s.kib_per_sub <= TARGET_KIB_PER_SUB),
        );
        println!(
            "  (this machine's raw TCP fan-out floor to {} sockets: p99 {:.1} ms)",
            s.subscribers,
            pct(&s.floor_ms, 0.99)
        );
    }
    let most = steps.iter().filter(|s| s.skipped.is_none()).map(|s| s.subscribers - s.open_failed).max().unwrap_or(0);
    println!(
        "- {TARGET_SUBSCRIPTIONS} subscriptions on one instance: {} (at most {most} open in this run)",
        if most >= TARGET_SUBSCRIPTIONS { "met" } else { "MISSED" }
    );
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn interrupted() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => "terminated",
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "publish") {
        return publisher(&args).await;
    }
    if args.get(1).is_some_and(|a| a == "fanout") {
        return fanout_sender(&args).await;
    }
    let opts = Opts::parse()?;
    let db = Db::choose().await?;
    // On an interrupt the run is dropped: its guards kill the server, publisher and broker.
    let outcome = tokio::select! {
        r = run(&opts, &db) => r,
        why = interrupted() => Err(anyhow::anyhow!("{why}; child processes stopped")),
    };
    db.drop_database().await;
    outcome
}
