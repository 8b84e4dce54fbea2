//! The Sparkwatch server: GraphQL API over services over the store, and the `sparkwatch`
//! binary's commands. This file is the one place where components are wired together.
//!
//! Layout:
//! - `config` — flags, environment and TOML file → validated [`config::Config`].
//! - `error` — [`error::AppError`] and its single mapping to GraphQL errors.
//! - `auth` — passwords, tokens, API keys, login rate limiting, the [`auth::Principal`].
//! - `bus` — events, readings and hazard changes to subscribers (in process or Redis).
//! - `store` — SeaORM queries (SQLite or PostgreSQL) and row ↔ domain mapping.
//! - `service` — use cases: scope, validation, transactions, operation log.
//! - `graphql` — schema, guards, objects, inputs, query and mutation roots.
//! - `http` — axum routes: `/graphql` (HTTP + WebSocket), `/healthz`, `/readyz`, `/metrics`.
//! - `ws` — the GraphQL WebSocket protocols (subscriptions).
//! - `objects` — attachments' bytes (local directory or S3-compatible bucket).
//! - `explorer` — the offline GraphiQL page at `/graphiql`.
//! - `demo` — demo tenants and users for `serve --demo`.
//! - `downlink` — the MQTT client handle commands go down through (ingestion attaches it).
//! - `import` — CSV onboarding of devices and detectors.

pub mod auth;
pub mod bus;
pub mod config;
pub mod demo;
pub mod downlink;
pub mod error;
pub mod explorer;
pub mod graphql;
pub mod http;
pub mod import;
pub mod ingest;
pub mod labels;
pub mod metrics;
pub mod objects;
pub mod push;
pub mod service;
pub mod simulate;
pub mod store;
pub mod ws;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::rate_limit::Limits;
use crate::config::Config;
use crate::service::{Clock, ServiceSettings, Services};
use crate::store::Store;

