//! Field operations that cross aggregates, over real HTTP on SQLite and (when configured)
//! PostgreSQL: hazards reported by people (`reportHazard`) and the offline outbox
//! (`syncFieldOperations`): one answer per operation in order, repeats changing nothing,
//! a bad operation never rejecting the others, tenancy and roles per operation.

use serde_json::{Value, json};
use sparkwatch_tests::{Gql, TestServer, backends};

const REPORT: &str = "mutation($i: ReportHazardInput!) { reportHazard(input: $i) { id status kind description \
                      checkpointId reportedBy { email } detector { id } } }";
const SYNC: &str = "mutation($ops: [FieldOperationInput!]!) { syncFieldOperations(operations: $ops) { clientId status \
                    code field message entityId hazard { id status } } }";

fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The demo's mall project (the electrician's), its other project, and a mall detector.
async fn demo_ids(admin: &Gql) -> anyhow::Result<(String, String, String)> {
    let data = admin
        .ok("{ detectors(first: 100) { edges { node { id device { project { id name } } } } } }", json!({}))
        .await?;
    let mut mall = None;
    let mut other = None;
    let mut detector = None;
    for edge in data["detectors"]["edges"].as_array().into_iter().flatten() {
        let node = &edge["node"];
        let project = &node["device"]["project"];
        let id = project["id"].as_str().unwrap_or_default().to_owned();
        if project["name"].as_str().unwrap_or_default().contains("Mall") {
            detector = detector.or(node["id"].as_str().map(str::to_owned));
            mall = Some(id);
        } else {
            other = Some(id);
        }
    }
    match (mall, other, detector) {
        (Some(m), Some(o), Some(d)) => Ok((m, o, d)),
        _ => anyhow::bail!("demo projects not as expected: {data}"),
    }
}

