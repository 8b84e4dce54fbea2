//! Push-notification transport: one notification to one device token, through Firebase
//! Cloud Messaging HTTP v1 (Android) or the Apple Push Notification service (iOS), with the
//! outcome classified so the caller knows whether to drop the token, retry later or give up.
//!
//! Who is notified, queueing, retries and texts belong to the callers; this module knows
//! nothing of users or hazards. A platform without credentials answers every send with
//! [`PushError::NotConfigured`] and the caller logs the notification instead (log-only mode).
//!
//! Layout:
//! - this file — [`PushMessage`], [`PushReceipt`], [`PushError`], [`Push`] (one client per
//!   configured platform) and what both providers share: the HTTP client, reading an answer,
//!   `Retry-After`, the bounded collapse id and the "refused credential → one fresh one" rule.
//! - `fcm` — OAuth2 JWT-bearer grant with a cached access token, `messages:send`, Google's
//!   error codes.
//! - `apns` — ES256 provider token reused for 50 minutes, HTTP/2 `POST /3/device/{token}`,
//!   Apple's reasons.

mod apns;
mod fcm;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, PushSettings, bad};

/// Which provider delivers to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushPlatform {
    /// Apple devices, through APNs.
    Ios,
    /// Android devices, through FCM.
    Android,
}

/// How urgently the provider should deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushPriority {
    /// Deliver now, waking the device (alarms).
    High,
    /// Deliver when convenient for the device's battery.
    Normal,
}

/// One notification for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// The device's platform, which picks the provider.
    pub platform: PushPlatform,
    /// The device token the app registered.
    pub token: String,
    /// The app's bundle id: the APNs topic. Informational only for FCM (the service account
    /// decides the project).
    pub app_id: String,
    /// Notification title.
    pub title: String,
    /// Notification text.
    pub body: String,
    /// One per hazard, so a newer notification replaces the older one on the device
    /// (`android.collapse_key` and tag, `apns-collapse-id`). Ids over 64 bytes are replaced by
    /// their SHA-256 in hex, which still collapses equal ids.
    pub collapse_id: String,
    /// Groups notifications in the iOS notification centre (APNs `thread-id`); we pass the
    /// project id.
    pub thread_id: Option<String>,
    /// Alarms are [`PushPriority::High`].
    pub priority: PushPriority,
    /// Data for the app (hazardId, eventKind…): the FCM data map, top-level keys beside
    /// `aps` for APNs (a key named `aps` is left out).
    pub data: BTreeMap<String, String>,
}

/// A notification the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReceipt {
    /// The provider's message id: FCM's `name`, APNs' `apns-id` (empty in the unlikely case
    /// that an accepting answer carries none).
    pub provider_id: String,
}

/// Why a notification was not accepted, classified by what the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The device token is unknown, expired or belongs to another app: delete it.
    #[error("the device token is no longer valid: {reason}")]
    InvalidToken {
        /// The provider's reason.
        reason: String,
    },
    /// A temporary failure (throttling, provider outage, network, timeout): try again later,
    /// not before `after` when the provider said so.
    #[error("temporary push failure: {reason}")]
    Retryable {
        /// The provider's `Retry-After`, when it gave one.
        after: Option<Duration>,
        /// What failed.
        reason: String,
    },
    /// The provider refused this notification for good (bad payload, bad credentials):
    /// do not retry it.
    #[error("push rejected (HTTP {status}): {reason}")]
    Rejected {
        /// The provider's HTTP status; 0 when the message was refused before sending.
        status: u16,
        /// The provider's reason.
        reason: String,
    },
    /// No credentials are configured for the device's platform: log instead of sending.
    #[error("no push credentials are configured for this platform")]
    NotConfigured,
}

/// The push transport: a client for each platform that has credentials.
///
/// Cheap to clone and safe to share; hundreds of sends may be in flight at once (they are
/// multiplexed over HTTP/2 connections). `Push::default()` has no credentials at all.
#[derive(Clone, Default)]
pub struct Push {
    fcm: Option<fcm::FcmClient>,
    apns: Option<apns::ApnsClient>,
}