/// Opens the store (migrating it) and wires the services.
pub async fn services(config: &Config, clock: Arc<dyn Clock>, login_limits: Limits) -> anyhow::Result<Services> {
    tracing::info!(database = %config.database_url_for_log(), "opening the database");
    let store = Store::open(config.database_url.expose()).await?;
    let settings = ServiceSettings {
        jwt_secret: config.jwt_secret.expose().to_owned(),
        access_token_ttl: config.access_token_ttl,
        refresh_token_ttl: config.refresh_token_ttl,
        login_limits,
        shared_limits: match &config.redis_url {
            Some(url) => Some(
                auth::shared_limits::SharedLimits::connect(url.expose(), config.database_url.expose())
                    .await
                    .context("connecting the sign-in limits to Redis (--redis-url)")?,
            ),
            None => None,
        },
        commands_per_minute: config.commands_per_minute,
        trusted_proxies: config.trusted_proxies.clone(),
        patrol_utc_offset: config.patrol_utc_offset,
        objects: objects::Objects::open(
            &config.data_dir,
            config.attachments_url.as_deref(),
            config.attachment_max_bytes,
        )
        .context("opening the attachment store (--attachments-url)")?,
        registration: service::registration::RegistrationPolicy {
            networks: config.modbus_allow_networks.clone(),
            serial_claiming: config.serial_claiming,
        },
    };
    let metrics = metrics::Metrics::new().context("registering metrics")?;
    let latest = match &config.redis_url {
        Some(url) => {
            tracing::info!(redis = %config::redact_url(url.expose()), "latest values are kept in Redis");
            store::latest::LatestCache::redis(url.expose()).await.context("connecting to Redis (--redis-url)")?
        }
        None => store::latest::LatestCache::default(),
    };
    let bus = match &config.redis_url {
        Some(url) => {
            bus::Bus::redis(url.expose(), metrics.clone()).await.context("connecting the bus to Redis (--redis-url)")?
        }
        None => bus::Bus::in_process(),
    };
    let push = push::Push::from_settings(&config.push)?;
    Ok(Services::new(store, clock, settings, metrics, latest, bus, push))
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn run(
    services: Services,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Serve::new(services, listener).run(shutdown).await
}

/// [`run`] with explicit WebSocket limits.
pub async fn run_with(
    services: Services,
    listener: TcpListener,
    ws_limits: ws::WsLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Serve::new(services, listener).ws_limits(ws_limits).run(shutdown).await
}

/// The HTTP server and its settings, built step by step (defaults for what is not set):
/// `Serve::new(services, listener).http_limits(..).ws_limits(..).run(shutdown)`.
pub struct Serve {
    services: Services,
    listener: TcpListener,
    ws_limits: ws::WsLimits,
    http_limits: http::HttpLimits,
    metrics_listener: Option<TcpListener>,
    metrics_token: Option<String>,
}

impl Serve {
    /// The API on `listener` with default limits and `/metrics` open on it.
    pub fn new(services: Services, listener: TcpListener) -> Serve {
        Serve {
            services,
            listener,
            ws_limits: ws::WsLimits::default(),
            http_limits: http::HttpLimits::default(),
            metrics_listener: None,
            metrics_token: None,
        }
    }

    /// Limits of WebSocket connections.
    pub fn ws_limits(mut self, limits: ws::WsLimits) -> Serve {
        self.ws_limits = limits;
        self
    }

    /// Limits of HTTP requests and connections.
    pub fn http_limits(mut self, limits: http::HttpLimits) -> Serve {
        self.http_limits = limits;
        self
    }

    /// Serves `/metrics` on this listener instead of the API's (`--metrics-listen`).
    pub fn metrics_listener(mut self, listener: Option<TcpListener>) -> Serve {
        self.metrics_listener = listener;
        self
    }

    /// Asks readers of `/metrics` for this bearer token (`--metrics-token`).
    pub fn metrics_token(mut self, token: Option<String>) -> Serve {
        self.metrics_token = token;
        self
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Serve { services, listener, ws_limits, http_limits, metrics_listener, metrics_token } = self;
        let schema = graphql::schema(Some(services.clone()));
        let state = http::AppState {
            hub: ws::Hub::new(schema.clone(), services.clone()),
            schema,
            metrics: services.metrics().clone(),
            services,
            ws_limits,
            http_limits,
            metrics_access: http::MetricsAccess { separate: metrics_listener.is_some(), token: metrics_token },
        };
        let addr = listener.local_addr().context("reading the listen address")?;
        // The shutdown signal reaches both listeners.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let metrics_server = match metrics_listener {
            Some(l) => {
                let maddr = l.local_addr().context("reading the metrics listen address")?;
                tracing::info!(%maddr, "serving metrics at http://{maddr}/metrics");
                let app = http::metrics_router(state.clone());
                Some(tokio::spawn(http::server::serve(
                    l,
                    app,
                    http_limits.header_read_timeout,
                    stopped(stop_rx.clone()),
                )))
            }
            None => None,
        };
        let limited = http::conn_limit::LimitedListener::new(
            listener,
            http_limits.max_connections,
            http_limits.max_connections_per_address,
            state.metrics.clone(),
        );
        let app = http::router(state);
        tracing::info!(%addr, "serving GraphQL at http://{addr}/graphql and the explorer at http://{addr}/graphiql");
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        http::server::serve(limited, app, http_limits.header_read_timeout, stopped(stop_rx)).await;
        if let Some(m) = metrics_server {
            m.await.context("the metrics server")?;
        }
        Ok(())
    }
}

/// Starts the background jobs: push routing and delivery, reminders, command expiry. Returns a stop switch.
///
/// Push routing, delivery and reminders run on a thread of their own with its own scheduler:
/// an alarm fanned out to 10,000 WebSocket subscribers makes 10,000 tasks runnable at once,
/// and on the shared scheduler every database round trip of the push path queued behind
/// all of them (push p99 55–108 ms at 10,000 subscribers, 28 ms at 1,000: BENCHMARKS.md,
/// bench-live run 10). The router listens before this returns, so no event recorded after
/// it is missed.
pub fn start_jobs(services: &Services, jobs: service::notify::JobSettings) -> tokio::sync::watch::Sender<bool> {
    use service::notify::{run_dispatcher, run_reminders, run_router};
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let events = services.bus().local_events();
    let (s, push_stop) = (services.clone(), stop_rx.clone());
    let push = async move {
        tokio::join!(
            run_router(s.clone(), events, push_stop.clone()),
            run_dispatcher(s.clone(), jobs, push_stop.clone()),
            run_reminders(s, jobs, push_stop),
        );
    };
    let started = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|runtime| {
        std::thread::Builder::new().name("sparkwatch-push".into()).spawn(move || runtime.block_on(push))
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the push thread: no push notifications and no reminders");
    }
    tokio::spawn(service::patrol::run_patrol_job(services.clone(), jobs.tick * 10, stop_rx.clone()));
    tokio::spawn(service::commands::run_expiry(services.clone(), jobs.tick, stop_rx));
    stop
}

