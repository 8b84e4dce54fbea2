//! Hazards, the event view, dead letters and detector readings over real HTTP against SQLite
//! and (when configured) PostgreSQL. Episodes, hazards, events and readings are written with
//! the telemetry store directly (ingestion has its own suite); everything is read and
//! changed through the API: filters, newest-first paging, batch transitions with their
//! audit trail and alarm latch, tenant isolation and project scope.

use std::collections::HashMap;

use sea_orm::prelude::{ChronoDateTimeUtc, ChronoUtc};
use serde_json::{Value, json};
use sparkwatch_api::store::telemetry::{self, DeadLetter, NewEvent, NewReading, Occurrence, Rollup, values_json};
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use sparkwatch_domain::reading::{EventSource, Reading};
use sparkwatch_tests::{Gql, TestServer, backends};

/// A fixed base time (whole seconds, so PostgreSQL's microseconds lose nothing).
fn t(minutes: i64) -> ChronoDateTimeUtc {
    let base: ChronoDateTimeUtc = "2026-03-02T08:00:00Z".parse().unwrap_or_default();
    base + std::time::Duration::from_secs(u64::try_from(minutes * 60).unwrap_or(0))
}

fn at(v: &Value) -> ChronoDateTimeUtc {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_default()
}

/// One demo detector (or a device, for device-wide conditions) with its owners.
#[derive(Clone, Copy, Debug)]
struct Spot {
    tenant: TenantId,
    project: ProjectId,
    device: DeviceId,
    detector: Option<DetectorId>,
}

/// The demo sites, read through the API: `serial/address` → detector, `serial` → device.
struct Demo {
    server: TestServer,
    spots: HashMap<String, Spot>,
    projects: HashMap<String, String>,
}

impl Demo {
    async fn start(backend: &sparkwatch_tests::Backend) -> anyhow::Result<Demo> {
        let server = TestServer::demo(backend).await?;
        let mut spots = HashMap::new();
        let mut projects = HashMap::new();
        for (tenant_name, admin) in [("Demo", "admin@demo.local"), ("Demo B", "admin@demo-b.local")] {
            let tenant = server.services.tenant_by_name(tenant_name).await.map_err(|e| anyhow::anyhow!("{e}"))?.id;
            let gql = server.demo_login(admin).await?;
            let data = gql
                .ok(
                    "{ detectors(first: 200) { edges { node { id address device { id serial project { id name } } } } } }",
                    json!({}),
                )
                .await?;
            for edge in data["detectors"]["edges"].as_array().into_iter().flatten() {
                let n = &edge["node"];
                let serial = n["device"]["serial"].as_str().unwrap_or_default();
                let project: ProjectId = n["device"]["project"]["id"].as_str().unwrap_or_default().parse()?;
                let device: DeviceId = n["device"]["id"].as_str().unwrap_or_default().parse()?;
                let detector: DetectorId = n["id"].as_str().unwrap_or_default().parse()?;
                let spot = Spot { tenant, project, device, detector: Some(detector) };
                spots.insert(format!("{serial}/{}", n["address"]), spot);
                spots.insert(serial.to_owned(), Spot { detector: None, ..spot });
                projects.insert(
                    n["device"]["project"]["name"].as_str().unwrap_or_default().to_owned(),
                    project.to_string(),
                );
            }
        }
        Ok(Demo { server, spots, projects })
    }

    fn spot(&self, key: &str) -> Spot {
        self.spots[key]
    }

    fn project(&self, name: &str) -> String {
        self.projects[name].clone()
    }

    async fn login(&self, who: &str) -> anyhow::Result<Gql> {
        self.server.demo_login(who).await
    }

    /// Raises an occurrence the way ingestion would; returns the hazard id.
    async fn raise(
        &self,
        spot: Spot,
        channel: &str,
        kind: &'static str,
        when: i64,
        value: f64,
    ) -> anyhow::Result<String> {
        let category = if kind == "OFFLINE" || kind.starts_with("SENSOR") { "FAULT" } else { "ALARM" };
        let o = Occurrence {
            tenant: spot.tenant,
            project: spot.project,
            device: spot.device,
            detector: spot.detector,
            channel: channel.to_owned(),
            kind,
            category,
            source: EventSource::Engine,
            at: t(when),
            ingested_at: t(when),
            processed_at: t(when),
            value: Some(value),
            setpoint: Some(300.0),
        };
        Ok(telemetry::raise(self.server.services.store().db(), &o)
            .await?
            .hazard
            .map(|h| h.id.to_string())
            .unwrap_or_default())
    }

