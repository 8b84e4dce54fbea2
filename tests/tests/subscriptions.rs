//! Subscriptions over real WebSockets (`graphql-transport-ws` and the legacy `graphql-ws`)
//! against SQLite and (when configured) PostgreSQL, fed by the real ingestion pipeline:
//! alarms reach subscribed managers and nobody outside their tenant or project scope; the
//! protocol's close codes; token expiry and deactivation end feeds; a client that stops
//! reading is dropped without delaying others; two instances fan out through Redis.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sparkwatch_api::ws::WsLimits;
use sparkwatch_tests::{Feeder, Options, TestServer, WsClient, WsEvent, backends, eventually, metric};

const WAIT: Duration = Duration::from_secs(10);

const ALARMS: &str = "subscription($p: [ID!]) { alarmEvents(projectIds: $p) { kind category channel value setpoint deviceName detectorAddress } }";
const HAZARDS: &str = "subscription { hazardChanged { id status kind occurrences peakValue } }";

fn telemetry(serial_ts: DateTime<Utc>, addr: u8, ma: f64) -> String {
    json!({"ts": serial_ts.timestamp_millis(), "detectors": [{"addr": addr, "leak": [ma]}]}).to_string()
}

/// Sends two over-threshold readings 6 s apart (device time) so the 5 s delay elapses.
async fn raise_leak_alarm(feed: &mut Feeder, serial: &str, addr: u8) -> anyhow::Result<()> {
    let t0 = Utc::now() - chrono::Duration::seconds(30);
    let topic = format!("sw/{serial}/telemetry");
    feed.send(&topic, &telemetry(t0, addr, 450.0)).await;
    feed.send(&topic, &telemetry(t0 + chrono::Duration::seconds(6), addr, 480.0)).await;
    feed.settle().await
}

/// The next `alarmEvents` event of `kind` on subscription `id` (a device coming online
/// before its first alarm is an event too).
async fn next_kind(ws: &mut WsClient, id: &str, kind: &str) -> anyhow::Result<Value> {
    loop {
        let payload = ws.next_of(id, WAIT).await?;
        if payload["data"]["alarmEvents"]["kind"] == kind {
            return Ok(payload);
        }
    }
}

/// The next `LEAK_ALARM` on subscription `id`, asserting that everything before it (and the
/// alarm itself) came from `device`. This is how the suites show that a subscriber did *not*
/// hear something: a later event it must hear is published after it on the same feed, and a
/// feed delivers in order, so the later event arriving first proves the earlier one was
/// filtered out, without waiting through a quiet period.
async fn first_alarm_is_from(ws: &mut WsClient, id: &str, device: &str) -> anyhow::Result<Value> {
    loop {
        let payload = ws.next_of(id, WAIT).await?;
        let event = &payload["data"]["alarmEvents"];
        anyhow::ensure!(event["deviceName"] == device, "expected an event of {device} first, received {payload}");
        if event["kind"] == "LEAK_ALARM" {
            return Ok(payload);
        }
    }
}

async fn token(server: &TestServer, login: &str) -> anyhow::Result<String> {
    Ok(server.demo_login(login).await?.token.unwrap_or_default())
}

