//! Firebase Cloud Messaging HTTP v1. An OAuth2 access token is obtained from the service
//! account with the JWT-bearer grant (RFC 7523), cached until a minute before it expires and
//! shared by all senders; each notification is one `POST /v1/projects/{project}/messages:send`.
//!
//! Layout: [`FcmConfig`] (the checked key file and URLs), [`FcmClient`] (token cache and
//! sending), `request_body`, and `classify` (Google's error codes → [`PushError`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Answer, Attempt, Provider, PushError, PushMessage, PushPriority, PushReceipt, SigningKey, TIME_TO_LIVE};
use crate::config::{ConfigError, PushSettings, bad};

const FLAG: &str = "--fcm-credentials";
const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";
/// Google's token endpoint, for key files that lack `token_uri`.
const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's maximum lifetime for the signed assertion.
const ASSERTION_LIFETIME_S: i64 = 3600;
/// Refresh this long before the access token expires, so none expires while a send is in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// After a failed token request, senders queued behind it get the same error for this long
/// instead of each waiting for its own timeout against an endpoint that is down.
const FAILURE_MEMORY: Duration = Duration::from_secs(2);

/// The fields of a Google service-account key file we use.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: String,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

/// A checked service account and the URLs to use it with.
#[derive(Debug)]
pub(super) struct FcmConfig {
    client_email: String,
    key_id: Option<String>,
    key: SigningKey,
    token_url: String,
    send_url: String,
}

/// The claims of the JWT-bearer assertion.
#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

impl FcmConfig {
    /// Reads and checks `--fcm-credentials`; `None` when it is not given (log-only).
    pub(super) fn load(settings: &PushSettings) -> Result<Option<FcmConfig>, ConfigError> {
        let Some(path) = &settings.fcm_credentials else { return Ok(None) };
        let text = super::read_key_file(FLAG, path)?;
        let account: ServiceAccountKey = serde_json::from_str(&text).map_err(|e| {
            bad(
                FLAG,
                format!(
                    "{} is not a service-account key (JSON with project_id, client_email, private_key): {e}",
                    path.display()
                ),
            )
        })?;
        if let Some(kind) = account.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(bad(
                FLAG,
                format!(
                    "{} is a `{kind}` file; FCM needs a service-account key \
                     (Firebase console → Project settings → Service accounts → Generate new private key)",
                    path.display()
                ),
            ));
        }
        // The project id goes into the URL path.
        if account.project_id.is_empty()
            || !account.project_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
        {
            return Err(bad(FLAG, format!("{} has no valid project_id", path.display())));
        }
        if account.client_email.is_empty() {
            return Err(bad(FLAG, format!("{} has an empty client_email", path.display())));
        }
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|e| {
            bad(FLAG, format!("the private_key in {} is not an RSA private key in PEM: {e}", path.display()))
        })?;
        let token_url = match (&settings.fcm_token_url, &account.token_uri) {
            (Some(url), _) => super::http_url("--fcm-token-url", url, DEFAULT_TOKEN_URL)?,
            (None, Some(url)) => super::http_url(FLAG, url, DEFAULT_TOKEN_URL)?,
            (None, None) => DEFAULT_TOKEN_URL.to_owned(),
        };
        let base_url = super::http_url(
            "--fcm-base-url",
            settings.fcm_base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
            DEFAULT_BASE_URL,
        )?;
        let config = FcmConfig {
            send_url: format!("{base_url}/v1/projects/{}/messages:send", account.project_id),
            client_email: account.client_email,
            key_id: account.private_key_id,
            key: SigningKey(key),
            token_url,
        };
        // Parsing the PEM does not prove the key can sign; one signature does.
        config.assertion().map_err(|e| {
            bad(FLAG, format!("the private_key in {} cannot sign RS256 assertions: {e}", path.display()))
        })?;
        Ok(Some(config))
    }

    /// A signed JWT-bearer assertion asking for the messaging scope.
    fn assertion(&self) -> jsonwebtoken::errors::Result<String> {
        let iat = super::unix_now();
        let claims = Assertion {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_url,
            iat,
            exp: iat + ASSERTION_LIFETIME_S,
        };
        let header = Header { kid: self.key_id.clone(), ..Header::new(Algorithm::RS256) };
        jsonwebtoken::encode(&header, &claims, &self.key.0)
    }
}

/// Sends through FCM. Clones share the connection pool and the access token.
#[derive(Clone)]
pub(super) struct FcmClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: FcmConfig,
    http: reqwest::Client,
    token: tokio::sync::Mutex<TokenSlot>,
}

/// The cached access token and the last failure to get one.
#[derive(Default)]
struct TokenSlot {
    current: Option<AccessToken>,
    failure: Option<(Instant, PushError)>,
}

struct AccessToken {
    value: String,
    refresh_at: Instant,
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct Granted {
    access_token: String,
    expires_in: Option<u64>,
}

/// The token endpoint's error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct GrantRefused {
    error: String,
    error_description: Option<String>,
}

impl FcmClient {
    /// A client for `config`.
    pub(super) fn new(config: FcmConfig) -> anyhow::Result<FcmClient> {
        let http = super::http_client(false)?;
        Ok(FcmClient { inner: Arc::new(Inner { config, http, token: Default::default() }) })
    }

    /// The checked configuration; prints no key.
    pub(super) fn config(&self) -> &FcmConfig {
        &self.inner.config
    }

    /// Sends one notification.
    pub(super) async fn send(&self, message: &PushMessage) -> Result<PushReceipt, PushError> {
        super::deliver(self, &request_body(message)).await
    }