    /// Records an event the way ingestion would.
    async fn event(
        &self,
        spot: Spot,
        kind: &'static str,
        category: &'static str,
        channel: &str,
        when: i64,
        remarks: &str,
    ) -> anyhow::Result<String> {
        let e = NewEvent {
            tenant: spot.tenant,
            project: spot.project,
            device: spot.device,
            detector: spot.detector,
            episode: None,
            kind,
            category,
            source: EventSource::Engine,
            channel: channel.to_owned(),
            at: t(when),
            received_at: t(when) + std::time::Duration::from_secs(2),
            value: Some(42.0),
            setpoint: Some(40.0),
            remarks: Some(remarks.to_owned()),
        };
        Ok(telemetry::insert_event(self.server.services.store().db(), &e).await?.id.to_string())
    }
}

fn ids(conn: &Value) -> Vec<String> {
    conn["edges"]
        .as_array()
        .map(|a| a.iter().map(|e| e["node"]["id"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

const HAZARDS: &str = "query($f: HazardFilter, $first: Int, $after: String) {
    hazards(filter: $f, first: $first, after: $after) {
        totalCount pageInfo { hasNextPage hasPreviousPage endCursor }
        edges { cursor node { id status kind category channel occurrences peakValue lastValue setpoint
            openedAt deviceAt ingestedAt firstPushAt firstAcknowledgedAt
            detector { address } device { serial } project { name }
            transitions { fromStatus toStatus actor note at } } } } }";

const EVENTS: &str = "query($f: EventFilter, $first: Int, $after: String) {
    events(filter: $f, first: $first, after: $after) {
        totalCount pageInfo { hasNextPage hasPreviousPage endCursor }
        edges { node { id kind category at receivedAt value setpoint channel deviceName deviceType
            detectorAddress region position remarks detector { address } device { serial } } } } }";

/// Every id of a list, walking the pages `first` at a time; checks the paging facts.
async fn walk(gql: &Gql, query: &str, field: &str, filter: Value, first: i64) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut after = Value::Null;
    let mut count = None;
    loop {
        let data = gql.ok(query, json!({"f": filter, "first": first, "after": after})).await?;
        let conn = &data[field];
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], !after.is_null());
        assert_eq!(*count.get_or_insert(total(conn)), total(conn), "totalCount does not depend on the page");
        let page = ids(conn);
        assert!(page.len() as i64 <= first);
        out.extend(page);
        if conn["pageInfo"]["hasNextPage"] != true {
            assert_eq!(out.len() as i64, total(conn), "the pages add up to totalCount");
            return Ok(out);
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
}

fn total(conn: &Value) -> i64 {
    conn["totalCount"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn hazards_list_filter_and_page_newest_first() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend).await?;
        let mall = demo.spot("SW-DEMO-0001/1");
        let leak = demo.raise(mall, "leak:1", "LEAK_ALARM", 0, 350.0).await?;
        let temp = demo.raise(mall, "temp:2", "TEMP_ALARM", 1, 90.0).await?;
        let school = demo.raise(demo.spot("SW-DEMO-0101/1"), "leak:1", "LEAK_ALARM", 2, 320.0).await?;
        let offline = demo.raise(demo.spot("SW-DEMO-0002"), "detector:0", "OFFLINE", 3, 0.0).await?;
        // A repeat while the episode is open counts an occurrence of the same hazard.
        assert_eq!(demo.raise(mall, "leak:1", "LEAK_ALARM", 4, 500.0).await?, leak);

        let admin = demo.login("admin@demo.local").await?;
        let all = admin.ok(HAZARDS, json!({})).await?;
        assert_eq!(total(&all["hazards"]), 4, "{backend:?}");
        assert_eq!(
            ids(&all["hazards"]),
            vec![offline.clone(), school.clone(), temp.clone(), leak.clone()],
            "newest first"
        );
        let edges = all["hazards"]["edges"].as_array().cloned().unwrap_or_default();
        let node =
            |id: &str| edges.iter().find(|e| e["node"]["id"] == id).map(|e| e["node"].clone()).unwrap_or_default();
        let l = node(&leak);
        assert_eq!(l["status"], "OPEN");
        assert_eq!(l["kind"], "LEAK_ALARM");
        assert_eq!(l["category"], "ALARM");
        assert_eq!(l["channel"], "leak:1");
        assert_eq!(l["occurrences"], 2);
        assert_eq!(l["peakValue"], 500.0);
        assert_eq!(l["lastValue"], 500.0);
        assert_eq!(l["setpoint"], 300.0);
        assert_eq!(at(&l["openedAt"]), t(0));
        assert_eq!(at(&l["deviceAt"]), t(0));
        assert_eq!(at(&l["ingestedAt"]), t(0));
        assert_eq!(l["firstAcknowledgedAt"], Value::Null);
        assert_eq!(l["firstPushAt"], Value::Null);
        assert_eq!(l["detector"]["address"], 1);
        assert_eq!(l["device"]["serial"], "SW-DEMO-0001");
        assert_eq!(l["project"]["name"], "Riverside Mall");
        assert_eq!(l["transitions"], json!([]));
        let o = node(&offline);
        assert_eq!((o["kind"].clone(), o["category"].clone()), (json!("OFFLINE"), json!("FAULT")));
        assert_eq!(o["detector"], Value::Null, "device-wide");
        assert_eq!(o["device"]["serial"], "SW-DEMO-0002");

        // Filters.
        let count = |f: Value| {
            let admin = admin.clone();
            async move { anyhow::Ok(total(&admin.ok(HAZARDS, json!({"f": f})).await?["hazards"])) }
        };
        assert_eq!(count(json!({"statuses": ["OPEN"]})).await?, 4);
        assert_eq!(count(json!({"statuses": ["ACKNOWLEDGED", "CLOSED"]})).await?, 0);
        assert_eq!(count(json!({"kinds": ["LEAK_ALARM"]})).await?, 2);
        assert_eq!(count(json!({"kinds": ["LEAK_ALARM", "OFFLINE"]})).await?, 3);
        assert_eq!(count(json!({"projectIds": [demo.project("Riverside Mall")]})).await?, 3);
        assert_eq!(count(json!({"projectIds": [demo.project("No. 3 Primary School")]})).await?, 1);
        let detector = mall.detector.map(|d| d.to_string());
        assert_eq!(count(json!({"detectorId": detector})).await?, 2);
        assert_eq!(count(json!({"from": t(1), "to": t(3)})).await?, 2, "from inclusive, to exclusive");
        assert_eq!(count(json!({"from": t(1), "kinds": ["TEMP_ALARM"], "statuses": ["OPEN"]})).await?, 1);
        let res = admin.run(HAZARDS, json!({"f": {"detectorId": "nope"}})).await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "detectorId");

        // Paging: every hazard exactly once, in the same order, counts stable.
        for first in [1, 2, 3] {
            let paged = walk(&admin, HAZARDS, "hazards", json!({}), first).await?;
            assert_eq!(paged, ids(&all["hazards"]), "first: {first}");
        }
        let open_mall =
            walk(&admin, HAZARDS, "hazards", json!({"projectIds": [demo.project("Riverside Mall")]}), 2).await?;
        assert_eq!(open_mall, vec![offline.clone(), temp.clone(), leak.clone()]);
        let res = admin.run(HAZARDS, json!({"after": uuid::Uuid::now_v7().to_string()})).await?;
        assert_eq!(res["errors"][0]["extensions"]["code"], "VALIDATION");
        assert_eq!(res["errors"][0]["extensions"]["field"], "after");

        // Single read.
        let one = admin.ok("query($id: ID!) { hazard(id: $id) { id kind } }", json!({"id": temp})).await?;
        assert_eq!(one["hazard"]["kind"], "TEMP_ALARM");
    }
    Ok(())
}

