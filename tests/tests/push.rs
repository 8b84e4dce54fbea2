//! Push transport against local FCM and APNs stand-ins over real HTTP (HTTP/2 for APNs):
//! request shape, credential caching and refresh, error classification, configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::Version;
use serde_json::json;
use sparkwatch_api::config::{PushSettings, Settings};
use sparkwatch_api::push::{Push, PushError, PushMessage, PushPlatform, PushPriority};
use sparkwatch_tests::eventually;
use sparkwatch_tests::push_standin::{
    APNS_KEY_ID, APNS_TEAM_ID, ApnsStandIn, FCM_PROJECT, FcmStandIn, Reply, TestKeys,
};

fn message(platform: PushPlatform, token: &str) -> PushMessage {
    PushMessage {
        platform,
        token: token.to_owned(),
        app_id: "com.example.sparkwatch".to_owned(),
        title: "漏电报警".to_owned(),
        body: "1号楼 配电箱 L1 520 mA".to_owned(),
        collapse_id: "hazard-0191".to_owned(),
        thread_id: Some("project-7".to_owned()),
        priority: PushPriority::High,
        data: BTreeMap::from([
            ("hazardId".to_owned(), "0191".to_owned()),
            ("eventKind".to_owned(), "ALARM".to_owned()),
        ]),
    }
}

/// New keys, an FCM stand-in, and a `Push` sending through it (the token URL comes from
/// the key file's `token_uri`). The keys' temp dir lives as long as the first element.
async fn through_fcm() -> (TestKeys, FcmStandIn, Push) {
    let keys = TestKeys::generate().expect("keys");
    let fcm = FcmStandIn::start(&keys).await.expect("stand-in");
    let settings = PushSettings {
        fcm_credentials: Some(keys.write_fcm_credentials(fcm.token_url()).expect("key file")),
        fcm_base_url: Some(fcm.base_url.clone()),
        ..Default::default()
    };
    let push = Push::from_settings(&settings).expect("push");
    (keys, fcm, push)
}

/// New keys, an APNs stand-in, and a `Push` sending through it.
async fn through_apns() -> (TestKeys, ApnsStandIn, Push) {
    let keys = TestKeys::generate().expect("keys");
    let apns = ApnsStandIn::start(&keys).await.expect("stand-in");
    let settings = PushSettings {
        apns_key_file: Some(keys.apns_key_file.clone()),
        apns_key_id: Some(APNS_KEY_ID.to_owned()),
        apns_team_id: Some(APNS_TEAM_ID.to_owned()),
        apns_base_url: Some(apns.base_url.clone()),
        ..Default::default()
    };
    let push = Push::from_settings(&settings).expect("push");
    (keys, apns, push)
}

