//! Black-box test harness: starts the real server on `127.0.0.1:0` over a real database
//! (SQLite in a temp dir, and PostgreSQL when `SPARKWATCH_TEST_DATABASE_URL` is set) and
//! talks to it over real HTTP.
//!
//! Layout: [`Backend`] picks the database, [`TestServer`] runs the server, [`Gql`] sends
//! GraphQL requests and reads `extensions.code`.

pub mod push_standin;

use std::sync::Arc;

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use sparkwatch_api::auth::rate_limit::Limits;
use sparkwatch_api::config::{Config, Settings};
use sparkwatch_api::service::{Services, SystemClock};
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
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Starts a server over `backend` with default login limits.
    pub async fn start(backend: &Backend) -> anyhow::Result<TestServer> {
        Self::start_with(backend, Limits::default()).await
    }

    /// Starts a server with the given login limits.
    pub async fn start_with(backend: &Backend, limits: Limits) -> anyhow::Result<TestServer> {
        Self::start_full(backend, limits, Arc::new(SystemClock)).await
    }

    /// Starts a server whose services read time from `clock` (heartbeats, token expiry).
    pub async fn start_full(
        backend: &Backend,
        limits: Limits,
        clock: Arc<dyn sparkwatch_api::service::Clock>,
    ) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let config = config(backend, dir.path()).await?;
        let services = sparkwatch_api::services(&config, clock, limits).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel();
        let s = services.clone();
        tokio::spawn(async move {
            let _ = sparkwatch_api::run(s, listener, async move {
                let _ = rx.await;
            })
            .await;
        });
        Ok(TestServer { base, services, http: reqwest::Client::new(), _dir: dir, stop: Some(tx) })
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

    /// Signs in as a demo account.
    pub async fn demo_login(&self, login: &str) -> anyhow::Result<Gql> {
        self.login(login, sparkwatch_api::demo::DEMO_PASSWORD).await
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

    /// Waits until everything sent so far is committed (at most 10 s).
    pub async fn settle(&self) -> anyhow::Result<()> {
        for _ in 0..1000 {
            if self.acked.load(std::sync::atomic::Ordering::SeqCst) >= self.sent {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        anyhow::bail!("ingestion did not commit {} messages within 10 s", self.sent)
    }
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

    /// Posts a query that must fail; returns the first error's `extensions.code`.
    pub async fn code(&self, query: &str, variables: Value) -> anyhow::Result<String> {
        let res = self.run(query, variables).await?;
        let code = res["errors"][0]["extensions"]["code"]
            .as_str()
            .with_context(|| format!("expected an error code: {res}"))?;
        Ok(code.to_owned())
    }
}
