//! HTTP surface: `POST /graphql` (GraphQL over HTTP), `GET /graphql` with a WebSocket
//! upgrade (`graphql-transport-ws` and the legacy `graphql-ws`), the explorer, and the
//! health, readiness and metrics endpoints, the attachment upload and download
//! ([`attachments`]), and the EMQX authentication/authorisation hooks ([`mqtt_hooks`]).

mod attachments;
mod mqtt_hooks;

use crate::auth::client_addr::client_address;
use std::net::SocketAddr;
use std::time::Instant;

use async_graphql::BatchResponse;
use async_graphql_axum::GraphQLBatchRequest;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, TextEncoder};

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
}

/// The full router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphql_ws).post(graphql_http))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::labels::routes())
        .merge(attachments::routes(&state))
        .merge(mqtt_hooks::routes())
        .with_state(state)
        .merge(crate::explorer::router())
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// GraphQL over HTTP: `application/graphql-response+json` when the client accepts it
/// (request errors then get a 4xx status), otherwise `application/json` with 200.
async fn graphql_http(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLBatchRequest,
) -> Response {
    let started = Instant::now();
    let auth = state.services.authenticate(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).await;
    let client = client_address(peer.ip(), &headers, state.services.trusted_proxies());
    let request = request.into_inner().data(auth).data(ClientAddr(client.to_string()));
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

/// Ready when the database, the latest-value cache and the bus (Redis, when configured)
/// answer and ingestion is not failing to store what it receives (it retries meanwhile;
/// `sparkwatch_ingest_failing` says the same in `/metrics`).
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
    let ready = database.is_ok() && cache.is_ok() && bus.is_ok() && !ingestion_failing;
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "database": word(&database),
        "cache": word(&cache),
        "bus": word(&bus),
        "ingestion": if ingestion_failing { "failing" } else { "ok" },
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.metrics.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}