impl Push {
    /// Reads and checks the key files named in `settings` and builds a client for each
    /// platform that has credentials. Errors name the flag and its environment variable.
    pub fn from_settings(settings: &PushSettings) -> anyhow::Result<Push> {
        let fcm = fcm::FcmConfig::load(settings)?.map(fcm::FcmClient::new).transpose()?;
        let apns = apns::ApnsConfig::load(settings)?.map(apns::ApnsClient::new).transpose()?;
        match &fcm {
            Some(client) => tracing::info!(fcm = ?client.config(), "Android pushes go through FCM"),
            None => tracing::warn!("no --fcm-credentials: Android pushes are logged, not sent"),
        }
        match &apns {
            Some(client) => tracing::info!(apns = ?client.config(), "iOS pushes go through APNs"),
            None => tracing::warn!("no --apns-key-file: iOS pushes are logged, not sent"),
        }
        Ok(Push { fcm, apns })
    }

    /// Whether sends to `platform` reach a provider (otherwise they are only logged).
    pub fn is_configured(&self, platform: PushPlatform) -> bool {
        match platform {
            PushPlatform::Ios => self.apns.is_some(),
            PushPlatform::Android => self.fcm.is_some(),
        }
    }

    /// Sends one notification to one device.
    pub async fn send(&self, message: &PushMessage) -> Result<PushReceipt, PushError> {
        match message.platform {
            PushPlatform::Ios => match &self.apns {
                Some(client) => client.send(message).await,
                None => Err(PushError::NotConfigured),
            },
            PushPlatform::Android => match &self.fcm {
                Some(client) => client.send(message).await,
                None => Err(PushError::NotConfigured),
            },
        }
    }
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("fcm", &self.fcm.as_ref().map(fcm::FcmClient::config))
            .field("apns", &self.apns.as_ref().map(apns::ApnsClient::config))
            .finish()
    }
}

/// Checks the push settings (key files readable and valid, flags complete) without building
/// clients; `Settings::resolve` calls it so a bad key stops the start, not the first alarm.
pub(crate) fn check_settings(settings: &PushSettings) -> Result<(), ConfigError> {
    fcm::FcmConfig::load(settings)?;
    apns::ApnsConfig::load(settings)?;
    Ok(())
}

/// Establishing a connection to a provider takes longer than this only when something is wrong.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole request, answer included; a hung send must not hold up the caller's queue.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long providers keep an undelivered notification: an alarm older than a day is stale
/// (the app shows the open hazards when opened anyway).
const TIME_TO_LIVE: Duration = Duration::from_secs(86_400);
/// APNs refuses longer `apns-collapse-id`s; FCM gets the same id so both platforms agree.
const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// An HTTP client for one provider. `http2_only` speaks HTTP/2 even to `http://` URLs
/// (prior knowledge) and offers only `h2` in TLS, as APNs requires.
fn http_client(http2_only: bool) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("sparkwatch/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if http2_only { builder.http2_prior_knowledge() } else { builder }.build()
}

/// A provider's complete answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    /// Sends `request` and reads the whole answer; failing to get one is retryable.
    async fn fetch(request: reqwest::RequestBuilder, provider: &str) -> Result<Answer, PushError> {
        let unreachable = |e: reqwest::Error| PushError::Retryable {
            after: None,
            reason: format!("{provider} could not be reached: {}", error_chain(&e)),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(unreachable)?;
        Ok(Answer { status, headers, body })
    }

    /// Throttling and server errors pass; everything else is the request's fault.
    fn is_retryable(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS || self.status.is_server_error()
    }

    /// [`PushError::Retryable`] honouring the answer's `Retry-After`.
    fn retryable(&self, reason: String) -> PushError {
        PushError::Retryable { after: retry_after(&self.headers, SystemTime::now()), reason }
    }

    /// The start of the body on one line, for reasons that have nothing better.
    fn body_excerpt(&self) -> String {
        let flat = self.body.split_whitespace().collect::<Vec<_>>().join(" ");
        match flat.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &flat[..cut]),
            None => flat,
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3); a date in the past
/// means "now".
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `reqwest` errors say "error sending request"; the cause (refused, timed out, TLS) is in
/// the source chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The collapse id as sent: unchanged up to 64 bytes, else its SHA-256 in hex (64 bytes),
/// which keeps equal ids equal.
fn bounded_collapse_id(id: &str) -> Cow<'_, str> {
    if id.len() <= MAX_COLLAPSE_ID_BYTES {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("{:x}", Sha256::digest(id.as_bytes())))
    }
}

