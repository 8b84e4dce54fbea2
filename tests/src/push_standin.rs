//! Local stand-ins for Firebase Cloud Messaging and APNs, for the push transport tests.
//!
//! They are real HTTP servers on `127.0.0.1:0` (axum: HTTP/1.1, and HTTP/2 with prior
//! knowledge), record every request as it arrived, verify the credentials cryptographically
//! (a wrong signature, issuer, audience or key id is refused and noted in
//! `verification_failures`) and answer from per-device-token scripts, falling back to success.
//!
//! Layout: [`TestKeys`] (throw-away RSA service account and P-256 .p8 key in a temp dir),
//! [`Recorded`] (one request), [`Reply`] (a scripted answer), [`StandIn`] (a running server:
//! requests, scripts, failures), [`FcmStandIn`] (OAuth token endpoint + `messages:send`),
//! [`ApnsStandIn`] (`/3/device/{token}`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The Google project of the test service account.
pub const FCM_PROJECT: &str = "sparkwatch-test";
/// The test service account.
pub const FCM_CLIENT_EMAIL: &str = "push@sparkwatch-test.iam.gserviceaccount.com";
/// The `private_key_id` of the test service account (sent as the assertion's `kid`).
pub const FCM_KEY_ID: &str = "0123456789abcdef";
/// The scope FCM HTTP v1 needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Key ID of the test .p8 key.
pub const APNS_KEY_ID: &str = "ABC123DEFG";
/// Team ID of the test developer account.
pub const APNS_TEAM_ID: &str = "TEAM123456";

/// Throw-away keys, generated per test, with the key files in a temp dir.
pub struct TestKeys {
    /// Where the key files are written.
    pub dir: tempfile::TempDir,
    /// The .p8 file (PKCS#8 P-256 private key).
    pub apns_key_file: PathBuf,
    rsa_private_pem: String,
    rsa_public_pem: String,
    ec_public_pem: String,
}

impl TestKeys {
    /// An RSA-2048 service-account key (one per test process) and a new P-256 APNs key.
    pub fn generate() -> anyhow::Result<TestKeys> {
        let (rsa_private_pem, rsa_public_pem) = rsa_key()?;
        let ec = p256::SecretKey::random(&mut rand::thread_rng());
        let ec_private_pem = ec.to_pkcs8_pem(LineEnding::LF)?.to_string();
        let ec_public_pem = ec.public_key().to_public_key_pem(LineEnding::LF)?;
        let dir = tempfile::tempdir()?;
        let apns_key_file = dir.path().join(format!("AuthKey_{APNS_KEY_ID}.p8"));
        std::fs::write(&apns_key_file, ec_private_pem)?;
        Ok(TestKeys { dir, apns_key_file, rsa_private_pem, rsa_public_pem, ec_public_pem })
    }

    /// Writes a service-account key file whose `token_uri` is `token_uri` and returns its path.
    pub fn write_fcm_credentials(&self, token_uri: &str) -> anyhow::Result<PathBuf> {
        let key = json!({
            "type": "service_account",
            "project_id": FCM_PROJECT,
            "private_key_id": FCM_KEY_ID,
            "private_key": self.rsa_private_pem,
            "client_email": FCM_CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "universe_domain": "googleapis.com",
        });
        let path = self.dir.path().join("service-account.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&key)?)?;
        Ok(path)
    }

    /// The service account's private key (PKCS#8 PEM), for building broken key files.
    pub fn rsa_private_pem(&self) -> &str {
        &self.rsa_private_pem
    }
}

/// The service-account key pair (private, public PEM). Generating an RSA key takes seconds
/// in an unoptimised build, so the tests of one process share one; the lock makes tests that
/// start together wait for it instead of each generating their own.
fn rsa_key() -> anyhow::Result<(String, String)> {
    static KEY: Mutex<Option<(String, String)>> = Mutex::new(None);
    let mut slot = lock(&KEY);
    if let Some(pair) = slot.as_ref() {
        return Ok(pair.clone());
    }
    let rsa = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
    let pair = (rsa.to_pkcs8_pem(LineEnding::LF)?.to_string(), rsa.to_public_key().to_public_key_pem(LineEnding::LF)?);
    *slot = Some(pair.clone());
    Ok(pair)
}

/// One request as a stand-in received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// HTTP version the client spoke.
    pub version: Version,
    /// Request headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Vec<u8>,
    /// When it arrived (wall clock, for latency measurements).
    pub received_at: std::time::SystemTime,
}

