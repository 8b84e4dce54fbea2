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

// ---------------------------------------------------------------------------------------
// The database

/// Where the server keeps its data.
enum Db {
    Sqlite,
    Postgres { admin: String, url: String, name: String },
}

impl Db {
    async fn choose() -> anyhow::Result<Db> {
        let Some(admin) = std::env::var("SPARKWATCH_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
            return Ok(Db::Sqlite);
        };
        let url = sparkwatch_tests::fresh_postgres(&admin)
            .await
            .context("PostgreSQL is not reachable; unset SPARKWATCH_TEST_DATABASE_URL to measure on SQLite")?;
        let name = url.rsplit_once('/').map(|(_, n)| n.to_owned()).unwrap_or_default();
        Ok(Db::Postgres { admin, url, name })
    }

    fn label(&self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres { .. } => "postgres",
        }
    }

    /// `--database-url` for the server (none: SQLite in its data dir).
    fn url(&self) -> Option<&str> {
        match self {
            Db::Sqlite => None,
            Db::Postgres { url, .. } => Some(url),
        }
    }

    /// Drops the fresh PostgreSQL database (best effort, after the server is gone).
    async fn drop_database(&self) {
        if let Db::Postgres { admin, name, .. } = self
            && let Ok(conn) = Database::connect(admin.as_str()).await
            && let Err(e) = conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
        {
            eprintln!("could not drop database {name}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server under test

struct Server {
    child: KillOnDrop,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Server {
    /// Seeds a tenant and its administrator with the CLI, then starts `sparkwatch serve`.
    async fn start(
        exe: &Path,
        dir: &Path,
        database_url: Option<&str>,
        broker_port: u16,
        fcm: &FcmStandIn,
        fcm_credentials: &Path,
    ) -> anyhow::Result<Server> {
        let log = dir.join("server.log");
        let mut common = vec!["--data-dir".to_owned(), dir.join("data").display().to_string()];
        if let Some(url) = database_url {
            common.extend(["--database-url".to_owned(), url.to_owned()]);
        }
        cli(exe, &common, &["tenant", "create", "Bench"], &log).await?;
        cli(
            exe,
            &common,
            &["user", "create", "--tenant", "Bench", "--email", ADMIN, "--role", "tenant_admin", "--locale", "en"],
            &log,
        )
        .await?;
        let port = sparkwatch_tests::bench::free_port()?;
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(&common)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--mqtt-url", &format!("mqtt://127.0.0.1:{broker_port}")])
            .args(["--mqtt-client-id", &format!("bench-live-{}", std::process::id())])
            .args(["--mqtt-prefix", PREFIX])
            .args(["--fcm-credentials", &fcm_credentials.display().to_string()])
            .args(["--fcm-base-url", &fcm.base_url])
            // The subscribers sign in once; their connections must outlive the run.
            .args(["--access-token-ttl-s", "86400"])
            // Every subscriber signs in as the one bench user, from 127.0.0.1.
            .args(["--ws-max-per-user", "1000000", "--max-connections", "1000000"])
            .args(["--max-connections-per-address", "1000000"]);
        let child = child_env(&mut cmd)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build()?;
        let mut server = Server { child: KillOnDrop(child), base: format!("http://127.0.0.1:{port}"), log, http };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.0.try_wait() {
                bail!("the server exited ({status}) while starting:\n{}", server.log_tail(30));
            }
            let ready = server.http.get(format!("{}/readyz", server.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within 60 s:\n{}", server.log_tail(30));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stats(&self) -> ProcStats {
        ProcStats::of(self.child.id())
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails with the end of the server's log when it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.0.try_wait() {
            bail!("the server exited ({status}):\n{}", self.log_tail(30));
        }
        Ok(())
    }

    /// A value from `/metrics` (the sum over its labels).
    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum())
    }

    /// Runs a GraphQL operation over HTTP; fails on errors.
    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> anyhow::Result<Value> {
        let mut req =
            self.http.post(format!("{}/graphql", self.base)).json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res: Value = req.send().await?.json().await?;
        if res.get("errors").is_some_and(|e| !e.is_null()) {
            let text = res.to_string();
            bail!("GraphQL errors: {}", &text[..text.len().min(1000)]);
        }
        Ok(res["data"].clone())
    }

    /// Runs many mutation fields that select `{ id }` (`createDevice(…) { id }`), 100 per
    /// request, and returns the ids in order.
    async fn batch(&self, token: &str, fields: &[String]) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(fields.len());
        for chunk in fields.chunks(100) {
            let body: String = chunk.iter().enumerate().map(|(i, f)| format!("a{i}: {f}\n")).collect();
            let data = self.gql(Some(token), &format!("mutation {{\n{body}}}"), json!({})).await?;
            for i in 0..chunk.len() {
                let id = data[format!("a{i}")]["id"].as_str().with_context(|| format!("no id in {data}"))?;
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    async fn login(&self, login: &str) -> anyhow::Result<String> {
        let data = self
            .gql(
                None,
                "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
                json!({"i": {"login": login, "password": PASSWORD}}),
            )
            .await?;
        data["login"]["accessToken"].as_str().map(str::to_owned).with_context(|| format!("login of {login}: {data}"))
    }
}

/// The environment of the server and its CLI: secrets, no proxies (everything is local).
fn child_env(cmd: &mut Command) -> &mut Command {
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        cmd.env_remove(v);
    }
    cmd.env("SPARKWATCH_JWT_SECRET", JWT_SECRET).env("SPARKWATCH_USER_PASSWORD", PASSWORD)
}

/// Runs `sparkwatch ARGS COMMON` to completion (at most 2 minutes), output into `log`.
async fn cli(exe: &Path, common: &[String], args: &[&str], log: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(exe);
    cmd.args(args).args(common);
    child_env(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let what = format!("sparkwatch {}", args.join(" "));
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .with_context(|| format!("`{what}` did not finish within 2 minutes"))?
        .with_context(|| format!("running `{what}`"))?;
    let mut text = out.stdout.clone();
    text.extend_from_slice(&out.stderr);
    std::io::Write::write_all(&mut std::fs::OpenOptions::new().create(true).append(true).open(log)?, &text)?;
    ensure!(out.status.success(), "`{what}` failed ({}):\n{}", out.status, String::from_utf8_lossy(&text));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Seeding over GraphQL

struct Site {
    /// Access token of the manager (subscriptions, push tokens).
    manager: String,
    /// Ids of the alarm detectors, used once each, in order.
    alarm_detectors: Vec<String>,
}

/// The device and bus address of alarm detector `j`: address 2, 3, … on the load devices,
/// which report address 1 all the time, so they are online and no heartbeat fault fires.
fn alarm_place(j: usize, devices: u64) -> (u64, u64) {
    (j as u64 % devices, 2 + j as u64 / devices)
}

async fn seed(server: &Server, opts: &Opts, alarm_detectors: usize) -> anyhow::Result<Site> {
    let admin = server.login(ADMIN).await?;
    let project = server
        .gql(Some(&admin), r#"mutation { createProject(input: {name: "Bench site"}) { id } }"#, json!({}))
        .await?;
    let project = project["createProject"]["id"].as_str().context("project id")?.to_owned();
    // No escalation reminders during the run: they would add pushes to every phone.
    server
        .gql(
            Some(&admin),
            "mutation { updateEscalationPolicy(input: {afterMinutes: 1440, everyMinutes: 1440}) { afterMinutes } }",
            json!({}),
        )
        .await?;
    eprintln!("  {} devices with one detector each …", opts.devices);
    let devices: Vec<String> = (0..opts.devices)
        .map(|d| {
            format!(
                r#"createDevice(input: {{projectId: "{project}", serial: "BENCH-{d}", name: "Bench {d}", transport: MQTT, intervalS: 60}}) {{ id }}"#
            )
        })
        .collect();
    let device_ids = server.batch(&admin, &devices).await?;
    let detector = |device: &str, address: u64| {
        format!(r#"createDetector(input: {{deviceId: "{device}", address: {address}}}) {{ id }}"#)
    };
    let load: Vec<String> = device_ids.iter().map(|d| detector(d, 1)).collect();
    server.batch(&admin, &load).await?;
    eprintln!("  {alarm_detectors} alarm detectors (leak set-point 300 mA, delay 0) …");
    let alarms: Vec<String> = (0..alarm_detectors)
        .map(|j| {
            let (d, address) = alarm_place(j, opts.devices);
            detector(&device_ids[d as usize], address)
        })
        .collect();
    let alarm_ids = server.batch(&admin, &alarms).await?;
    let thresholds: Vec<String> = alarm_ids
        .iter()
        .map(|id| {
            format!(r#"updateDetectorThresholds(input: {{detectorId: "{id}", leakMa: 300, leakDelayS: 0}}) {{ id }}"#)
        })
        .collect();
    server.batch(&admin, &thresholds).await?;
    // The manager is assigned to the project: alarms there are pushed to their phones.
    server
        .gql(
            Some(&admin),
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({"i": {"email": MANAGER, "password": PASSWORD, "roleId": "manager", "projectIds": [project], "locale": "en"}}),
        )
        .await?;
    let manager = server.login(MANAGER).await?;
    Ok(Site { manager, alarm_detectors: alarm_ids })
}

/// Registers push tokens `from..to` for the manager (Android, FCM).
async fn register_tokens(server: &Server, manager: &str, from: usize, to: usize) -> anyhow::Result<()> {
    let fields: Vec<String> = (from..to)
        .map(|i| {
            format!(
                r#"registerPushToken(input: {{platform: ANDROID, token: "bench-fcm-token-{i:05}", appId: "com.sparkwatch.bench"}}) {{ id }}"#
            )
        })
        .collect();
    server.batch(manager, &fields).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Alarms

/// Publishes one over-threshold reading per alarm detector, from this process, so the
/// publish time is known to the microsecond.
struct Alarms {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    devices: u64,
    next: usize,
    ids: Vec<String>,
}

/// One alarm as published.
#[derive(Clone)]
struct Raised {
    detector: String,
    at_ms: i64,
    published_us: i64,
}

impl Alarms {
    async fn connect(port: u16, devices: u64, ids: Vec<String>) -> anyhow::Result<Alarms> {
        let mut opts = MqttOptions::new(format!("bench-alarms-{}", std::process::id()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(60));
        let (client, mut lp) = AsyncClient::new(opts, 100);
        let task = tokio::spawn(async move {
            loop {
                if lp.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Ok(Alarms { client, task, devices, next: 0, ids })
    }

    /// Raises the next alarm: one 900 mA reading, device time = publish time.
    async fn raise(&mut self) -> anyhow::Result<Raised> {
        let j = self.next;
        let detector = self.ids.get(j).context("ran out of alarm detectors")?.clone();
        self.next += 1;
        let (d, address) = alarm_place(j, self.devices);
        let published_us = now_us();
        let at_ms = published_us / 1000;
        let body = format!(
            r#"{{"ts":{at_ms},"seq":{published_us},"detectors":[{{"addr":{address},"leak":[900.0],"temp":[35.5,null,null,null]}}]}}"#
        );
        self.client.publish(format!("{PREFIX}/BENCH-{d}/telemetry"), QoS::AtLeastOnce, false, body).await?;
        Ok(Raised { detector, at_ms, published_us })
    }
}

impl Drop for Alarms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When the server received an alarm's reading and when it applied it, from its database.
async fn alarm_timeline(url: &str, alarm: &Raised) -> anyhow::Result<String> {
    let db = Database::connect(url).await?;
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT (extract(epoch FROM e.received_at) * 1e6)::bigint AS received, \
                    (extract(epoch FROM h.opened_at) * 1e6)::bigint AS applied \
             FROM hazards h JOIN events e ON e.episode_id IS NOT NULL AND e.detector_id = h.detector_id \
             WHERE h.detector_id = $1::uuid AND e.category = 'ALARM' LIMIT 1",
            [alarm.detector.clone().into()],
        ))
        .await?
        .context("no hazard")?;
    let received: i64 = row.try_get("", "received")?;
    let applied: i64 = row.try_get("", "applied")?;
    let ms = |us: i64| (us - alarm.published_us) as f64 / 1000.0;
    Ok(format!(", received after {:.0} ms, applied after {:.0} ms", ms(received), ms(applied)))
}

/// Push sends the FCM stand-in received for these alarms: (alarm index, latency ms).
fn push_latencies(fcm: &FcmStandIn, alarms: &[Raised]) -> Vec<(usize, f64)> {
    let by_detector: HashMap<&str, usize> = alarms.iter().enumerate().map(|(i, a)| (a.detector.as_str(), i)).collect();
    fcm.send_requests()
        .iter()
        .filter_map(|r| {
            let body = r.json();
            let data = &body["message"]["data"];
            if data["eventKind"] != "LEAK_ALARM" || !data["escalationLevel"].is_null() {
                return None;
            }
            let i = *by_detector.get(data["detectorId"].as_str()?)?;
            Some((i, (micros(r.received_at) - alarms[i].published_us) as f64 / 1000.0))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Subscribers

/// What all subscriber connections report.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    close_codes: Mutex<BTreeMap<String, u64>>,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn closed_with(&self, why: String) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        *self.close_codes.lock().unwrap_or_else(|e| e.into_inner()).entry(why).or_default() += 1;
    }
}

/// One subscriber: its task and the alarms it received (device time ms, receive time µs).
struct Conn {
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Vec<(i64, i64)>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Open `graphql-transport-ws` connections, one task each, each with one `alarmEvents`
/// subscription.
struct Pool {
    url: String,
    token: String,
    /// Distinct subscription documents to spread the subscribers over.
    documents: usize,
    conns: Vec<Conn>,
    tally: Arc<Tally>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscription document number `variant`: the same fields, a distinct document.
fn document(variant: usize) -> String {
    match variant {
        0 => SUBSCRIPTION.to_owned(),
        k => SUBSCRIPTION.replace(" at }", &format!(" at v{k}: __typename }}")),
    }
}

/// Connects, signs in and subscribes.
async fn open(url: &str, token: &str, query: &str) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    // Small buffers, as the server uses: many connections, few small messages each.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let wait = Duration::from_secs(30);
    let (mut ws, _) = tokio::time::timeout(wait, tokio_tungstenite::connect_async_with_config(req, Some(config), true))
        .await
        .context("WebSocket handshake timed out")??;
    let init = json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(Message::text(init.to_string())).await?;
    loop {
        match tokio::time::timeout(wait, ws.next()).await.context("no connection_ack within 30 s")? {
            Some(Ok(Message::Text(t))) if t.contains("connection_ack") => break,
            Some(Ok(Message::Close(f))) => bail!("closed before connection_ack: {f:?}"),
            Some(Err(e)) => bail!("before connection_ack: {e}"),
            None => bail!("closed before connection_ack"),
            Some(Ok(_)) => {}
        }
    }
    let subscribe = json!({"type": "subscribe", "id": "1", "payload": {"query": query}});
    ws.send(Message::text(subscribe.to_string())).await?;
    Ok(ws)
}

/// The device time (ms) of an `alarmEvents` message, without parsing all of it.
fn event_at_ms(text: &str) -> Option<i64> {
    let start = text.find("\"at\":\"")? + 6;
    let end = start + text[start..].find('"')?;
    chrono::DateTime::parse_from_rfc3339(&text[start..end]).ok().map(|t| t.timestamp_millis())
}

/// Reads one connection until it ends, noting every `LEAK_ALARM` with its receive time.
async fn listen(mut ws: Ws, seen: Arc<Mutex<Vec<(i64, i64)>>>, tally: Arc<Tally>) {
    while let Some(msg) = ws.next().await {
        let received = now_us();
        match msg {
            Ok(Message::Text(t)) => {
                if t.contains("\"LEAK_ALARM\"") {
                    if let Some(at) = event_at_ms(&t) {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push((at, received));
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                } else if t.contains("\"type\":\"error\"") || t.contains("\"type\":\"complete\"") {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    tally.first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| t.to_string());
                }
            }
            Ok(Message::Close(frame)) => {
                tally.closed_with(frame.map_or("close without code".into(), |f| format!("{} {}", f.code, f.reason)));
                return;
            }
            Err(e) => {
                tally.closed_with(format!("error: {e}"));
                return;
            }
            Ok(_) => {}
        }
    }
    tally.closed_with("ended".into());
}

impl Pool {
    /// Opens connections until `n` are open; returns (newly opened, failed, first failure).
    async fn grow_to(&mut self, n: usize) -> (usize, usize, Option<String>) {
        let add = n.saturating_sub(self.conns.len());
        let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
        let mut pending = Vec::with_capacity(add);
        for i in 0..add {
            let Ok(permit) = gate.clone().acquire_owned().await else { break };
            let (tx, rx) = oneshot::channel::<Result<(), String>>();
            let seen: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
            let (url, token, tally, sink) = (self.url.clone(), self.token.clone(), self.tally.clone(), seen.clone());
            let query = document((self.conns.len() + i) % self.documents);
            let task = tokio::spawn(async move {
                let ws = open(&url, &token, &query).await;
                drop(permit);
                match ws {
                    Ok(ws) => {
                        let _ = tx.send(Ok(()));
                        listen(ws, sink, tally).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            });
            pending.push((Conn { task, seen }, rx));
            if (i + 1) % 1000 == 0 {
                eprintln!("    {} connecting …", self.conns.len() + i + 1);
            }
        }
        let (mut opened, mut failed, mut first) = (0, 0, None);
        for (conn, rx) in pending {
            match rx.await {
                Ok(Ok(())) => {
                    opened += 1;
                    self.conns.push(conn);
                }
                Ok(Err(e)) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
                Err(_) => failed += 1,
            }
        }
        (opened, failed, first)
    }

    /// Closes connections until at most `n` are open.
    fn shrink_to(&mut self, n: usize) {
        self.conns.truncate(n);
    }

    /// Takes every connection's received alarms.
    fn take_seen(&self) -> Vec<Vec<(i64, i64)>> {
        self.conns.iter().map(|c| std::mem::take(&mut *c.seen.lock().unwrap_or_else(|e| e.into_inner()))).collect()
    }
}

// ---------------------------------------------------------------------------------------
// The raw fan-out floor

/// Size of one floor message: about an `alarmEvents { id kind at }` frame.
const FLOOR_MESSAGE: usize = 150;
/// Messages per floor measurement, 300 ms apart.
const FLOOR_ROUNDS: usize = 10;

/// What this machine needs to hand one small message to `n` local TCP sockets, each read by
/// its own task in this process, under the same background load: a child process
/// (`bench-live fanout N`) writes a timestamped message to all `n` sockets in one loop —
/// no WebSocket, no GraphQL, no task per connection on the sending side. Latency is
/// receive time − send time, per socket per message, in ms, sorted.
async fn fanout_floor(n: usize) -> anyhow::Result<Vec<f64>> {
    use std::io::{BufRead, Write};
    use tokio::io::AsyncReadExt;
    let exe = std::env::current_exe()?;
    let mut child = KillOnDrop(
        Command::new(exe).args(["fanout", &n.to_string()]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?,
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().context("fan-out child stdout")?).lines();
    let port: u16 = lines.next().context("fan-out child ended")??.trim().parse()?;
    let seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        drop(permit);
        let seen = seen.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; FLOOR_MESSAGE];
            while socket.read_exact(&mut buf).await.is_ok() {
                let received = now_us();
                let sent: i64 = std::str::from_utf8(&buf[..16]).ok().and_then(|t| t.parse().ok()).unwrap_or(received);
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((received - sent) as f64 / 1000.0);
            }
        }));
    }
    ensure!(lines.next().context("fan-out child ended")??.trim() == "ready", "fan-out child not ready");
    let mut stdin = child.0.stdin.take().context("fan-out child stdin")?;
    for _ in 0..FLOOR_ROUNDS {
        writeln!(stdin, "go")?;
        stdin.flush()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap_or_else(|e| e.into_inner()).len() < n * FLOOR_ROUNDS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stdin);
    for r in &readers {
        r.abort();
    }
    let mut ms = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    ensure!(ms.len() == n * FLOOR_ROUNDS, "fan-out floor: {} of {} messages arrived", ms.len(), n * FLOOR_ROUNDS);
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// The sending side of [`fanout_floor`]: `bench-live fanout N` accepts N connections, says
/// `ready`, and for every line on stdin writes one timestamped message to all of them.
async fn fanout_sender(args: &[String]) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let n: usize = args.get(2).context("bench-live fanout N")?.parse()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        sockets.push(socket);
    }
    println!("ready");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while lines.next_line().await?.is_some() {
        let message = format!("{:016}{}", now_us(), " ".repeat(FLOOR_MESSAGE - 16));
        for socket in &mut sockets {
            socket.write_all(message.as_bytes()).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measuring

/// The figures of one subscriber count.
#[derive(Default)]
struct Step {
    subscribers: usize,
    skipped: Option<String>,
    open_s: f64,
    open_failed: usize,
    server_subscriptions: f64,
    rss_kib: u64,
    peak_kib: u64,
    kib_per_sub: f64,
    alarms: usize,
    expected: u64,
    delivered: u64,
    sub_ms: Vec<f64>,
    /// The raw TCP fan-out floor measured just before the step.
    floor_ms: Vec<f64>,
    push_expected: u64,
    push_ms: Vec<f64>,
    stored_per_s: f64,
    server_cores: f64,
    bench_cores: f64,
    machine_busy: f64,
    closed: u64,
    errors: u64,
}

impl Step {
    fn missing(&self) -> u64 {
        self.expected - self.delivered.min(self.expected)
    }

    /// The row of the latency table.
    fn latency_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {:.1} / {:.1} | {:.1} | {:.1} | {:.1} | {}/{} | {:.1} | {:.1} |",
            self.subscribers,
            self.alarms,
            self.delivered,
            self.missing(),
            pct(&self.floor_ms, 0.5),
            pct(&self.floor_ms, 0.99),
            pct(&self.sub_ms, 0.5),
            pct(&self.sub_ms, 0.99),
            pct(&self.sub_ms, 1.0),
            self.push_ms.len(),
            self.push_expected,
            pct(&self.push_ms, 0.5),
            pct(&self.push_ms, 0.99),
        )
    }
}

/// Everything a step needs.
struct Rig<'a> {
    opts: &'a Opts,
    server: &'a mut Server,
    fcm: &'a FcmStandIn,
    alarms: Alarms,
    pool: Pool,
    rss0_kib: u64,
    /// The server's PostgreSQL database (where the slowest alarms' timeline is read).
    db_url: Option<String>,
}

impl Rig<'_> {
    /// Opens subscribers up to `n`, then raises alarms every `alarm_every` for `seconds`
    /// while the background load runs, and waits for every delivery and push.
    async fn step(&mut self, n: usize) -> anyhow::Result<Step> {
        let mut step = Step { subscribers: n, ..Step::default() };
        if self.pool.conns.len() > n {
            self.pool.shrink_to(n);
            eprintln!("  closed subscribers down to {n} (the RSS figure below then includes freed memory)");
        }
        if self.opts.floor {
            eprintln!("  raw TCP fan-out floor to {n} sockets …");
            step.floor_ms = fanout_floor(n).await.context("measuring the raw fan-out floor")?;
            eprintln!("    p50 {:.1} ms, p99 {:.1} ms", pct(&step.floor_ms, 0.5), pct(&step.floor_ms, 0.99));
        }
        eprintln!("  opening subscribers up to {n} …");
        let t = Instant::now();
        let (_, failed, why) = self.pool.grow_to(n).await;
        step.open_s = t.elapsed().as_secs_f64();
        step.open_failed = failed;
        if let Some(why) = why {
            eprintln!("  {failed} connections failed; the first: {why}");
        }
        let open = self.pool.conns.len();
        // Wait until the server has registered every subscription.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.server.check_alive()?;
            step.server_subscriptions = self.server.metric("sparkwatch_subscriptions_open").await.unwrap_or(0.0);
            if step.server_subscriptions as usize >= open || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "  {open} connected in {:.1} s ({:.0}/s), server reports {} subscriptions",
            step.open_s,
            (open + failed) as f64 / step.open_s.max(1e-3),
            step.server_subscriptions
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        step.rss_kib = self.server.stats().rss_kib;
        step.kib_per_sub = (step.rss_kib as f64 - self.rss0_kib as f64) / open.max(1) as f64;
        self.pool.take_seen();

        let alarms = self.opts.alarms_per_step();
        eprintln!("  raising {alarms} alarms, one every {} ms …", self.opts.alarm_every.as_millis());
        let (server0, own0, machine0) = (self.server.stats(), ProcStats::own(), machine_cpu());
        let stored0 = self.server.metric("sparkwatch_ingest_readings_stored_total").await?;
        let delivered0 = self.pool.tally.delivered.load(Ordering::Relaxed);
        let (closed0, errors0) =
            (self.pool.tally.closed.load(Ordering::Relaxed), self.pool.tally.errors.load(Ordering::Relaxed));
        let start = tokio::time::Instant::now();
        let mut raised = Vec::with_capacity(alarms);
        for k in 0..alarms {
            tokio::time::sleep_until(start + self.opts.alarm_every * k as u32).await;
            raised.push(self.alarms.raise().await?);
        }
        step.alarms = alarms;
        step.expected = (open * alarms) as u64;
        step.push_expected = (alarms * self.opts.latency_tokens) as u64;
        // Wait for every delivery, then every push (at most 30 s after the last alarm);
        // counting pushes parses the stand-in's log, so it is not done while deliveries run.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pool.tally.delivered.load(Ordering::Relaxed) - delivered0 < step.expected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while (push_latencies(self.fcm, &raised).len() as u64) < step.push_expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let (server1, own1, machine1) = (self.server.stats(), ProcStats::own(), machine_cpu());
        self.server.check_alive()?;
        let stored1 = self.server.metric("sparkwatch_ingest_readings_stored_total").await?;
        step.stored_per_s = (stored1 - stored0) / wall;
        step.server_cores = (server1.cpu_s - server0.cpu_s) / wall;
        step.peak_kib = server1.peak_kib;
        step.bench_cores = (own1.cpu_s - own0.cpu_s) / wall;
        step.machine_busy = (machine1.0 - machine0.0) / (machine1.1 - machine0.1).max(1e-9);
        step.closed = self.pool.tally.closed.load(Ordering::Relaxed) - closed0;
        step.errors = self.pool.tally.errors.load(Ordering::Relaxed) - errors0;

        let published: HashMap<i64, i64> = raised.iter().map(|a| (a.at_ms, a.published_us)).collect();
        let mut per_alarm: HashMap<i64, Vec<f64>> = HashMap::new();
        for seen in self.pool.take_seen() {
            let mut once = HashSet::new();
            for (at, received) in seen {
                if let Some(p) = published.get(&at)
                    && once.insert(at)
                {
                    let ms = (received - p) as f64 / 1000.0;
                    step.sub_ms.push(ms);
                    per_alarm.entry(at).or_default().push(ms);
                }
            }
        }
        // A p99 over many subscribers of few alarms is the slowest alarms': name them, with
        // when they were raised, so a stall on the ingest path shows as one slow alarm.
        let t0 = raised.first().map_or(0, |a| a.published_us);
        let by_at: HashMap<i64, &Raised> = raised.iter().map(|a| (a.at_ms, a)).collect();
        let mut slowest: Vec<(&Raised, f64)> = per_alarm
            .into_iter()
            .filter_map(|(at, mut ms)| {
                ms.sort_by(f64::total_cmp);
                Some((*by_at.get(&at)?, pct(&ms, 0.5)))
            })
            .collect();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        eprintln!(
            "  slowest alarms (median over subscribers; received = by the server's MQTT client, applied = its batch's transaction began):"
        );
        for (alarm, ms) in slowest.iter().take(3) {
            let when = (alarm.published_us - t0) as f64 / 1e6;
            let timeline = match &self.db_url {
                Some(url) => alarm_timeline(url, alarm).await.unwrap_or_else(|e| format!("({e})")),
                None => String::new(),
            };
            eprintln!("    +{when:.1} s: delivered after {ms:.0} ms{timeline}");
        }
        step.delivered = step.sub_ms.len() as u64;
        step.sub_ms.sort_by(f64::total_cmp);
        step.push_ms = push_latencies(self.fcm, &raised).into_iter().map(|(_, ms)| ms).collect();
        step.push_ms.sort_by(f64::total_cmp);
        eprintln!(
            "  subscribers | alarms | deliveries | missing | raw TCP floor p50 / p99 ms | → subscriber p50, p99, max ms | pushes | → push p50, p99 ms"
        );
        eprintln!("  {} ({} closed, {} errors)", step.latency_row(), step.closed, step.errors);
        if step.closed > 0 || step.errors > 0 {
            let codes = self.pool.tally.close_codes.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let first = self.pool.tally.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            eprintln!("  closes so far: {codes:?}; first error message: {first:?}");
        }
        Ok(step)
    }

    /// Registers phones up to `--push-tokens`, raises one alarm and times the sends.
    async fn dispatch(&mut self, manager: &str) -> anyhow::Result<Dispatch> {
        let total = self.opts.push_tokens;
        eprintln!("push dispatch: closing subscribers, registering {total} phones for the manager …");
        self.pool.shrink_to(0);
        register_tokens(self.server, manager, self.opts.latency_tokens, total).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let raised = [self.alarms.raise().await?];
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut last_count, mut last_progress) = (0, Instant::now());
        let lat = loop {
            // The end is taken from the stand-in's receive times; polling only notices it.
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.server.check_alive()?;
            let lat = push_latencies(self.fcm, &raised);
            if lat.len() != last_count {
                (last_count, last_progress) = (lat.len(), Instant::now());
            }
            if lat.len() >= total || Instant::now() > deadline || last_progress.elapsed() > Duration::from_secs(30) {
                break lat;
            }
        };
        let mut ms: Vec<f64> = lat.into_iter().map(|(_, ms)| ms).collect();
        ms.sort_by(f64::total_cmp);
        let d = Dispatch {
            expected: total,
            received: ms.len(),
            first_ms: ms.first().copied().unwrap_or(f64::NAN),
            last_ms: ms.last().copied().unwrap_or(f64::NAN),
        };
        eprintln!(
            "  {} of {} sends, first after {:.0} ms, last after {:.0} ms → {:.0} sends/s",
            d.received,
            d.expected,
            d.first_ms,
            d.last_ms,
            d.rate()
        );
        Ok(d)
    }
}

struct Dispatch {
    expected: usize,
    received: usize,
    first_ms: f64,
    last_ms: f64,
}

impl Dispatch {
    fn rate(&self) -> f64 {
        self.received as f64 / (self.last_ms / 1000.0)
    }
}

// ---------------------------------------------------------------------------------------
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
