//! `POST /attachments` (upload a photo: multipart/form-data, one file field `file`) and
//! `GET /attachments/{id}` (read it back), both with the bearer token of `/graphql`.
//!
//! The upload is read as it arrives and refused as soon as it is known to be bad: more than
//! `--attachment-max-bytes` (413, never buffering more than the limit), or first bytes that
//! are not a JPEG, PNG or HEIC (415) whatever the client's `Content-Type` says. Errors have
//! the GraphQL shape `{"errors":[{"message", "extensions":{"code", "field"}}]}`.

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::AppState;
use crate::error::{ApiError, AppError};
use crate::objects::{SNIFF_BYTES, sniff};
use crate::store::attachments::Attachment;

/// Room for the multipart framing around the file (boundaries, part headers, small fields).
const FRAMING: u64 = 64 * 1024;

/// The attachment routes; the body limit is the file limit plus the framing.
pub(super) fn routes(state: &AppState) -> axum::Router<AppState> {
    let limit = state.services.objects().max_bytes + FRAMING;
    axum::Router::new()
        .route("/attachments", post(upload))
        .route("/attachments/{id}", get(download))
        .layer(DefaultBodyLimit::max(usize::try_from(limit).unwrap_or(usize::MAX)))
}

/// A refusal: the HTTP status and the error it carries.
type Refusal = (StatusCode, AppError);

/// The status that goes with an error of the service layer.
fn status_of(err: AppError) -> Refusal {
    let status = match &err {
        AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AppError::Forbidden(_) | AppError::Reauthenticate(_) | AppError::StepUp(_) | AppError::NotHeld { .. } => {
            StatusCode::FORBIDDEN
        }
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::Validation(_) => StatusCode::BAD_REQUEST,
        AppError::Conflict(_) => StatusCode::CONFLICT,
        AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        AppError::SlowConsumer { .. } | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, err)
}

/// The error response, in the shape GraphQL errors have (same codes, same logging).
fn refuse((status, err): Refusal) -> Response {
    let error = async_graphql::Error::from(ApiError(err));
    let body = json!({ "errors": [{ "message": error.message, "extensions": error.extensions }] });
    let mut res = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<crate::auth::Principal, Refusal> {
    let auth = state.services.authenticate(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).await;
    auth.principal().cloned().map_err(status_of)
}

/// `POST /attachments` → 201 `{"id", "contentType", "size"}`.
async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    match receive(&state, &headers, multipart).await {
        Ok(a) => {
            let body = json!({"id": a.id.to_string(), "contentType": a.content_type, "size": a.size});
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(refusal) => refuse(refusal),
    }
}

async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Attachment, Refusal> {
    let who = caller(state, headers).await?;
    state.services.may_upload(&who).map_err(status_of)?;
    let max = state.services.objects().max_bytes;
    let too_big =
        || (StatusCode::PAYLOAD_TOO_LARGE, AppError::invalid("file", format!("a photo may have at most {max} bytes")));
    let not_photo = || {
        let reason = "is not a JPEG, PNG or HEIC photo (judged from its bytes, not its name or Content-Type)";
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, AppError::invalid("file", reason))
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max + FRAMING) {
        return Err(too_big());
    }
    let malformed = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_big(),
        status => {
            (status, AppError::invalid("file", format!("the multipart body could not be read: {}", e.body_text())))
        }
    };
    let mut form = multipart.map_err(|r| {
        let reason = format!("send multipart/form-data with the photo in the field `file` ({})", r.body_text());
        (StatusCode::BAD_REQUEST, AppError::invalid("file", reason))
    })?;
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        if field.name() != Some("file") {
            continue; // Skipped as it streams past; the body limit bounds it.
        }
        let (mut chunks, mut size, mut head) = (Vec::new(), 0u64, Vec::with_capacity(SNIFF_BYTES));
        let mut content_type = None;
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            size += chunk.len() as u64;
            if size > max {
                return Err(too_big());
            }
            if content_type.is_none() {
                head.extend(chunk.iter().take(SNIFF_BYTES - head.len()));
                if head.len() == SNIFF_BYTES {
                    content_type = Some(sniff(&head).ok_or_else(not_photo)?);
                }
            }
            chunks.push(chunk);
        }
        let content_type = match content_type {
            Some(t) => t,
            None => sniff(&head).ok_or_else(not_photo)?,
        };
        return state
            .services
            .upload_attachment(&who, content_type, chunks.into_iter().collect())
            .await
            .map_err(status_of);
    }
    Err((StatusCode::BAD_REQUEST, AppError::invalid("file", "send the photo in a form field named `file`")))
}

/// `GET /attachments/{id}`: the bytes, to the uploader while unlinked and to people with
/// its project in scope once linked; 404 to everyone else.
async fn download(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let who = match caller(&state, &headers).await {
        Ok(who) => who,
        Err(refusal) => return refuse(refusal),
    };
    let Ok(id) = id.parse::<uuid::Uuid>() else { return refuse(status_of(AppError::NotFound("attachment"))) };
    let (a, bytes) = match state.services.attachment_bytes(&who, id).await {
        Ok(found) => found,
        Err(e) => return refuse(status_of(e)),
    };
    let headers = [
        (header::CONTENT_TYPE, a.content_type),
        (header::CONTENT_LENGTH, a.size.to_string()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (header::CONTENT_DISPOSITION, "inline".to_owned()),
        (header::CACHE_CONTROL, "private".to_owned()),
        (header::ETAG, format!("\"{}\"", a.sha256)),
    ];
    (headers, Body::from_stream(bytes.into_stream())).into_response()
}