impl Recorded {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as an `application/x-www-form-urlencoded` map.
    pub fn form(&self) -> HashMap<String, String> {
        // `query_pairs` decodes exactly this format (`+`, `%XX`).
        let query = String::from_utf8_lossy(&self.body);
        reqwest::Url::parse(&format!("http://form.invalid/?{query}"))
            .map(|url| url.query_pairs().into_owned().collect())
            .unwrap_or_default()
    }
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: String,
}

impl Reply {
    /// An answer with any body.
    pub fn raw(status: u16, content_type: &'static str, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: vec![(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body: body.to_owned(),
        }
    }

    /// Google's error format (`google.rpc.Status`), with an FCM error code in `details` when given.
    pub fn fcm_error(status: u16, google_status: &str, error_code: Option<&str>, message: &str) -> Reply {
        let details: Vec<Value> = error_code
            .map(|code| json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}))
            .into_iter()
            .collect();
        let body = json!({"error": {"code": status, "message": message, "status": google_status, "details": details}});
        Reply::raw(status, "application/json; charset=UTF-8", &body.to_string())
    }

    /// Apple's error format.
    pub fn apns_error(status: u16, reason: &str) -> Reply {
        Reply::raw(status, "application/json", &json!({"reason": reason}).to_string())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// What both stand-ins keep: the requests, the scripts and the verification failures.
#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Recorded>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    failures: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    async fn record(&self, request: Request) -> Recorded {
        let received_at = std::time::SystemTime::now();
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default();
        let recorded = Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            version: parts.version,
            headers: parts.headers,
            body,
            received_at,
        };
        lock(&self.requests).push(recorded.clone());
        recorded
    }

    fn scripted(&self, key: &str) -> Option<Reply> {
        lock(&self.scripts).get_mut(key).and_then(VecDeque::pop_front)
    }

    fn script(&self, key: &str, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.scripts).entry(key.to_owned()).or_default().extend(replies);
    }

    fn fail(&self, what: String) {
        lock(&self.failures).push(what);
    }
}

/// A listener on `127.0.0.1:0` and its `http://127.0.0.1:PORT`.
async fn bind() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    Ok((listener, base))
}

/// Serves `router` (HTTP/1.1, and HTTP/2 with prior knowledge) until aborted.
fn spawn(listener: TcpListener, router: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    })
}

/// A running stand-in: what is common to both, around the provider's own state `S`.
pub struct StandIn<S> {
    /// Base URL for `--fcm-base-url` / `--apns-base-url`.
    pub base_url: String,
    log: Arc<Log>,
    state: Arc<S>,
    task: JoinHandle<()>,
}

impl<S> StandIn<S> {
    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.log.requests).clone()
    }

    /// Answers the next sends to `device_token` with `replies`, in order.
    pub fn script(&self, device_token: &str, replies: impl IntoIterator<Item = Reply>) {
        self.log.script(device_token, replies);
    }

    /// Credentials that failed verification, with the reason.
    pub fn verification_failures(&self) -> Vec<String> {
        lock(&self.log.failures).clone()
    }
}

impl<S> Drop for StandIn<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The FCM stand-in: `POST /token` (OAuth2 JWT-bearer grant) and
/// `POST /v1/projects/{project}/messages:send`.
pub type FcmStandIn = StandIn<FcmState>;

/// What the FCM stand-in keeps besides the common log.
pub struct FcmState {
    log: Arc<Log>,
    token_url: String,
    public_key: DecodingKey,
    issued: AtomicU64,
    expires_in: AtomicU64,
    /// Access tokens `messages:send` accepts.
    valid: Mutex<HashSet<String>>,
    token_delay: Duration,
}