#[tokio::test]
async fn people_report_hazards_within_their_projects() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let (mall, other, detector) = demo_ids(&admin).await?;
        let electrician = server.demo_login("electrician@demo.local").await?;
        let reported = "{ hazards(filter: {kinds: [FIELD_REPORT]}) { totalCount } }";
        let before = admin.ok(reported, json!({})).await?["hazards"]["totalCount"].as_u64().unwrap_or_default();

        let input = json!({"projectId": mall, "detectorId": detector, "description": "Scorched cable at box 3",
                           "clientId": uuid()});
        let first = electrician.ok(REPORT, json!({"i": input})).await?;
        let h = &first["reportHazard"];
        assert_eq!(h["status"], "OPEN", "{backend:?}");
        assert_eq!(h["kind"], "FIELD_REPORT");
        assert_eq!(h["description"], "Scorched cable at box 3");
        assert_eq!(h["reportedBy"]["email"], "electrician@demo.local");
        assert_eq!(h["detector"]["id"], detector.as_str());
        // The same client id again: the same hazard, not a second one.
        let again = electrician.ok(REPORT, json!({"i": input})).await?;
        assert_eq!(again["reportHazard"]["id"], h["id"]);
        let count = admin.ok(reported, json!({})).await?;
        assert_eq!(count["hazards"]["totalCount"], before + 1, "{backend:?}");

        // Outside the electrician's scope, another tenant's project, a detector of another
        // project, a blank description, a clock far ahead: refused with the field named.
        let cases = [
            (json!({"projectId": other, "description": "x"}), "NOT_FOUND"),
            (json!({"projectId": mall, "description": "  "}), "VALIDATION"),
            (json!({"projectId": mall, "description": "x", "at": "2099-01-01T00:00:00Z"}), "VALIDATION"),
            (json!({"projectId": mall, "description": "x", "checkpointId": uuid()}), "VALIDATION"),
            (json!({"projectId": mall, "description": "x", "attachmentIds": [uuid()]}), "VALIDATION"),
        ];
        for (input, code) in cases {
            assert_eq!(electrician.code(REPORT, json!({"i": input})).await?, code, "{backend:?} {input}");
        }
        let manager = server.demo_login("manager@demo.local").await?;
        let (_, _, other_detector) = {
            let d = manager
                .ok("{ detectors(first: 100) { edges { node { id device { project { id } } } } } }", json!({}))
                .await?;
            let other_det = d["detectors"]["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["node"]["device"]["project"]["id"] == other.as_str())
                .and_then(|e| e["node"]["id"].as_str())
                .unwrap_or_default()
                .to_owned();
            (0, 0, other_det)
        };
        let wrong = json!({"projectId": mall, "description": "x", "detectorId": other_detector});
        assert_eq!(manager.code(REPORT, json!({"i": wrong})).await?, "VALIDATION");
        let foreign = server.demo_login("admin@demo-b.local").await?;
        assert_eq!(
            foreign.code(REPORT, json!({"i": {"projectId": mall, "description": "x"}})).await?,
            "NOT_FOUND",
            "another tenant's project looks absent"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_offline_outbox_applies_once_in_order_and_bad_operations_stand_alone() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let (mall, other, _) = demo_ids(&admin).await?;
        let electrician = server.demo_login("electrician@demo.local").await?;
        let reported = "{ hazards(filter: {kinds: [FIELD_REPORT]}) { totalCount } }";
        let before = admin.ok(reported, json!({})).await?["hazards"]["totalCount"].as_u64().unwrap_or_default();

        let report = uuid();
        let bad = uuid();
        let ack = uuid();
        let at = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let mut ops = vec![
            json!({"clientId": report, "at": at, "reportHazard": {"projectId": mall, "description": "Water in the cabinet"}}),
            json!({"clientId": bad, "at": at, "reportHazard": {"projectId": other, "description": "not mine"}}),
        ];
        let first = electrician.ok(SYNC, json!({"ops": ops})).await?;
        let answers = first["syncFieldOperations"].as_array().cloned().unwrap_or_default();
        assert_eq!(answers.len(), 2, "{first}");
        assert_eq!(answers[0]["clientId"], report.as_str());
        assert_eq!(answers[0]["status"], "APPLIED", "{backend:?} {first}");
        assert_eq!(answers[0]["hazard"]["status"], "OPEN");
        assert_eq!(answers[1]["status"], "REJECTED", "{first}");
        assert_eq!(answers[1]["code"], "NOT_FOUND");
        let hazard = answers[0]["entityId"].clone();

        // The phone lost the answer and sends everything again, plus an acknowledgement,
        // a malformed operation and an operation with two kinds at once.
        ops.push(json!({"clientId": ack, "at": at, "acknowledgeHazard": {"hazardId": hazard, "note": "seen"}}));
        ops.push(json!({"clientId": uuid(), "at": at, "acknowledgeHazard": {"hazardId": "not-an-id"}}));
        ops.push(json!({"clientId": uuid(), "at": at}));
        let second = electrician.ok(SYNC, json!({"ops": ops})).await?;
        let a = second["syncFieldOperations"].as_array().cloned().unwrap_or_default();
        let statuses: Vec<&str> = a.iter().map(|x| x["status"].as_str().unwrap_or_default()).collect();
        assert_eq!(statuses, ["DUPLICATE", "REJECTED", "APPLIED", "REJECTED", "REJECTED"], "{backend:?} {second}");
        assert_eq!(a[0]["entityId"], hazard, "a duplicate names the first result");
        assert_eq!(a[2]["hazard"]["status"], "ACKNOWLEDGED");
        assert_eq!(a[3]["field"], "acknowledgeHazard.hazardId");
        assert_eq!(a[4]["code"], "VALIDATION");

        // Out of order and a third time: nothing changes.
        ops.reverse();
        let third = electrician.ok(SYNC, json!({"ops": ops})).await?;
        let dup = third["syncFieldOperations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["status"] == "DUPLICATE")
            .count();
        assert_eq!(dup, 2, "{third}");
        let hazards = admin
            .ok(
                "query($id: ID!) { hazard(id: $id) { status transitions { toStatus actor note } } \
                 all: hazards(filter: {kinds: [FIELD_REPORT]}) { totalCount } }",
                json!({"id": hazard}),
            )
            .await?;
        assert_eq!(hazards["all"]["totalCount"], before + 1, "{backend:?}");
        let transitions = hazards["hazard"]["transitions"].as_array().cloned().unwrap_or_default();
        assert_eq!(transitions.len(), 1, "acknowledged once: {hazards}");
        assert_eq!(transitions[0]["actor"], "electrician@demo.local");

        // A client id reused for another kind of operation is refused, not applied.
        let reuse = electrician
            .ok(SYNC, json!({"ops": [{"clientId": report, "at": at, "acknowledgeHazard": {"hazardId": hazard}}]}))
            .await?;
        assert_eq!(reuse["syncFieldOperations"][0]["status"], "REJECTED", "{reuse}");
        assert_eq!(reuse["syncFieldOperations"][0]["field"], "clientId");
    }
    Ok(())
}

#[tokio::test]
async fn sync_checks_roles_per_operation_and_refuses_api_keys_and_huge_batches() -> anyhow::Result<()> {
    let backend = sparkwatch_tests::Backend::Sqlite;
    let server = TestServer::demo(&backend).await?;
    let admin = server.demo_login("admin@demo.local").await?;
    let (mall, _, _) = demo_ids(&admin).await?;
    admin
        .ok(
            "mutation($p: [ID!]) { createUser(input: {email: \"viewer@demo.local\", password: \"viewer-2026\", roleId: \"viewer\", projectIds: $p}) { id } }",
            json!({"p": [mall]}),
        )
        .await?;
    let viewer = server.login("viewer@demo.local", "viewer-2026").await?;
    let op = json!({"clientId": uuid(), "at": chrono::Utc::now().to_rfc3339(), "reportHazard": {"projectId": mall, "description": "x"}});
    let res = viewer.ok(SYNC, json!({"ops": [op]})).await?;
    assert_eq!(res["syncFieldOperations"][0]["status"], "REJECTED", "{res}");
    assert_eq!(res["syncFieldOperations"][0]["code"], "FORBIDDEN");
    assert_eq!(viewer.code(REPORT, json!({"i": {"projectId": mall, "description": "x"}})).await?, "FORBIDDEN");

    let anonymous = server.anonymous();
    assert_eq!(anonymous.code(SYNC, json!({"ops": []})).await?, "UNAUTHENTICATED");

    let electrician = server.demo_login("electrician@demo.local").await?;
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"clientId": uuid(), "at": chrono::Utc::now().to_rfc3339(), "acknowledgeHazard": {"hazardId": uuid()}}))
        .collect();
    assert_eq!(electrician.code(SYNC, json!({"ops": many})).await?, "VALIDATION");
    Ok(())
}

