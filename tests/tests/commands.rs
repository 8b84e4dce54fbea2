//! Remote commands end to end, on SQLite and (when configured) PostgreSQL: `sendCommand` over
//! HTTP, the command on a real MQTT broker (embedded, or `SPARKWATCH_TEST_MQTT_URL`) to a test
//! device that answers on `cmd/ack`, Modbus writes to the in-test gateway, the status over a
//! real WebSocket (`commandChanged`), expiry on the test clock, and who may send what.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use sparkwatch_api::auth::Principal;
use sparkwatch_api::service::ManualClock;
use sparkwatch_api::simulate::modbus_server;
use sparkwatch_domain::site::{DetectorInput, DeviceInput};
use sparkwatch_entity::{dead_letter, operation_log, project, threshold};
use sparkwatch_tests::{
    Backend, Gql, Options, TestBroker, TestServer, WsClient, backends, eventually, fast_jobs, metric, start_modbus,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = sparkwatch_api::demo::DEMO_PASSWORD;

const SEND: &str =
    "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id op status result createdAt expiresAt } }";
const GET: &str = "query($id: ID!) { command(id: $id) { id op status result params reason actor sentAt finishedAt detector { address } } }";
const FOLLOW: &str = "subscription($d: ID) { commandChanged(detectorId: $d) { id op status result } }";

/// A demo server on a manual clock, with fast jobs (the expiry job ticks every 100 ms).
async fn server(backend: &Backend) -> anyhow::Result<(TestServer, Arc<ManualClock>)> {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let opts = Options { clock: clock.clone(), jobs: fast_jobs(), ..Options::default() };
    let server = TestServer::start_opts(backend, opts).await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    Ok((server, clock))
}

/// Sends a command; returns the `sendCommand` object.
async fn send(gql: &Gql, input: Value) -> anyhow::Result<Value> {
    Ok(gql.ok(SEND, json!({"i": with_password(input)})).await?["sendCommand"].clone())
}

/// RESET and SILENCE are control commands needing the password (or a step-up token) too:
/// the demo password is added where neither was given, so these suites keep testing what
/// they test (command_rules.rs tests the rule itself; TRIP, CLOSE and set-points here say
/// what they send).
fn with_password(mut input: Value) -> Value {
    if matches!(input["op"].as_str(), Some("RESET" | "SILENCE"))
        && input.get("password").is_none()
        && input.get("stepUpToken").is_none()
        && let Some(i) = input.as_object_mut()
    {
        i.insert("password".into(), json!(PASSWORD));
    }
    input
}

/// The first error of a `sendCommand` that must fail: `(code, field)`.
async fn refused(gql: &Gql, input: Value) -> anyhow::Result<(String, Option<String>)> {
    let res = gql.run(SEND, json!({"i": with_password(input)})).await?;
    let ext = &res["errors"][0]["extensions"];
    let code = ext["code"].as_str().ok_or_else(|| anyhow::anyhow!("expected an error: {res}"))?;
    Ok((code.to_owned(), ext["field"].as_str().map(str::to_owned)))
}

/// Waits until `command(id)` has status `status`; returns it.
async fn until_status(gql: &Gql, id: &Value, status: &str) -> anyhow::Result<Value> {
    eventually(&format!("command {id} to become {status}"), || async {
        let last = gql.ok(GET, json!({"id": id})).await?["command"].clone();
        Ok((last["status"] == status).then_some(last))
    })
    .await
}

/// The next `commandChanged` of subscription `sub` for command `id`.
async fn next_change(ws: &mut WsClient, sub: &str, id: &Value) -> anyhow::Result<Value> {
    loop {
        let p = ws.next_of(sub, WAIT).await?;
        if p["data"]["commandChanged"]["id"] == *id {
            return Ok(p["data"]["commandChanged"].clone());
        }
    }
}

/// Waits until the counter `name` of `/metrics` reaches `n`; fails if it goes past it.
async fn until_metric(server: &TestServer, name: &str, n: u64) -> anyhow::Result<()> {
    let n = n as f64;
    eventually(&format!("{name} to reach {n}"), || async { Ok((metric(server, name).await? >= n).then_some(())) })
        .await?;
    anyhow::ensure!(metric(server, name).await? == n, "{name} is not {n}");
    Ok(())
}

/// Waits until the detector has exactly one `TRIP` event.
async fn until_trip_recorded(gql: &Gql, detector: &str) -> anyhow::Result<()> {
    let q = "query($d: ID!) { events(filter: {detectorId: $d, kinds: [TRIP]}) { totalCount } }";
    eventually(&format!("one TRIP event on {detector}"), || async {
        Ok((gql.ok(q, json!({"d": detector})).await?["events"]["totalCount"].as_u64() == Some(1)).then_some(()))
    })
    .await
}

/// Waits until the server's MQTT client is subscribed (so it can also publish commands):
/// `device` publishes a normal reading, again on every check, until one is stored.
async fn until_ingesting(server: &TestServer, device: &TestDevice) -> anyhow::Result<()> {
    let reading = json!({"ts": chrono::Utc::now().timestamp_millis(), "detectors": [{"addr": 1, "leak": [20.0]}]});
    eventually("the server's MQTT client to be subscribed", || async {
        device.client.publish(device.telemetry_topic.clone(), QoS::AtLeastOnce, false, reading.to_string()).await?;
        Ok((metric(server, "sparkwatch_ingest_readings_stored_total").await? > 0.0).then_some(()))
    })
    .await
}

/// A field device on the broker: receives what is published on `{prefix}/{serial}/cmd`.
struct TestDevice {
    client: AsyncClient,
    commands: mpsc::Receiver<Value>,
    ack_topic: String,
    telemetry_topic: String,
}

impl TestDevice {
    async fn connect(server: &TestServer, broker: &TestBroker, serial: &str) -> anyhow::Result<TestDevice> {
        let opts = broker.device(server, serial).await?;
        let (client, mut lp) = AsyncClient::new(opts, 64);
        let (tx, commands) = mpsc::channel(16);
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        tokio::spawn(async move {
            loop {
                match lp.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = subscribed_tx.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        if tx.send(v).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // A back-off before reconnecting, not synchronisation.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client.subscribe(format!("{}/{serial}/cmd", broker.prefix), QoS::AtLeastOnce).await?;
        tokio::time::timeout(WAIT, subscribed).await??;
        Ok(TestDevice {
            client,
            commands,
            ack_topic: format!("{}/{serial}/cmd/ack", broker.prefix),
            telemetry_topic: format!("{}/{serial}/telemetry", broker.prefix),
        })
    }

    /// The next command the device received.
    async fn command(&mut self) -> anyhow::Result<Value> {
        tokio::time::timeout(WAIT, self.commands.recv()).await?.ok_or_else(|| anyhow::anyhow!("device gone"))
    }

    /// Publishes a raw answer.
    async fn answer(&self, payload: Value) -> anyhow::Result<()> {
        self.client.publish(self.ack_topic.clone(), QoS::AtLeastOnce, false, payload.to_string()).await?;
        Ok(())
    }
}

#[tokio::test]
async fn mqtt_commands_go_queued_sent_acknowledged_and_subscribers_see_them() -> anyhow::Result<()> {
    for backend in backends() {
        let (server, clock) = server(&backend).await?;
        let broker = TestBroker::start(&server)?;
        let (_queue, _stop) = sparkwatch_api::start_ingest(&server.services, &broker.prefix, Some(broker.subscriber()));
        let mut device = TestDevice::connect(&server, &broker, "SW-DEMO-0001").await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let d1 = server.detector_id("SW-DEMO-0001", 1).await?;

        let mut ws = WsClient::signed_in(&server, admin.token.as_deref().unwrap_or_default()).await?;
        ws.subscribe("c", FOLLOW, json!({"d": d1})).await?;
        let other = server.demo_login("admin@demo-b.local").await?;
        let mut outsider = WsClient::signed_in(&server, other.token.as_deref().unwrap_or_default()).await?;
        outsider.subscribe("c", FOLLOW, json!({})).await?;
        // The ingestion's MQTT client must be connected before the first command.
        until_ingesting(&server, &device).await?;

        // TRIP: the device receives the contract's JSON, answers ok.
        let trip =
            send(&admin, json!({"detectorId": d1, "op": "TRIP", "password": PASSWORD, "reason": "leak"})).await?;
        assert_eq!(trip["status"], "SENT", "{trip}");
        let id = trip["id"].clone();
        let wire = device.command().await?;
        assert_eq!(wire["id"], id);
        assert_eq!(wire["addr"], 1);
        assert_eq!(wire["op"], "trip");
        assert!(wire.get("params").is_none(), "{wire}");
        let expires = chrono::DateTime::parse_from_rfc3339(trip["expiresAt"].as_str().unwrap_or_default())?;
        assert_eq!(wire["expires"], expires.timestamp_millis());
        assert_eq!(next_change(&mut ws, "c", &id).await?["status"], "QUEUED");
        assert_eq!(next_change(&mut ws, "c", &id).await?["status"], "SENT");
        device.answer(json!({"id": id, "ok": true, "code": 0, "msg": "done"})).await?;
        let live = next_change(&mut ws, "c", &id).await?;
        assert_eq!(live["status"], "ACKNOWLEDGED");
        assert_eq!(live["result"]["ok"], true);
        let got = until_status(&admin, &id, "ACKNOWLEDGED").await?;
        assert_eq!(got["result"], json!({"ok": true, "source": "device", "code": 0, "msg": "done"}));
        assert_eq!((got["reason"].as_str(), got["actor"].as_str()), (Some("leak"), Some("admin@demo.local")));
        assert!(got["sentAt"].is_string() && got["finishedAt"].is_string(), "{got}");
        assert_eq!(got["detector"]["address"], 1);
        // Demo B's own command is the first change its admin hears: none of the above leaked.
        let depot = server.detector_id("SW-DEMOB-0001", 1).await?;
        let theirs = send(&other, json!({"detectorId": depot, "op": "SELF_TEST"})).await?;
        let first = outsider.next_of("c", WAIT).await?;
        assert_eq!(first["data"]["commandChanged"]["id"], theirs["id"], "Demo B heard {first}");

        // A refusal: FAILED with the device's code and message.
        clock.advance(chrono::Duration::seconds(31));
        let test = send(&admin, json!({"detectorId": d1, "op": "SELF_TEST"})).await?;
        let wire = device.command().await?;
        assert_eq!((&wire["id"], wire["op"].as_str()), (&test["id"], Some("self_test")));
        device.answer(json!({"id": test["id"], "ok": false, "code": 3, "msg": "relay stuck"})).await?;
        let failed = until_status(&admin, &test["id"], "FAILED").await?;
        assert_eq!(
            (failed["result"]["code"].as_i64(), failed["result"]["msg"].as_str()),
            (Some(3), Some("relay stuck"))
        );

        // No answer: EXPIRED on the test clock; a late answer changes nothing.
        clock.advance(chrono::Duration::seconds(31));
        let reset = send(&admin, json!({"detectorId": d1, "op": "RESET"})).await?;
        device.command().await?;
        clock.advance(chrono::Duration::seconds(61));
        let expired = until_status(&admin, &reset["id"], "EXPIRED").await?;
        assert_eq!(expired["result"]["source"], "expired");
        assert_eq!(next_change(&mut ws, "c", &reset["id"]).await?["status"], "QUEUED");
        assert_eq!(next_change(&mut ws, "c", &reset["id"]).await?["status"], "SENT");
        assert_eq!(next_change(&mut ws, "c", &reset["id"]).await?["status"], "EXPIRED");
        let late = r#"sparkwatch_ingest_rejected_total{reason="command_finished"}"#;
        device.answer(json!({"id": reset["id"], "ok": true, "code": 0})).await?;
        until_metric(&server, late, 1).await?;
        assert_eq!(admin.ok(GET, json!({"id": reset["id"]})).await?["command"]["status"], "EXPIRED");

        // Answers for unknown commands and malformed answers are ignored; a good answer
        // right behind them still counts.
        clock.advance(chrono::Duration::seconds(31));
        let silence = send(&admin, json!({"detectorId": d1, "op": "SILENCE"})).await?;
        device.command().await?;
        device.answer(json!({"id": uuid::Uuid::now_v7().to_string(), "ok": true, "code": 0})).await?;
        device.answer(json!({"id": 5, "ok": "yes"})).await?;
        device.answer(json!({"id": silence["id"], "ok": true, "code": 0})).await?;
        until_status(&admin, &silence["id"], "ACKNOWLEDGED").await?;
        assert_eq!(metric(&server, r#"sparkwatch_ingest_rejected_total{reason="unknown_command"}"#).await?, 1.0);
        assert_eq!(metric(&server, r#"sparkwatch_ingest_rejected_total{reason="bad_command_result"}"#).await?, 1.0);

        // Set-points: params go out in the contract's names, and once acknowledged the
        // detector's thresholds match the device.
        clock.advance(chrono::Duration::seconds(31));
        let params = json!({"leakMa": 250, "tempC": 90, "leakDelayS": 2.5});
        let set =
            send(&admin, json!({"detectorId": d1, "op": "SET_THRESHOLDS", "params": params, "password": PASSWORD}))
                .await?;
        let wire = device.command().await?;
        assert_eq!(wire["params"], json!({"leak_ma": 250, "leak_delay_s": 2.5, "temp_c": 90}));
        device.answer(json!({"id": set["id"], "ok": true, "code": 0})).await?;
        until_status(&admin, &set["id"], "ACKNOWLEDGED").await?;
        let t = admin
            .ok(
                "query($id: ID!) { detector(id: $id) { effectiveThresholds { leakMa leakDelayS tempC } } }",
                json!({"id": d1}),
            )
            .await?;
        assert_eq!(t["detector"]["effectiveThresholds"], json!({"leakMa": 250.0, "leakDelayS": 2.5, "tempC": 90.0}));

        // The answer must come from the device the command was sent to.
        clock.advance(chrono::Duration::seconds(31));
        let reset = send(&admin, json!({"detectorId": d1, "op": "RESET"})).await?;
        device.command().await?;
        let impostor = TestDevice::connect(&server, &broker, "SW-DEMO-0002").await?;
        impostor.answer(json!({"id": reset["id"], "ok": false, "code": 9})).await?;
        until_metric(&server, r#"sparkwatch_ingest_rejected_total{reason="unknown_command"}"#, 2).await?;
        assert_eq!(admin.ok(GET, json!({"id": reset["id"]})).await?["command"]["status"], "SENT");

        // The operation log has every command with its actor and outcome.
        let db = server.services.store().db();
        let log = operation_log::Entity::find().filter(operation_log::Column::TargetType.eq("command")).all(db).await?;
        let sent = log
            .iter()
            .find(|o| o.action == "command.send" && o.target_id.as_ref() == id.as_str().map(str::to_owned).as_ref());
        let sent = sent.ok_or_else(|| anyhow::anyhow!("no command.send entry"))?;
        assert_eq!(sent.actor, "admin@demo.local");
        assert_eq!(sent.after.as_ref().map(|a| a["op"].clone()), Some(json!("trip")));
        let done = log.iter().find(|o| o.action == "command.acknowledged" && o.target_id == sent.target_id);
        assert_eq!(done.map(|o| o.actor.as_str()), Some("device SW-DEMO-0001"));
        assert!(log.iter().any(|o| o.action == "command.expired"));
        assert!(log.iter().any(|o| o.action == "command.failed"));
    }
    Ok(())
}

/// Issue 14: "a command result is accepted only from the device it was sent to". Two real
/// MQTT devices: one of the same tenant and one of another tenant publish, on their own
/// `cmd/ack` topics, a successful result for a SET_THRESHOLDS command sent to a third
/// device. Both are refused with a dead letter naming the reason; the command stays SENT and
/// the detector's stored thresholds do not move until the addressed device answers.
#[tokio::test]
async fn a_forged_set_thresholds_result_from_another_device_changes_nothing() -> anyhow::Result<()> {
    for backend in backends() {
        let (server, _clock) = server(&backend).await?;
        let broker = TestBroker::start(&server)?;
        let (_queue, _stop) = sparkwatch_api::start_ingest(&server.services, &broker.prefix, Some(broker.subscriber()));
        let mut device = TestDevice::connect(&server, &broker, "SW-DEMO-0001").await?;
        let neighbour = TestDevice::connect(&server, &broker, "SW-DEMO-0002").await?;
        let outsider = TestDevice::connect(&server, &broker, "SW-DEMOB-0001").await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let d1 = server.detector_id("SW-DEMO-0001", 1).await?;
        let thresholds = "query($id: ID!) { detector(id: $id) { effectiveThresholds { leakMa tempC } } }";
        let before = admin.ok(thresholds, json!({"id": d1})).await?;

        let params = json!({"leakMa": 900, "tempC": 140});
        let set = sparkwatch_tests::eventually("the ingestion's MQTT client to carry the command", || async {
            let set =
                send(&admin, json!({"detectorId": d1, "op": "SET_THRESHOLDS", "params": params, "password": PASSWORD}))
                    .await?;
            Ok((set["status"] == "SENT").then_some(set))
        })
        .await?;
        let wire = device.command().await?;
        assert_eq!(wire["id"], set["id"]);
        let forged = json!({"id": set["id"], "ok": true, "code": 0, "msg": "done"});
        neighbour.answer(forged.clone()).await?;
        outsider.answer(forged).await?;

        let db = server.services.store().db();
        let letters = sparkwatch_tests::eventually("two dead letters for the forged results", || async {
            let found =
                dead_letter::Entity::find().filter(dead_letter::Column::Reason.eq("unknown_command")).all(db).await?;
            Ok((found.len() == 2).then_some(found))
        })
        .await?;
        let mut serials: Vec<_> = letters.iter().filter_map(|l| l.serial.clone()).collect();
        serials.sort();
        assert_eq!(serials, ["SW-DEMO-0002", "SW-DEMOB-0001"], "{backend:?}");
        for l in &letters {
            assert!(l.topic.ends_with("/cmd/ack") && l.detail.contains("no command"), "{backend:?}: {l:?}");
            assert!(l.payload.contains(set["id"].as_str().unwrap_or("?")), "{backend:?}: the payload is kept");
        }
        let stored = admin.ok(GET, json!({"id": set["id"]})).await?["command"].clone();
        assert_eq!((stored["status"].as_str(), &stored["result"]), (Some("SENT"), &Value::Null), "{backend:?}");
        assert_eq!(admin.ok(thresholds, json!({"id": d1})).await?, before, "{backend:?}: thresholds unchanged");
        let own = threshold::Entity::find()
            .filter(threshold::Column::Scope.eq("detector"))
            .filter(threshold::Column::ScopeId.eq(d1.parse::<uuid::Uuid>()?))
            .count(db)
            .await?;
        assert_eq!(own, 0, "{backend:?}: no thresholds written for the detector");

        // The addressed device's answer counts.
        device.answer(json!({"id": set["id"], "ok": true, "code": 0})).await?;
        until_status(&admin, &set["id"], "ACKNOWLEDGED").await?;
        let after = admin.ok(thresholds, json!({"id": d1})).await?;
        assert_eq!(after["detector"]["effectiveThresholds"], json!({"leakMa": 900.0, "tempC": 140.0}), "{backend:?}");
    }
    Ok(())
}

#[tokio::test]
async fn modbus_commands_write_coils_and_setpoints_and_read_them_back() -> anyhow::Result<()> {
    for backend in backends() {
        let (server, clock) = server(&backend).await?;
        let (sim, addr) = modbus_server::start("127.0.0.1:0".parse()?).await?;
        sim.add_unit(1);
        sim.add_unit(2);
        // A port nothing listens on: the unreachable gateway.
        let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let s = &server.services;
        let demo = s.tenant_by_name("Demo").await?;
        let who = Principal::system(demo.id, "commands test");
        let db = s.store().db();
        let mall = project::Entity::find().filter(project::Column::Name.eq("Riverside Mall")).one(db).await?;
        let mall = mall.ok_or_else(|| anyhow::anyhow!("no mall"))?.id.into();
        for (serial, port, units) in [("GW-CMD-1", addr.port(), 3), ("GW-CMD-DEAD", dead_port, 1)] {
            let input = DeviceInput {
                serial: serial.into(),
                name: serial.into(),
                transport: "MODBUS_TCP".into(),
                host: Some("127.0.0.1".into()),
                port: Some(i64::from(port)),
                interval_s: Some(1),
                ..Default::default()
            };
            let device = s.create_device(&who, mall, input).await?;
            for a in 1..=units {
                s.create_detector(&who, device.id, DetectorInput { address: a, ..Default::default() }).await?;
            }
        }
        let stop = start_modbus(s);
        let admin = server.demo_login("admin@demo.local").await?;
        let [d1, d2, d3] = [
            server.detector_id("GW-CMD-1", 1).await?,
            server.detector_id("GW-CMD-1", 2).await?,
            server.detector_id("GW-CMD-1", 3).await?,
        ];

        // TRIP writes coil 0; the relay opens and the next poll records the trip.
        let trip = send(&admin, json!({"detectorId": d1, "op": "TRIP", "password": PASSWORD})).await?;
        let done = until_status(&admin, &trip["id"], "ACKNOWLEDGED").await?;
        assert_eq!(done["result"]["source"], "device");
        assert_eq!(sim.unit(1).map(|u| (u.input[15], u.coil_writes)), Some((1, vec![0])));
        until_trip_recorded(&admin, &d1).await?;

        // SET_THRESHOLDS writes 100–105 in register units and reads them back.
        clock.advance(chrono::Duration::seconds(31));
        let params = json!({"leakMa": 250, "leakDelayS": 2.5, "tempC": 90, "overcurrentA": 40});
        let set =
            send(&admin, json!({"detectorId": d1, "op": "SET_THRESHOLDS", "params": params, "password": PASSWORD}))
                .await?;
        until_status(&admin, &set["id"], "ACKNOWLEDGED").await?;
        assert_eq!(sim.unit(1).map(|u| u.holding), Some([250, 25, 90, 2530, 1870, 4000]));
        let t = admin
            .ok(
                "query($id: ID!) { detector(id: $id) { effectiveThresholds { leakMa overcurrentA } } }",
                json!({"id": d1}),
            )
            .await?;
        assert_eq!(t["detector"]["effectiveThresholds"], json!({"leakMa": 250.0, "overcurrentA": 40.0}));

        // A unit that stores something else: FAILED with the register that differs, and the
        // server's thresholds stay as they were.
        sim.set_ignore_holding_writes(2, true);
        let set = send(
            &admin,
            json!({"detectorId": d2, "op": "SET_THRESHOLDS", "params": {"tempC": 95}, "password": PASSWORD}),
        )
        .await?;
        let failed = until_status(&admin, &set["id"], "FAILED").await?;
        assert_eq!(failed["result"]["source"], "read_back");
        assert_eq!(
            failed["result"]["mismatches"],
            json!([{"register": 102, "field": "tempC", "written": 95, "read": 85}])
        );
        let t = admin
            .ok("query($id: ID!) { detector(id: $id) { effectiveThresholds { tempC } } }", json!({"id": d2}))
            .await?;
        assert_eq!(t["detector"]["effectiveThresholds"]["tempC"], 85.0);

        // A unit the gateway does not have: the Modbus exception code.
        let reset = send(&admin, json!({"detectorId": d3, "op": "RESET"})).await?;
        let failed = until_status(&admin, &reset["id"], "FAILED").await?;
        assert_eq!(
            (failed["result"]["source"].as_str(), failed["result"]["code"].as_i64()),
            (Some("modbus_exception"), Some(0x0B))
        );

        // An unreachable gateway fails the command.
        let dead = server.detector_id("GW-CMD-DEAD", 1).await?;
        let trip = send(&admin, json!({"detectorId": dead, "op": "TRIP", "password": PASSWORD})).await?;
        let failed = until_status(&admin, &trip["id"], "FAILED").await?;
        assert_eq!(failed["result"]["source"], "transport", "{failed}");

        // A second command to the same detector within 30 s is refused until the cool-down ends.
        let (code, _) = refused(&admin, json!({"detectorId": d1, "op": "RESET"})).await?;
        assert_eq!(code, "RATE_LIMITED");
        clock.advance(chrono::Duration::seconds(30));
        let close = send(&admin, json!({"detectorId": d1, "op": "CLOSE", "password": PASSWORD})).await?;
        until_status(&admin, &close["id"], "ACKNOWLEDGED").await?;
        assert_eq!(sim.unit(1).map(|u| (u.input[15], u.coil_writes)), Some((0, vec![0, 1])));
        let _ = stop.send(true);
    }
    Ok(())
}

#[tokio::test]
async fn only_authorised_people_send_commands_in_their_scope() -> anyhow::Result<()> {
    for backend in backends() {
        let (server, _clock) = server(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let mall = server.detector_id("SW-DEMO-0001", 2).await?;
        let school = server.detector_id("SW-DEMO-0101", 1).await?;
        let depot = server.detector_id("SW-DEMOB-0001", 1).await?;

        // No device.control.
        let manager = server.demo_login("manager@demo.local").await?;
        assert_eq!(refused(&manager, json!({"detectorId": mall, "op": "RESET"})).await?.0, "FORBIDDEN");
        // Trip and close need the password; set-points too.
        let forbidden_password = ("FORBIDDEN".to_owned(), Some("password".to_owned()));
        assert_eq!(refused(&admin, json!({"detectorId": mall, "op": "TRIP"})).await?, forbidden_password);
        assert_eq!(
            refused(&admin, json!({"detectorId": mall, "op": "CLOSE", "password": "wrong-password"})).await?,
            forbidden_password
        );
        let setpoints = json!({"detectorId": mall, "op": "SET_THRESHOLDS", "params": {"leakMa": 300}});
        assert_eq!(refused(&admin, setpoints).await?, forbidden_password);
        // Invalid params name their field.
        let bad = json!({"detectorId": mall, "op": "SET_THRESHOLDS", "params": {"leakMa": 5}, "password": PASSWORD});
        assert_eq!(refused(&admin, bad).await?, ("VALIDATION".to_owned(), Some("params.leakMa".to_owned())));
        let bad = json!({"detectorId": mall, "op": "RESET", "params": {"leakMa": 300}});
        assert_eq!(refused(&admin, bad).await?, ("VALIDATION".to_owned(), Some("params".to_owned())));
        let bad = json!({"detectorId": "not-an-id", "op": "RESET"});
        assert_eq!(refused(&admin, bad).await?, ("VALIDATION".to_owned(), Some("detectorId".to_owned())));
        // Another tenant's detector does not exist for this caller.
        assert_eq!(refused(&admin, json!({"detectorId": depot, "op": "RESET"})).await?.0, "NOT_FOUND");

        // No broker on this server: the command is accepted and fails at once, and the
        // cool-down applies from its acceptance — also to a command sent at the same moment.
        let (first, second) = tokio::join!(
            admin.run(SEND, json!({"i": with_password(json!({"detectorId": mall, "op": "RESET", "reason": "test"})) })),
            admin.run(
                SEND,
                json!({"i": with_password(json!({"detectorId": mall, "op": "SILENCE", "reason": "test"})) })
            ),
        );
        let (first, second) = (first?, second?);
        let codes = [&first, &second].map(|r| r["errors"][0]["extensions"]["code"].as_str().map(str::to_owned));
        assert_eq!(codes.iter().filter(|c| c.as_deref() == Some("RATE_LIMITED")).count(), 1, "{first} {second}");
        let reset = if codes[0].is_none() { &first } else { &second }["data"]["sendCommand"].clone();
        assert_eq!((reset["status"].as_str(), reset["result"]["source"].as_str()), (Some("FAILED"), Some("transport")));
        let res = admin.run(SEND, json!({"i": with_password(json!({"detectorId": mall, "op": "SILENCE"})) })).await?;
        assert_eq!(res["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{res}");
        assert_eq!(res["errors"][0]["extensions"]["retryAfter"], 30);
        // A Modbus command waits for the gateway's poller, which claims it once: of two
        // instances racing for it, one wins.
        let gateway = server.detector_id("GW-DEMO-0001", 1).await?;
        let queued = send(&admin, json!({"detectorId": gateway, "op": "SELF_TEST"})).await?;
        assert_eq!(queued["status"], "QUEUED");
        let id: sparkwatch_domain::ids::CommandId = queued["id"].as_str().unwrap_or_default().parse()?;
        let ledger = server.services.commands();
        assert_eq!(ledger.mark_sent(id).await?.map(|c| c.status.code()), Some("SENT"));
        assert_eq!(ledger.mark_sent(id).await?, None);
        // The other tenant cannot read it.
        let other = server.demo_login("admin@demo-b.local").await?;
        assert_eq!(other.ok(GET, json!({"id": reset["id"]})).await?["command"], Value::Null);
        let list = admin
            .ok("query($d: ID!) { commands(detectorId: $d) { totalCount edges { node { id } } } }", json!({"d": mall}))
            .await?;
        assert_eq!(list["commands"]["totalCount"], 1);
        let on_detector = admin
            .ok(
                "query($d: ID!) { detector(id: $d) { commands { totalCount edges { node { id op } } } } }",
                json!({"d": mall}),
            )
            .await?;
        // The one accepted of the two sent at once (RESET or SILENCE).
        assert_eq!(on_detector["detector"]["commands"]["totalCount"], 1);
        assert_eq!(on_detector["detector"]["commands"]["edges"][0]["node"]["id"], reset["id"]);
        assert_eq!(on_detector["detector"]["commands"]["edges"][0]["node"]["op"], reset["op"]);
        assert_eq!(
            other.code("query($d: ID!) { commands(detectorId: $d) { totalCount } }", json!({"d": mall})).await?,
            "NOT_FOUND"
        );

        // An operator with device.control in the mall only.
        let role = admin
            .ok("mutation { createRole(input: {name: \"Operator\", permissions: [\"site.read\", \"device.control\"]}) { id } }", json!({}))
            .await?;
        let role_id = role["createRole"]["id"].clone();
        let mall_project = project::Entity::find()
            .filter(project::Column::Name.eq("Riverside Mall"))
            .one(server.services.store().db())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no mall"))?
            .id
            .to_string();
        admin
            .ok(
                "mutation($r: ID!, $p: [ID!]) { createUser(input: {email: \"op@demo.local\", password: \"operate-2026\", roleId: $r, projectIds: $p}) { id } }",
                json!({"r": role_id, "p": [mall_project]}),
            )
            .await?;
        let operator = server.login("op@demo.local", "operate-2026").await?;
        assert_eq!(refused(&operator, json!({"detectorId": school, "op": "RESET"})).await?.0, "NOT_FOUND");
        let mall3 = server.detector_id("SW-DEMO-0001", 3).await?;
        let trip = send(&operator, json!({"detectorId": mall3, "op": "TRIP", "password": "operate-2026"})).await?;
        assert_eq!(trip["op"], "TRIP");
        // Set-points also need threshold.manage.
        let mall_food = server.detector_id("SW-DEMO-0002", 1).await?;
        let set = json!({"detectorId": mall_food, "op": "SET_THRESHOLDS", "params": {"leakMa": 300}, "password": "operate-2026"});
        assert_eq!(refused(&operator, set).await?.0, "FORBIDDEN");

        // An API key with device.control cannot re-authenticate for a control command; one
        // issued for control commands (controlCommands) may send them.
        let create = "mutation($r: ID!, $p: [ID!], $c: Boolean, $pw: String) { createApiKey(input: {name: \"bms\", roleId: $r, projectIds: $p, controlCommands: $c, password: $pw}) { secret } }";
        let key = admin.ok(create, json!({"r": role_id, "p": [mall_project], "c": false})).await?;
        let bms = admin.with_token(key["createApiKey"]["secret"].as_str().unwrap_or_default());
        for op in ["TRIP", "RESET"] {
            let (code, field) = refused(&bms, json!({"detectorId": mall_food, "op": op, "password": PASSWORD})).await?;
            assert_eq!((code.as_str(), field), ("FORBIDDEN", None), "{op}");
        }
        let key = admin.ok(create, json!({"r": role_id, "p": [mall_project], "c": true, "pw": PASSWORD})).await?;
        let bms = admin.with_token(key["createApiKey"]["secret"].as_str().unwrap_or_default());
        let reset = send(&bms, json!({"detectorId": mall_food, "op": "RESET"})).await?;
        let actor = admin.ok(GET, json!({"id": reset["id"]})).await?["command"]["actor"].clone();
        assert!(actor.as_str().is_some_and(|a| a.starts_with("api key bms")), "{actor}");
    }
    Ok(())
}

#[tokio::test]
async fn simulated_devices_carry_out_commands() -> anyhow::Result<()> {
    use sparkwatch_api::simulate::run::{Sink, run};
    use sparkwatch_api::simulate::scenarios::{Scenario, SimDevice};
    let (server, clock) = server(&Backend::Sqlite).await?;
    let broker = TestBroker::start(&server)?;
    let (_queue, stop) = sparkwatch_api::start_ingest(&server.services, &broker.prefix, Some(broker.subscriber()));
    let admin = server.demo_login("admin@demo.local").await?;
    let d1 = server.detector_id("SW-DEMO-0001", 1).await?;

    // `sparkwatch simulate` devices answer on their own connections.
    let (stop_sim, sim_rx) = tokio::sync::watch::channel(false);
    let mut device = SimDevice::new("SW-DEMO-0001", 3, Scenario::Normal, 1);
    device.secret = Some(server.device_secret("SW-DEMO-0001").await?);
    let sink = Sink::Mqtt(broker.devices());
    tokio::spawn(run(vec![device], broker.prefix.clone(), Duration::from_secs(60), sink, sim_rx));
    // The simulated device's first reading is stored: it is connected (and subscribed to its
    // commands on connecting), and so is the server.
    eventually("the simulated device's first reading", || async {
        Ok((metric(&server, "sparkwatch_ingest_readings_stored_total").await? > 0.0).then_some(()))
    })
    .await?;
    clock.advance(chrono::Duration::seconds(31));
    let reset = send(&admin, json!({"detectorId": d1, "op": "RESET"})).await?;
    let done = until_status(&admin, &reset["id"], "ACKNOWLEDGED").await?;
    assert_eq!(done["result"]["msg"], "done");
    let _ = stop_sim.send(true);
    let _ = stop.send(true);
    Ok(())
}