#[tokio::test]
async fn the_event_view_filters_searches_and_pages() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend).await?;
        let mall1 = demo.spot("SW-DEMO-0001/1");
        let food = demo.spot("SW-DEMO-0002");
        let school = demo.spot("SW-DEMO-0101/2");
        let alarm = demo.event(mall1, "LEAK_ALARM", "ALARM", "leak:1", 10, "leakage current alarm on leak:1").await?;
        let pre = demo.event(mall1, "TEMP_ALARM", "PRE_ALARM", "temp:1", 11, "temperature pre-alarm on temp:1").await?;
        let off = demo.event(food, "OFFLINE", "FAULT", "detector:0", 12, "device offline").await?;
        let rec = demo.event(mall1, "RECOVERED", "RECOVERY", "leak:1", 13, "leakage current back to normal").await?;
        let sch =
            demo.event(school, "OVERVOLTAGE", "ALARM", "voltage:2", 14, "over-voltage alarm on voltage:2").await?;
        // Stored last but happened first (a device replaying after an outage).
        let late = demo.event(mall1, "TRIP", "OPERATION", "detector:0", 5, "relay tripped").await?;
        let b = demo.event(demo.spot("SW-DEMOB-0001/1"), "LEAK_ALARM", "ALARM", "leak:1", 15, "B's alarm").await?;

        let admin = demo.login("admin@demo.local").await?;
        let all = admin.ok(EVENTS, json!({})).await?;
        let order = vec![sch.clone(), rec.clone(), off.clone(), pre.clone(), alarm.clone(), late.clone()];
        assert_eq!(ids(&all["events"]), order, "{backend:?}: newest first by device time");
        assert_eq!(total(&all["events"]), 6);

        // The event view's columns.
        let edges = all["events"]["edges"].as_array().cloned().unwrap_or_default();
        let node =
            |id: &str| edges.iter().find(|e| e["node"]["id"] == id).map(|e| e["node"].clone()).unwrap_or_default();
        let a = node(&alarm);
        assert_eq!(a["kind"], "LEAK_ALARM");
        assert_eq!(a["category"], "ALARM");
        assert_eq!(at(&a["at"]), t(10));
        assert_eq!(at(&a["receivedAt"]), t(10) + std::time::Duration::from_secs(2));
        assert_eq!((a["value"].clone(), a["setpoint"].clone()), (json!(42.0), json!(40.0)));
        assert_eq!(a["channel"], "leak:1");
        assert_eq!(a["deviceName"], "Mall main distribution");
        assert_eq!(a["deviceType"], "4G detector module");
        assert_eq!(a["detectorAddress"], 1);
        assert_eq!(a["region"], "Building A");
        assert_eq!(a["position"], "B1 main switch room, feeder 1", "the detector's position");
        assert_eq!(a["remarks"], "leakage current alarm on leak:1");
        assert_eq!(a["detector"]["address"], 1);
        assert_eq!(a["device"]["serial"], "SW-DEMO-0001");
        let o = node(&off);
        assert_eq!(o["detectorAddress"], Value::Null);
        assert_eq!(o["detector"], Value::Null);
        assert_eq!(o["position"], "3F food court panel", "device-wide: the device's position");
        assert_eq!(o["deviceName"], "Mall food court");

        // Filters.
        let list = |f: Value| {
            let admin = admin.clone();
            async move { anyhow::Ok(ids(&admin.ok(EVENTS, json!({"f": f, "first": 200})).await?["events"])) }
        };
        assert_eq!(list(json!({"categories": ["ALARM"]})).await?, vec![sch.clone(), alarm.clone()]);
        assert_eq!(list(json!({"categories": ["ALARM", "PRE_ALARM", "FAULT"]})).await?.len(), 4);
        assert_eq!(list(json!({"kinds": ["RECOVERED", "TRIP"]})).await?, vec![rec.clone(), late.clone()]);
        assert_eq!(list(json!({"from": t(11), "to": t(13)})).await?, vec![off.clone(), pre.clone()]);
        assert_eq!(list(json!({"projectIds": [demo.project("No. 3 Primary School")]})).await?, vec![sch.clone()]);
        let det = mall1.detector.map(|d| d.to_string());
        assert_eq!(
            list(json!({"detectorId": det})).await?,
            vec![rec.clone(), pre.clone(), alarm.clone(), late.clone()]
        );
        assert_eq!(list(json!({"deviceId": food.device.to_string()})).await?, vec![off.clone()]);
        assert_eq!(list(json!({"search": "food court"})).await?, vec![off.clone()], "device name");
        assert_eq!(list(json!({"search": "relay"})).await?, vec![late.clone()], "remarks");
        assert_eq!(list(json!({"search": "SW-DEMO-0101"})).await?, vec![sch.clone()], "serial");
        assert_eq!(list(json!({"search": "feeder 2"})).await?, vec![sch.clone()], "detector position");
        assert_eq!(list(json!({"search": "B's"})).await?, Vec::<String>::new(), "other tenants' rows never match");

        // Paging walks the same order.
        for first in [1, 4] {
            assert_eq!(walk(&admin, EVENTS, "events", json!({}), first).await?, order);
        }

        // Tenant B sees only its own event; the electrician only the mall's.
        let admin_b = demo.login("admin@demo-b.local").await?;
        assert_eq!(ids(&admin_b.ok(EVENTS, json!({})).await?["events"]), vec![b]);
        let e = demo.login("electrician@demo.local").await?;
        let seen = ids(&e.ok(EVENTS, json!({"first": 200})).await?["events"]);
        assert_eq!(seen, vec![rec, off, pre, alarm, late]);
        let none = e.ok(EVENTS, json!({"f": {"projectIds": [demo.project("No. 3 Primary School")]}})).await?;
        assert_eq!(total(&none["events"]), 0);
    }
    Ok(())
}