/// Starts ingestion: the pipeline task and, when a broker URL is given, the MQTT subscriber.
/// Returns the queue (tests and the simulator feed it directly) and a stop switch.
pub fn start_ingest(
    services: &Services,
    prefix: &str,
    mqtt: Option<ingest::mqtt::MqttSettings>,
) -> (ingest::IngestQueue, tokio::sync::watch::Sender<bool>) {
    let config = ingest::pipeline::PipelineConfig { prefix: prefix.to_owned(), ..Default::default() };
    start_ingest_with(services, config, mqtt)
}

/// [`start_ingest`] with every pipeline setting.
pub fn start_ingest_with(
    services: &Services,
    config: ingest::pipeline::PipelineConfig,
    mqtt: Option<ingest::mqtt::MqttSettings>,
) -> (ingest::IngestQueue, tokio::sync::watch::Sender<bool>) {
    let Ingestion { queue, stop, .. } = start_ingestion(services, config, mqtt);
    (queue, stop)
}

/// Running ingestion: the queue (the Modbus poller and the demo feed it too), the stop
/// switch of everything that feeds it, and the pipeline's health.
pub struct Ingestion {
    /// The inbound queue.
    pub queue: ingest::IngestQueue,
    stop: tokio::sync::watch::Sender<bool>,
    health: ingest::health::IngestHealth,
}

impl Ingestion {
    /// A receiver of the stop switch, for the tasks that feed the queue.
    pub fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// The pipeline's health.
    pub fn health(&self) -> &ingest::health::IngestHealth {
        &self.health
    }

    /// Stops what feeds the queue and waits, at most `within`, until the pipeline has
    /// stored, settled and written back everything it took (the MQTT subscriber stays
    /// connected until then, so the last acknowledgements reach the broker). Says whether it
    /// finished in time.
    pub async fn shutdown(self, within: std::time::Duration) -> bool {
        let Ingestion { queue, stop, health } = self;
        let _ = stop.send(true);
        drop(queue);
        let finished = tokio::time::timeout(within, health.finished()).await.is_ok();
        if !finished {
            tracing::warn!(
                within_s = within.as_secs(),
                "ingestion did not finish in time; what it had not stored is unacknowledged and will be redelivered"
            );
        }
        finished
    }
}

/// Starts ingestion: the pipeline task and, when a broker URL is given, the MQTT subscriber.
pub fn start_ingestion(
    services: &Services,
    config: ingest::pipeline::PipelineConfig,
    mqtt: Option<ingest::mqtt::MqttSettings>,
) -> Ingestion {
    let (queue, rx) = ingest::IngestQueue::new(10_000);
    let pipeline = ingest::pipeline::Pipeline::new(services, config);
    let health = pipeline.health().clone();
    tokio::spawn(pipeline.run(rx));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(settings) = mqtt {
        let downlink = services.commands().downlink().clone();
        tokio::spawn(ingest::mqtt::run(settings, queue.clone(), downlink, health.clone(), stop_rx));
    }
    Ingestion { queue, stop, health }
}

/// Starts the embedded MQTT broker: rumqttd behind the device gate, which checks every
/// device's credentials with [`Services::verify_device`]. `server_client_id` (our
/// subscriber's) is reserved so that no device can take it. Needs a Tokio runtime.
#[cfg(feature = "embedded-broker")]
pub fn start_embedded_broker(
    services: &Services,
    listen: std::net::SocketAddr,
    tls: Option<&config::MqttTls>,
    prefix: &str,
    server_client_id: &str,
) -> Result<ingest::broker::EmbeddedBroker, ingest::broker::BrokerError> {
    use ingest::broker::{BrokerOptions, Verdict, Verifier};
    let tls = match tls {
        Some(t) => Some((t.listen, ingest::broker::tls::server_config(&t.cert, &t.key)?)),
        None => None,
    };
    let s = services.clone();
    let verifier: Verifier = Arc::new(move |serial: String, secret: String| {
        let s = s.clone();
        Box::pin(async move {
            match s.verify_device(&serial, &secret).await {
                Ok(Ok(_)) => Verdict::Accept,
                Ok(Err(_)) => Verdict::Refuse,
                Err(e) => {
                    tracing::warn!(serial, error = %e, "cannot check a device's credentials; it is told to retry");
                    Verdict::Unavailable
                }
            }
        })
    });
    let broker = ingest::broker::start(BrokerOptions {
        listen,
        tls,
        prefix: prefix.to_owned(),
        reserved_client_ids: vec![server_client_id.to_owned(), format!("{server_client_id}-dynsec")],
        verifier,
    })?;
    let sessions = broker.sessions();
    services.set_session_ender(Arc::new(move |serial: &str| {
        let ended = sessions.end(serial);
        if ended > 0 {
            tracing::info!(serial, connections = ended, "device connections ended: credentials changed");
        }
    }));
    Ok(broker)
}
