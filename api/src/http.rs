//! HTTP surface: `POST /graphql` (GraphQL over HTTP), `GET /graphql` with a WebSocket
//! upgrade (`graphql-transport-ws` and the legacy `graphql-ws`), the explorer, and the
//! health, readiness and metrics endpoints.

use std::net::SocketAddr;
use std::time::Instant;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{BatchResponse, Data};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, TextEncoder};

use crate::metrics::Metrics;
use serde_json::json;

use crate::auth::Auth;
use crate::graphql::{AppSchema, ClientAddr};
use crate::service::Services;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The GraphQL schema (carries the services).
    pub schema: AppSchema,
    /// The services (for health checks and authentication).
    pub services: Services,
    /// Metrics.
    pub metrics: Metrics,
}

/// The full router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphql_ws).post(graphql_http))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
    let request = request.into_inner().data(auth).data(ClientAddr(peer.ip().to_string()));
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

/// Subscriptions over WebSocket. The access token comes in the `connection_init` payload.
async fn graphql_ws(
    State(state): State<AppState>,
    protocol: Result<GraphQLProtocol, StatusCode>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (Ok(protocol), Ok(ws)) = (protocol, ws) else {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "send queries with POST /graphql; GET /graphql is for WebSocket subscriptions (graphql-transport-ws)",
        )
            .into_response();
    };
    let services = state.services.clone();
    let schema = state.schema.clone();
    ws.protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    // Clients differ in the key's case (`authorization`, `Authorization`).
                    let token = payload
                        .as_object()
                        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")))
                        .and_then(|(_, v)| v.as_str().map(str::to_owned));
                    let auth = services.authenticate(token.as_deref()).await;
                    if let Auth::Invalid(reason) = &auth {
                        return Err(async_graphql::Error::new(reason.clone()));
                    }
                    let mut data = Data::default();
                    data.insert(auth);
                    Ok(data)
                })
                .serve()
                .await
        })
        .into_response()
}

/// Ready when the database and the latest-value cache (Redis, when configured) answer.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.services.store().ping().await.map_err(|e| e.to_string());
    let cache = state.services.latest().ping().await;
    for (what, result) in [("database", &database), ("cache", &cache)] {
        if let Err(e) = result {
            tracing::warn!(error = %e, "readiness: {what} unreachable");
        }
    }
    let word = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "unreachable" };
    let ready = database.is_ok() && cache.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "database": word(&database),
        "cache": word(&cache),
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