#[tokio::test]
async fn alarms_reach_subscribers_in_scope_and_nobody_else() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let mut manager = WsClient::signed_in(&server, &token(&server, "manager@demo.local").await?).await?;
        manager.subscribe("a", ALARMS, json!({})).await?;
        manager.subscribe("h", HAZARDS, json!({})).await?;
        // The electrician sees only the mall; Demo B's admin sees only Demo B.
        let mut electrician = WsClient::signed_in(&server, &token(&server, "electrician@demo.local").await?).await?;
        electrician.subscribe("a", ALARMS, json!({})).await?;
        let mut other_tenant = WsClient::signed_in(&server, &token(&server, "admin@demo-b.local").await?).await?;
        other_tenant.subscribe("a", ALARMS, json!({})).await?;
        other_tenant.subscribe("h", HAZARDS, json!({})).await?;
        until_open(&server, 5).await?;

        // A school detector: the manager hears it, the mall-only electrician does not.
        raise_leak_alarm(&mut feed, "SW-DEMO-0101", 1).await?;
        let event = next_kind(&mut manager, "a", "LEAK_ALARM").await?;
        let e = &event["data"]["alarmEvents"];
        assert_eq!(e["category"], "ALARM");
        assert_eq!(e["channel"], "leak:1");
        assert_eq!(e["value"], 480.0);
        assert_eq!(e["setpoint"], 300.0);
        assert_eq!(e["deviceName"], "Teaching building");
        assert_eq!(e["detectorAddress"], 1);
        let hazard = manager.next_of("h", WAIT).await?;
        assert_eq!(hazard["data"]["hazardChanged"]["status"], "OPEN", "{hazard}");
        assert_eq!(hazard["data"]["hazardChanged"]["kind"], "LEAK_ALARM");

        // A mall detector reaches both; it is the first the electrician hears, so the school
        // alarm before it was not delivered.
        raise_leak_alarm(&mut feed, "SW-DEMO-0001", 2).await?;
        next_kind(&mut manager, "a", "LEAK_ALARM").await?;
        first_alarm_is_from(&mut electrician, "a", "Mall main distribution").await?;

        // Acknowledging the hazard over HTTP is a hazard change too.
        let id = hazard["data"]["hazardChanged"]["id"].clone();
        let gql = server.demo_login("manager@demo.local").await?;
        gql.ok("mutation($ids: [ID!]!) { acknowledgeHazards(ids: $ids) { id } }", json!({"ids": [id]})).await?;
        let mut seen = vec![id.clone()];
        loop {
            let h = manager.next_of("h", WAIT).await?;
            seen.push(h["data"]["hazardChanged"]["id"].clone());
            if h["data"]["hazardChanged"]["id"] == id {
                assert_eq!(h["data"]["hazardChanged"]["status"], "ACKNOWLEDGED");
                break;
            }
        }

        // Demo B's own alarm is the first thing its admin hears: nothing of the above leaked.
        raise_leak_alarm(&mut feed, "SW-DEMOB-0001", 1).await?;
        first_alarm_is_from(&mut other_tenant, "a", "Depot main board").await?;
        let h = other_tenant.next_of("h", WAIT).await?;
        assert!(!seen.contains(&h["data"]["hazardChanged"]["id"]), "Demo B heard Demo A's hazard: {h}");
        assert_eq!(h["data"]["hazardChanged"]["status"], "OPEN", "{h}");
    }
    Ok(())
}