/// Sends `count` messages at once from spawned tasks, as the delivery queue does.
async fn send_concurrently(push: &Push, platform: PushPlatform, count: usize) -> Vec<Result<String, PushError>> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let push = push.clone();
            let message = message(platform, &format!("{i:04x}"));
            tokio::spawn(async move { push.send(&message).await.map(|r| r.provider_id) })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("send task"));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_sends_the_v1_request_and_shares_one_access_token() {
    let (_keys, fcm, push) = through_fcm().await;
    assert!(push.is_configured(PushPlatform::Android));
    assert!(!push.is_configured(PushPlatform::Ios));

    let receipt = push.send(&message(PushPlatform::Android, "device-a")).await.expect("sent");
    assert!(receipt.provider_id.starts_with(&format!("projects/{FCM_PROJECT}/messages/")), "{receipt:?}");

    let sends = fcm.send_requests();
    assert_eq!(sends.len(), 1);
    let send = &sends[0];
    assert_eq!(send.method, "POST");
    assert_eq!(send.path, format!("/v1/projects/{FCM_PROJECT}/messages:send"));
    assert_eq!(send.header("authorization"), Some("Bearer ya29.standin-1"));
    assert_eq!(send.header("content-type"), Some("application/json"));
    assert_eq!(
        send.json(),
        json!({"message": {
            "token": "device-a",
            "notification": {"title": "漏电报警", "body": "1号楼 配电箱 L1 520 mA"},
            "data": {"hazardId": "0191", "eventKind": "ALARM"},
            "android": {
                "priority": "HIGH",
                "collapse_key": "hazard-0191",
                "ttl": "86400s",
                "notification": {"tag": "hazard-0191"},
            },
        }})
    );
    let normal =
        PushMessage { priority: PushPriority::Normal, data: BTreeMap::new(), ..message(PushPlatform::Android, "b") };
    push.send(&normal).await.expect("sent");
    let body = fcm.send_requests()[1].json();
    assert_eq!(body["message"]["android"]["priority"], "NORMAL");
    assert!(body["message"].get("data").is_none(), "no empty data map: {body}");

    let results = send_concurrently(&push, PushPlatform::Android, 100).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let tokens = fcm.token_requests();
    assert_eq!(tokens.len(), 1, "one token for 102 sends");
    let form = tokens[0].form();
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
    assert_eq!(form["assertion"].split('.').count(), 3, "a JWT");
    assert_eq!(fcm.verification_failures(), Vec::<String>::new());
    assert!(fcm.send_requests().iter().all(|r| r.header("authorization") == Some("Bearer ya29.standin-1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_concurrent_senders_wait_for_one_token_refresh() {
    let (_keys, fcm, push) = through_fcm().await;
    // Nobody has a token yet: all 50 ask at once while the stand-in takes 100 ms to answer.
    let results = send_concurrently(&push, PushPlatform::Android, 50).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(fcm.token_requests().len(), 1);
}

#[tokio::test]
async fn fcm_token_is_refreshed_before_expiry_and_after_a_401() {
    let keys = TestKeys::generate().expect("keys");
    let fcm = FcmStandIn::start(&keys).await.expect("stand-in");
    // The token URL from the flag wins over the key file's token_uri.
    let settings = PushSettings {
        fcm_credentials: Some(keys.write_fcm_credentials("https://oauth2.googleapis.com/token").expect("key")),
        fcm_token_url: Some(fcm.token_url().to_owned()),
        fcm_base_url: Some(fcm.base_url.clone()),
        ..Default::default()
    };
    let push = Push::from_settings(&settings).expect("push");
    // Refreshed a minute before expiry: 61 s leaves one second of use.
    fcm.set_expires_in(61);
    let send = |token: &'static str| {
        let push = push.clone();
        async move { push.send(&message(PushPlatform::Android, token)).await }
    };
    send("a").await.expect("sent");
    send("b").await.expect("sent");
    assert_eq!(fcm.token_requests().len(), 1, "still valid");
    // Real time must pass the refresh point (the client reads the monotonic clock, not the
    // services' clock): a wait for a deadline of the code under test, not synchronisation.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send("c").await.expect("sent");
    assert_eq!(fcm.token_requests().len(), 2, "refreshed before expiry");

    // Google revokes the token early: one 401, a new token, the same message again.
    fcm.revoke_issued_tokens();
    fcm.set_expires_in(3600);
    send("d").await.expect("sent after refresh");
    assert_eq!(fcm.token_requests().len(), 3);
    let sends = fcm.send_requests();
    let last_two: Vec<_> = sends[sends.len() - 2..].iter().map(|r| (r.header("authorization"), r.json())).collect();
    assert_eq!(last_two[0].0, Some("Bearer ya29.standin-2"));
    assert_eq!(last_two[1].0, Some("Bearer ya29.standin-3"));
    assert_eq!(last_two[0].1, last_two[1].1, "the same message is sent again");

    // A 401 with a fresh token as well is final.
    let unauthorized =
        || Reply::fcm_error(401, "UNAUTHENTICATED", None, "Request had invalid authentication credentials.");
    fcm.script("e", [unauthorized(), unauthorized()]);
    let err = send("e").await.expect_err("401 twice");
    assert!(matches!(err, PushError::Rejected { status: 401, .. }), "{err:?}");
    assert_eq!(fcm.token_requests().len(), 4);
    assert_eq!(fcm.verification_failures(), Vec::<String>::new());
}

#[tokio::test]
async fn fcm_errors_are_classified() {
    let (_keys, fcm, push) = through_fcm().await;
    let in_two_minutes = (chrono::Utc::now() + chrono::Duration::seconds(120)).format("%a, %d %b %Y %H:%M:%S GMT");
    type Expected = fn(&PushError) -> bool;
    let cases: Vec<(&str, Reply, Expected)> = vec![
        (
            "unregistered",
            Reply::fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"), "Requested entity was not found."),
            |e| matches!(e, PushError::InvalidToken { reason } if reason.contains("UNREGISTERED")),
        ),
        ("not-found", Reply::fcm_error(404, "NOT_FOUND", None, "Requested entity was not found."), |e| {
            matches!(e, PushError::InvalidToken { .. })
        }),
        (
            "bad-token",
            Reply::fcm_error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "The registration token is not a valid FCM registration token",
            ),
            |e| matches!(e, PushError::InvalidToken { .. }),
        ),
        (
            "bad-payload",
            Reply::fcm_error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "Invalid value at 'message.data[0].value'",
            ),
            |e| matches!(e, PushError::Rejected { status: 400, reason } if reason.contains("message.data")),
        ),
        (
            "quota",
            Reply::fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), "Quota exceeded.")
                .with_header("retry-after", "30"),
            |e| matches!(e, PushError::Retryable { after: Some(d), reason } if *d == Duration::from_secs(30) && reason.contains("QUOTA_EXCEEDED")),
        ),
        (
            "unavailable",
            Reply::fcm_error(503, "UNAVAILABLE", Some("UNAVAILABLE"), "The service is currently unavailable.")
                .with_header("retry-after", &in_two_minutes.to_string()),
            |e| matches!(e, PushError::Retryable { after: Some(d), .. } if (Duration::from_secs(110)..=Duration::from_secs(120)).contains(d)),
        ),
        ("internal", Reply::fcm_error(500, "INTERNAL", Some("INTERNAL"), "Internal error encountered."), |e| {
            matches!(e, PushError::Retryable { after: None, .. })
        }),
        (
            "sender-mismatch",
            Reply::fcm_error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), "SenderId mismatch"),
            |e| matches!(e, PushError::Rejected { status: 403, reason } if reason.contains("SENDER_ID_MISMATCH")),
        ),
        (
            // Not Google's answer (a proxy's): deleting every token on it would be a disaster.
            "bare-404",
            Reply::raw(404, "text/html", "<html>Not Found</html>"),
            |e| matches!(e, PushError::Rejected { status: 404, .. }),
        ),
    ];
    for (token, reply, expected) in &cases {
        fcm.script(token, [reply.clone()]);
        let err = push.send(&message(PushPlatform::Android, token)).await.expect_err(token);
        assert!(expected(&err), "{token}: {err:?}");
    }
    assert_eq!(fcm.send_requests().len(), cases.len(), "no error is retried inside send");
}

