//! Push notifications end to end: phones register over GraphQL, alarms ingested by the real
//! pipeline reach the local FCM (HTTP v1) and APNs (HTTP/2) stand-ins with the right headers
//! and payloads, nobody outside the scope or tenant is told, bad tokens are pruned, 429s are
//! retried after `Retry-After`, quiet hours hold back all but alarms, signing out removes
//! the phone, and unacknowledged alarms escalate on a test-controlled clock. SQLite always,
//! PostgreSQL when configured.

use std::sync::Arc;

use sea_orm::{EntityTrait, PaginatorTrait};

use chrono::Utc;
use serde_json::{Value, json};
use sparkwatch_api::config::PushSettings;
use sparkwatch_api::service::{Clock, ManualClock};
use sparkwatch_tests::push_standin::{APNS_KEY_ID, APNS_TEAM_ID, ApnsStandIn, FcmStandIn, Recorded, Reply, TestKeys};
use sparkwatch_tests::{Backend, Feeder, Gql, Options, TestServer, after_job_passes, backends, eventually, fast_jobs};

const REGISTER: &str =
    "mutation($i: RegisterPushTokenInput!) { registerPushToken(input: $i) { id platform tokenTail locale } }";
const LOG: &str = "query($f: NotificationFilter) { notifications(filter: $f, first: 100) { totalCount edges { node { userId platform status attempts title body reason hazardId lastError } } } }";

/// Stand-ins for both providers and the settings that point the server at them.
struct Providers {
    _keys: TestKeys,
    fcm: FcmStandIn,
    apns: ApnsStandIn,
    settings: PushSettings,
}

impl Providers {
    async fn start() -> anyhow::Result<Providers> {
        let keys = TestKeys::generate()?;
        let fcm = FcmStandIn::start(&keys).await?;
        let apns = ApnsStandIn::start(&keys).await?;
        let settings = PushSettings {
            fcm_credentials: Some(keys.write_fcm_credentials(fcm.token_url())?),
            fcm_base_url: Some(fcm.base_url.clone()),
            apns_key_file: Some(keys.apns_key_file.clone()),
            apns_key_id: Some(APNS_KEY_ID.to_owned()),
            apns_team_id: Some(APNS_TEAM_ID.to_owned()),
            apns_base_url: Some(apns.base_url.clone()),
            ..Default::default()
        };
        Ok(Providers { _keys: keys, fcm, apns, settings })
    }

    /// FCM sends to `token` so far.
    fn fcm_to(&self, token: &str) -> Vec<Recorded> {
        self.fcm.send_requests().into_iter().filter(|r| r.json()["message"]["token"] == token).collect()
    }

    /// APNs sends to `token` so far.
    fn apns_to(&self, token: &str) -> Vec<Recorded> {
        self.apns.requests().into_iter().filter(|r| r.path.ends_with(&format!("/3/device/{token}"))).collect()
    }
}

/// Stand-ins, a test clock, and server options using both with fast background jobs.
async fn clocked() -> anyhow::Result<(Providers, Arc<ManualClock>, Options)> {
    let providers = Providers::start().await?;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let opts = Options {
        push: Some(providers.settings.clone()),
        clock: clock.clone(),
        jobs: fast_jobs(),
        ..Options::default()
    };
    Ok((providers, clock, opts))
}

async fn register(gql: &Gql, platform: &str, token: &str, locale: Option<&str>) -> anyhow::Result<Value> {
    let mut input = json!({"platform": platform, "token": token, "appId": "com.example.sparkwatch"});
    if let Some(l) = locale {
        input["locale"] = json!(l);
    }
    Ok(gql.ok(REGISTER, json!({"i": input})).await?["registerPushToken"].clone())
}

/// Two over-threshold readings 6 s apart (device time): past the 5 s delay, one alarm.
async fn leak_alarm(feed: &mut Feeder, serial: &str, addr: u8, at: chrono::DateTime<Utc>) -> anyhow::Result<()> {
    let topic = format!("sw/{serial}/telemetry");
    for (s, ma) in [(0, 450.0), (6, 480.0)] {
        let ts = (at + chrono::Duration::seconds(s)).timestamp_millis();
        feed.send(&topic, &json!({"ts": ts, "detectors": [{"addr": addr, "leak": [ma]}]}).to_string()).await;
    }
    feed.settle().await
}