#[tokio::test]
async fn work_done_offline_is_synced_once_and_conflicts_show_the_current_order() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let (mall, _, _) = demo_ids(&admin).await?;
        let electrician = server.demo_login("electrician@demo.local").await?;
        let manager = server.demo_login("manager@demo.local").await?;
        let me = electrician.ok("{ me { id } }", json!({})).await?["me"]["id"].clone();
        let hazard = electrician
            .ok(REPORT, json!({"i": {"projectId": mall, "description": "Loose neutral in box 7"}}))
            .await?["reportHazard"]["id"]
            .clone();
        let order = manager
            .ok(
                "mutation($i: DispatchHazardsInput!) { dispatchHazards(input: $i) { id status } }",
                json!({"i": {"hazardIds": [hazard], "assigneeId": me}}),
            )
            .await?["dispatchHazards"]["id"]
            .clone();
        let photo = server.upload_photo(&electrician).await?;

        let at = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
        let ops = json!([
            {"clientId": uuid(), "at": at, "startWorkOrder": {"id": order}},
            {"clientId": uuid(), "at": at, "submitWorkOrder": {"id": order, "report": "Tightened and tested", "attachmentIds": [photo]}},
        ]);
        let sync = "mutation($ops: [FieldOperationInput!]!) { syncFieldOperations(operations: $ops) { status code \
                    workOrder { status } } }";
        let first = electrician.ok(sync, json!({"ops": ops})).await?;
        let a = &first["syncFieldOperations"];
        assert_eq!(a[0]["status"], "APPLIED", "{backend:?} {first}");
        assert_eq!(a[1]["status"], "APPLIED", "{backend:?} {first}");
        assert_eq!(a[1]["workOrder"]["status"], "SUBMITTED");
        let again = electrician.ok(sync, json!({"ops": ops})).await?;
        assert_eq!(again["syncFieldOperations"][0]["status"], "DUPLICATE", "{again}");
        assert_eq!(again["syncFieldOperations"][1]["status"], "DUPLICATE", "{again}");
        let h = manager
            .ok(
                "query($id: ID!) { hazard(id: $id) { status attachments { id } transitions { toStatus } } }",
                json!({"id": hazard}),
            )
            .await?;
        assert_eq!(h["hazard"]["status"], "RECTIFIED", "{backend:?} {h}");
        assert_eq!(h["hazard"]["transitions"].as_array().map(Vec::len), Some(2), "dispatched, rectified once: {h}");

        // The manager approves meanwhile; a start queued later on the phone conflicts and
        // shows the order as it is now.
        manager.ok("mutation($id: ID!) { approveWorkOrder(id: $id) { status } }", json!({"id": order})).await?;
        let late = json!([{"clientId": uuid(), "at": at, "startWorkOrder": {"id": order}}]);
        let res = electrician.ok(sync, json!({"ops": late})).await?;
        assert_eq!(res["syncFieldOperations"][0]["status"], "CONFLICT", "{backend:?} {res}");
        assert_eq!(res["syncFieldOperations"][0]["workOrder"]["status"], "APPROVED");
    }
    Ok(())
}

