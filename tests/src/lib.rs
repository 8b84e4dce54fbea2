//! Black-box test harness: starts the real server on `127.0.0.1:0` over a real database
//! (SQLite in a temp dir, and PostgreSQL when `SPARKWATCH_TEST_DATABASE_URL` is set) and
//! talks to it over real HTTP.
//!
//! Layout: [`Backend`] picks the database, [`TestServer`] runs the server, [`Gql`] sends
//! GraphQL requests and reads `extensions.code`, [`WsClient`] speaks the subscription
//! protocols, [`eventually`] waits for a condition; `components` holds the servers a test
//! owns and breaks (private Mosquitto, PostgreSQL, Redis; a database fault switch).

pub mod bench;
mod components;
pub mod mqtt_client;
pub mod push_standin;

pub use components::{FaultSwitch, PrivateMosquitto, PrivatePostgres, PrivateRedis, after_job_passes, metric};

use std::sync::Arc;

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use sparkwatch_api::auth::rate_limit::Limits;
use sparkwatch_api::config::{Config, Settings};
use sparkwatch_api::service::notify::JobSettings;
use sparkwatch_api::service::{Services, SystemClock};
use sparkwatch_api::ws::WsLimits;
use tokio::sync::oneshot;

/// A database the suites run against.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh database on the PostgreSQL server at this URL.
    Postgres(String),
}

/// SQLite always; PostgreSQL too when `SPARKWATCH_TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut list = vec![Backend::Sqlite];
    if let Ok(url) = std::env::var("SPARKWATCH_TEST_DATABASE_URL")
        && !url.is_empty()
    {
        list.push(Backend::Postgres(url));
    }
    list
}

/// Creates an empty PostgreSQL database next to `url` and returns its URL.
pub async fn fresh_postgres(url: &str) -> anyhow::Result<String> {
    let admin =
        Database::connect(url).await.with_context(|| format!("SPARKWATCH_TEST_DATABASE_URL={url} is unreachable"))?;
    let name = format!("sw_test_{}", uuid::Uuid::now_v7().simple());
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// A configuration for `backend` in `dir`.
pub async fn config(backend: &Backend, dir: &std::path::Path) -> anyhow::Result<Config> {
    let database_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres(url) => Some(fresh_postgres(url).await?),
    };
    // With SPARKWATCH_TEST_REDIS_URL the latest-value cache lives in Redis, as in production.
    let redis_url = std::env::var("SPARKWATCH_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
    Ok(Settings {
        data_dir: Some(dir.to_owned()),
        database_url,
        redis_url,
        jwt_secret: Some("t".repeat(40)),
        // Suites register gateways anywhere on both databases; `registration.rs` narrows it.
        modbus_allow_networks: Some("any".into()),
        ..Default::default()
    }
    .resolve()?)
}

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The services behind it (for seeding and direct checks).
    pub services: Services,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Its configuration (a second instance can share its database).
    pub config: Config,
    _dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
}

/// How to start a [`TestServer`].
#[derive(Clone)]
pub struct Options {
    /// Login rate limits.
    pub login_limits: Limits,
    /// Where time comes from.
    pub clock: Arc<dyn sparkwatch_api::service::Clock>,
    /// WebSocket limits.
    pub ws: WsLimits,
    /// HTTP request and connection limits.
    pub http: sparkwatch_api::http::HttpLimits,
    /// Access-token lifetime, when not the default.
    pub access_token_ttl: Option<std::time::Duration>,
    /// Push delivery and reminder jobs (started with the server).
    pub jobs: JobSettings,
    /// Push settings (FCM/APNs stand-ins); none = log only.
    pub push: Option<sparkwatch_api::config::PushSettings>,
    /// Redis to use instead of `SPARKWATCH_TEST_REDIS_URL` (a test's private one).
    pub redis_url: Option<String>,
    /// Changes the resolved configuration before the server starts (e.g. serial claiming).
    pub configure: Option<fn(&mut Config)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            login_limits: Limits::default(),
            clock: Arc::new(SystemClock),
            ws: WsLimits::default(),
            http: Default::default(),
            access_token_ttl: None,
            // Production pacing: every tick reads the queue and the reminders, and suites that
            // do not push should not add database traffic. Push tests use `fast_jobs()`.
            jobs: JobSettings::default(),
            push: None,
            redis_url: None,
            configure: None,
        }
    }
}