#[tokio::test]
async fn fcm_token_endpoint_failures_are_classified() {
    let (_keys, fcm, push) = through_fcm().await;
    let refused = json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).to_string();
    fcm.script_token_endpoint([Reply::raw(400, "application/json", &refused)]);
    let err = push.send(&message(PushPlatform::Android, "a")).await.expect_err("refused grant");
    assert!(matches!(&err, PushError::Rejected { status: 400, reason } if reason.contains("invalid_grant")), "{err:?}");
    // Senders right behind a failure get it too instead of hammering the endpoint.
    let again = push.send(&message(PushPlatform::Android, "a")).await.expect_err("remembered");
    assert_eq!(again, err);
    assert_eq!(fcm.token_requests().len(), 1);
    assert!(fcm.send_requests().is_empty());

    // The failure is remembered for 2 s of real time (monotonic clock): waiting out that
    // rule of the code under test, not synchronisation.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    fcm.script_token_endpoint([Reply::raw(503, "text/plain", "busy").with_header("retry-after", "9")]);
    let err = push.send(&message(PushPlatform::Android, "a")).await.expect_err("token endpoint down");
    assert!(matches!(err, PushError::Retryable { after: Some(d), .. } if d == Duration::from_secs(9)), "{err:?}");

    // Again past the 2 s memory of the failure.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    push.send(&message(PushPlatform::Android, "a")).await.expect("recovered");
    assert_eq!(fcm.token_requests().len(), 3);
}