#[tokio::test]
async fn project_filters_and_readings_follow_scope() -> anyhow::Result<()> {
    let server = TestServer::demo(&sparkwatch_tests::Backend::Sqlite).await?;
    let mut feed = Feeder::start(&server.services);
    let admin = server.demo_login("admin@demo.local").await?;
    let data = admin
        .ok(
            "{ detectors(first: 200) { edges { node { id address device { serial project { id name } } } } } }",
            json!({}),
        )
        .await?;
    let mut school = String::new();
    let mut mall = String::new();
    let mut school_detector = String::new();
    for edge in data["detectors"]["edges"].as_array().into_iter().flatten() {
        let node = &edge["node"];
        let project = node["device"]["project"]["id"].as_str().unwrap_or_default().to_owned();
        if node["device"]["serial"] == "SW-DEMO-0101" && node["address"] == 1 {
            school = project;
            school_detector = node["id"].as_str().unwrap_or_default().to_owned();
        } else if node["device"]["serial"] == "SW-DEMO-0001" {
            mall = project;
        }
    }
    let electrician_token = token(&server, "electrician@demo.local").await?;
    let mut electrician = WsClient::signed_in(&server, &electrician_token).await?;
    // Outside the electrician's scope: NOT_FOUND, as for queries.
    electrician
        .subscribe(
            "r",
            "subscription($d: ID!) { readings(detectorId: $d) { at leakMa } }",
            json!({"d": school_detector}),
        )
        .await?;
    match electrician.recv(WAIT).await? {
        WsEvent::Message(m) => {
            assert_eq!(m["type"], "error", "{m}");
            assert_eq!(m["payload"][0]["extensions"]["code"], "NOT_FOUND", "{m}");
        }
        other => anyhow::bail!("expected an error message, got {other:?}"),
    }
    electrician.subscribe("p", ALARMS, json!({"p": [school]})).await?;
    match electrician.recv(WAIT).await? {
        WsEvent::Message(m) => assert_eq!(m["payload"][0]["extensions"]["code"], "NOT_FOUND", "{m}"),
        other => anyhow::bail!("expected an error message, got {other:?}"),
    }

    // The admin narrows to the mall and follows a school detector's readings.
    let mut ws = WsClient::signed_in(&server, admin.token.as_deref().unwrap_or_default()).await?;
    ws.subscribe("mall", ALARMS, json!({"p": [mall]})).await?;
    ws.subscribe(
        "r",
        "subscription($d: ID!) { readings(detectorId: $d) { at leakMa } }",
        json!({"d": school_detector}),
    )
    .await?;
    until_open(&server, 2).await?;
    raise_leak_alarm(&mut feed, "SW-DEMO-0101", 1).await?;
    let r1 = ws.next_of("r", WAIT).await?;
    assert_eq!(r1["data"]["readings"]["leakMa"], json!([450.0]), "{r1}");
    let r2 = ws.next_of("r", WAIT).await?;
    assert_eq!(r2["data"]["readings"]["leakMa"], json!([480.0]));
    // The school alarm is not in the mall feed: a mall alarm raised after it comes first.
    raise_leak_alarm(&mut feed, "SW-DEMO-0001", 1).await?;
    first_alarm_is_from(&mut ws, "mall", "Mall main distribution").await?;
    Ok(())
}

#[tokio::test]
async fn protocol_close_codes() -> anyhow::Result<()> {
    let limits = WsLimits { init_timeout: Duration::from_millis(500), ..WsLimits::default() };
    let server =
        TestServer::start_opts(&sparkwatch_tests::Backend::Sqlite, Options { ws: limits, ..Options::default() })
            .await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    let good = token(&server, "admin@demo.local").await?;

    // A refused connection_init: 4403.
    let mut ws = WsClient::connect(&server, "graphql-transport-ws").await?;
    ws.send(json!({"type": "connection_init", "payload": {"authorization": "Bearer nonsense"}})).await?;
    assert_eq!(ws.closed(WAIT).await?.0, 4403);

    // Subscribing before connection_ack: 4401.
    let mut ws = WsClient::connect(&server, "graphql-transport-ws").await?;
    ws.subscribe("1", HAZARDS, json!({})).await?;
    assert_eq!(ws.closed(WAIT).await?.0, 4401);

    // No connection_init in time: 4408.
    let mut ws = WsClient::connect(&server, "graphql-transport-ws").await?;
    assert_eq!(ws.closed(WAIT).await?.0, 4408);

    // Unparseable message: 4400.
    let mut ws = WsClient::signed_in(&server, &good).await?;
    ws.send(json!({"type": "subscribe", "id": 7})).await?;
    assert_eq!(ws.closed(WAIT).await?.0, 4400);

    // A second connection_init: 4429.
    let mut ws = WsClient::signed_in(&server, &good).await?;
    ws.send(json!({"type": "connection_init"})).await?;
    assert_eq!(ws.closed(WAIT).await?.0, 4429);

    // Duplicate subscription id: 4409. Ping is answered with pong.
    let mut ws = WsClient::signed_in(&server, &good).await?;
    ws.send(json!({"type": "ping", "payload": {"n": 1}})).await?;
    match ws.recv(WAIT).await? {
        WsEvent::Message(m) => assert_eq!(m, json!({"type": "pong", "payload": {"n": 1}})),
        other => anyhow::bail!("expected pong, got {other:?}"),
    }
    ws.subscribe("dup", HAZARDS, json!({})).await?;
    ws.subscribe("dup", HAZARDS, json!({})).await?;
    assert_eq!(ws.closed(WAIT).await?.0, 4409);

    // Without a token the connection is accepted but subscriptions need one.
    let mut ws = WsClient::connect(&server, "graphql-transport-ws").await?;
    ws.send(json!({"type": "connection_init"})).await?;
    assert!(matches!(ws.recv(WAIT).await?, WsEvent::Message(m) if m["type"] == "connection_ack"));
    ws.subscribe("x", HAZARDS, json!({})).await?;
    match ws.recv(WAIT).await? {
        WsEvent::Message(m) => {
            assert_eq!(m["type"], "error");
            assert_eq!(m["payload"][0]["extensions"]["code"], "UNAUTHENTICATED", "{m}");
        }
        other => anyhow::bail!("expected an error, got {other:?}"),
    }

    // An unknown subprotocol is not accepted (the server answers without one and closes
    // with 4406; this client library already refuses the handshake).
    let refused = WsClient::connect(&server, "graphql-transport-ws-v9").await.err().map(|e| e.to_string());
    assert!(refused.is_some_and(|e| e.contains("subprotocol")));
    Ok(())
}