#[tokio::test]
async fn the_demo_shows_field_work_at_once() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        sparkwatch_api::demo::seed_field_work(&server.services).await?;
        let electrician = server.demo_login("electrician@demo.local").await?;
        let open = electrician
            .ok(
                "{ workOrders(filter: {unassigned: true}) { totalCount edges { node { status allowedActions \
                 hazards { kind status } } } } }",
                json!({}),
            )
            .await?;
        let orders = &open["workOrders"];
        assert_eq!(orders["totalCount"], 1, "{backend:?} {open}");
        let order = &orders["edges"][0]["node"];
        assert_eq!(order["status"], "PENDING");
        assert_eq!(order["allowedActions"], json!(["TAKE"]), "{open}");
        assert_eq!(order["hazards"][0]["kind"], "FIELD_REPORT");
        assert_eq!(order["hazards"][0]["status"], "DISPATCHED");
        let tasks = electrician
            .ok(
                "{ patrolTasks(filter: {assignedToMe: true}) { totalCount edges { node { status plan { name } \
                 checkpoints { checked checkpoint { name qrPayload checklist } } } } } }",
                json!({}),
            )
            .await?;
        assert_eq!(tasks["patrolTasks"]["totalCount"], 1, "{backend:?} {tasks}");
        let task = &tasks["patrolTasks"]["edges"][0]["node"];
        assert_eq!(task["status"], "DUE");
        assert_eq!(task["checkpoints"].as_array().map(Vec::len), Some(3), "{task}");
        assert!(task["checkpoints"][0]["checkpoint"]["qrPayload"].as_str().is_some_and(|q| q.starts_with("SWQ1.")));
    }
    Ok(())
}