fn hex_token(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

#[tokio::test]
async fn an_alarm_reaches_the_managers_phones_and_nobody_else() -> anyhow::Result<()> {
    for backend in backends() {
        let providers = Providers::start().await?;
        let opts = Options { push: Some(providers.settings.clone()), jobs: fast_jobs(), ..Options::default() };
        let server = TestServer::start_opts(&backend, opts).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let mut feed = Feeder::start(&server.services);

        let manager = server.demo_login("manager@demo.local").await?;
        let android = register(&manager, "ANDROID", "fcm-token-manager-1", Some("zh-CN")).await?;
        assert_eq!(android["platform"], "ANDROID");
        assert_eq!(android["tokenTail"], "ager-1");
        let ios_token = hex_token(0xab);
        register(&manager, "IOS", &ios_token, Some("en")).await?;
        // Mall-only electrician, the admin (a supervisor) and another tenant's admin.
        register(&server.demo_login("electrician@demo.local").await?, "ANDROID", "fcm-token-electrician", None).await?;
        register(&server.demo_login("admin@demo.local").await?, "ANDROID", "fcm-token-admin", None).await?;
        register(&server.demo_login("admin@demo-b.local").await?, "ANDROID", "fcm-token-other-tenant", None).await?;

        // A school alarm: the manager is responsible for the school.
        leak_alarm(&mut feed, "SW-DEMO-0101", 1, Utc::now() - chrono::Duration::seconds(20)).await?;
        let fcm =
            eventually("the FCM send", || async { Ok(providers.fcm_to("fcm-token-manager-1").into_iter().next()) })
                .await?;
        let apns =
            eventually("the APNs send", || async { Ok(providers.apns_to(&ios_token).into_iter().next()) }).await?;

        let msg = &fcm.json()["message"];
        assert_eq!(msg["notification"]["title"], "【电气报警】No. 3 Primary School", "{msg}");
        let body = msg["notification"]["body"].as_str().unwrap_or_default();
        assert!(body.starts_with("剩余电流报警：480 mA（设定值 300 mA）"), "{body}");
        assert!(body.contains("Teaching building"), "{body}");
        assert_eq!(msg["android"]["priority"], "HIGH");
        assert_eq!(msg["data"]["eventKind"], "LEAK_ALARM");
        let hazard_id = msg["data"]["hazardId"].as_str().unwrap_or_default().to_owned();
        assert!(!hazard_id.is_empty(), "{msg}");
        assert_eq!(msg["android"]["collapse_key"], hazard_id);
        assert!(fcm.header("authorization").is_some_and(|a| a.starts_with("Bearer ")));

        assert_eq!(apns.version, axum::http::Version::HTTP_2);
        assert_eq!(apns.header("apns-topic"), Some("com.example.sparkwatch"));
        assert_eq!(apns.header("apns-push-type"), Some("alert"));
        assert_eq!(apns.header("apns-priority"), Some("10"));
        assert_eq!(apns.header("apns-collapse-id"), Some(hazard_id.as_str()));
        let aps = apns.json();
        assert_eq!(aps["aps"]["alert"]["title"], "ELECTRICAL ALARM · No. 3 Primary School", "{aps}");
        assert_eq!(aps["hazardId"], hazard_id.as_str());
        assert!(aps["aps"]["thread-id"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(providers.fcm.verification_failures().is_empty() && providers.apns.verification_failures().is_empty());

        // Nobody else: the electrician is not assigned to the school; the admin hears only
        // when nobody responsible would, or on escalation; the other tenant never.
        // Routing queued every recipient's row at once: two more delivery passes would have
        // sent any other row.
        after_job_passes(&server, &["push_delivery"], 2).await?;
        for token in ["fcm-token-electrician", "fcm-token-admin", "fcm-token-other-tenant"] {
            assert!(providers.fcm_to(token).is_empty(), "{token} was notified");
        }

        // The delivery log (admins) and the hazard's first push request.
        let admin = server.demo_login("admin@demo.local").await?;
        let log = admin.ok(LOG, json!({"f": {"hazardId": hazard_id}})).await?;
        let nodes: Vec<Value> =
            log["notifications"]["edges"].as_array().into_iter().flatten().map(|e| e["node"].clone()).collect();
        assert_eq!(nodes.len(), 2, "{log}");
        assert!(nodes.iter().all(|n| n["status"] == "SENT" && n["reason"] == "event"), "{log}");
        let other = server.demo_login("admin@demo-b.local").await?;
        assert_eq!(other.ok(LOG, json!({"f": {"hazardId": hazard_id}})).await?["notifications"]["totalCount"], 0);
        assert_eq!(manager.code(LOG, json!({})).await?, "FORBIDDEN");
        let first_push = sparkwatch_entity::hazard::Entity::find_by_id(hazard_id.parse::<uuid::Uuid>()?)
            .one(server.services.store().db())
            .await?
            .and_then(|h| h.first_push_at);
        assert!(first_push.is_some(), "first_push_at was not stamped");
    }
    Ok(())
}

#[tokio::test]
async fn bad_tokens_are_pruned_and_throttling_is_retried() -> anyhow::Result<()> {
    let providers = Providers::start().await?;
    let opts = Options { push: Some(providers.settings.clone()), jobs: fast_jobs(), ..Options::default() };
    let server = TestServer::start_opts(&Backend::Sqlite, opts).await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    let mut feed = Feeder::start(&server.services);
    let manager = server.demo_login("manager@demo.local").await?;
    let gone = hex_token(0x41);
    register(&manager, "IOS", &gone, None).await?;
    register(&manager, "ANDROID", "fcm-unregistered", None).await?;
    register(&manager, "ANDROID", "fcm-throttled", None).await?;
    providers.apns.script(&gone, [Reply::apns_error(410, "Unregistered")]);
    providers.fcm.script("fcm-unregistered", [Reply::fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"), "gone")]);
    providers.fcm.script(
        "fcm-throttled",
        [Reply::fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), "slow down")
            .with_header("retry-after", "1")],
    );
    leak_alarm(&mut feed, "SW-DEMO-0001", 1, Utc::now() - chrono::Duration::seconds(20)).await?;

    // The throttled one is tried again after Retry-After and then accepted.
    let retried = eventually("the retry", || async {
        Ok({
            let sends = providers.fcm_to("fcm-throttled");
            (sends.len() >= 2).then_some(sends)
        })
    })
    .await?;
    assert_eq!(retried.len(), 2);
    let admin = server.demo_login("admin@demo.local").await?;
    let log = eventually_gql(&admin, |log| {
        let nodes = nodes(log);
        (nodes.len() == 3 && nodes.iter().all(|n| n["status"] != "QUEUED")).then_some(nodes)
    })
    .await?;
    let status_of = |platform: &str, status: &str| {
        log.iter().filter(|n| n["platform"] == platform && n["status"] == status).count()
    };
    assert_eq!(status_of("IOS", "INVALID_TOKEN"), 1, "{log:?}");
    assert_eq!(status_of("ANDROID", "INVALID_TOKEN"), 1, "{log:?}");
    assert!(log.iter().any(|n| n["status"] == "SENT" && n["attempts"] == 2), "{log:?}");
    // Both invalid tokens are gone; the good one stays.
    let left = manager.ok("{ pushTokens { tokenTail } }", json!({})).await?;
    assert_eq!(left["pushTokens"], json!([{"tokenTail": "ottled"}]), "{left}");
    Ok(())
}

fn nodes(log: &Value) -> Vec<Value> {
    log["notifications"]["edges"].as_array().into_iter().flatten().map(|e| e["node"].clone()).collect()
}

/// Waits until the delivery log satisfies `check`.
async fn eventually_gql<T>(admin: &Gql, check: impl Fn(&Value) -> Option<T>) -> anyhow::Result<T> {
    eventually("the delivery log", || async { Ok(check(&admin.ok(LOG, json!({})).await?)) }).await
}

#[tokio::test]
async fn quiet_hours_hold_back_all_but_alarms_and_logout_removes_the_phone() -> anyhow::Result<()> {
    let providers = Providers::start().await?;
    let opts = Options { push: Some(providers.settings.clone()), jobs: fast_jobs(), ..Options::default() };
    let server = TestServer::start_opts(&Backend::Sqlite, opts).await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    let mut feed = Feeder::start(&server.services);
    let login = server
        .anonymous()
        .ok(
            "mutation { login(input: {login: \"manager@demo.local\", password: \"sparkwatch-demo\"}) { accessToken refreshToken } }",
            json!({}),
        )
        .await?;
    let manager = server.anonymous().with_token(login["login"]["accessToken"].as_str().unwrap_or_default());
    register(&manager, "ANDROID", "fcm-quiet", Some("en")).await?;
    // Quiet all day long (UTC+0: from this minute to the one before it), faults wanted.
    let now = Utc::now();
    let hhmm = |t: chrono::DateTime<Utc>| t.format("%H:%M").to_string();
    let prefs = manager
        .ok(
            "mutation($i: NotificationPreferencesInput!) { updateNotificationPreferences(input: $i) { categories minSeverity quietHours { start end } utcOffsetMinutes } }",
            json!({"i": {"categories": ["FAULT", "PRE_ALARM"], "minSeverity": "WARNING",
                "quietHours": {"start": hhmm(now - chrono::Duration::minutes(1)), "end": hhmm(now - chrono::Duration::minutes(2))},
                "utcOffsetMinutes": 0}}),
        )
        .await?;
    assert_eq!(prefs["updateNotificationPreferences"]["minSeverity"], "WARNING");
    assert_eq!(
        manager.code("mutation { updateNotificationPreferences(input: {categories: [], minSeverity: INFO, quietHours: {start: \"25:00\", end: \"07:00\"}, utcOffsetMinutes: 0}) { minSeverity } }", json!({})).await?,
        "VALIDATION"
    );
    // A device going offline (a fault) is held back; an alarm is not.
    let normal = json!({"ts": (now - chrono::Duration::seconds(40)).timestamp_millis(), "detectors": [{"addr": 1, "leak": [20.0]}]});
    feed.send("sw/SW-DEMO-0102/telemetry", &normal.to_string()).await;
    feed.send("sw/SW-DEMO-0102/status", r#"{"online": false}"#).await;
    feed.settle().await?;
    leak_alarm(&mut feed, "SW-DEMO-0102", 1, now - chrono::Duration::seconds(20)).await?;
    let sent = eventually("the alarm push", || async { Ok(providers.fcm_to("fcm-quiet").into_iter().next()) }).await?;
    assert_eq!(sent.json()["message"]["notification"]["title"], "ELECTRICAL ALARM · No. 3 Primary School");
    let admin = server.demo_login("admin@demo.local").await?;
    let log = eventually_gql(&admin, |log| {
        let n = nodes(log);
        (n.len() == 2 && n.iter().any(|x| x["status"] == "SENT")).then_some(n)
    })
    .await?;
    assert!(
        log.iter().any(|n| n["status"] == "QUIET" && n["title"] == "EQUIPMENT FAULT · No. 3 Primary School"),
        "{log:?}"
    );
    assert_eq!(providers.fcm_to("fcm-quiet").len(), 1);

    // Signing out of this phone removes its token.
    let refresh = login["login"]["refreshToken"].as_str().unwrap_or_default();
    server.anonymous().ok("mutation($r: String!) { logout(refreshToken: $r) }", json!({"r": refresh})).await?;
    let again = server.demo_login("manager@demo.local").await?;
    assert_eq!(again.ok("{ pushTokens { id } }", json!({})).await?["pushTokens"], json!([]));
    Ok(())
}

#[tokio::test]
async fn unacknowledged_alarms_escalate_until_acknowledged() -> anyhow::Result<()> {
    for backend in backends() {
        let (providers, clock, opts) = clocked().await?;
        let server = TestServer::start_opts(&backend, opts).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let mut feed = Feeder::start(&server.services);
        let admin = server.demo_login("admin@demo.local").await?;
        let manager = server.demo_login("manager@demo.local").await?;
        let policy = admin
            .ok("mutation { updateEscalationPolicy(input: {afterMinutes: 10, everyMinutes: 5}) { afterMinutes everyMinutes } }", json!({}))
            .await?;
        assert_eq!(policy["updateEscalationPolicy"], json!({"afterMinutes": 10, "everyMinutes": 5}));
        assert_eq!(
            admin
                .code(
                    "mutation { updateEscalationPolicy(input: {afterMinutes: 0, everyMinutes: 5}) { afterMinutes } }",
                    json!({})
                )
                .await?,
            "VALIDATION"
        );
        assert_eq!(
            manager
                .code(
                    "mutation { updateEscalationPolicy(input: {afterMinutes: 5, everyMinutes: 5}) { afterMinutes } }",
                    json!({})
                )
                .await?,
            "FORBIDDEN"
        );
        register(&admin, "ANDROID", "fcm-admin", Some("en")).await?;
        register(&manager, "ANDROID", "fcm-manager", Some("en")).await?;

        leak_alarm(&mut feed, "SW-DEMO-0001", 3, clock.now() - chrono::Duration::seconds(20)).await?;
        eventually("the first push", || async { Ok(providers.fcm_to("fcm-manager").into_iter().next()) }).await?;
        after_job_passes(&server, &["reminders", "push_delivery"], 2).await?;
        assert!(providers.fcm_to("fcm-admin").is_empty(), "the admin hears only on escalation");

        // 9 minutes: nothing yet. 11 minutes: the admin (and the manager again) are told.
        clock.advance(chrono::Duration::minutes(9));
        after_job_passes(&server, &["reminders", "push_delivery"], 2).await?;
        assert!(providers.fcm_to("fcm-admin").is_empty());
        clock.advance(chrono::Duration::minutes(2));
        let first =
            eventually("the escalation", || async { Ok(providers.fcm_to("fcm-admin").into_iter().next()) }).await?;
        let msg = &first.json()["message"];
        assert_eq!(msg["notification"]["title"], "UNACKNOWLEDGED 11 MIN · Riverside Mall", "{msg}");
        assert_eq!(msg["data"]["escalationLevel"], "1");
        assert_eq!(msg["android"]["priority"], "HIGH");
        let unacknowledged = |token: &str| {
            providers
                .fcm_to(token)
                .iter()
                .filter(|r| {
                    r.json()["message"]["notification"]["title"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("UNACKNOWLEDGED"))
                })
                .count()
        };
        eventually("the manager's reminder", || async { Ok((unacknowledged("fcm-manager") == 1).then_some(())) })
            .await?;

        // It repeats every 5 minutes until acknowledged.
        clock.advance(chrono::Duration::minutes(5));
        eventually("the second escalation", || async { Ok((unacknowledged("fcm-admin") == 2).then_some(())) }).await?;
        let hazard_id = msg["data"]["hazardId"].clone();
        // Time moved on by 16 minutes: sign in again (access tokens expire).
        let manager = server.demo_login("manager@demo.local").await?;
        manager
            .ok("mutation($ids: [ID!]!) { acknowledgeHazards(ids: $ids) { id } }", json!({"ids": [hazard_id]}))
            .await?;
        clock.advance(chrono::Duration::minutes(30));
        after_job_passes(&server, &["reminders", "push_delivery"], 2).await?;
        assert_eq!(unacknowledged("fcm-admin"), 2, "escalation must stop once acknowledged");
        assert_eq!(unacknowledged("fcm-manager"), 2);
    }
    Ok(())
}

#[tokio::test]
async fn two_instances_escalate_once() -> anyhow::Result<()> {
    for backend in backends() {
        let (providers, clock, opts) = clocked().await?;
        let a = TestServer::start_opts(&backend, opts.clone()).await?;
        sparkwatch_api::demo::seed(&a.services).await?;
        // Same database, same clock: both instances run the delivery and reminder jobs.
        let b = a.sibling(opts).await?;
        let mut feed = Feeder::start(&a.services);
        let admin = b.demo_login("admin@demo.local").await?;
        register(&admin, "ANDROID", "fcm-admin-twice", Some("en")).await?;
        leak_alarm(&mut feed, "SW-DEMO-0002", 2, clock.now() - chrono::Duration::seconds(20)).await?;
        // Nobody responsible for the mall has a phone, so the admin hears of the alarm itself
        // (once), and of its escalation (once).
        eventually("the alarm", || async { Ok(providers.fcm_to("fcm-admin-twice").into_iter().next()) }).await?;
        clock.advance(chrono::Duration::minutes(11));
        eventually("the escalation", || async { Ok((providers.fcm_to("fcm-admin-twice").len() >= 2).then_some(())) })
            .await?;
        // Both instances had their chance to escalate and send again.
        for server in [&a, &b] {
            after_job_passes(server, &["reminders", "push_delivery"], 2).await?;
        }
        let titles: Vec<String> = providers
            .fcm_to("fcm-admin-twice")
            .iter()
            .map(|r| r.json()["message"]["notification"]["title"].as_str().unwrap_or_default().to_owned())
            .collect();
        // (The device also went quiet for 11 minutes: its offline fault may be there too.)
        let count = |t: &str| titles.iter().filter(|x| x.as_str() == t).count();
        assert_eq!(count("ELECTRICAL ALARM · Riverside Mall"), 1, "{titles:?}");
        assert_eq!(count("UNACKNOWLEDGED 11 MIN · Riverside Mall"), 1, "{titles:?}");
    }
    Ok(())
}

/// Commits what the pipeline commits for an alarm event on SW-DEMO-0001/3 — the event and its
/// routing reminder — without the bus publish that follows: as if the recording instance
/// stopped right after the commit.
async fn recorded_alarm(
    server: &TestServer,
    clock: &ManualClock,
) -> anyhow::Result<(sparkwatch_domain::ids::TenantId, uuid::Uuid)> {
    use sea_orm::{ColumnTrait, QueryFilter};
    use sparkwatch_api::service::notify::schedule_routing;
    use sparkwatch_api::store::telemetry::{NewEvent, insert_event};
    use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
    use sparkwatch_entity::{detector, device};
    let db = server.services.store().db();
    let dev = device::Entity::find()
        .filter(device::Column::Serial.eq("SW-DEMO-0001"))
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("demo device"))?;
    let det = detector::Entity::find()
        .filter(detector::Column::DeviceId.eq(dev.id))
        .filter(detector::Column::Address.eq(3))
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("demo detector"))?;
    let tenant = TenantId::from(dev.tenant_id);
    let event = NewEvent {
        tenant,
        project: ProjectId::from(dev.project_id),
        device: DeviceId::from(dev.id),
        detector: Some(DetectorId::from(det.id)),
        episode: None,
        kind: "LEAK_ALARM",
        category: "ALARM",
        source: sparkwatch_domain::reading::EventSource::Engine,
        channel: "leak:1".into(),
        at: clock.now(),
        received_at: clock.now(),
        value: Some(512.0),
        setpoint: Some(300.0),
        remarks: None,
    };
    let tx = server.services.store().begin().await?;
    let id = insert_event(&tx, &event).await?.id;
    schedule_routing(&tx, tenant, id, clock.now()).await?;
    tx.commit().await?;
    Ok((tenant, id))
}

#[tokio::test]
async fn an_event_its_instance_did_not_route_is_routed_by_the_reminder_job_once() -> anyhow::Result<()> {
    use sea_orm::{ColumnTrait, QueryFilter};
    use sparkwatch_api::service::notify::ROUTE_EVENT;
    use sparkwatch_entity::reminder;
    for backend in backends() {
        let (providers, clock, opts) = clocked().await?;
        let server = TestServer::start_opts(&backend, opts).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let manager = server.demo_login("manager@demo.local").await?;
        register(&manager, "ANDROID", "fcm-late", Some("en")).await?;
        let db = server.services.store().db();
        let (_, id) = recorded_alarm(&server, &clock).await?;

        // Within the grace nothing happens; after it the reminder job routes the event.
        after_job_passes(&server, &["reminders", "push_delivery"], 2).await?;
        assert!(providers.fcm_to("fcm-late").is_empty(), "the recording instance has the grace period");
        clock.advance(chrono::Duration::seconds(31));
        let push =
            eventually("the late push", || async { Ok(providers.fcm_to("fcm-late").into_iter().next()) }).await?;
        let msg = &push.json()["message"];
        assert_eq!(msg["notification"]["title"], "ELECTRICAL ALARM · Riverside Mall", "{msg}");
        assert_eq!(msg["data"]["eventId"], id.to_string());

        // Routed once: the reminder is gone and nothing is sent again.
        clock.advance(chrono::Duration::minutes(2));
        after_job_passes(&server, &["reminders", "push_delivery"], 2).await?;
        assert_eq!(providers.fcm_to("fcm-late").len(), 1);
        let left = reminder::Entity::find()
            .filter(reminder::Column::Purpose.eq(ROUTE_EVENT))
            .filter(reminder::Column::SubjectId.eq(id))
            .count(db)
            .await?;
        assert_eq!(left, 0);
    }
    Ok(())
}

#[tokio::test]
async fn notifications_an_instance_queued_but_never_sent_go_out_once_after_their_lease() -> anyhow::Result<()> {
    for backend in backends() {
        let (providers, clock, opts) = clocked().await?;
        let server = TestServer::start_opts(&backend, opts).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let manager = server.demo_login("manager@demo.local").await?;
        register(&manager, "ANDROID", "fcm-orphan", Some("en")).await?;
        let (tenant, id) = recorded_alarm(&server, &clock).await?;
        // A second instance over the same database routes the event — its rows are queued
        // claimed for its own dispatcher — and stops before sending (it has no jobs at all).
        let gone = sparkwatch_api::services(&server.config, clock.clone(), Default::default()).await?;
        let db = server.services.store().db();
        let (_, view) = sparkwatch_api::store::hazards::events_by_ids(db, &[id])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the event"))?;
        assert_eq!(gone.notify_event(tenant, &view).await?, 1, "{backend:?}");
        drop(gone);

        // The running instance respects the claim, then sends once the lease has passed.
        after_job_passes(&server, &["push_delivery"], 2).await?;
        assert!(providers.fcm_to("fcm-orphan").is_empty(), "{backend:?}: still claimed");
        clock.advance(chrono::Duration::seconds(61));
        let push =
            eventually("the orphaned push", || async { Ok(providers.fcm_to("fcm-orphan").into_iter().next()) }).await?;
        assert_eq!(push.json()["message"]["data"]["eventId"], id.to_string());
        clock.advance(chrono::Duration::minutes(2));
        after_job_passes(&server, &["reminders", "push_delivery"], 2).await?;
        assert_eq!(providers.fcm_to("fcm-orphan").len(), 1, "{backend:?}: sent once");
    }
    Ok(())
}

#[tokio::test]
async fn without_credentials_pushes_are_logged_not_sent() -> anyhow::Result<()> {
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let mut feed = Feeder::start(&server.services);
    let manager = server.demo_login("manager@demo.local").await?;
    register(&manager, "ANDROID", "fcm-nowhere", None).await?;
    // Registering checks its input; API keys and platform operators have no phones.
    assert_eq!(
        manager.code(REGISTER, json!({"i": {"platform": "IOS", "token": "has spaces", "appId": "x"}})).await?,
        "VALIDATION"
    );
    leak_alarm(&mut feed, "SW-DEMO-0001", 1, Utc::now() - chrono::Duration::seconds(20)).await?;
    let admin = server.demo_login("admin@demo.local").await?;
    let log = eventually_gql(&admin, |log| {
        let n = nodes(log);
        n.iter().any(|x| x["status"] == "LOGGED").then_some(n)
    })
    .await?;
    assert_eq!(log.len(), 1, "{log:?}");
    Ok(())
}