#[tokio::test]
async fn legacy_graphql_ws_clients_receive_data() -> anyhow::Result<()> {
    let server = TestServer::demo(&sparkwatch_tests::Backend::Sqlite).await?;
    let mut feed = Feeder::start(&server.services);
    let good = token(&server, "manager@demo.local").await?;
    let mut ws = WsClient::connect(&server, "graphql-ws").await?;
    ws.send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {good}")}})).await?;
    assert!(matches!(ws.recv(WAIT).await?, WsEvent::Message(m) if m["type"] == "connection_ack"));
    ws.send(json!({"type": "start", "id": "1", "payload": {"query": ALARMS}})).await?;
    until_open(&server, 1).await?;
    raise_leak_alarm(&mut feed, "SW-DEMO-0001", 1).await?;
    loop {
        match ws.recv(WAIT).await? {
            WsEvent::Message(m) if m["payload"]["data"]["alarmEvents"]["kind"] == "ONLINE" => continue,
            WsEvent::Message(m) => {
                assert_eq!(m["type"], "data", "{m}");
                assert_eq!(m["payload"]["data"]["alarmEvents"]["kind"], "LEAK_ALARM");
                break;
            }
            other => anyhow::bail!("expected data, got {other:?}"),
        }
    }
    ws.send(json!({"type": "stop", "id": "1"})).await?;
    assert!(matches!(ws.recv(WAIT).await?, WsEvent::Message(m) if m["type"] == "complete"));
    // Legacy clients send queries over the socket too: one answer as the caller, then `complete`.
    ws.send(json!({"type": "start", "id": "q", "payload": {"query": "{ me { email } }"}})).await?;
    match ws.recv(WAIT).await? {
        WsEvent::Message(m) => {
            assert_eq!(m["type"], "data", "{m}");
            assert_eq!(m["payload"]["data"]["me"]["email"], "manager@demo.local", "{m}");
        }
        other => anyhow::bail!("expected data, got {other:?}"),
    }
    assert!(matches!(ws.recv(WAIT).await?, WsEvent::Message(m) if m["type"] == "complete" && m["id"] == "q"));
    // A refused token is reported with connection_error before the close.
    let mut ws = WsClient::connect(&server, "graphql-ws").await?;
    ws.send(json!({"type": "connection_init", "payload": {"authorization": "Bearer nope"}})).await?;
    assert!(matches!(ws.recv(WAIT).await?, WsEvent::Message(m) if m["type"] == "connection_error"));
    Ok(())
}

