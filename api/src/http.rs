//! HTTP surface: `POST /graphql` (GraphQL over HTTP), `GET /graphql` with a WebSocket
//! upgrade (`graphql-transport-ws` and the legacy `graphql-ws`), the explorer, and the
//! health, readiness and metrics endpoints, the attachment upload and download
//! ([`attachments`]), and the EMQX authentication/authorisation hooks ([`mqtt_hooks`]).

mod attachments;
pub(crate) mod conn_limit;
mod limits;
mod mqtt_hooks;
pub(crate) mod server;

pub use limits::HttpLimits;

use crate::auth::client_addr::client_address;
use std::net::SocketAddr;
use std::time::Instant;

use async_graphql::BatchResponse;
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, TextEncoder};

use crate::error::{ApiError, AppError};
use crate::metrics::Metrics;
use serde_json::json;

use crate::graphql::{AppSchema, ClientAddr};
use crate::service::Services;
use crate::ws::{self, Protocol, WsLimits};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The GraphQL schema (carries the services).
    pub schema: AppSchema,
    /// The services (for health checks and authentication).
    pub services: Services,
    /// Metrics.
    pub metrics: Metrics,
    /// Limits of WebSocket connections.
    pub ws_limits: WsLimits,
    /// Shared execution of subscriptions.
    pub hub: ws::Hub,
    /// Limits of HTTP requests and connections.
    pub http_limits: HttpLimits,
    /// Where `/metrics` is served and what it asks for.
    pub metrics_access: MetricsAccess,
}

/// Who may read `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct MetricsAccess {
    /// Served on a listener of its own (`--metrics-listen`), not on the API's.
    pub separate: bool,
    /// Bearer token it asks for (`--metrics-token`); none = anyone who reaches it.
    pub token: Option<String>,
}

/// The full router.
pub fn router(state: AppState) -> Router {
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        state.http_limits.request_timeout,
    );
    let mut api = Router::new()
        .route("/graphql", get(graphql_ws).post(graphql_http))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if !state.metrics_access.separate {
        api = api.route("/metrics", get(metrics));
    }
    api.merge(crate::labels::routes())
        .merge(mqtt_hooks::routes())
        // Every request but attachments (large photos over slow links have their own size
        // limit) ends with 408 after the timeout, its body included: a client trickling a
        // body or a query that runs away cannot hold a request open for good. A WebSocket
        // upgrade is answered at once, so open sockets are not affected.
        .layer(timeout)
        .merge(attachments::routes(&state))
        .with_state(state)
        .merge(crate::explorer::router())
}

/// The router of the separate metrics listener (`--metrics-listen`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// A refusal: the HTTP status and the error it carries.
pub(crate) type Refusal = (StatusCode, AppError);

/// The status that goes with an error of the service layer.
pub(crate) fn status_of(err: AppError) -> Refusal {
    let status = match &err {
        AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AppError::Forbidden(_)
        | AppError::Reauthenticate(_)
        | AppError::StepUp(_)
        | AppError::Refused { .. }
        | AppError::NotHeld { .. } => StatusCode::FORBIDDEN,
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::Validation(_) => StatusCode::BAD_REQUEST,
        AppError::Conflict(_) => StatusCode::CONFLICT,
        AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        AppError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        AppError::SlowConsumer { .. } | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, err)
}