/// The claims Google requires in the assertion.
#[derive(Deserialize)]
struct AssertionClaims {
    scope: String,
    iat: i64,
    exp: i64,
}

impl FcmStandIn {
    /// Starts a stand-in trusting the service account of `keys`.
    pub async fn start(keys: &TestKeys) -> anyhow::Result<FcmStandIn> {
        let (listener, base_url) = bind().await?;
        let log = Arc::new(Log::default());
        let state = Arc::new(FcmState {
            log: log.clone(),
            token_url: format!("{base_url}/token"),
            public_key: DecodingKey::from_rsa_pem(keys.rsa_public_pem.as_bytes()).context("test RSA public key")?,
            issued: AtomicU64::new(0),
            expires_in: AtomicU64::new(3600),
            valid: Mutex::default(),
            // Long enough that concurrent senders all arrive while the first refresh runs.
            token_delay: Duration::from_millis(100),
        });
        let task = spawn(listener, Router::new().fallback(fcm_handle).with_state(state.clone()));
        Ok(StandIn { base_url, log, state, task })
    }

    /// Token endpoint URL (`token_uri` / `--fcm-token-url`).
    pub fn token_url(&self) -> &str {
        &self.state.token_url
    }

    /// The token requests so far.
    pub fn token_requests(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == "/token").collect()
    }

    /// The `messages:send` requests so far.
    pub fn send_requests(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path != "/token").collect()
    }

    /// Answers the next token requests with `replies`, in order.
    pub fn script_token_endpoint(&self, replies: impl IntoIterator<Item = Reply>) {
        self.log.script("/token", replies);
    }

    /// The `expires_in` of access tokens issued from now on.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// Makes every access token issued so far invalid (`messages:send` answers 401).
    pub fn revoke_issued_tokens(&self) {
        lock(&self.state.valid).clear();
    }
}

async fn fcm_handle(State(state): State<Arc<FcmState>>, request: Request) -> Response {
    let recorded = state.log.record(request).await;
    if recorded.path == "/token" {
        tokio::time::sleep(state.token_delay).await;
        if let Some(reply) = state.log.scripted("/token") {
            return reply.into_response();
        }
        return match verify_assertion(&state, &recorded) {
            Ok(()) => {
                let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("ya29.standin-{n}");
                lock(&state.valid).insert(token.clone());
                let expires_in = state.expires_in.load(Ordering::SeqCst);
                axum::Json(json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}))
                    .into_response()
            }
            Err(why) => {
                state.log.fail(format!("token request: {why}"));
                Reply::raw(
                    400,
                    "application/json",
                    &json!({"error": "invalid_grant", "error_description": why}).to_string(),
                )
                .into_response()
            }
        };
    }
    if recorded.method != "POST" || recorded.path != format!("/v1/projects/{FCM_PROJECT}/messages:send") {
        return Reply::raw(404, "text/html", "<html><body>Not Found</body></html>").into_response();
    }
    let bearer = recorded.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
    if !lock(&state.valid).contains(bearer) {
        return Reply::fcm_error(
            401,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        )
        .into_response();
    }
    let device_token = recorded.json()["message"]["token"].as_str().unwrap_or_default().to_owned();
    if let Some(reply) = state.log.scripted(&device_token) {
        return reply.into_response();
    }
    let n = lock(&state.log.requests).len();
    axum::Json(json!({"name": format!("projects/{FCM_PROJECT}/messages/0:{n}")})).into_response()
}

/// Checks a token request the way Google does: grant type, RS256 signature with the
/// service account's key, issuer, audience, scope, lifetime and key id.
fn verify_assertion(state: &FcmState, recorded: &Recorded) -> Result<(), String> {
    let form = recorded.form();
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Err(format!("wrong grant_type {:?}", form.get("grant_type")));
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| format!("bad JWT header: {e}"))?;
    if header.kid.as_deref() != Some(FCM_KEY_ID) {
        return Err(format!("kid is {:?}, not the key's private_key_id", header.kid));
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&state.token_url]);
    validation.set_issuer(&[FCM_CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &state.public_key, &validation)
        .map_err(|e| format!("assertion rejected: {e}"))?
        .claims;
    if claims.scope != FCM_SCOPE {
        return Err(format!("scope is {}", claims.scope));
    }
    if claims.exp - claims.iat != 3600 {
        return Err(format!("lifetime is {} s, not 3600", claims.exp - claims.iat));
    }
    Ok(())
}