/// Seconds since the Unix epoch, for JWT `iat` claims and `apns-expiration`.
fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A private key that prints as `***`.
struct SigningKey(jsonwebtoken::EncodingKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Reads a key file named by `flag`.
fn read_key_file(flag: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| bad(flag, format!("cannot read {}: {e}", path.display())))
}

/// Checks that `url` is an `http://` or `https://` URL and drops a trailing '/'.
fn http_url(flag: &str, url: &str, example: &str) -> Result<String, ConfigError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| bad(flag, format!("`{url}` is not a URL ({e}), e.g. {example}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() || parsed.query().is_some() {
        return Err(bad(flag, format!("`{url}` must be an http:// or https:// URL without a query, e.g. {example}")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// How one attempt ended when it did not fail outright.
enum Attempt {
    /// The provider accepted the notification.
    Sent(PushReceipt),
    /// The provider refused our credential (FCM 401, APNs `ExpiredProviderToken`).
    RefusedCredential {
        /// The provider's HTTP status.
        status: u16,
        /// The provider's reason.
        reason: String,
    },
}

/// What [`deliver`] needs from a provider client.
trait Provider {
    /// A notification ready to send, apart from the credential.
    type Request;

    /// The credential to send with: the cached one, or a new one when the cached one is
    /// `refused`.
    async fn credential(&self, refused: Option<&str>) -> Result<String, PushError>;

    /// One send with `credential`.
    async fn attempt(&self, credential: &str, request: &Self::Request) -> Result<Attempt, PushError>;
}

/// Sends `request`; when the provider refuses the credential, sends once more with a fresh
/// one. A credential can be revoked or expire early on the provider's side, so one refusal
/// proves nothing; a fresh credential refused as well means ours are wrong.
async fn deliver<P: Provider>(provider: &P, request: &P::Request) -> Result<PushReceipt, PushError> {
    let first = provider.credential(None).await?;
    if let Attempt::Sent(receipt) = provider.attempt(&first, request).await? {
        return Ok(receipt);
    }
    let fresh = provider.credential(Some(&first)).await?;
    match provider.attempt(&fresh, request).await? {
        Attempt::Sent(receipt) => Ok(receipt),
        Attempt::RefusedCredential { status, reason } => Err(PushError::Rejected { status, reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let cases = [
            ("120", Some(Duration::from_secs(120))),
            (" 7 ", Some(Duration::from_secs(7))),
            ("Sun, 06 Nov 1994 08:50:07 GMT", Some(Duration::from_secs(30))),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(Duration::ZERO)),
            ("soon", None),
            ("-5", None),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().expect("header value"));
            assert_eq!(retry_after(&headers, now), expected, "{value}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn long_collapse_ids_are_hashed_to_64_bytes() {
        assert_eq!(bounded_collapse_id("hazard-1"), "hazard-1");
        let exact = "h".repeat(64);
        assert_eq!(bounded_collapse_id(&exact), exact.as_str());
        let long = "h".repeat(65);
        let hashed = bounded_collapse_id(&long);
        assert_eq!(hashed.len(), 64);
        assert_eq!(hashed, bounded_collapse_id(&long), "equal ids stay equal");
        assert_ne!(hashed, bounded_collapse_id(&"h".repeat(66)));
    }

    #[test]
    fn sends_can_run_on_spawned_tasks() {
        fn assert_send<T: Send + 'static>(_: T) {}
        let push = Push::default();
        let message = PushMessage {
            platform: PushPlatform::Ios,
            token: String::new(),
            app_id: String::new(),
            title: String::new(),
            body: String::new(),
            collapse_id: String::new(),
            thread_id: None,
            priority: PushPriority::High,
            data: BTreeMap::new(),
        };
        assert_send(async move { push.send(&message).await });
    }
}
