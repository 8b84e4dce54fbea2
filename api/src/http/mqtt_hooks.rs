//! EMQX HTTP authentication and authorisation hooks (`--mqtt-hook-secret`): EMQX asks
//! `POST /mqtt/auth` at every CONNECT and `POST /mqtt/acl` before a publish or subscribe,
//! and Sparkwatch answers with the same device rules as its embedded broker's gate
//! (DEVICE-PROTOCOL.md §3). EMQX must send the shared secret as `Authorization: Bearer …`;
//! without the flag the routes answer 404. Bodies are EMQX's placeholders as JSON:
//! `{"clientid","username","password"}` and `{"clientid","username","topic","action"}`;
//! answers are `{"result": "allow" | "deny" | "ignore"}` (README, "EMQX").

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::Mac;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::service::identity::{HookAnswer, TopicAction};

/// Largest hook request body: EMQX sends a few short strings.
const MAX_BODY: usize = 4096;

/// The hook routes.
pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/mqtt/auth", post(auth))
        .route("/mqtt/acl", post(acl))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

#[derive(Deserialize)]
struct AuthRequest {
    clientid: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
struct AclRequest {
    clientid: String,
    #[serde(default)]
    username: String,
    topic: String,
    action: String,
}

/// Whether the request carries the hook secret (compared in constant time).
/// The refusal is the status to answer with (404 while the hooks are off, else 401).
fn authorised(state: &AppState, headers: &HeaderMap) -> Result<(), StatusCode> {
    let Some(hooks) = state.services.mqtt_hooks() else {
        return Err(StatusCode::NOT_FOUND);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Equal-length HMAC tags compare in constant time whatever the input lengths.
    let tag = |s: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"sparkwatch mqtt hook").expect("any key length");
        mac.update(s.as_bytes());
        mac.finalize()
    };
    if tag(given) == tag(&hooks.secret) {
        Ok(())
    } else {
        tracing::warn!("an MQTT hook request without the right secret was refused");
        Err(StatusCode::UNAUTHORIZED)
    }
}

fn answer(a: HookAnswer) -> Response {
    let result = match a {
        HookAnswer::Allow => "allow",
        HookAnswer::Deny => "deny",
        HookAnswer::Ignore => "ignore",
    };
    Json(json!({"result": result, "is_superuser": false})).into_response()
}

async fn auth(State(state): State<AppState>, headers: HeaderMap, Json(req): Json<AuthRequest>) -> Response {
    if let Err(status) = authorised(&state, &headers) {
        return (status, Json(json!({"result": "deny"}))).into_response();
    }
    match state.services.hook_authenticate(&req.clientid, &req.username, &req.password).await {
        Ok(a) => answer(a),
        // EMQX counts a failed hook as "ignore" and goes on; the device retries later.
        Err(e) => {
            tracing::warn!(error = %e, "cannot answer EMQX's authentication hook");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"result": "ignore"}))).into_response()
        }
    }
}

async fn acl(State(state): State<AppState>, headers: HeaderMap, Json(req): Json<AclRequest>) -> Response {
    if let Err(status) = authorised(&state, &headers) {
        return (status, Json(json!({"result": "deny"}))).into_response();
    }
    let action = match req.action.as_str() {
        "publish" => TopicAction::Publish,
        "subscribe" => TopicAction::Subscribe,
        _ => return answer(HookAnswer::Deny),
    };
    answer(state.services.hook_authorize(&req.clientid, &req.username, &req.topic, action))
}
