//! Apple Push Notification service over HTTP/2 with token-based authentication: an ES256
//! provider token signed with the team's .p8 key, shared by all senders and reused for 50
//! minutes, and one `POST /3/device/{token}` per notification.
//!
//! Layout: [`ApnsConfig`] (the checked key and ids), [`ApnsClient`] (provider token and
//! sending), `prepare` (headers and payload), and `classify` (Apple's reasons → [`PushError`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Answer, Attempt, Provider, PushError, PushMessage, PushPriority, PushReceipt, SigningKey, TIME_TO_LIVE};
use crate::config::{ConfigError, PushSettings, bad};

const FLAG: &str = "--apns-key-file";
const DEFAULT_BASE_URL: &str = "https://api.push.apple.com";
/// Apple refuses provider tokens older than an hour, and new ones more often than every 20
/// minutes (`TooManyProviderTokenUpdates`); 50 minutes is inside both.
const TOKEN_REUSE: Duration = Duration::from_secs(50 * 60);

/// A checked .p8 key with its key id and team id.
#[derive(Debug)]
pub(super) struct ApnsConfig {
    key: SigningKey,
    key_id: String,
    team_id: String,
    base_url: String,
}

/// The provider token's claims.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

impl ApnsConfig {
    /// Reads and checks `--apns-key-file` with its key and team ids; `None` when none of the
    /// three is given (log-only).
    pub(super) fn load(settings: &PushSettings) -> Result<Option<ApnsConfig>, ConfigError> {
        let (path, key_id, team_id) = match (&settings.apns_key_file, &settings.apns_key_id, &settings.apns_team_id) {
            (None, None, None) => return Ok(None),
            (None, _, _) => {
                return Err(bad(FLAG, "is required with --apns-key-id and --apns-team-id: the .p8 key they belong to"));
            }
            (Some(_), None, _) => {
                return Err(bad(
                    "--apns-key-id",
                    "is required with --apns-key-file: the 10-character Key ID of that key",
                ));
            }
            (Some(_), _, None) => {
                return Err(bad(
                    "--apns-team-id",
                    "is required with --apns-key-file: the 10-character Team ID of the developer account",
                ));
            }
            (Some(path), Some(key_id), Some(team_id)) => (path, key_id, team_id),
        };
        for (flag, value) in [("--apns-key-id", key_id), ("--apns-team-id", team_id)] {
            if value.len() != 10 || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad(
                    flag,
                    format!("`{value}` is not 10 letters and digits as shown at developer.apple.com"),
                ));
            }
        }
        let text = super::read_key_file(FLAG, path)?;
        let key = EncodingKey::from_ec_pem(text.as_bytes()).map_err(|e| {
            bad(FLAG, format!("{} is not a .p8 key (PKCS#8 EC private key in PEM): {e}", path.display()))
        })?;
        let base_url = super::http_url(
            "--apns-base-url",
            settings.apns_base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
            DEFAULT_BASE_URL,
        )?;
        let config = ApnsConfig { key: SigningKey(key), key_id: key_id.clone(), team_id: team_id.clone(), base_url };
        // A P-384 key parses as well; only signing shows it cannot make ES256 tokens.
        config.provider_token().map_err(|e| {
            bad(FLAG, format!("{} cannot sign ES256 provider tokens (it must be a P-256 key): {e}", path.display()))
        })?;
        Ok(Some(config))
    }

    /// A new provider token: header {alg, kid}, claims {iss, iat}.
    fn provider_token(&self) -> jsonwebtoken::errors::Result<String> {
        let header = Header { typ: None, kid: Some(self.key_id.clone()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, &Claims { iss: &self.team_id, iat: super::unix_now() }, &self.key.0)
    }
}

/// Sends through APNs. Clones share the HTTP/2 connection and the provider token.
#[derive(Clone)]
pub(super) struct ApnsClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ApnsConfig,
    http: reqwest::Client,
    token: Mutex<Option<ProviderToken>>,
}

struct ProviderToken {
    value: String,
    minted: Instant,
}

/// A notification ready to send, apart from the provider token.
pub(super) struct Prepared {
    url: String,
    headers: HeaderMap,
    body: Value,
}

impl ApnsClient {
    /// A client for `config`.
    pub(super) fn new(config: ApnsConfig) -> anyhow::Result<ApnsClient> {
        // APNs speaks only HTTP/2; prior knowledge also makes http:// stand-ins use it.
        let http = super::http_client(true)?;
        Ok(ApnsClient { inner: Arc::new(Inner { config, http, token: Mutex::new(None) }) })
    }