/// The APNs stand-in: `POST /3/device/{token}`.
pub type ApnsStandIn = StandIn<ApnsState>;

/// What the APNs stand-in keeps besides the common log.
pub struct ApnsState {
    log: Arc<Log>,
    public_key: DecodingKey,
    /// Provider tokens issued before this Unix time are answered with `ExpiredProviderToken`.
    expired_before: AtomicU64,
}

#[derive(Deserialize)]
struct ProviderClaims {
    iat: i64,
}

impl ApnsStandIn {
    /// Starts a stand-in trusting the .p8 key of `keys`.
    pub async fn start(keys: &TestKeys) -> anyhow::Result<ApnsStandIn> {
        let log = Arc::new(Log::default());
        let state = Arc::new(ApnsState {
            log: log.clone(),
            public_key: DecodingKey::from_ec_pem(keys.ec_public_pem.as_bytes()).context("test EC public key")?,
            expired_before: AtomicU64::new(0),
        });
        let (listener, base_url) = bind().await?;
        let task = spawn(listener, Router::new().fallback(apns_handle).with_state(state.clone()));
        Ok(StandIn { base_url, log, state, task })
    }

    /// From now on, provider tokens issued (`iat`) before `unix_seconds` are expired.
    pub fn expire_tokens_issued_before(&self, unix_seconds: u64) {
        self.state.expired_before.store(unix_seconds, Ordering::SeqCst);
    }
}

async fn apns_handle(State(state): State<Arc<ApnsState>>, request: Request) -> Response {
    let recorded = state.log.record(request).await;
    let Some(device_token) = recorded.path.strip_prefix("/3/device/").map(str::to_owned) else {
        return Reply::apns_error(404, "BadPath").into_response();
    };
    if recorded.method != "POST" {
        return Reply::apns_error(405, "MethodNotAllowed").into_response();
    }
    let iat = match verify_provider_token(&state, &recorded) {
        Ok(iat) => iat,
        Err(why) => {
            state.log.fail(format!("provider token: {why}"));
            return Reply::apns_error(403, "InvalidProviderToken").into_response();
        }
    };
    if iat < state.expired_before.load(Ordering::SeqCst) as i64 {
        return Reply::apns_error(403, "ExpiredProviderToken").into_response();
    }
    if let Some(reply) = state.log.scripted(&device_token) {
        return reply.into_response();
    }
    let id = uuid::Uuid::now_v7().hyphenated().to_string().to_uppercase();
    Reply::raw(200, "application/json", "").with_header("apns-id", &id).into_response()
}

/// Checks the bearer the way APNs does: ES256 with the team's key, `kid` = key id, issuer =
/// team id, issued within the last hour. Returns `iat`.
fn verify_provider_token(state: &ApnsState, recorded: &Recorded) -> Result<i64, String> {
    let jwt = recorded
        .header("authorization")
        .and_then(|v| v.strip_prefix("bearer "))
        .ok_or("authorization is not `bearer <token>`")?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("bad JWT header: {e}"))?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(APNS_KEY_ID) {
        return Err(format!("header is alg {:?} kid {:?}", header.alg, header.kid));
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss"]);
    validation.set_issuer(&[APNS_TEAM_ID]);
    let claims = jsonwebtoken::decode::<ProviderClaims>(jwt, &state.public_key, &validation)
        .map_err(|e| format!("provider token rejected: {e}"))?
        .claims;
    let age = chrono::Utc::now().timestamp() - claims.iat;
    if !(-60..3600).contains(&age) {
        return Err(format!("iat is {age} s old"));
    }
    Ok(claims.iat)
}