#[tokio::test]
async fn the_electrician_may_do_what_the_contract_gives_it_and_nothing_more() -> anyhow::Result<()> {
    let server = TestServer::demo(&sparkwatch_tests::Backend::Sqlite).await?;
    let admin = server.demo_login("admin@demo.local").await?;
    let (mall, _, detector) = demo_ids(&admin).await?;
    let electrician = server.demo_login("electrician@demo.local").await?;
    let id = uuid();
    let now = chrono::Utc::now().to_rfc3339();
    // Guards run before anything is looked up, so unknown ids still tell allowed from not.
    let allowed = [
        ("{ projects { totalCount } }", json!({})),
        ("mutation($id: ID!) { acknowledgeHazards(ids: [$id]) { id } }", json!({"id": id})),
        ("mutation($p: ID!) { reportHazard(input: {projectId: $p, description: \"x\"}) { id } }", json!({"p": mall})),
        ("mutation($id: ID!) { takeWorkOrder(id: $id) { id } }", json!({"id": id})),
        ("mutation($id: ID!) { acceptWorkOrder(id: $id) { id } }", json!({"id": id})),
        ("mutation($id: ID!) { startWorkOrder(id: $id) { id } }", json!({"id": id})),
        ("mutation($id: ID!) { submitWorkOrder(input: {id: $id, report: \"done\"}) { id } }", json!({"id": id})),
        (
            "mutation($id: ID!, $at: DateTime!) { checkIn(input: {clientId: $id, taskId: $id, qrPayload: \"x\", at: $at, answers: []}) { id } }",
            json!({"id": id, "at": now}),
        ),
        ("{ workOrders { totalCount } patrolTasks { totalCount } }", json!({})),
    ];
    for (query, vars) in allowed {
        let res = electrician.run(query, vars).await?;
        let code = res["errors"][0]["extensions"]["code"].as_str().unwrap_or("none");
        assert_ne!(code, "FORBIDDEN", "{query}: {res}");
        assert_ne!(code, "UNAUTHENTICATED", "{query}: {res}");
    }
    assert!(!server.upload_photo(&electrician).await?.is_empty(), "electricians upload photos");
    let forbidden = [
        ("mutation($id: ID!) { dispatchHazards(input: {hazardIds: [$id]}) { id } }", json!({"id": id})),
        ("mutation($p: ID!) { createWorkOrder(input: {projectId: $p, title: \"x\"}) { id } }", json!({"p": mall})),
        ("mutation($id: ID!) { approveWorkOrder(id: $id) { id } }", json!({"id": id})),
        ("mutation($id: ID!) { rejectWorkOrder(id: $id, note: \"no\") { id } }", json!({"id": id})),
        ("mutation($id: ID!) { markHazardsFalseAlarm(ids: [$id], reason: \"x\") { id } }", json!({"id": id})),
        ("mutation($id: ID!) { ignoreHazards(ids: [$id], reason: \"x\") { id } }", json!({"id": id})),
        (
            "mutation($p: ID!) { createCheckpoint(input: {projectId: $p, name: \"x\", checklist: [\"y\"]}) { id } }",
            json!({"p": mall}),
        ),
        (
            "mutation($p: ID!, $c: ID!) { createPatrolPlan(input: {projectId: $p, name: \"x\", checkpointIds: [$c], schedule: DAILY, assigneeIds: []}) { id } }",
            json!({"p": mall, "c": id}),
        ),
        ("mutation($d: ID!) { sendCommand(input: {detectorId: $d, op: RESET}) { id } }", json!({"d": detector})),
        ("mutation { createProject(input: {name: \"x\"}) { id } }", json!({})),
        ("{ deadLetters { totalCount } }", json!({})),
    ];
    for (query, vars) in forbidden {
        assert_eq!(electrician.code(query, vars).await?, "FORBIDDEN", "{query}");
    }
    Ok(())
}

#[tokio::test]
async fn managers_hear_of_hazards_people_find_once_however_often_synced() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let (mall, _, _) = demo_ids(&admin).await?;
        let manager = server.demo_login("manager@demo.local").await?;
        let manager_id = manager.ok("{ me { id } }", json!({})).await?["me"]["id"].clone();
        let register = "mutation { registerPushToken(input: {platform: ANDROID, token: \"fcm-m\", appId: \"com.example\"}) { id } }";
        manager.ok(register, json!({})).await?;
        let electrician = server.demo_login("electrician@demo.local").await?;

        electrician
            .ok(REPORT, json!({"i": {"projectId": mall, "description": "Exposed live conductor at the loading bay"}}))
            .await?;
        let op = json!({"clientId": uuid(), "at": chrono::Utc::now().to_rfc3339(),
                        "reportHazard": {"projectId": mall, "description": "Water dripping onto panel 4"}});
        for _ in 0..2 {
            electrician.ok(SYNC, json!({"ops": [op]})).await?;
        }
        let q = "query($u: ID) { notifications(filter: {userId: $u}, first: 100) { edges { node { reason body } } } }";
        let log = admin.ok(q, json!({"u": manager_id})).await?;
        let told: Vec<String> = log["notifications"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["node"]["reason"] == "hazard.reported")
            .map(|e| e["node"]["body"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(told.len(), 2, "{backend:?} {log}");
        assert!(told.iter().any(|b| b.contains("Exposed live conductor")), "{told:?}");
        assert!(told.iter().any(|b| b.contains("Water dripping")), "{told:?}");
        assert!(told.iter().all(|b| b.contains("electrician@demo.local")), "{told:?}");
    }
    Ok(())
}