#[tokio::test]
async fn expiry_and_deactivation_end_feeds() -> anyhow::Result<()> {
    let opts = Options { access_token_ttl: Some(Duration::from_secs(3)), ..Options::default() };
    let server = TestServer::start_opts(&sparkwatch_tests::Backend::Sqlite, opts).await?;
    sparkwatch_api::demo::seed(&server.services).await?;

    // The access token expires: the connection closes with 4403.
    let mut ws = WsClient::signed_in(&server, &token(&server, "manager@demo.local").await?).await?;
    ws.subscribe("a", ALARMS, json!({})).await?;
    let started = std::time::Instant::now();
    let (code, reason) = ws.closed(WAIT).await?;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    assert!(started.elapsed() <= Duration::from_secs(4));

    // Deactivating the account ends its feeds at once.
    let mut ws = WsClient::signed_in(&server, &token(&server, "electrician@demo.local").await?).await?;
    ws.subscribe("a", ALARMS, json!({})).await?;
    let admin = server.demo_login("admin@demo.local").await?;
    let users = admin.ok("{ users(search: \"electrician\") { edges { node { id } } } }", json!({})).await?;
    let id = users["users"]["edges"][0]["node"]["id"].clone();
    admin
        .ok(
            "mutation($i: UpdateUserInput!) { updateUser(input: $i) { id } }",
            json!({"i": {"id": id, "active": false}}),
        )
        .await?;
    // A revoked caller's connection closes at once (docs/PRIVILEGES.md), not just its feed.
    let (code, reason) = ws.closed(WAIT).await?;
    assert_eq!(code, 4403, "{reason}");
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_delays_nobody() -> anyhow::Result<()> {
    let limits = WsLimits { write_timeout: Duration::from_millis(500), ..WsLimits::default() };
    let server =
        TestServer::start_opts(&sparkwatch_tests::Backend::Sqlite, Options { ws: limits, ..Options::default() })
            .await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    let good = token(&server, "admin@demo.local").await?;
    let tenant = server.services.tenant_by_name("Demo").await.map_err(|e| anyhow::anyhow!("{e}"))?.id;
    let admin = server.demo_login("admin@demo.local").await?;
    let projects = admin.ok("{ projects { edges { node { id } } } }", json!({})).await?;
    let project: sparkwatch_domain::ids::ProjectId =
        projects["projects"]["edges"][0]["node"]["id"].as_str().unwrap_or_default().parse()?;

    let mut stalled = WsClient::signed_in(&server, &good).await?;
    stalled.subscribe("s", "subscription { deviceStatusChanged { serial online at } }", json!({})).await?;
    let mut healthy = WsClient::signed_in(&server, &good).await?;
    healthy.subscribe("s", "subscription { deviceStatusChanged { serial online at } }", json!({})).await?;
    until_open(&server, 2).await?;

    // 4,000 messages of ~16 KB: far more than socket buffers hold. The healthy client reads
    // them as they come (paced so that a debug build on a busy machine keeps up); the
    // stalled one reads nothing.
    let serial = "X".repeat(16_000);
    let reader = tokio::spawn(async move {
        let mut n = 0u32;
        while n < 4_000 {
            match healthy.recv(WAIT).await {
                Ok(WsEvent::Message(m)) if m["type"] == "next" => n += 1,
                Ok(WsEvent::Message(m)) if m["type"] == "error" => {
                    return Err(anyhow::anyhow!("healthy client got {m}"));
                }
                Ok(other) => return Err(anyhow::anyhow!("healthy client: {other:?} after {n}")),
                Err(e) => return Err(e.context(format!("healthy client after {n} messages"))),
            }
        }
        Ok(n)
    });
    let bus = server.services.bus().clone();
    for chunk in 0..200 {
        let batch = (0..20).map(|i| sparkwatch_api::bus::Envelope {
            tenant,
            feed: sparkwatch_api::bus::Feed::Tenant(tenant),
            message: sparkwatch_api::bus::BusMessage::DeviceStatus(Box::new(sparkwatch_api::bus::DeviceStatus {
                device_id: sparkwatch_domain::ids::DeviceId::from_uuid(uuid::Uuid::now_v7()),
                project_id: project,
                serial: serial.clone(),
                online: (chunk + i) % 2 == 0,
                at: Utc::now(),
            })),
        });
        bus.publish(batch);
        // Publishing never waits for subscribers; this is a pace (not synchronisation), only so
        // the healthy reader keeps up (400 messages/s, 6.4 MB/s: a debug build beside the other
        // suites in CI fell more than the ring's 1,024 behind at 1,000/s).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = tokio::time::timeout(Duration::from_secs(60), reader).await???;
    assert_eq!(received, 4_000);
    // The stalled client was dropped: told (SLOW_CONSUMER) if its writes still went through,
    // or cut off when its socket stayed full.
    let metrics = server.http.get(format!("{}/metrics", server.base)).send().await?.text().await?;
    let slow: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sparkwatch_subscriptions_slow_consumer_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(slow >= 1.0, "no slow consumer was dropped:\n{metrics}");
    Ok(())
}

#[tokio::test]
async fn two_instances_fan_out_through_redis() -> anyhow::Result<()> {
    if std::env::var("SPARKWATCH_TEST_REDIS_URL").is_ok_and(|u| !u.is_empty()) {
        for backend in backends() {
            let a = TestServer::demo(&backend).await?;
            let b = a.sibling(Options::default()).await?;
            let mut feed = Feeder::start(&a.services);
            // Signed in and subscribed on B; the alarm is ingested by A.
            let mut ws = WsClient::signed_in(&b, &token(&b, "manager@demo.local").await?).await?;
            ws.subscribe("a", ALARMS, json!({})).await?;
            let mut other = WsClient::signed_in(&b, &token(&b, "admin@demo-b.local").await?).await?;
            other.subscribe("a", ALARMS, json!({})).await?;
            // Readings travel only to instances that follow the detector: B advertises it.
            let admin = b.demo_login("admin@demo.local").await?;
            let detectors = admin
                .ok("{ detectors(first: 200) { edges { node { id address device { serial } } } } }", json!({}))
                .await?;
            let detector = detectors["detectors"]["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| &e["node"])
                .find(|n| n["device"]["serial"] == "SW-DEMO-0002" && n["address"] == 1)
                .map(|n| n["id"].clone())
                .unwrap_or_default();
            ws.subscribe("r", "subscription($d: ID!) { readings(detectorId: $d) { leakMa } }", json!({"d": detector}))
                .await?;
            // B follows the detector in Redis (its tenant feed, subscribed first, too) and A
            // has seen B's interest: only then does A publish the readings.
            let followed: sparkwatch_domain::ids::DetectorId = detector.as_str().unwrap_or_default().parse()?;
            let channel = format!("sw:bus:readings:{followed}");
            let url = std::env::var("SPARKWATCH_TEST_REDIS_URL")?;
            eventually("B to follow the detector through Redis", || async {
                let mut conn = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
                let subs: Vec<(String, u64)> =
                    redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await?;
                let subscribed = subs.iter().any(|(_, n)| *n > 0);
                Ok((subscribed && a.services.bus().readings_wanted().contains(&followed)).then_some(()))
            })
            .await?;
            raise_leak_alarm(&mut feed, "SW-DEMO-0002", 1).await?;
            let e = next_kind(&mut ws, "a", "LEAK_ALARM").await?;
            assert_eq!(e["data"]["alarmEvents"]["deviceName"], "Mall food court", "{e}");
            let r = ws.next_of("r", WAIT).await?;
            assert_eq!(r["data"]["readings"]["leakMa"], json!([450.0]), "{r}");
            // Demo B's admin on B hears its own alarm first: A's did not cross tenants.
            raise_leak_alarm(&mut feed, "SW-DEMOB-0001", 1).await?;
            first_alarm_is_from(&mut other, "a", "Depot main board").await?;
            // When the last follower leaves, B withdraws its interest and A stops publishing.
            assert!(a.services.bus().readings_wanted().contains(&followed));
            ws.send(json!({"id": "r", "type": "complete"})).await?;
            eventually("A to stop publishing readings nobody follows", || async {
                Ok((!a.services.bus().readings_wanted().contains(&followed)).then_some(()))
            })
            .await?;
        }
    } else {
        eprintln!("skipped: SPARKWATCH_TEST_REDIS_URL is not set (the two-instance Redis fan-out test)");
    }
    Ok(())
}

/// Waits until `name` reads `want`.
async fn metric_reaches(server: &TestServer, name: &str, want: f64) -> anyhow::Result<()> {
    eventually(&format!("{name} to read {want}"), || async { Ok((metric(server, name).await? == want).then_some(())) })
        .await
}

/// Waits until `n` subscriptions are open: every `subscribe` sent so far has been taken up
/// (its feeds are joined before the gauge counts it), so what is published next reaches it.
async fn until_open(server: &TestServer, n: u32) -> anyhow::Result<()> {
    metric_reaches(server, "sparkwatch_subscriptions_open", f64::from(n)).await
}

#[tokio::test]
async fn identical_subscriptions_share_one_execution_but_not_access() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let admin = server.demo_login("admin@demo.local").await?;
        let projects = admin.ok("{ projects { edges { node { id name } } } }", json!({})).await?;
        let id_of = |name: &str| {
            projects["projects"]["edges"].as_array().into_iter().flatten().find_map(|e| {
                let node = &e["node"];
                node["name"].as_str().is_some_and(|n| n.contains(name)).then(|| node["id"].clone())
            })
        };
        let (mall, school) = (id_of("Mall"), id_of("School"));
        anyhow::ensure!(mall.is_some() && school.is_some(), "demo projects not found: {projects}");
        // A second manager with the demo manager's role and projects: the same access.
        let created = admin
            .ok(
                "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                json!({"i": {"email": "manager2@demo.local", "password": "second-manager-1", "roleId": "manager",
                             "projectIds": [mall, school]}}),
            )
            .await?;
        let second_id = created["createUser"]["id"].clone();
        let second_token = server.login("manager2@demo.local", "second-manager-1").await?.token.unwrap_or_default();
        let mut first = WsClient::signed_in(&server, &token(&server, "manager@demo.local").await?).await?;
        let mut second = WsClient::signed_in(&server, &second_token).await?;
        first.subscribe("a", ALARMS, json!({})).await?;
        second.subscribe("mine", ALARMS, json!({})).await?;
        metric_reaches(&server, "sparkwatch_subscriptions_open", 2.0).await?;
        metric_reaches(&server, "sparkwatch_subscription_executions", 1.0).await?;

        // Narrowing the second manager to the school splits the execution ...
        let update = "mutation($i: UpdateUserInput!) { updateUser(input: $i) { id } }";
        admin.ok(update, json!({"i": {"id": second_id, "projectIds": [school]}})).await?;
        metric_reaches(&server, "sparkwatch_subscription_executions", 2.0).await?;
        // ... so a mall alarm reaches only the first, a school alarm both.
        raise_leak_alarm(&mut feed, "SW-DEMO-0001", 1).await?;
        next_kind(&mut first, "a", "LEAK_ALARM").await?;
        raise_leak_alarm(&mut feed, "SW-DEMO-0101", 1).await?;
        let e = next_kind(&mut first, "a", "LEAK_ALARM").await?;
        assert_eq!(e["data"]["alarmEvents"]["deviceName"], "Teaching building");
        let e = next_kind(&mut second, "mine", "LEAK_ALARM").await?;
        assert_eq!(e["data"]["alarmEvents"]["deviceName"], "Teaching building", "the mall alarm leaked: {e}");

        // Deactivating the second manager ends their feed only.
        admin.ok(update, json!({"i": {"id": second_id, "active": false}})).await?;
        let (code, reason) = second.closed(WAIT).await?;
        assert_eq!(code, 4403, "the revoked connection closes: {reason}");
        raise_leak_alarm(&mut feed, "SW-DEMO-0102", 1).await?;
        let e = next_kind(&mut first, "a", "LEAK_ALARM").await?;
        assert_eq!(e["data"]["alarmEvents"]["deviceName"], "Canteen");
        metric_reaches(&server, "sparkwatch_subscription_executions", 1.0).await?;
        metric_reaches(&server, "sparkwatch_subscriptions_open", 1.0).await?;
    }
    Ok(())
}