/// Job settings for push and escalation tests: they move a manual clock and expect
/// deliveries and reminders soon after.
pub fn fast_jobs() -> JobSettings {
    JobSettings { tick: std::time::Duration::from_millis(100), ..JobSettings::default() }
}

impl TestServer {
    /// Starts a server over `backend` with default login limits.
    pub async fn start(backend: &Backend) -> anyhow::Result<TestServer> {
        Self::start_opts(backend, Options::default()).await
    }

    /// Starts a server with the given login limits.
    pub async fn start_with(backend: &Backend, limits: Limits) -> anyhow::Result<TestServer> {
        Self::start_opts(backend, Options { login_limits: limits, ..Options::default() }).await
    }

    /// Starts a server whose services read time from `clock` (heartbeats, token expiry).
    pub async fn start_full(
        backend: &Backend,
        limits: Limits,
        clock: Arc<dyn sparkwatch_api::service::Clock>,
    ) -> anyhow::Result<TestServer> {
        Self::start_opts(backend, Options { login_limits: limits, clock, ..Options::default() }).await
    }

    /// Starts a server with every option.
    pub async fn start_opts(backend: &Backend, opts: Options) -> anyhow::Result<TestServer> {
        let dir = Arc::new(tempfile::tempdir()?);
        let mut config = config(backend, dir.path()).await?;
        if let Some(ttl) = opts.access_token_ttl {
            config.access_token_ttl = ttl;
        }
        if let Some(push) = &opts.push {
            config.push = push.clone();
        }
        if let Some(url) = &opts.redis_url {
            config.redis_url = Some(sparkwatch_api::config::Secret::new(url.clone()));
        }
        if let Some(configure) = opts.configure {
            configure(&mut config);
        }
        Self::launch(config, dir, opts).await
    }

    /// Starts a second instance over this one's database (and Redis, when configured).
    pub async fn sibling(&self, opts: Options) -> anyhow::Result<TestServer> {
        Self::launch(self.config.clone(), self._dir.clone(), opts).await
    }

    async fn launch(config: Config, dir: Arc<tempfile::TempDir>, opts: Options) -> anyhow::Result<TestServer> {
        // `SPARKWATCH_TEST_LOG=warn` (an EnvFilter) shows the server's log in failing tests.
        if let Ok(filter) = std::env::var("SPARKWATCH_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let services = sparkwatch_api::services(&config, opts.clock, opts.login_limits).await?;
        let stop_jobs = sparkwatch_api::start_jobs(&services, opts.jobs);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel();
        let s = services.clone();
        let (ws, http) = (opts.ws, opts.http);
        tokio::spawn(async move {
            let _ = sparkwatch_api::Serve::new(s, listener)
                .ws_limits(ws)
                .http_limits(http)
                .run(async move {
                    let _ = rx.await;
                })
                .await;
            let _ = stop_jobs.send(true);
        });
        Ok(TestServer { base, services, http: reqwest::Client::new(), config, _dir: dir, stop: Some(tx) })
    }

    /// Starts a server with the demo tenants seeded.
    pub async fn demo(backend: &Backend) -> anyhow::Result<TestServer> {
        let server = Self::start(backend).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        Ok(server)
    }

    /// A GraphQL client without credentials.
    pub fn anonymous(&self) -> Gql {
        Gql { http: self.http.clone(), url: format!("{}/graphql", self.base), token: None }
    }

    /// Signs in over HTTP and returns a client carrying the access token.
    pub async fn login(&self, login: &str, password: &str) -> anyhow::Result<Gql> {
        let res = self
            .anonymous()
            .run(
                "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken } }",
                json!({"i": {"login": login, "password": password}}),
            )
            .await?;
        let token = res["data"]["login"]["accessToken"].as_str().with_context(|| format!("login failed: {res}"))?;
        Ok(Gql { token: Some(token.to_owned()), ..self.anonymous() })
    }

    /// Uploads a tiny PNG as `gql`'s user through `POST /attachments`; returns its id.
    pub async fn upload_photo(&self, gql: &Gql) -> anyhow::Result<String> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec();
        png.extend_from_slice(&[0x90, 0x77, 0x53, 0xDE]);
        let part = reqwest::multipart::Part::bytes(png).file_name("fix.png").mime_str("image/png")?;
        let mut req = self
            .http
            .post(format!("{}/attachments", self.base))
            .multipart(reqwest::multipart::Form::new().part("file", part));
        if let Some(t) = &gql.token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        let status = res.status();
        let body: Value = res.json().await?;
        anyhow::ensure!(status == reqwest::StatusCode::CREATED, "upload refused: {status} {body}");
        body["id"].as_str().map(str::to_owned).with_context(|| format!("no id in {body}"))
    }