#[tokio::test]
async fn unreachable_providers_are_retryable() {
    let keys = TestKeys::generate().expect("keys");
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let settings = PushSettings {
        fcm_credentials: Some(keys.write_fcm_credentials(&format!("{closed}/token")).expect("key")),
        apns_base_url: Some(closed.clone()),
        apns_key_file: Some(keys.apns_key_file.clone()),
        apns_key_id: Some(APNS_KEY_ID.to_owned()),
        apns_team_id: Some(APNS_TEAM_ID.to_owned()),
        ..Default::default()
    };
    let push = Push::from_settings(&settings).expect("push");
    for platform in [PushPlatform::Android, PushPlatform::Ios] {
        let err = push.send(&message(platform, "abcd")).await.expect_err("nobody listens");
        assert!(
            matches!(&err, PushError::Retryable { after: None, reason } if reason.contains("could not be reached")),
            "{platform:?}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_sends_http2_requests_and_shares_one_provider_token() {
    let (_keys, apns, push) = through_apns().await;
    assert!(push.is_configured(PushPlatform::Ios));
    assert!(!push.is_configured(PushPlatform::Android));

    let token = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let receipt = push.send(&message(PushPlatform::Ios, token)).await.expect("sent");
    let requests = apns.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.version, Version::HTTP_2, "APNs only speaks HTTP/2");
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, format!("/3/device/{token}"));
    assert_eq!(sent.header("apns-topic"), Some("com.example.sparkwatch"));
    assert_eq!(sent.header("apns-push-type"), Some("alert"));
    assert_eq!(sent.header("apns-priority"), Some("10"));
    assert_eq!(sent.header("apns-collapse-id"), Some("hazard-0191"));
    assert!(sent.header("authorization").is_some_and(|a| a.starts_with("bearer ey")), "{:?}", sent.headers);
    let expiration: i64 = sent.header("apns-expiration").and_then(|v| v.parse().ok()).expect("apns-expiration");
    let in_a_day = chrono::Utc::now().timestamp() + 86_400;
    assert!((in_a_day - 5..=in_a_day).contains(&expiration), "{expiration}");
    assert_eq!(
        sent.json(),
        json!({
            "aps": {
                "alert": {"title": "漏电报警", "body": "1号楼 配电箱 L1 520 mA"},
                "sound": "default",
                "thread-id": "project-7",
                "interruption-level": "time-sensitive",
            },
            "hazardId": "0191",
            "eventKind": "ALARM",
        })
    );
    assert_eq!(receipt.provider_id.len(), 36, "the stand-in's apns-id (a UUID): {receipt:?}");

    let normal = PushMessage {
        priority: PushPriority::Normal,
        thread_id: None,
        collapse_id: "h".repeat(80),
        data: BTreeMap::from([("aps".to_owned(), "must not replace aps".to_owned())]),
        ..message(PushPlatform::Ios, "ff")
    };
    push.send(&normal).await.expect("sent");
    let sent = &apns.requests()[1];
    assert_eq!(sent.header("apns-priority"), Some("5"));
    assert_eq!(sent.header("apns-collapse-id").map(str::len), Some(64), "bounded to APNs' 64 bytes");
    assert_eq!(
        sent.json(),
        json!({"aps": {"alert": {"title": "漏电报警", "body": "1号楼 配电箱 L1 520 mA"}, "sound": "default"}})
    );

    let results = send_concurrently(&push, PushPlatform::Ios, 100).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let requests = apns.requests();
    assert_eq!(requests.len(), 102);
    assert!(requests.iter().all(|r| r.version == Version::HTTP_2));
    assert!(requests.iter().all(|r| r.header("authorization") == requests[0].header("authorization")), "one JWT");
    assert_eq!(apns.verification_failures(), Vec::<String>::new());
}