/// Every `Event` field a subscriber can ask for that a later query must repeat exactly.
const EVENT_FIELDS: &str = "id kind category at receivedAt value setpoint channel deviceName deviceType detectorAddress region position remarks";
/// The same for `Hazard` (`firstPushAt` is stamped later, by push routing).
const HAZARD_FIELDS: &str =
    "id status kind category channel openedAt occurrences peakValue lastValue setpoint deviceAt ingestedAt updatedAt";

/// Live events and hazards are built from the rows the pipeline wrote, not read back: what a
/// subscriber is told must be what a query returns afterwards — first occurrence, recovery
/// and a second occurrence of the latched alarm (the hazard's `occurrences` 2).
#[tokio::test]
async fn live_events_and_hazards_are_what_queries_return() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let mut manager = WsClient::signed_in(&server, &token(&server, "manager@demo.local").await?).await?;
        manager.subscribe("a", &format!("subscription {{ alarmEvents {{ {EVENT_FIELDS} }} }}"), json!({})).await?;
        manager.subscribe("h", &format!("subscription {{ hazardChanged {{ {HAZARD_FIELDS} }} }}"), json!({})).await?;
        until_open(&server, 2).await?;

        let t0 = Utc::now() - chrono::Duration::seconds(60);
        let topic = "sw/SW-DEMO-0101/telemetry";
        for (s, ma) in [(0, 450.0), (6, 480.0), (12, 100.0), (18, 520.0), (24, 530.0)] {
            feed.send(topic, &telemetry(t0 + chrono::Duration::seconds(s), 1, ma)).await;
        }
        feed.settle().await?;

        let mut events = Vec::new();
        while let Ok(e) = manager.next_of("a", Duration::from_millis(1500)).await {
            events.push(e["data"]["alarmEvents"].clone());
        }
        let mut hazards = std::collections::HashMap::new();
        while let Ok(h) = manager.next_of("h", Duration::from_millis(300)).await {
            let h = h["data"]["hazardChanged"].clone();
            hazards.insert(h["id"].as_str().unwrap_or_default().to_owned(), h);
        }
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert!(
            kinds.iter().filter(|k| **k == "LEAK_ALARM").count() == 2 && kinds.contains(&"RECOVERED"),
            "{backend:?}: {kinds:?}"
        );
        let gql = server.demo_login("manager@demo.local").await?;
        let stored = gql.ok(&format!("{{ events(first: 100) {{ nodes {{ {EVENT_FIELDS} }} }} }}"), json!({})).await?;
        let stored = stored["events"]["nodes"].as_array().cloned().unwrap_or_default();
        for live in &events {
            let found = stored.iter().find(|s| s["id"] == live["id"]);
            assert_eq!(Some(live), found, "{backend:?}: live event differs from the stored one");
        }
        assert_eq!(hazards.len(), 1, "{backend:?}: {hazards:?}");
        for (id, live) in &hazards {
            let stored = gql
                .ok(&format!("query($id: ID!) {{ hazard(id: $id) {{ {HAZARD_FIELDS} }} }}"), json!({"id": id}))
                .await?;
            assert_eq!(live, &stored["hazard"], "{backend:?}: live hazard differs from the stored one");
            assert_eq!(live["occurrences"], 2, "{backend:?}: {live}");
            assert_eq!(live["peakValue"], 530.0, "{backend:?}: {live}");
        }
    }
    Ok(())
}