    /// The id of the detector at `address` on the device `serial`.
    pub async fn detector_id(&self, serial: &str, address: i32) -> anyhow::Result<String> {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        use sparkwatch_entity::{detector, device};
        let db = self.services.store().db();
        let dev = device::Entity::find().filter(device::Column::Serial.eq(serial)).one(db).await?;
        let dev = dev.ok_or_else(|| anyhow::anyhow!("no device {serial}"))?;
        let det = detector::Entity::find()
            .filter(detector::Column::DeviceId.eq(dev.id))
            .filter(detector::Column::Address.eq(address))
            .one(db)
            .await?;
        Ok(det.ok_or_else(|| anyhow::anyhow!("no detector {address} on {serial}"))?.id.to_string())
    }

    /// Signs in as a demo account.
    pub async fn demo_login(&self, login: &str) -> anyhow::Result<Gql> {
        self.login(login, sparkwatch_api::demo::DEMO_PASSWORD).await
    }

    /// Issues (rotates) the MQTT secret of the device `serial`, as its tenant's system would.
    pub async fn device_secret(&self, serial: &str) -> anyhow::Result<String> {
        let (device, tenant) = self.services.device_by_serial_for_system(serial).await?;
        let who = sparkwatch_api::auth::Principal::system(tenant, "test");
        Ok(self.services.issue_for(&who, &device).await?.password)
    }
}

/// Where the MQTT suites meet: the embedded broker with its device gate checking the
/// server's device credentials, or the external broker of `SPARKWATCH_TEST_MQTT_URL` with a
/// private topic prefix so that parallel runs stay apart.
pub struct TestBroker {
    /// The embedded broker, kept alive here.
    pub embedded: Option<sparkwatch_api::ingest::broker::EmbeddedBroker>,
    /// Where devices connect.
    pub host: String,
    /// Where devices connect.
    pub port: u16,
    /// Topic prefix.
    pub prefix: String,
}

impl TestBroker {
    /// The external broker when configured, else [`TestBroker::embedded`].
    pub fn start(server: &TestServer) -> anyhow::Result<TestBroker> {
        if let Ok(url) = std::env::var("SPARKWATCH_TEST_MQTT_URL")
            && !url.is_empty()
        {
            let tag = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
            let s = sparkwatch_api::ingest::mqtt::MqttSettings::from_url(&url, "x", "sw", None)?;
            return Ok(TestBroker { embedded: None, host: s.host, port: s.port, prefix: format!("swt{tag}") });
        }
        Self::embedded(server)
    }

    /// The embedded broker on free loopback ports, its gate checking `server`'s devices.
    pub fn embedded(server: &TestServer) -> anyhow::Result<TestBroker> {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let b = sparkwatch_api::start_embedded_broker(&server.services, listen, None, "sw", "sparkwatch-test")?;
        let addr = b.connect_addr();
        Ok(TestBroker { embedded: Some(b), host: addr.ip().to_string(), port: addr.port(), prefix: "sw".into() })
    }