#[tokio::test]
async fn apns_receipt_is_the_apns_id() {
    let (_keys, apns, push) = through_apns().await;
    apns.script(
        "abc",
        [Reply::raw(200, "application/json", "").with_header("apns-id", "EC1BF194-B3B2-424A-89A9-5A918A6E6B5D")],
    );
    let receipt = push.send(&message(PushPlatform::Ios, "abc")).await.expect("sent");
    assert_eq!(receipt.provider_id, "EC1BF194-B3B2-424A-89A9-5A918A6E6B5D");
}

#[tokio::test]
async fn apns_expired_provider_token_is_replaced_once() {
    let (_keys, apns, push) = through_apns().await;
    push.send(&message(PushPlatform::Ios, "01")).await.expect("sent");
    // A new token needs a later `iat`; wait for the next second, then expire the old one.
    let started = chrono::Utc::now().timestamp();
    eventually("the next second", || async { Ok((chrono::Utc::now().timestamp() != started).then_some(())) })
        .await
        .expect("the clock moves");
    apns.expire_tokens_issued_before(chrono::Utc::now().timestamp() as u64);
    push.send(&message(PushPlatform::Ios, "02")).await.expect("sent with a new provider token");
    let requests = apns.requests();
    assert_eq!(requests.len(), 3, "sent, refused as expired, sent again");
    let bearer = |i: usize| requests[i].header("authorization").map(str::to_owned);
    assert_eq!(bearer(0), bearer(1));
    assert_ne!(bearer(1), bearer(2));
    push.send(&message(PushPlatform::Ios, "03")).await.expect("sent");
    assert_eq!(apns.requests()[3].header("authorization").map(str::to_owned), bearer(2), "the new one is kept");

    // Refused twice: our key is not accepted, do not loop.
    let expired = || Reply::apns_error(403, "ExpiredProviderToken");
    apns.script("04", [expired(), expired()]);
    let err = push.send(&message(PushPlatform::Ios, "04")).await.expect_err("refused twice");
    assert_eq!(err, PushError::Rejected { status: 403, reason: "ExpiredProviderToken".to_owned() });
    assert_eq!(apns.requests().len(), 6);
    assert_eq!(apns.verification_failures(), Vec::<String>::new());
}

#[tokio::test]
async fn apns_errors_are_classified() {
    let (_keys, apns, push) = through_apns().await;
    let invalid = |reason: &str| PushError::InvalidToken { reason: reason.to_owned() };
    let cases = [
        ("a0", Reply::apns_error(410, "Unregistered"), invalid("Unregistered")),
        ("a1", Reply::apns_error(400, "BadDeviceToken"), invalid("BadDeviceToken")),
        ("a2", Reply::apns_error(400, "DeviceTokenNotForTopic"), invalid("DeviceTokenNotForTopic")),
        (
            "a3",
            Reply::apns_error(429, "TooManyRequests").with_header("retry-after", "5"),
            PushError::Retryable { after: Some(Duration::from_secs(5)), reason: "TooManyRequests".to_owned() },
        ),
        (
            "a4",
            Reply::apns_error(503, "ServiceUnavailable"),
            PushError::Retryable { after: None, reason: "ServiceUnavailable".to_owned() },
        ),
        (
            "a5",
            Reply::apns_error(500, "InternalServerError"),
            PushError::Retryable { after: None, reason: "InternalServerError".to_owned() },
        ),
        (
            "a6",
            Reply::apns_error(400, "BadCollapseId"),
            PushError::Rejected { status: 400, reason: "BadCollapseId".to_owned() },
        ),
        (
            "a7",
            Reply::apns_error(413, "PayloadTooLarge"),
            PushError::Rejected { status: 413, reason: "PayloadTooLarge".to_owned() },
        ),
        (
            "a8",
            Reply::apns_error(403, "InvalidProviderToken"),
            PushError::Rejected { status: 403, reason: "InvalidProviderToken".to_owned() },
        ),
        (
            "a9",
            Reply::raw(502, "text/html", "<html>\n  Bad   Gateway\n</html>"),
            PushError::Retryable { after: None, reason: "HTTP 502: <html> Bad Gateway </html>".to_owned() },
        ),
    ];
    for (token, reply, expected) in &cases {
        apns.script(token, [reply.clone()]);
        let err = push.send(&message(PushPlatform::Ios, token)).await.expect_err(token);
        assert_eq!(&err, expected, "{token}");
    }
    assert_eq!(apns.requests().len(), cases.len(), "no error is retried inside send");

    // Not hex: never a valid APNs token, and it would end up in the URL path.
    let err = push.send(&message(PushPlatform::Ios, "../../admin")).await.expect_err("not hex");
    assert!(matches!(err, PushError::InvalidToken { .. }), "{err:?}");
    assert_eq!(apns.requests().len(), cases.len(), "not sent");
}