const ACK: &str = "mutation($ids: [ID!]!, $note: String) { acknowledgeHazards(ids: $ids, note: $note) {
    id status firstAcknowledgedAt transitions { fromStatus toStatus actor note at } } }";
const FALSE_ALARM: &str = "mutation($ids: [ID!]!, $r: String!) { markHazardsFalseAlarm(ids: $ids, reason: $r) { id status transitions { note } } }";
const IGNORE: &str =
    "mutation($ids: [ID!]!, $r: String!) { ignoreHazards(ids: $ids, reason: $r) { id status transitions { note } } }";

async fn statuses(gql: &Gql) -> anyhow::Result<HashMap<String, String>> {
    let data = gql.ok("{ hazards(first: 200) { edges { node { id status } } } }", json!({})).await?;
    Ok(data["hazards"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["node"]["id"].as_str().unwrap_or_default().to_owned(),
                e["node"]["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

#[tokio::test]
async fn batch_transitions_are_all_or_nothing_and_release_the_latch() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend).await?;
        let mall1 = demo.spot("SW-DEMO-0001/1");
        let mall2 = demo.spot("SW-DEMO-0001/2");
        let h1 = demo.raise(mall1, "leak:1", "LEAK_ALARM", 0, 350.0).await?;
        let h2 = demo.raise(mall2, "temp:1", "TEMP_ALARM", 1, 95.0).await?;
        let h3 = demo.raise(mall2, "leak:1", "LEAK_ALARM", 2, 400.0).await?;
        let h4 = demo.raise(demo.spot("SW-DEMO-0101/1"), "leak:1", "LEAK_ALARM", 3, 310.0).await?;
        let fault = demo.raise(mall1, "temp:3", "SENSOR_OPEN", 4, 0.0).await?;
        let manager = demo.login("manager@demo.local").await?;

        // Acknowledge a batch, with a note.
        let before = ChronoUtc::now();
        let acked = manager.ok(ACK, json!({"ids": [h1, h2], "note": "  on my way  "})).await?;
        let list = acked["acknowledgeHazards"].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 2, "{backend:?}");
        assert_eq!(list[0]["id"], h1.as_str(), "in the order asked");
        for h in &list {
            assert_eq!(h["status"], "ACKNOWLEDGED");
            assert!(at(&h["firstAcknowledgedAt"]) >= before - std::time::Duration::from_secs(1));
            let tr = &h["transitions"];
            assert_eq!(tr.as_array().map(Vec::len), Some(1));
            assert_eq!(tr[0]["fromStatus"], "OPEN");
            assert_eq!(tr[0]["toStatus"], "ACKNOWLEDGED");
            assert_eq!(tr[0]["actor"], "manager@demo.local");
            assert_eq!(tr[0]["note"], "on my way");
            assert_eq!(tr[0]["at"], h["firstAcknowledgedAt"]);
        }
        let first_ack = list[0]["firstAcknowledgedAt"].clone();

        // The operation log has one entry per hazard.
        let admin = demo.login("admin@demo.local").await?;
        let log = admin
            .ok("{ operationLog(first: 200) { edges { node { actor action targetType targetId after } } } }", json!({}))
            .await?;
        let entries: Vec<Value> = log["operationLog"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["node"].clone())
            .filter(|n| n["action"] == "hazard.acknowledge")
            .collect();
        let targets: Vec<&str> = entries.iter().filter_map(|n| n["targetId"].as_str()).collect();
        assert_eq!(targets, vec![h1.as_str(), h2.as_str()]);
        assert!(entries.iter().all(|n| n["actor"] == "manager@demo.local" && n["targetType"] == "hazard"));
        assert_eq!(entries[0]["after"]["hazard"]["status"], "Acknowledged");
        assert_eq!(entries[0]["after"]["note"], "on my way");

        // Acknowledging again is a no-op that succeeds (a retried request).
        let again = manager.ok(ACK, json!({"ids": [h1]})).await?;
        assert_eq!(again["acknowledgeHazards"][0]["firstAcknowledgedAt"], first_ack);
        assert_eq!(again["acknowledgeHazards"][0]["transitions"].as_array().map(Vec::len), Some(1));

        // A reason is required for false alarms and ignoring.
        for (q, r) in [(FALSE_ALARM, ""), (FALSE_ALARM, "   "), (IGNORE, "")] {
            let res = manager.run(q, json!({"ids": [h3], "r": r})).await?;
            assert_eq!(res["errors"][0]["extensions"]["code"], "VALIDATION", "{res}");
            assert_eq!(res["errors"][0]["extensions"]["field"], "reason");
        }
        let res = manager.run(ACK, json!({"ids": ["not-an-id"]})).await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "ids");

        let ignored = manager.ok(IGNORE, json!({"ids": [h3], "r": "circuit decommissioned"})).await?;
        assert_eq!(ignored["ignoreHazards"][0]["status"], "IGNORED");
        assert_eq!(ignored["ignoreHazards"][0]["transitions"][0]["note"], "circuit decommissioned");
        let fa = manager.ok(FALSE_ALARM, json!({"ids": [h2], "r": "installer testing"})).await?;
        assert_eq!(fa["markHazardsFalseAlarm"][0]["status"], "FALSE_ALARM", "acknowledged → false alarm");
        assert_eq!(fa["markHazardsFalseAlarm"][0]["transitions"].as_array().map(Vec::len), Some(2));

        // One refused transition fails the whole batch and changes nothing.
        let snapshot = statuses(&admin).await?;
        let res = manager.run(ACK, json!({"ids": [h4, h3]})).await?;
        assert_eq!(res["errors"][0]["extensions"]["code"], "CONFLICT", "{res}");
        let message = res["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&h3) && message.contains("ignored"), "{message}");
        let res = manager.run(IGNORE, json!({"ids": [h4, h2], "r": "x"})).await?;
        assert_eq!(res["errors"][0]["extensions"]["code"], "CONFLICT", "false alarm is terminal");
        assert_eq!(statuses(&admin).await?, snapshot);
        assert_eq!(snapshot[&h4], "OPEN");

        // Acknowledging released the alarm latch: the next occurrence is a new hazard…
        let next = demo.raise(mall1, "leak:1", "LEAK_ALARM", 30, 420.0).await?;
        assert_ne!(next, h1);
        let both = admin
            .ok(HAZARDS, json!({"f": {"detectorId": mall1.detector.map(|d| d.to_string()), "kinds": ["LEAK_ALARM"]}}))
            .await?;
        assert_eq!(ids(&both["hazards"]), vec![next.clone(), h1.clone()]);
        assert_eq!(both["hazards"]["edges"][0]["node"]["status"], "OPEN");
        assert_eq!(both["hazards"]["edges"][1]["node"]["occurrences"], 1, "the handled hazard is left alone");
        // …and while OPEN, repeats still count on the open one.
        assert_eq!(demo.raise(mall1, "leak:1", "LEAK_ALARM", 31, 430.0).await?, next);
        // A fault is not latched: acknowledging it leaves its episode to end with the fault.
        manager.ok(ACK, json!({"ids": [fault]})).await?;
        assert_eq!(demo.raise(mall1, "temp:3", "SENSOR_OPEN", 32, 0.0).await?, fault);
    }
    Ok(())
}