    /// Settings for the server's subscriber (rumqttd's internal port for the embedded broker).
    pub fn subscriber(&self) -> sparkwatch_api::ingest::mqtt::MqttSettings {
        let client_id = format!("sparkwatch-{}", uuid::Uuid::now_v7().simple());
        match &self.embedded {
            Some(b) => b.subscriber_settings(&client_id, &self.prefix),
            None => sparkwatch_api::ingest::mqtt::MqttSettings {
                host: self.host.clone(),
                port: self.port,
                client_id,
                prefix: self.prefix.clone(),
                shared_group: None,
                credentials: None,
            },
        }
    }

    /// Connection options of the device `serial` with freshly issued credentials. The
    /// client id is the serial on the embedded broker; on a shared external one it carries
    /// the private prefix so that parallel runs do not take over each other's sessions.
    pub async fn device(&self, server: &TestServer, serial: &str) -> anyhow::Result<rumqttc::MqttOptions> {
        let secret = server.device_secret(serial).await?;
        let client_id = match self.embedded {
            Some(_) => serial.to_owned(),
            None => format!("{serial}-{}", self.prefix),
        };
        let mut opts = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
        opts.set_keep_alive(std::time::Duration::from_secs(10));
        opts.set_credentials(serial, secret);
        Ok(opts)
    }