#[tokio::test]
async fn platforms_without_credentials_are_not_configured() {
    for push in [Push::default(), Push::from_settings(&PushSettings::default()).expect("no credentials is fine")] {
        for platform in [PushPlatform::Android, PushPlatform::Ios] {
            assert!(!push.is_configured(platform));
            assert_eq!(push.send(&message(platform, "abcd")).await, Err(PushError::NotConfigured));
        }
    }
}

/// Resolves `push` through the whole configuration, as `sparkwatch serve` does.
fn resolve(push: PushSettings, dir: &std::path::Path) -> Result<sparkwatch_api::config::Config, String> {
    Settings { data_dir: Some(dir.to_owned()), jwt_secret: Some("t".repeat(40)), push, ..Default::default() }
        .resolve()
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn bad_push_settings_name_the_flag() {
    let keys = TestKeys::generate().expect("keys");
    let dir = keys.dir.path();
    let write = |name: &str, content: &str| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        path
    };
    let fcm = |path: PathBuf| PushSettings { fcm_credentials: Some(path), ..Default::default() };
    let good_fcm = keys.write_fcm_credentials("https://oauth2.googleapis.com/token").expect("key");
    let ec_pem = std::fs::read_to_string(&keys.apns_key_file).expect("p8");
    let key_json = |private_key: &str| {
        json!({"type": "service_account", "project_id": "p", "client_email": "e@p", "private_key": private_key})
            .to_string()
    };
    let apns = PushSettings {
        apns_key_file: Some(keys.apns_key_file.clone()),
        apns_key_id: Some(APNS_KEY_ID.to_owned()),
        apns_team_id: Some(APNS_TEAM_ID.to_owned()),
        ..Default::default()
    };
    let cases: Vec<(PushSettings, &str)> = vec![
        (fcm(dir.join("missing.json")), "--fcm-credentials (SPARKWATCH_FCM_CREDENTIALS): cannot read"),
        (fcm(write("not-json.json", "{")), "--fcm-credentials (SPARKWATCH_FCM_CREDENTIALS)"),
        (
            fcm(write("google-services.json", r#"{"project_info": {"project_id": "p"}, "client": []}"#)),
            "is not a service-account key",
        ),
        (fcm(write("ec-key.json", &key_json(&ec_pem))), "is not an RSA private key"),
        (fcm(write("garbage-key.json", &key_json("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))), "--fcm-credentials"),
        (
            fcm(write("user.json", &json!({"type": "authorized_user", "project_id": "p", "client_email": "e", "private_key": keys.rsa_private_pem()}).to_string())),
            "is a `authorized_user` file",
        ),
        (
            PushSettings { fcm_token_url: Some("ftp://example.com/token".into()), ..fcm(good_fcm.clone()) },
            "--fcm-token-url (SPARKWATCH_FCM_TOKEN_URL)",
        ),
        (
            PushSettings { fcm_base_url: Some("fcm.googleapis.com".into()), ..fcm(good_fcm.clone()) },
            "--fcm-base-url (SPARKWATCH_FCM_BASE_URL)",
        ),
        (PushSettings { apns_key_id: None, ..apns.clone() }, "--apns-key-id (SPARKWATCH_APNS_KEY_ID): is required"),
        (PushSettings { apns_team_id: None, ..apns.clone() }, "--apns-team-id (SPARKWATCH_APNS_TEAM_ID): is required"),
        (PushSettings { apns_key_file: None, ..apns.clone() }, "--apns-key-file (SPARKWATCH_APNS_KEY_FILE): is required"),
        (PushSettings { apns_key_id: Some("ABC".into()), ..apns.clone() }, "--apns-key-id (SPARKWATCH_APNS_KEY_ID)"),
        (PushSettings { apns_team_id: Some("TEAM-12345".into()), ..apns.clone() }, "--apns-team-id"),
        (
            PushSettings { apns_key_file: Some(write("rsa.p8", keys.rsa_private_pem())), ..apns.clone() },
            "--apns-key-file (SPARKWATCH_APNS_KEY_FILE)",
        ),
        (
            PushSettings { apns_key_file: Some(dir.join("AuthKey_missing.p8")), ..apns.clone() },
            "--apns-key-file (SPARKWATCH_APNS_KEY_FILE): cannot read",
        ),
        (
            PushSettings { apns_base_url: Some("api.push.apple.com:443".into()), ..apns.clone() },
            "--apns-base-url (SPARKWATCH_APNS_BASE_URL)",
        ),
    ];
    for (settings, expected) in cases {
        let err = resolve(settings.clone(), dir).expect_err(expected);
        assert!(err.contains(expected), "resolve: expected {expected:?} in {err}");
        let err = Push::from_settings(&settings).expect_err(expected).to_string();
        assert!(err.contains(expected), "from_settings: expected {expected:?} in {err}");
    }

    // The good ones pass, and neither the config nor the clients print key material.
    let both = PushSettings { fcm_credentials: Some(good_fcm), ..apns };
    let config = resolve(both.clone(), dir).expect("valid");
    assert_eq!(config.push, both);
    let push = Push::from_settings(&config.push).expect("valid");
    let printed = format!("{config:?} {push:?}");
    assert!(!printed.contains("PRIVATE KEY") && !printed.contains(&ec_pem[30..60]), "{printed}");
    assert!(printed.contains(APNS_KEY_ID), "{printed}");
}

#[tokio::test]
async fn push_settings_come_from_the_push_table_of_the_config_file() {
    let keys = TestKeys::generate().expect("keys");
    let dir = keys.dir.path();
    let file = dir.join("sparkwatch.toml");
    let toml = format!(
        "[push]\napns-key-file = {:?}\napns-key-id = \"{APNS_KEY_ID}\"\napns-team-id = \"{APNS_TEAM_ID}\"\n\
         apns-base-url = \"https://api.sandbox.push.apple.com\"\n",
        keys.apns_key_file
    );
    std::fs::write(&file, toml).expect("write");
    let settings = Settings {
        config: Some(file.clone()),
        data_dir: Some(dir.to_owned()),
        jwt_secret: Some("t".repeat(40)),
        // A flag wins over the file.
        push: PushSettings { apns_team_id: Some("FLAG123456".into()), ..Default::default() },
        ..Default::default()
    };
    let config = settings.clone().resolve().expect("valid");
    assert_eq!(config.push.apns_key_file.as_ref(), Some(&keys.apns_key_file));
    assert_eq!(config.push.apns_key_id.as_deref(), Some(APNS_KEY_ID));
    assert_eq!(config.push.apns_team_id.as_deref(), Some("FLAG123456"));
    assert_eq!(config.push.apns_base_url.as_deref(), Some("https://api.sandbox.push.apple.com"));
    assert!(Push::from_settings(&config.push).expect("push").is_configured(PushPlatform::Ios));

    std::fs::write(&file, "[push]\napns-keyfile = \"x\"\n").expect("write");
    let err = settings.resolve().expect_err("typo").to_string();
    assert!(err.contains("apns-keyfile"), "{err}");
}