#[tokio::test]
async fn tenants_and_scopes_are_kept_apart() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend).await?;
        let mall = demo.raise(demo.spot("SW-DEMO-0001/1"), "leak:1", "LEAK_ALARM", 0, 350.0).await?;
        let school = demo.raise(demo.spot("SW-DEMO-0101/1"), "leak:1", "LEAK_ALARM", 1, 350.0).await?;
        let depot = demo.raise(demo.spot("SW-DEMOB-0001/1"), "temp:1", "TEMP_ALARM", 2, 99.0).await?;

        // Tenant B sees only its own hazard and cannot touch A's.
        let b = demo.login("admin@demo-b.local").await?;
        assert_eq!(ids(&b.ok(HAZARDS, json!({})).await?["hazards"]), vec![depot.clone()], "{backend:?}");
        let one = "query($id: ID!) { hazard(id: $id) { id } }";
        assert_eq!(b.ok(one, json!({"id": mall})).await?["hazard"], Value::Null);
        for (q, vars) in [
            (ACK, json!({"ids": [mall]})),
            (ACK, json!({"ids": [depot, mall]})),
            (FALSE_ALARM, json!({"ids": [mall], "r": "mine now"})),
            (IGNORE, json!({"ids": [school], "r": "mine now"})),
        ] {
            assert_eq!(b.code(q, vars).await?, "NOT_FOUND");
        }
        let admin = demo.login("admin@demo.local").await?;
        let st = statuses(&admin).await?;
        assert_eq!((st[&mall].as_str(), st[&school].as_str(), st.len()), ("OPEN", "OPEN", 2));
        assert_eq!(statuses(&b).await?[&depot], "OPEN", "the failed batch changed nothing of B's either");
        let filtered = b.ok(HAZARDS, json!({"f": {"projectIds": [demo.project("Riverside Mall")]}})).await?;
        assert_eq!(total(&filtered["hazards"]), 0);

        // The electrician (mall only) sees the mall's hazards; it may acknowledge them (field
        // operations), but not declare them false alarms or ignore them.
        let e = demo.login("electrician@demo.local").await?;
        assert_eq!(ids(&e.ok(HAZARDS, json!({})).await?["hazards"]), vec![mall.clone()]);
        assert_eq!(e.ok(one, json!({"id": school})).await?["hazard"], Value::Null);
        assert_eq!(e.code(FALSE_ALARM, json!({"ids": [mall], "r": "not mine"})).await?, "FORBIDDEN");
        assert_eq!(e.code(IGNORE, json!({"ids": [mall], "r": "not mine"})).await?, "FORBIDDEN");
        assert_eq!(e.code(ACK, json!({"ids": [school]})).await?, "NOT_FOUND");
        // The manager acting on an id outside every scope gets NOT_FOUND.
        let m = demo.login("manager@demo.local").await?;
        assert_eq!(m.code(ACK, json!({"ids": [mall, depot]})).await?, "NOT_FOUND");
        assert_eq!(statuses(&admin).await?[&mall], "OPEN");
        assert_eq!(demo.server.anonymous().code("{ hazards { totalCount } }", json!({})).await?, "UNAUTHENTICATED");

        // Dead letters: tenant admins see their own tenant's only.
        let db = demo.server.services.store().db();
        let (ta, tb) = (demo.spot("SW-DEMO-0001").tenant, demo.spot("SW-DEMOB-0001").tenant);
        let letters = [
            (Some(ta), Some("SW-DEMO-0001"), "invalid_value", "leak 1: -50 mA is impossible", &b"{\"l\":[-50]}"[..], 0),
            (Some(ta), Some("SW-DEMO-0002"), "malformed", "not JSON", &b"garbage"[..], 1),
            (Some(tb), Some("SW-DEMOB-0001"), "malformed", "not JSON", &b"x"[..], 2),
            (None, None, "unknown_device", "no such serial", &b"{}"[..], 3),
        ];
        for (tenant, serial, reason, detail, payload, when) in letters {
            let topic = format!("sw/{}/telemetry", serial.unwrap_or("UNKNOWN"));
            let letter = DeadLetter { tenant, serial, topic: &topic, reason, detail, payload, at: t(when) };
            telemetry::insert_dead_letter(db, letter).await?;
        }
        let dl = "query($first: Int, $after: String) { deadLetters(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { id reason detail topic serial payload receivedAt } } } }";
        let mine = admin.ok(dl, json!({})).await?;
        assert_eq!(total(&mine["deadLetters"]), 2);
        let newest = &mine["deadLetters"]["edges"][0]["node"];
        assert_eq!(newest["reason"], "malformed", "newest first");
        let oldest = &mine["deadLetters"]["edges"][1]["node"];
        assert_eq!(
            (oldest["serial"].as_str(), oldest["payload"].as_str()),
            (Some("SW-DEMO-0001"), Some("{\"l\":[-50]}"))
        );
        assert_eq!(oldest["detail"], "leak 1: -50 mA is impossible");
        assert_eq!(oldest["topic"], "sw/SW-DEMO-0001/telemetry");
        assert_eq!(at(&oldest["receivedAt"]), t(0));
        let page = admin.ok(dl, json!({"first": 1})).await?;
        let rest = admin.ok(dl, json!({"first": 1, "after": page["deadLetters"]["pageInfo"]["endCursor"]})).await?;
        assert_eq!(rest["deadLetters"]["edges"][0]["node"]["reason"], "invalid_value");
        assert_eq!(rest["deadLetters"]["pageInfo"]["hasNextPage"], false);
        assert_eq!(total(&b.ok(dl, json!({})).await?["deadLetters"]), 1);
        assert_eq!(m.code(dl, json!({})).await?, "FORBIDDEN");
    }
    Ok(())
}