    /// Simulator settings: devices connect here (each with its own secret).
    pub fn devices(&self) -> sparkwatch_api::ingest::mqtt::MqttSettings {
        sparkwatch_api::ingest::mqtt::MqttSettings {
            host: self.host.clone(),
            port: self.port,
            client_id: String::new(),
            prefix: self.prefix.clone(),
            shared_group: None,
            credentials: None,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Feeds device messages straight into a server's ingestion queue and waits until they
/// are committed (acknowledged), as the MQTT subscriber would.
pub struct Feeder {
    queue: sparkwatch_api::ingest::IngestQueue,
    acked: Arc<std::sync::atomic::AtomicUsize>,
    sent: usize,
    /// Stops the ingestion tasks when dropped.
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Feeder {
    /// Starts ingestion (no broker) on `services`.
    pub fn start(services: &Services) -> Feeder {
        let (queue, stop) = sparkwatch_api::start_ingest(services, "sw", None);
        Feeder { queue, acked: Arc::default(), sent: 0, _stop: stop }
    }

    /// Feeds a queue of ingestion started otherwise (e.g. with other pipeline settings).
    pub fn on(queue: sparkwatch_api::ingest::IngestQueue) -> Feeder {
        Feeder { queue, acked: Arc::default(), sent: 0, _stop: tokio::sync::watch::channel(false).0 }
    }

    /// Keeps ingestion's stop switch with the feeder: ingestion stops when it is dropped.
    pub fn holding(mut self, stop: tokio::sync::watch::Sender<bool>) -> Feeder {
        self._stop = stop;
        self
    }

    /// Queues a message on `topic` received at `at`.
    pub async fn send_at(&mut self, topic: &str, payload: &str, at: chrono::DateTime<chrono::Utc>) {
        let acked = self.acked.clone();
        let msg = sparkwatch_api::ingest::Inbound {
            topic: topic.to_owned(),
            payload: payload.as_bytes().to_vec(),
            modbus: None,
            received_at: at,
            ack: Some(Box::new(move || {
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })),
        };
        assert!(self.queue.push(msg).await, "ingestion stopped");
        self.sent += 1;
    }

    /// Queues a message received now.
    pub async fn send(&mut self, topic: &str, payload: &str) {
        self.send_at(topic, payload, chrono::Utc::now()).await;
    }

    /// How many messages sent so far are not acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        self.sent.saturating_sub(self.acked.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Waits until everything sent so far is committed (at most 10 s).
    pub async fn settle(&self) -> anyhow::Result<()> {
        let what = format!("ingestion to commit {} messages", self.sent);
        eventually(&what, || async {
            Ok((self.acked.load(std::sync::atomic::Ordering::SeqCst) >= self.sent).then_some(()))
        })
        .await
    }
}

/// Poll interval of the Modbus suites (instead of the devices' 1 s).
pub const MODBUS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Starts ingestion (no broker) and the Modbus poller on `services` with every interval,
/// timeout and back-off shortened, so a Modbus scenario takes a second or two. Returns
/// their stop switch.
pub fn start_modbus(services: &Services) -> tokio::sync::watch::Sender<bool> {
    use std::time::Duration;
    let (queue, stop) = sparkwatch_api::start_ingest(services, "sw", None);
    let fast = sparkwatch_api::ingest::modbus::PollerConfig {
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        refresh: Duration::from_millis(500),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        interval_override: Some(MODBUS_INTERVAL),
        command_check: MODBUS_INTERVAL,
        allowed: services.registration_policy().networks.clone(),
    };
    tokio::spawn(sparkwatch_api::ingest::modbus::run(
        services.store().clone(),
        queue,
        services.metrics().clone(),
        services.commands().clone(),
        fast,
        stop.subscribe(),
    ));
    stop
}

/// A GraphQL-over-HTTP client.
#[derive(Clone)]
pub struct Gql {
    http: reqwest::Client,
    /// Endpoint.
    pub url: String,
    /// Bearer token.
    pub token: Option<String>,
}

impl Gql {
    /// A client sending `token` as the bearer credential.
    pub fn with_token(&self, token: &str) -> Gql {
        Gql { token: Some(token.to_owned()), ..self.clone() }
    }

    /// Posts a query and returns the JSON response (HTTP status is not checked here).
    pub async fn run(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let mut req = self.http.post(&self.url).json(&json!({"query": query, "variables": variables}));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        Ok(res.json().await?)
    }

    /// Posts a query that must succeed; returns `data`.
    pub async fn ok(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let res = self.run(query, variables).await?;
        anyhow::ensure!(res.get("errors").is_none_or(Value::is_null), "unexpected errors: {res}");
        Ok(res["data"].clone())
    }

    /// Posts a query that must fail; returns the first error's `(extensions.code,
    /// extensions.field)`, the field `-` when the error names none.
    pub async fn refused(&self, query: &str, variables: Value) -> anyhow::Result<(String, String)> {
        let res = self.run(query, variables).await?;
        let ext = &res["errors"][0]["extensions"];
        let code = ext["code"].as_str().with_context(|| format!("expected an error: {res}"))?;
        Ok((code.to_owned(), ext["field"].as_str().unwrap_or("-").to_owned()))
    }

    /// Posts a query that must fail; returns the first error's `extensions.code`.
    pub async fn code(&self, query: &str, variables: Value) -> anyhow::Result<String> {
        let res = self.run(query, variables).await?;
        let code = res["errors"][0]["extensions"]["code"]
            .as_str()
            .with_context(|| format!("expected an error code: {res}"))?;
        Ok(code.to_owned())
    }
}

/// The `(code, field)` of a `FORBIDDEN` refusal naming `field`, to compare with
/// [`Gql::refused`].
pub fn forbidden(field: &str) -> (String, String) {
    ("FORBIDDEN".into(), field.into())
}

/// Polls `check` every 50 ms until it yields a value; fails naming `what` after 10 s. The one
/// way the suites wait for something the server does in the background. To show that
/// something did *not* happen, wait for positive evidence that the system got past the point
/// where it would have happened (a later marker stored, N more polls served, N more job
/// ticks counted), then assert the negative; never sleep and hope.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    eventually_within(std::time::Duration::from_secs(10), what, check).await
}

/// [`eventually`] with a deadline of its own, for conditions that legitimately take longer
/// (a device's heartbeat timeout, a broker's reconnect back-off).
pub async fn eventually_within<T, F, Fut>(deadline: std::time::Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = std::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What a WebSocket client received.
#[derive(Debug)]
pub enum WsEvent {
    /// A JSON protocol message.
    Message(Value),
    /// The server closed the connection with this code and reason.
    Closed(u16, String),
}

/// A GraphQL WebSocket client speaking `graphql-transport-ws` (or the legacy `graphql-ws`).
pub struct WsClient {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Messages of other subscriptions received while waiting for one.
    pending: std::collections::VecDeque<Value>,
}

impl WsClient {
    /// Opens a connection offering `protocol`.
    pub async fn connect(server: &TestServer, protocol: &str) -> anyhow::Result<WsClient> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/graphql", server.base.replace("http://", "ws://"));
        let mut req = url.as_str().into_client_request()?;
        req.headers_mut().insert("sec-websocket-protocol", protocol.parse()?);
        let (stream, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(WsClient { stream, pending: Default::default() })
    }

    /// Opens a `graphql-transport-ws` connection and signs in with `token`.
    pub async fn signed_in(server: &TestServer, token: &str) -> anyhow::Result<WsClient> {
        let mut ws = Self::connect(server, "graphql-transport-ws").await?;
        ws.send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}})).await?;
        match ws.recv(std::time::Duration::from_secs(5)).await? {
            WsEvent::Message(m) if m["type"] == "connection_ack" => Ok(ws),
            other => anyhow::bail!("expected connection_ack, got {other:?}"),
        }
    }