    /// Asks the token endpoint for a new access token.
    async fn fetch_token(&self) -> Result<AccessToken, PushError> {
        let config = &self.inner.config;
        let asked_at = Instant::now();
        let assertion = config.assertion().map_err(|e| PushError::Rejected {
            status: 0,
            reason: format!("signing the FCM token request failed: {e}"),
        })?;
        let request =
            self.inner.http.post(&config.token_url).form(&[("grant_type", GRANT_TYPE), ("assertion", &assertion)]);
        let answer = Answer::fetch(request, "the FCM token endpoint").await?;
        if answer.status.is_success() {
            let granted: Granted = serde_json::from_str(&answer.body).map_err(|e| {
                answer.retryable(format!("the FCM token endpoint answered without an access token: {e}"))
            })?;
            tracing::debug!(expires_in = ?granted.expires_in, "fetched an FCM access token");
            let lifetime = Duration::from_secs(granted.expires_in.unwrap_or(3600));
            return Ok(AccessToken {
                value: granted.access_token,
                refresh_at: asked_at + lifetime.saturating_sub(REFRESH_MARGIN),
            });
        }
        let reason = match serde_json::from_str::<GrantRefused>(&answer.body) {
            Ok(refused) => format!("{}: {}", refused.error, refused.error_description.unwrap_or_default()),
            Err(_) => answer.body_excerpt(),
        };
        let reason = format!("the FCM token endpoint answered HTTP {}: {reason}", answer.status.as_u16());
        if answer.is_retryable() {
            Err(answer.retryable(reason))
        } else {
            Err(PushError::Rejected { status: answer.status.as_u16(), reason })
        }
    }
}

impl Provider for FcmClient {
    type Request = Value;

    async fn credential(&self, refused: Option<&str>) -> Result<String, PushError> {
        // Holding the lock across the request makes concurrent senders wait for one refresh
        // instead of each asking Google for a token.
        let mut slot = self.inner.token.lock().await;
        if let Some(token) = &slot.current
            && Instant::now() < token.refresh_at
            && refused != Some(token.value.as_str())
        {
            return Ok(token.value.clone());
        }
        if let Some((at, error)) = &slot.failure
            && at.elapsed() < FAILURE_MEMORY
        {
            return Err(error.clone());
        }
        match self.fetch_token().await {
            Ok(token) => {
                let value = token.value.clone();
                *slot = TokenSlot { current: Some(token), failure: None };
                Ok(value)
            }
            Err(error) => {
                slot.failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    async fn attempt(&self, credential: &str, body: &Value) -> Result<Attempt, PushError> {
        let request = self.inner.http.post(&self.inner.config.send_url).bearer_auth(credential).json(body);
        let answer = Answer::fetch(request, "FCM").await?;
        if answer.status.is_success() {
            // Accepted is accepted: an unreadable id must not turn into a retry and a duplicate.
            let provider_id = serde_json::from_str::<Value>(&answer.body)
                .ok()
                .and_then(|v| v["name"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Ok(Attempt::Sent(PushReceipt { provider_id }));
        }
        classify(&answer)
    }
}

/// The `messages:send` body.
fn request_body(message: &PushMessage) -> Value {
    let collapse_id = super::bounded_collapse_id(&message.collapse_id);
    let priority = match message.priority {
        PushPriority::High => "HIGH",
        PushPriority::Normal => "NORMAL",
    };
    let mut body = json!({
        "token": message.token,
        "notification": { "title": message.title, "body": message.body },
        "android": {
            "priority": priority,
            "collapse_key": collapse_id,
            "ttl": format!("{}s", TIME_TO_LIVE.as_secs()),
            "notification": { "tag": collapse_id },
        },
    });
    if !message.data.is_empty() {
        body["data"] = json!(message.data);
    }
    json!({ "message": body })
}

/// Google's error answer (`google.rpc.Status`).
#[derive(Deserialize)]
struct ErrorAnswer {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    error_code: Option<String>,
    #[serde(default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

impl GoogleError {
    /// FCM's own code (`UNREGISTERED`, `QUOTA_EXCEEDED`…), else the canonical status.
    fn code(&self) -> &str {
        self.details.iter().find_map(|d| d.error_code.as_deref()).unwrap_or(&self.status)
    }

    /// Whether an `INVALID_ARGUMENT` is about the device token rather than our payload.
    fn blames_token(&self) -> bool {
        self.message.to_ascii_lowercase().contains("registration token")
            || self.details.iter().flat_map(|d| &d.field_violations).any(|v| v.field == "message.token")
    }
}

/// Maps a refusal to what the caller should do, following Google's table of FCM error codes.
fn classify(answer: &Answer) -> Result<Attempt, PushError> {
    let status = answer.status.as_u16();
    let error = serde_json::from_str::<ErrorAnswer>(&answer.body).ok().map(|a| a.error);
    let reason = match &error {
        Some(e) => format!("{}: {}", e.code(), e.message),
        None => format!("HTTP {status}: {}", answer.body_excerpt()),
    };
    let code = error.as_ref().map_or("", GoogleError::code);
    match status {
        401 => Ok(Attempt::RefusedCredential { status, reason }),
        _ if code == "UNREGISTERED" => Err(PushError::InvalidToken { reason }),
        // Only a 404 in Google's error format: a bare 404 (a wrong --fcm-base-url behind a
        // proxy) must not make the caller delete every Android token.
        404 if error.is_some() => Err(PushError::InvalidToken { reason }),
        400 if code == "INVALID_ARGUMENT" && error.as_ref().is_some_and(GoogleError::blames_token) => {
            Err(PushError::InvalidToken { reason })
        }
        _ if answer.is_retryable() => Err(answer.retryable(reason)),
        _ => Err(PushError::Rejected { status, reason }),
    }
}