fn reading(minute: i64, second: u64, leak: f64, temp: f64) -> Reading {
    Reading {
        at: t(minute) + std::time::Duration::from_secs(second),
        leak_ma: vec![Some(leak)],
        temp_c: vec![Some(temp), None],
        voltage_v: vec![Some(230.0), Some(231.0), Some(229.0)],
        current_a: vec![],
        digital_in: Some(1),
        digital_out: Some(0),
    }
}

const DETECTOR: &str = "query($id: ID!, $from: DateTime!, $to: DateTime!, $bucket: ReadingBucket) { detector(id: $id) {
    latest { at leakMa tempC voltageV currentA digitalIn digitalOut }
    readings(from: $from, to: $to, bucket: $bucket) { at bucket channels { channel min max avg count } reading { leakMa tempC } } } }";

#[tokio::test]
async fn detector_latest_and_reading_curves() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend).await?;
        let spot = demo.spot("SW-DEMO-0001/1");
        let detector = spot.detector.ok_or_else(|| anyhow::anyhow!("no detector"))?;
        let id = detector.to_string();
        let admin = demo.login("admin@demo.local").await?;
        let vars =
            |from: i64, to: i64, bucket: Value| json!({"id": id, "from": t(from), "to": t(to), "bucket": bucket});

        // Nothing measured yet.
        let empty = admin.ok(DETECTOR, vars(0, 60, Value::Null)).await?;
        assert_eq!(empty["detector"]["latest"], Value::Null, "{backend:?}");
        assert_eq!(empty["detector"]["readings"], json!([]));

        let samples = [reading(0, 10, 100.0, 30.0), reading(0, 40, 200.0, 34.0), reading(1, 5, 150.0, 40.0)];
        let rows: Vec<NewReading> = samples
            .iter()
            .map(|r| NewReading { tenant: spot.tenant, detector, at: r.at, received_at: r.at, values: values_json(r) })
            .collect();
        let db = demo.server.services.store().db();
        telemetry::insert_readings(db, &rows).await?;
        // Rollups as ingestion would merge them: two flushes into the first minute.
        let cell = |minute: i64, channel: &str, v: &[f64]| Rollup {
            detector,
            bucket: "minute",
            start: t(minute),
            channel: channel.to_owned(),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            sum: v.iter().sum(),
            count: v.len() as i64,
        };
        telemetry::merge_rollups(db, &[cell(0, "leak:1", &[100.0]), cell(0, "temp:1", &[30.0])]).await?;
        telemetry::merge_rollups(
            db,
            &[
                cell(0, "leak:1", &[200.0]),
                cell(0, "temp:1", &[34.0]),
                cell(1, "leak:1", &[150.0]),
                cell(1, "temp:1", &[40.0]),
            ],
        )
        .await?;

        // Latest falls back to the newest stored reading.
        let data = admin.ok(DETECTOR, vars(0, 60, Value::Null)).await?;
        let latest = &data["detector"]["latest"];
        assert_eq!(at(&latest["at"]), t(1) + std::time::Duration::from_secs(5));
        assert_eq!(latest["leakMa"], json!([150.0]));
        assert_eq!(latest["tempC"], json!([40.0, null]), "null = not measured");
        assert_eq!(latest["voltageV"], json!([230.0, 231.0, 229.0]));
        assert_eq!(latest["currentA"], json!([]));
        assert_eq!((latest["digitalIn"].clone(), latest["digitalOut"].clone()), (json!(1), json!(0)));

        // Raw curve: one point per reading, oldest first.
        let raw = data["detector"]["readings"].as_array().cloned().unwrap_or_default();
        assert_eq!(raw.len(), 3);
        assert_eq!(at(&raw[0]["at"]), samples[0].at);
        assert_eq!(raw[0]["bucket"], Value::Null);
        assert_eq!(raw[1]["reading"]["leakMa"], json!([200.0]));
        let channels: Vec<&str> =
            raw[0]["channels"].as_array().into_iter().flatten().filter_map(|c| c["channel"].as_str()).collect();
        assert_eq!(channels, vec!["leak:1", "temp:1", "voltage:1", "voltage:2", "voltage:3"]);
        assert_eq!(
            raw[0]["channels"][0],
            json!({"channel": "leak:1", "min": 100.0, "max": 100.0, "avg": 100.0, "count": 1})
        );
        let window = admin.ok(DETECTOR, vars(1, 2, Value::Null)).await?;
        assert_eq!(window["detector"]["readings"].as_array().map(Vec::len), Some(1), "[from, to)");

        // Bucketed curve: min/max/avg per channel per minute; `from` inside a bucket includes it.
        let minute = admin
            .ok(
                DETECTOR,
                json!({"id": id, "from": t(0) + std::time::Duration::from_secs(30), "to": t(60), "bucket": "MINUTE"}),
            )
            .await?;
        let pts = minute["detector"]["readings"].as_array().cloned().unwrap_or_default();
        assert_eq!(pts.len(), 2);
        assert_eq!(at(&pts[0]["at"]), t(0));
        assert_eq!(pts[0]["bucket"], "MINUTE");
        assert_eq!(pts[0]["reading"], Value::Null);
        assert_eq!(
            pts[0]["channels"][0],
            json!({"channel": "leak:1", "min": 100.0, "max": 200.0, "avg": 150.0, "count": 2})
        );
        assert_eq!(
            pts[0]["channels"][1],
            json!({"channel": "temp:1", "min": 30.0, "max": 34.0, "avg": 32.0, "count": 2})
        );
        assert_eq!(pts[1]["channels"][0]["count"], 1);
        let hours = admin.ok(DETECTOR, vars(0, 600, json!("HOUR"))).await?;
        assert_eq!(hours["detector"]["readings"], json!([]), "no hour rollups stored");

        // The in-memory latest value wins when ingestion has one.
        demo.server.services.latest().put_all(vec![(detector, reading(5, 0, 999.0, 50.0))]).await;
        let live = admin.ok(DETECTOR, vars(0, 1, Value::Null)).await?;
        assert_eq!(live["detector"]["latest"]["leakMa"], json!([999.0]));

        // Limits.
        for (v, field) in [
            (vars(0, 8 * 24 * 60 + 1, Value::Null), "to"),
            (vars(10, 10, Value::Null), "to"),
            (vars(0, 8 * 24 * 60, json!("MINUTE")), "to"),
        ] {
            let res = admin.run(DETECTOR, v).await?;
            assert_eq!(res["errors"][0]["extensions"]["code"], "VALIDATION", "{res}");
            assert_eq!(res["errors"][0]["extensions"]["field"], field);
        }
        admin.ok(DETECTOR, vars(0, 300 * 24 * 60, json!("HOUR"))).await?;

        // Other tenants cannot reach the detector at all; the electrician (mall) can.
        let b = demo.login("admin@demo-b.local").await?;
        assert_eq!(b.ok(DETECTOR, vars(0, 60, Value::Null)).await?["detector"], Value::Null);
        let e = demo.login("electrician@demo.local").await?;
        assert_eq!(
            e.ok(DETECTOR, vars(0, 60, Value::Null)).await?["detector"]["readings"].as_array().map(Vec::len),
            Some(3)
        );
    }
    Ok(())
}