    /// The checked configuration; prints no key.
    pub(super) fn config(&self) -> &ApnsConfig {
        &self.inner.config
    }

    /// Sends one notification.
    pub(super) async fn send(&self, message: &PushMessage) -> Result<PushReceipt, PushError> {
        let prepared = self.prepare(message)?;
        super::deliver(self, &prepared).await
    }

    /// Headers and payload of `message`.
    fn prepare(&self, message: &PushMessage) -> Result<Prepared, PushError> {
        // The token becomes part of the URL path; anything but hex is not an APNs token.
        if message.token.is_empty() || !message.token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PushError::InvalidToken { reason: "an APNs device token is hexadecimal".to_owned() });
        }
        let header = |name: &'static str, value: &str| {
            let value = HeaderValue::from_str(value).map_err(|_| PushError::Rejected {
                status: 0,
                reason: format!("`{value}` cannot be sent as the {name} header"),
            })?;
            Ok::<_, PushError>((HeaderName::from_static(name), value))
        };
        let expiration = super::unix_now().saturating_add_unsigned(TIME_TO_LIVE.as_secs());
        let (priority, interruption) = match message.priority {
            PushPriority::High => ("10", Some("time-sensitive")),
            PushPriority::Normal => ("5", None),
        };
        let headers = [
            header("apns-topic", &message.app_id)?,
            header("apns-push-type", "alert")?,
            header("apns-priority", priority)?,
            header("apns-collapse-id", &super::bounded_collapse_id(&message.collapse_id))?,
            header("apns-expiration", &expiration.to_string())?,
        ];
        let mut aps = json!({
            "alert": { "title": message.title, "body": message.body },
            "sound": "default",
        });
        if let Some(thread_id) = &message.thread_id {
            aps["thread-id"] = json!(thread_id);
        }
        if let Some(level) = interruption {
            aps["interruption-level"] = json!(level);
        }
        let mut body = json!({ "aps": aps });
        for (key, value) in message.data.iter().filter(|(key, _)| *key != "aps") {
            body[key] = json!(value);
        }
        Ok(Prepared {
            url: format!("{}/3/device/{}", self.inner.config.base_url, message.token),
            headers: headers.into_iter().collect(),
            body,
        })
    }
}

impl Provider for ApnsClient {
    type Request = Prepared;

    async fn credential(&self, refused: Option<&str>) -> Result<String, PushError> {
        // Minting under the lock: signing takes well under a millisecond, and concurrent
        // senders must share one token because Apple refuses frequent changes.
        let mut slot = self.inner.token.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = slot.as_ref()
            && token.minted.elapsed() < TOKEN_REUSE
            && refused != Some(token.value.as_str())
        {
            return Ok(token.value.clone());
        }
        let value = self.inner.config.provider_token().map_err(|e| PushError::Rejected {
            status: 0,
            reason: format!("signing the APNs provider token failed: {e}"),
        })?;
        tracing::debug!("minted a new APNs provider token");
        *slot = Some(ProviderToken { value: value.clone(), minted: Instant::now() });
        Ok(value)
    }

    async fn attempt(&self, credential: &str, prepared: &Prepared) -> Result<Attempt, PushError> {
        let request = self
            .inner
            .http
            .post(&prepared.url)
            .headers(prepared.headers.clone())
            .header(AUTHORIZATION, format!("bearer {credential}"))
            .json(&prepared.body);
        let answer = Answer::fetch(request, "APNs").await?;
        if answer.status.is_success() {
            let provider_id =
                answer.headers.get("apns-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            return Ok(Attempt::Sent(PushReceipt { provider_id }));
        }
        classify(&answer)
    }
}

/// Apple's error answer.
#[derive(Deserialize)]
struct Refusal {
    reason: String,
}

/// Maps a refusal to what the caller should do, following Apple's table of reasons.
fn classify(answer: &Answer) -> Result<Attempt, PushError> {
    let status = answer.status.as_u16();
    let reason = serde_json::from_str::<Refusal>(&answer.body)
        .map(|r| r.reason)
        .unwrap_or_else(|_| format!("HTTP {status}: {}", answer.body_excerpt()));
    match (status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Err(PushError::InvalidToken { reason }),
        (403, "ExpiredProviderToken") => Ok(Attempt::RefusedCredential { status, reason }),
        _ if answer.is_retryable() => Err(answer.retryable(reason)),
        _ => Err(PushError::Rejected { status, reason }),
    }
}