/// The error response, in the shape GraphQL errors have (same codes, same logging).
pub(crate) fn refuse((status, err): Refusal) -> Response {
    let error = async_graphql::Error::from(ApiError(err));
    let body = json!({ "errors": [{ "message": error.message, "extensions": error.extensions }] });
    let mut res = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// GraphQL over HTTP: `application/graphql-response+json` when the client accepts it
/// (request errors then get a 4xx status), otherwise `application/json` with 200.
async fn graphql_http(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let request = match limits::read_graphql(&state.http_limits, &headers, body).await {
        Ok(r) => r,
        Err(refusal) => {
            state.metrics.graphql_requests.with_label_values(&["http", "refused"]).inc();
            return refuse(refusal);
        }
    };
    let auth = state.services.authenticate(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).await;
    let client = client_address(peer.ip(), &headers, state.services.trusted_proxies());
    let request = request.data(auth).data(ClientAddr(client.to_string()));
    let response = state.schema.execute_batch(request).await;
    let outcome = if response.is_ok() { "ok" } else { "error" };
    state.metrics.graphql_requests.with_label_values(&["http", outcome]).inc();
    state.metrics.graphql_seconds.with_label_values(&["http"]).observe(started.elapsed().as_secs_f64());

    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let modern = accept.contains(GRAPHQL_RESPONSE);
    let status = if modern && is_request_error(&response) { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let body = serde_json::to_vec(&response)
        .unwrap_or_else(|_| b"{\"errors\":[{\"message\":\"serialisation failed\"}]}".to_vec());
    let content_type = if modern { GRAPHQL_RESPONSE } else { "application/json" };
    let mut res = (status, body).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A request error (parse, validation, limits) produced no `data` at all.
fn is_request_error(response: &BatchResponse) -> bool {
    match response {
        BatchResponse::Single(r) => r.data == async_graphql::Value::Null && !r.errors.is_empty(),
        BatchResponse::Batch(_) => false,
    }
}

/// Subscriptions over WebSocket (see [`crate::ws`]). The access token comes in the
/// `connection_init` payload.
async fn graphql_ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "send queries with POST /graphql; GET /graphql is for WebSocket subscriptions (graphql-transport-ws)",
        )
            .into_response();
    };
    let offered = headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL);
    let client = ClientAddr(client_address(peer.ip(), &headers, state.services.trusted_proxies()).to_string());
    let hub = state.hub.clone();
    let limits = state.ws_limits;
    // Small buffers: most connections carry a few small messages a minute, and there may be
    // tens of thousands of them.
    ws.protocols(Protocol::NAMES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        // Refused (close 1009) from the frame header on, before the payload is read.
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .on_upgrade(move |mut socket| async move {
            let protocol = match socket.protocol().and_then(|p| p.to_str().ok()).and_then(Protocol::from_name) {
                Some(p) => p,
                None if !offered => Protocol::TransportWs,
                None => {
                    let reason = "subprotocol not acceptable: use graphql-transport-ws (or the legacy graphql-ws)";
                    let frame = CloseFrame { code: 4406, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            };
            ws::serve(socket, protocol, hub, client, limits).await
        })
        .into_response()
}

/// Ready when the database answers and ingestion is not failing to store what it receives
/// (it retries meanwhile; `sparkwatch_ingest_failing` says the same in `/metrics`). Redis
/// (latest-value cache and bus) being away makes the instance "degraded", not unready: it
/// still ingests, stores and serves (latest values from the database, this instance's own
/// subscribers served directly), and taking every instance out of a load balancer because
/// a cache is away would turn a degraded service into an outage.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.services.store().ping().await.map_err(|e| e.to_string());
    let cache = state.services.latest().ping().await;
    let bus = state.services.bus().ping().await;
    for (what, result) in [("database", &database), ("cache", &cache), ("bus", &bus)] {
        if let Err(e) = result {
            tracing::warn!(error = %e, "readiness: {what} unreachable");
        }
    }
    let ingestion_failing = state.metrics.ingest_failing.get() > 0;
    if ingestion_failing {
        tracing::warn!("readiness: ingestion cannot store what it receives (retrying)");
    }
    let word = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "unreachable" };
    let ready = database.is_ok() && !ingestion_failing;
    let status = match (ready, cache.is_ok() && bus.is_ok()) {
        (false, _) => "not ready",
        (true, true) => "ready",
        (true, false) => "degraded",
    };
    let body = json!({
        "status": status,
        "database": word(&database),
        "cache": word(&cache),
        "bus": word(&bus),
        "ingestion": if ingestion_failing { "failing" } else { "ok" },
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// Prometheus text; with `--metrics-token`, only for `Authorization: Bearer <token>`.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics_access.token {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: the token is a password.
        let matches = given.is_some_and(|g| {
            use sha2::Digest;
            sha2::Sha256::digest(g.as_bytes()) == sha2::Sha256::digest(token.as_bytes())
        });
        if !matches {
            return refuse(status_of(AppError::Unauthenticated(
                "/metrics needs the metrics token (--metrics-token)".into(),
            )));
        }
    }
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.metrics.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}