    /// Sends one WebSocket message as it is (oversized, binary, close…).
    pub async fn send_raw(&mut self, message: tokio_tungstenite::tungstenite::Message) -> anyhow::Result<()> {
        use futures_util::SinkExt;
        self.stream.send(message).await?;
        Ok(())
    }

    /// Sends a protocol message.
    pub async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        self.stream.send(Message::text(message.to_string())).await?;
        Ok(())
    }

    /// Subscribes with id `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) -> anyhow::Result<()> {
        self.send(json!({"type": "subscribe", "id": id, "payload": {"query": query, "variables": variables}})).await
    }

    /// The next protocol message or close, waiting at most `wait`.
    pub async fn recv(&mut self, wait: std::time::Duration) -> anyhow::Result<WsEvent> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let msg = tokio::time::timeout(wait, self.stream.next()).await.context("nothing received in time")?;
            match msg {
                None => return Ok(WsEvent::Closed(1006, "connection ended without a close frame".into())),
                Some(Err(e)) => return Ok(WsEvent::Closed(1006, e.to_string())),
                Some(Ok(Message::Text(t))) => return Ok(WsEvent::Message(serde_json::from_str(t.as_str())?)),
                Some(Ok(Message::Close(frame))) => {
                    return Ok(match frame {
                        Some(f) => WsEvent::Closed(f.code.into(), f.reason.to_string()),
                        None => WsEvent::Closed(1005, String::new()),
                    });
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next `next` payload of subscription `id` (other messages are skipped), at most `wait`.
    pub async fn next_of(&mut self, id: &str, wait: std::time::Duration) -> anyhow::Result<Value> {
        if let Some(i) = self.pending.iter().position(|m| m["id"] == id) {
            let m = self.pending.remove(i).unwrap_or_default();
            anyhow::ensure!(m["type"] == "next", "error for {id}: {m}");
            return Ok(m["payload"].clone());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await? {
                WsEvent::Message(m) if m["id"] == id && m["type"] == "next" => return Ok(m["payload"].clone()),
                WsEvent::Message(m) if m["id"] == id && m["type"] == "error" => anyhow::bail!("error for {id}: {m}"),
                WsEvent::Message(m) if m["type"] == "next" || m["type"] == "error" => self.pending.push_back(m),
                WsEvent::Message(_) => continue,
                WsEvent::Closed(code, reason) => anyhow::bail!("closed ({code}: {reason}) while waiting for {id}"),
            }
        }
    }

    /// Waits until the server closes the connection; returns the close code and reason.
    pub async fn closed(&mut self, wait: std::time::Duration) -> anyhow::Result<(u16, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let WsEvent::Closed(code, reason) = self.recv(left).await? {
                return Ok((code, reason));
            }
        }
    }

    /// Asserts that nothing arrives for `wait` (and nothing unread is pending).
    pub async fn silent_for(&mut self, wait: std::time::Duration) -> anyhow::Result<()> {
        anyhow::ensure!(self.pending.is_empty(), "expected silence, but {:?} arrived", self.pending);
        match self.recv(wait).await {
            Err(_) => Ok(()),
            Ok(ev) => anyhow::bail!("expected silence, received {ev:?}"),
        }
    }
}
