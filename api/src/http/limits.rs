//! Limits of the HTTP surface: the `POST /graphql` body (read with a cap, never buffered
//! whole before the check), the length of a batch, the time one request may take, and the
//! connections held open ([`super::conn_limit`]). One unauthenticated client must not be
//! able to take the process down (issue 16).

use std::time::Duration;

use async_graphql::BatchRequest;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};

use super::{Refusal, status_of};
use crate::error::AppError;

/// Limits of the HTTP server (flags in README, "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest `POST /graphql` body, in bytes (`--graphql-body-max-bytes`).
    pub graphql_body_max_bytes: usize,
    /// Most operations in one batched `POST /graphql` (`--graphql-batch-max`).
    pub graphql_batch_max: usize,
    /// Longest a request may take, body included (`--request-timeout-s`); 408 after it.
    /// Not applied to attachments (large photos over slow links) or to WebSockets.
    pub request_timeout: Duration,
    /// Longest a connection may go without a request in progress (`--header-read-timeout-s`):
    /// the time to send a request head, and the wait between keep-alive requests. A client
    /// that connects and sends nothing, or trickles its head (slowloris), is closed after it.
    pub header_read_timeout: Duration,
    /// Connections held open at once (`--max-connections`).
    pub max_connections: usize,
    /// Connections held open at once from one peer address (`--max-connections-per-address`).
    pub max_connections_per_address: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            graphql_body_max_bytes: 1024 * 1024,
            graphql_batch_max: 20,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            // One address must not take the whole total cap. Many people behind one NAT
            // still fit; a load test from one machine sets its own (bench-live does).
            max_connections_per_address: 256,
        }
    }
}

/// Reads a GraphQL request (single or batch) of at most `limits.graphql_body_max_bytes`
/// bytes: the body is read through a cap and refused (413 `TOO_LARGE`) the moment it passes
/// it, so a 100 MiB upload costs at most the limit in memory. A batch longer than
/// `limits.graphql_batch_max` is refused as a whole (413 `TOO_LARGE`, field `batch`).
pub(super) async fn read_graphql(
    limits: &HttpLimits,
    headers: &HeaderMap,
    body: Body,
) -> Result<BatchRequest, Refusal> {
    let max = limits.graphql_body_max_bytes;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            AppError::TooLarge { field: "body", reason: format!("a GraphQL request may have at most {max} bytes") },
        )
    };
    // A declared length over the cap is refused before a byte of the body is read.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return Err(too_large()),
        Err(e) => return Err(status_of(AppError::invalid("body", format!("the request body could not be read: {e}")))),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request = async_graphql::http::receive_batch_body(
        content_type,
        futures_util::io::Cursor::new(bytes),
        async_graphql::http::MultipartOptions::default().max_file_size(max).max_num_files(0),
    )
    .await
    .map_err(|e| (StatusCode::BAD_REQUEST, AppError::invalid("body", e)))?;
    if let BatchRequest::Batch(operations) = &request
        && operations.len() > limits.graphql_batch_max
    {
        let reason =
            format!("{} operations sent, a batch may have at most {}", operations.len(), limits.graphql_batch_max);
        return Err((StatusCode::PAYLOAD_TOO_LARGE, AppError::TooLarge { field: "batch", reason }));
    }
    Ok(request)
}

/// Whether reading the body failed because it passed the cap (rather than a broken
/// connection).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}
