//! Work orders and hazards to closure over real HTTP, SQLite and (when configured)
//! PostgreSQL: a detector alarm dispatched by the demo manager, rectified with a photo by the
//! demo electrician and closed by approval; a rejected submission going back; two
//! electricians racing for one order; who may do what; client-id repeats; overdue reminders
//! on a test clock; list filters; and a page of 200 orders in a constant number of queries.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sparkwatch_api::auth::Principal;
use sparkwatch_api::service::Clock;
use sparkwatch_api::service::notify::JobSettings;
use sparkwatch_api::service::workorders::NewOrder;
use sparkwatch_api::store::attachments::{self, Attachment};
use sparkwatch_api::store::telemetry::{self, Occurrence};
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId, UserId};
use sparkwatch_tests::{Backend, Gql, Options, TestServer, WsClient, backends, eventually, fast_jobs, metric};
use uuid::Uuid;

const ORDER: &str = "id title status dueAt overdue report allowedActions project { id name } \
    assignee { id displayName } hazards { id status } attachments { id } \
    history { action fromStatus toStatus actor note at deviceAt }";

fn order_query(op: &str) -> String {
    format!("{op} {{ {ORDER} }} }}")
}

/// A demo detector with its owners.
#[derive(Clone, Copy)]
struct Spot {
    tenant: TenantId,
    project: ProjectId,
    device: DeviceId,
    detector: DetectorId,
}

/// The first detector of `serial` in a `detectors` answer.
fn spot_in(data: &serde_json::Value, tenant: TenantId, serial: &str) -> anyhow::Result<Spot> {
    let edges = data["detectors"]["edges"].as_array().cloned().unwrap_or_default();
    let n = edges
        .iter()
        .map(|e| &e["node"])
        .find(|n| n["device"]["serial"] == serial)
        .ok_or_else(|| anyhow::anyhow!("no detector on {serial}"))?;
    Ok(Spot {
        tenant,
        project: n["device"]["project"]["id"].as_str().unwrap_or_default().parse()?,
        device: n["device"]["id"].as_str().unwrap_or_default().parse()?,
        detector: n["id"].as_str().unwrap_or_default().parse()?,
    })
}

/// The demo tenant seeded on a server, with a mall and a school detector.
struct Demo {
    server: TestServer,
    tenant: TenantId,
    mall: Spot,
    school: Spot,
}

impl Demo {
    async fn start(backend: &Backend, opts: Options) -> anyhow::Result<Demo> {
        let server = TestServer::start_opts(backend, opts).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let tenant = server.services.tenant_by_name("Demo").await.map_err(|e| anyhow::anyhow!("{e}"))?.id;
        let admin = server.demo_login("admin@demo.local").await?;
        let data = admin
            .ok("{ detectors(first: 200) { edges { node { id device { id serial project { id } } } } } }", json!({}))
            .await?;
        let (mall, school) = (spot_in(&data, tenant, "SW-DEMO-0001")?, spot_in(&data, tenant, "SW-DEMO-0101")?);
        Ok(Demo { server, tenant, mall, school })
    }

    /// The first detector of `serial`, as `user` of tenant `tenant_name` sees it.
    async fn spot_of(&self, user: &Gql, tenant_name: &str, serial: &str) -> anyhow::Result<Spot> {
        let tenant = self.server.services.tenant_by_name(tenant_name).await.map_err(|e| anyhow::anyhow!("{e}"))?.id;
        let data = user
            .ok("{ detectors(first: 200) { edges { node { id device { id serial project { id } } } } } }", json!({}))
            .await?;
        spot_in(&data, tenant, serial)
    }

    async fn login(&self, who: &str) -> anyhow::Result<Gql> {
        self.server.demo_login(who).await
    }

    /// Opens a leakage alarm hazard on `spot` the way ingestion does; returns its id.
    async fn alarm(&self, spot: Spot, channel: &str) -> anyhow::Result<String> {
        let now = self.server.services.clock().now();
        let o = Occurrence {
            tenant: spot.tenant,
            project: spot.project,
            device: spot.device,
            detector: Some(spot.detector),
            channel: channel.to_owned(),
            kind: "LEAK_ALARM",
            category: "ALARM",
            source: sparkwatch_domain::reading::EventSource::Engine,
            at: now,
            ingested_at: now,
            processed_at: now,
            value: Some(480.0),
            setpoint: Some(300.0),
        };
        let raised = telemetry::raise(self.server.services.store().db(), &o).await?;
        Ok(raised.hazard.map(|h| h.id.to_string()).unwrap_or_default())
    }

    /// An uploaded (unlinked) photo of `user`, as `POST /attachments` stores it.
    async fn photo(&self, user: &str) -> anyhow::Result<String> {
        let a = Attachment {
            id: Uuid::now_v7(),
            tenant_id: self.tenant,
            uploaded_by: user.parse::<UserId>()?,
            content_type: "image/jpeg".into(),
            size: 1234,
            storage_key: format!("test/{}", Uuid::now_v7()),
            sha256: "0".repeat(64),
            project_id: None,
            subject_type: None,
            subject_id: None,
            created_at: Utc::now(),
        };
        attachments::insert(self.server.services.store().db(), &a).await?;
        Ok(a.id.to_string())
    }
}

async fn me(gql: &Gql) -> anyhow::Result<String> {
    Ok(gql.ok("{ me { id } }", json!({})).await?["me"]["id"].as_str().unwrap_or_default().to_owned())
}

async fn hazard(gql: &Gql, id: &str) -> anyhow::Result<Value> {
    let q = "query($id: ID!) { hazard(id: $id) { status workOrder { id status } transitions { fromStatus toStatus actor note } } }";
    Ok(gql.ok(q, json!({"id": id})).await?["hazard"].clone())
}

async fn dispatch(gql: &Gql, input: Value) -> anyhow::Result<Value> {
    let q = order_query("mutation($i: DispatchHazardsInput!) { dispatchHazards(input: $i)");
    Ok(gql.ok(&q, json!({"i": input})).await?["dispatchHazards"].clone())
}

async fn act(gql: &Gql, op: &str, id: &str) -> anyhow::Result<Value> {
    let q = order_query(&format!("mutation($id: ID!) {{ {op}(id: $id)"));
    Ok(gql.ok(&q, json!({"id": id})).await?[op].clone())
}

async fn submit(gql: &Gql, input: Value) -> anyhow::Result<Value> {
    let q = order_query("mutation($i: SubmitWorkOrderInput!) { submitWorkOrder(input: $i)");
    Ok(gql.ok(&q, json!({"i": input})).await?["submitWorkOrder"].clone())
}

fn actions(order: &Value) -> Vec<&str> {
    order["history"].as_array().into_iter().flatten().filter_map(|h| h["action"].as_str()).collect()
}

fn future(minutes: i64) -> String {
    (Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339()
}

#[tokio::test]
async fn a_detector_alarm_goes_to_closure_through_a_work_order() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend, Options::default()).await?;
        let manager = demo.login("manager@demo.local").await?;
        let electrician = demo.login("electrician@demo.local").await?;
        let sparky = me(&electrician).await?;
        let h = demo.alarm(demo.mall, "leak:1").await?;

        let order = dispatch(
            &manager,
            json!({"hazardIds": [h], "assigneeId": sparky, "dueAt": future(120), "note": "check feeder 2"}),
        )
        .await?;
        let id = order["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(order["status"], "PENDING");
        assert_eq!(order["assignee"]["id"], sparky);
        assert_eq!(order["hazards"], json!([{"id": h, "status": "DISPATCHED"}]));
        assert_eq!(order["allowedActions"], json!([]), "the manager has nothing to do yet: {order}");
        let dispatched = hazard(&manager, &h).await?;
        assert_eq!(dispatched["workOrder"], json!({"id": id, "status": "PENDING"}));
        assert_eq!(dispatched["transitions"][0]["toStatus"], "DISPATCHED");
        assert_eq!(dispatched["transitions"][0]["note"], "check feeder 2");

        // The electrician sees it on the work bench and what it may do.
        let bench = electrician
            .ok(
                "{ workOrders(filter: {assignedToMe: true}) { totalCount edges { node { id allowedActions } } } }",
                json!({}),
            )
            .await?;
        assert_eq!(bench["workOrders"]["edges"][0]["node"], json!({"id": id, "allowedActions": ["ACCEPT", "START"]}));
        assert_eq!(act(&electrician, "acceptWorkOrder", &id).await?["status"], "ACCEPTED");
        assert_eq!(act(&electrician, "startWorkOrder", &id).await?["status"], "IN_PROGRESS");

        // A fix without a photo is refused; with one it is handed in.
        let no_photo = electrician
            .run(
                "mutation($i: SubmitWorkOrderInput!) { submitWorkOrder(input: $i) { id } }",
                json!({"i": {"id": id, "report": "re-terminated the neutral"}}),
            )
            .await?;
        assert_eq!(no_photo["errors"][0]["extensions"]["code"], "VALIDATION", "{no_photo}");
        assert_eq!(no_photo["errors"][0]["extensions"]["field"], "attachmentIds");
        // The photo goes through `POST /attachments`, as the app sends it.
        let photo = demo.server.upload_photo(&electrician).await?;
        let submitted =
            submit(&electrician, json!({"id": id, "report": "re-terminated the neutral", "attachmentIds": [photo]}))
                .await?;
        assert_eq!(submitted["status"], "SUBMITTED");
        assert_eq!(submitted["report"], "re-terminated the neutral");
        assert_eq!(submitted["attachments"], json!([{"id": photo}]));
        assert_eq!(submitted["hazards"][0]["status"], "RECTIFIED");
        assert_eq!(submitted["allowedActions"], json!([]));

        let approved = act(&manager, "approveWorkOrder", &id).await?;
        assert_eq!(approved["status"], "APPROVED");
        assert_eq!(approved["hazards"][0]["status"], "CLOSED");
        assert_eq!(actions(&approved), ["DISPATCH", "ACCEPT", "START", "SUBMIT", "APPROVE"]);
        assert_eq!(approved["history"][3]["actor"], "electrician@demo.local");
        assert_eq!(approved["history"][4]["actor"], "manager@demo.local");

        let closed = hazard(&manager, &h).await?;
        assert_eq!(closed["status"], "CLOSED");
        let steps: Vec<(&str, &str)> = closed["transitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| (t["toStatus"].as_str().unwrap_or_default(), t["actor"].as_str().unwrap_or_default()))
            .collect();
        assert_eq!(
            steps,
            [
                ("DISPATCHED", "manager@demo.local"),
                ("RECTIFIED", "electrician@demo.local"),
                ("CLOSED", "manager@demo.local")
            ]
        );
        assert_eq!(closed["transitions"][1]["note"], "re-terminated the neutral");
        // Every step is in the operation log.
        let admin = demo.login("admin@demo.local").await?;
        let log = admin.ok("{ operationLog(first: 100) { edges { node { action } } } }", json!({})).await?;
        let logged: Vec<&str> = log["operationLog"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["node"]["action"].as_str())
            .collect();
        for a in
            ["work_order.create", "work_order.accept", "work_order.submit", "work_order.approve", "hazard.dispatch"]
        {
            assert!(logged.contains(&a), "{a} missing from {logged:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_rejected_submission_goes_back_to_work() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend, Options::default()).await?;
        let manager = demo.login("manager@demo.local").await?;
        let electrician = demo.login("electrician@demo.local").await?;
        let sparky = me(&electrician).await?;
        let register = "mutation { registerPushToken(input: {platform: ANDROID, token: \"fcm-e\", appId: \"com.example\"}) { id } }";
        electrician.ok(register, json!({})).await?;
        let h = demo.alarm(demo.mall, "leak:2").await?;
        let q = order_query("mutation($i: CreateWorkOrderInput!) { createWorkOrder(input: $i)");
        let input = json!({"projectId": demo.mall.project.to_string(), "title": "Feeder 2", "hazardIds": [h]});
        let order = manager.ok(&q, json!({"i": input})).await?["createWorkOrder"].clone();
        let id = order["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(order["assignee"], Value::Null);
        assert_eq!(actions(&order), ["DISPATCH"]);

        let taken = act(&electrician, "takeWorkOrder", &id).await?;
        assert_eq!((taken["status"].clone(), taken["assignee"]["id"].clone()), (json!("ACCEPTED"), json!(sparky)));
        act(&electrician, "startWorkOrder", &id).await?;
        let photo = demo.photo(&sparky).await?;
        submit(&electrician, json!({"id": id, "report": "fixed", "attachmentIds": [photo]})).await?;

        let reject = "mutation($id: ID!, $n: String!) { rejectWorkOrder(id: $id, note: $n) { status hazards { status } history { action toStatus note } } }";
        assert_eq!(manager.code(reject, json!({"id": id, "n": "  "})).await?, "VALIDATION");
        let back =
            manager.ok(reject, json!({"id": id, "n": "still 60 °C at the busbar"})).await?["rejectWorkOrder"].clone();
        assert_eq!(back["status"], "IN_PROGRESS");
        assert_eq!(back["hazards"][0]["status"], "DISPATCHED");
        assert_eq!(
            back["history"][4],
            json!({"action": "REJECT", "toStatus": "IN_PROGRESS", "note": "still 60 °C at the busbar"})
        );
        assert_eq!(hazard(&manager, &h).await?["status"], "DISPATCHED");
        // The assignee is told why (in the phone's language; the demo users' is zh-CN).
        let admin = demo.login("admin@demo.local").await?;
        let q = "query($u: ID) { notifications(filter: {userId: $u}) { edges { node { reason title body } } } }";
        let log = admin.ok(q, json!({"u": sparky})).await?;
        let told: Vec<&Value> = log["notifications"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["node"])
            .filter(|n| n["reason"] == "work_order.rejected")
            .collect();
        assert_eq!(told.len(), 1, "{log}");
        assert!(told[0]["body"].as_str().is_some_and(|b| b.contains("still 60 °C at the busbar")), "{log}");

        // The electrician tries again with another photo; this time it is approved.
        let again = demo.photo(&sparky).await?;
        let resubmitted =
            submit(&electrician, json!({"id": id, "report": "replaced the breaker", "attachmentIds": [again]})).await?;
        assert_eq!(resubmitted["attachments"].as_array().map(Vec::len), Some(2));
        assert_eq!(act(&manager, "approveWorkOrder", &id).await?["hazards"][0]["status"], "CLOSED");
    }
    Ok(())
}

#[tokio::test]
async fn two_electricians_take_one_order_exactly_one_wins() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend, Options::default()).await?;
        let admin = demo.login("admin@demo.local").await?;
        let manager = demo.login("manager@demo.local").await?;
        admin
            .ok(
                "mutation($p: [ID!]) { createUser(input: {email: \"second@demo.local\", password: \"sparkwatch-2\", roleId: \"electrician\", projectIds: $p}) { id } }",
                json!({"p": [demo.mall.project.to_string()]}),
            )
            .await?;
        let first = demo.login("electrician@demo.local").await?;
        let second = demo.server.login("second@demo.local", "sparkwatch-2").await?;
        let take = "mutation($id: ID!) { takeWorkOrder(id: $id) { assignee { id } } }";
        for round in 0..3 {
            let h = demo.alarm(demo.mall, &format!("leak:{}", 10 + round)).await?;
            let order = dispatch(&manager, json!({"hazardIds": [h]})).await?;
            let id = order["id"].clone();
            let (a, b) = tokio::join!(first.run(take, json!({"id": id})), second.run(take, json!({"id": id})));
            let (a, b) = (a?, b?);
            let wins = [&a, &b].iter().filter(|r| r["errors"].is_null()).count();
            assert_eq!(wins, 1, "round {round}: {a} / {b}");
            let loser = if a["errors"].is_null() { &b } else { &a };
            assert_eq!(loser["errors"][0]["extensions"]["code"], "CONFLICT", "{loser}");
            let winner = if a["errors"].is_null() { &a } else { &b };
            let q = "query($id: ID!) { workOrder(id: $id) { status assignee { id } history { action } } }";
            let stored = manager.ok(q, json!({"id": id})).await?["workOrder"].clone();
            assert_eq!(stored["assignee"], winner["data"]["takeWorkOrder"]["assignee"]);
            assert_eq!(stored["status"], "ACCEPTED");
            assert_eq!(actions(&stored), ["DISPATCH", "TAKE"]);
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_electrician_may_do_field_work_and_nothing_more() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend, Options::default()).await?;
        let admin = demo.login("admin@demo.local").await?;
        let manager = demo.login("manager@demo.local").await?;
        let electrician = demo.login("electrician@demo.local").await?;
        let other_tenant = demo.login("admin@demo-b.local").await?;
        let sparky = me(&electrician).await?;
        let viewer_id = admin
            .ok(
                "mutation($p: [ID!]) { createUser(input: {email: \"viewer@demo.local\", password: \"sparkwatch-3\", roleId: \"viewer\", projectIds: $p}) { id } }",
                json!({"p": [demo.mall.project.to_string()]}),
            )
            .await?["createUser"]["id"]
            .clone();
        let viewer = demo.server.login("viewer@demo.local", "sparkwatch-3").await?;
        let h = demo.alarm(demo.mall, "leak:1").await?;
        let d = "mutation($i: DispatchHazardsInput!) { dispatchHazards(input: $i) { id } }";

        // Managers dispatch, approve and reject; electricians and viewers do not.
        assert_eq!(electrician.code(d, json!({"i": {"hazardIds": [h]}})).await?, "FORBIDDEN");
        assert_eq!(viewer.code(d, json!({"i": {"hazardIds": [h]}})).await?, "FORBIDDEN");
        // Assignees must be electricians with the project in scope; deadlines in the future.
        for (input, field) in [
            (json!({"hazardIds": [h], "assigneeId": viewer_id}), "assigneeId"),
            (json!({"hazardIds": [h], "dueAt": future(-5)}), "dueAt"),
            (json!({"hazardIds": []}), "hazardIds"),
        ] {
            let res = manager.run(d, json!({"i": input})).await?;
            assert_eq!(res["errors"][0]["extensions"]["field"], field, "{res}");
        }
        let school_h = demo.alarm(demo.school, "leak:1").await?;
        let res = manager.run(d, json!({"i": {"hazardIds": [school_h], "assigneeId": sparky}})).await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "assigneeId", "the electrician is mall-only: {res}");
        let res = manager.run(d, json!({"i": {"hazardIds": [h, school_h]}})).await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "hazardIds", "{res}");
        // Electricians acknowledge hazards (the contract gives them that).
        electrician
            .ok("mutation($ids: [ID!]!) { acknowledgeHazards(ids: $ids) { status } }", json!({"ids": [h]}))
            .await?;

        let id = dispatch(&manager, json!({"hazardIds": [h], "assigneeId": sparky})).await?["id"].clone();
        let school = dispatch(&manager, json!({"hazardIds": [school_h]})).await?["id"].clone();
        let by_id = |op: &str| format!("mutation($id: ID!) {{ {op}(id: $id) {{ id }} }}");
        // Field actions need fieldwork; the viewer reads but does not act.
        assert_eq!(viewer.code(&by_id("takeWorkOrder"), json!({"id": school})).await?, "FORBIDDEN");
        assert_eq!(viewer.code(&by_id("startWorkOrder"), json!({"id": id})).await?, "FORBIDDEN");
        let read = "query($id: ID!) { workOrder(id: $id) { id status } }";
        assert_eq!(viewer.ok(read, json!({"id": id})).await?["workOrder"]["status"], "PENDING");
        // Out of scope or another tenant: the order does not exist.
        assert_eq!(electrician.ok(read, json!({"id": school})).await?["workOrder"], Value::Null);
        assert_eq!(electrician.code(&by_id("takeWorkOrder"), json!({"id": school})).await?, "NOT_FOUND");
        assert_eq!(other_tenant.ok(read, json!({"id": id})).await?["workOrder"], Value::Null);
        assert_eq!(other_tenant.code(&by_id("approveWorkOrder"), json!({"id": id})).await?, "NOT_FOUND");
        assert_eq!(
            other_tenant.code(d, json!({"i": {"hazardIds": [h]}})).await?,
            "NOT_FOUND",
            "another tenant's hazard"
        );
        // Someone else's order: another electrician may not accept it; the manager may not
        // start it; the assignee may not approve it.
        assert_eq!(manager.code(&by_id("startWorkOrder"), json!({"id": id})).await?, "FORBIDDEN");
        act(&electrician, "startWorkOrder", id.as_str().unwrap_or_default()).await?;
        let photo = demo.photo(&sparky).await?;
        submit(&electrician, json!({"id": id, "report": "done", "attachmentIds": [photo]})).await?;
        assert_eq!(electrician.code(&by_id("approveWorkOrder"), json!({"id": id})).await?, "FORBIDDEN");
        let reject = "mutation($id: ID!) { rejectWorkOrder(id: $id, note: \"no\") { id } }";
        assert_eq!(electrician.code(reject, json!({"id": id})).await?, "FORBIDDEN");
        assert_eq!(act(&manager, "approveWorkOrder", id.as_str().unwrap_or_default()).await?["status"], "APPROVED");
        assert_eq!(manager.code(&by_id("approveWorkOrder"), json!({"id": id})).await?, "CONFLICT");
    }
    Ok(())
}

#[tokio::test]
async fn repeating_a_client_id_gives_one_result() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend, Options::default()).await?;
        let manager = demo.login("manager@demo.local").await?;
        let electrician = demo.login("electrician@demo.local").await?;
        let sparky = me(&electrician).await?;
        let h = demo.alarm(demo.mall, "leak:3").await?;
        let client = Uuid::new_v4().to_string();
        let input = json!({"clientId": client, "hazardIds": [h], "assigneeId": sparky});
        let once = dispatch(&manager, input.clone()).await?;
        let twice = dispatch(&manager, input).await?;
        assert_eq!(once["id"], twice["id"]);
        let id = once["id"].as_str().unwrap_or_default().to_owned();
        let count = "query($p: [ID!]) { workOrders(filter: {projectIds: $p}) { edges { node { hazards { id } } } } }";
        let listed = manager.ok(count, json!({"p": [demo.mall.project.to_string()]})).await?;
        let with_h = listed["workOrders"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["node"]["hazards"].as_array().is_some_and(|hs| hs.iter().any(|x| x["id"] == h)))
            .count();
        assert_eq!(with_h, 1);

        let start = order_query("mutation($id: ID!, $c: ID) { startWorkOrder(id: $id, clientId: $c)");
        let c = Uuid::new_v4().to_string();
        for _ in 0..2 {
            let res = electrician.ok(&start, json!({"id": id, "c": c})).await?;
            assert_eq!(res["startWorkOrder"]["status"], "IN_PROGRESS", "{res}");
        }
        // Without the client id a second start is a conflict.
        assert_eq!(electrician.code(&start, json!({"id": id})).await?, "CONFLICT");
        let photo = demo.photo(&sparky).await?;
        let sc = Uuid::new_v4().to_string();
        let s = json!({"clientId": sc, "id": id, "report": "done", "attachmentIds": [photo]});
        let first = submit(&electrician, s.clone()).await?;
        let again = submit(&electrician, s).await?;
        assert_eq!(first["status"], "SUBMITTED");
        assert_eq!(again["history"], first["history"]);
        assert_eq!(actions(&again), ["DISPATCH", "START", "SUBMIT"]);
        // A client id is for one operation only.
        let reused = electrician.run(&start, json!({"id": id, "c": sc})).await?;
        assert_eq!(reused["errors"][0]["extensions"]["field"], "clientId", "{reused}");
    }
    Ok(())
}

#[tokio::test]
async fn list_filters_pick_the_right_orders() -> anyhow::Result<()> {
    for backend in backends() {
        let demo = Demo::start(&backend, Options::default()).await?;
        let manager = demo.login("manager@demo.local").await?;
        let electrician = demo.login("electrician@demo.local").await?;
        let sparky = me(&electrician).await?;
        let create = "mutation($i: CreateWorkOrderInput!) { createWorkOrder(input: $i) { id } }";
        let mut made = Vec::new();
        for (title, project, assignee) in [
            ("mine", demo.mall.project, Some(sparky.clone())),
            ("open", demo.mall.project, None),
            ("school", demo.school.project, None),
        ] {
            let mut input = json!({"projectId": project.to_string(), "title": title, "dueAt": future(60)});
            if let Some(a) = assignee {
                input["assigneeId"] = json!(a);
            }
            made.push(manager.ok(create, json!({"i": input})).await?["createWorkOrder"]["id"].clone());
        }
        let list = |gql: &Gql, filter: Value| {
            let (gql, made) = (gql.clone(), made.clone());
            async move {
                let q = "query($f: WorkOrderFilter) { workOrders(filter: $f, first: 200) { edges { node { id } } } }";
                let res = gql.ok(q, json!({"f": filter})).await?;
                let ids: Vec<Value> = res["workOrders"]["edges"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e["node"]["id"].clone())
                    .collect();
                // In creation order, whatever else (demo data) the list holds.
                anyhow::Ok(made.into_iter().filter(|m| ids.contains(m)).collect::<Vec<Value>>())
            }
        };
        let (mine, open, school) = (&made[0], &made[1], &made[2]);
        assert_eq!(list(&electrician, json!({})).await?, [mine.clone(), open.clone()], "the school is out of scope");
        assert_eq!(list(&electrician, json!({"assignedToMe": true})).await?, vec![mine.clone()]);
        assert_eq!(list(&electrician, json!({"unassigned": true})).await?, vec![open.clone()]);
        assert_eq!(list(&manager, json!({"unassigned": true})).await?, [open.clone(), school.clone()]);
        assert_eq!(
            list(&manager, json!({"projectIds": [demo.school.project.to_string()]})).await?,
            vec![school.clone()]
        );
        assert_eq!(list(&manager, json!({"assigneeId": sparky})).await?, vec![mine.clone()]);
        assert_eq!(list(&manager, json!({"statuses": ["ACCEPTED"]})).await?, Vec::<Value>::new());
        act(&electrician, "acceptWorkOrder", mine.as_str().unwrap_or_default()).await?;
        assert_eq!(list(&manager, json!({"statuses": ["ACCEPTED"]})).await?, vec![mine.clone()]);
        assert_eq!(list(&manager, json!({"overdue": true})).await?, Vec::<Value>::new());
        assert_eq!(list(&manager, json!({"overdue": false})).await?.len(), 3);
    }
    Ok(())
}

#[tokio::test]
async fn overdue_orders_remind_the_assignee_then_the_managers() -> anyhow::Result<()> {
    for backend in backends() {
        let clock = std::sync::Arc::new(sparkwatch_api::service::ManualClock::new(Utc::now()));
        let opts = Options { clock: clock.clone(), jobs: fast_jobs(), ..Options::default() };
        let demo = Demo::start(&backend, opts).await?;
        let register = "mutation($t: String!) { registerPushToken(input: {platform: ANDROID, token: $t, appId: \"com.example\"}) { id } }";
        let manager = demo.login("manager@demo.local").await?;
        let electrician = demo.login("electrician@demo.local").await?;
        manager.ok(register, json!({"t": "fcm-manager"})).await?;
        electrician.ok(register, json!({"t": "fcm-electrician"})).await?;
        let sparky = me(&electrician).await?;
        let manager_id = me(&manager).await?;
        let due = clock.now() + chrono::Duration::minutes(30);
        let create = "mutation($i: CreateWorkOrderInput!) { createWorkOrder(input: $i) { id } }";
        let input = json!({"projectId": demo.mall.project.to_string(), "title": "Panel 3", "assigneeId": sparky, "dueAt": due.to_rfc3339()});
        let id = manager.ok(create, json!({"i": input})).await?["createWorkOrder"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();

        let log = |user: String| {
            let server = &demo.server;
            async move {
                let admin = server.demo_login("admin@demo.local").await?;
                let q = "query($u: ID) { notifications(filter: {userId: $u}, first: 100) { edges { node { reason title body } } } }";
                let res = admin.ok(q, json!({"u": user})).await?;
                let reasons: Vec<String> = res["notifications"]["edges"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["node"]["reason"].as_str().map(str::to_owned))
                    .collect();
                anyhow::Ok(reasons)
            }
        };
        let count = |reasons: &[String], r: &str| reasons.iter().filter(|x| x.as_str() == r).count();
        assert_eq!(count(&log(sparky.clone()).await?, "work_order.assigned"), 1);

        clock.advance(chrono::Duration::minutes(29));
        // A reminder pass of our own: whatever is due by now has fired when it returns.
        demo.server.services.fire_reminders(&fast_jobs()).await?;
        assert_eq!(count(&log(sparky.clone()).await?, "work_order.overdue"), 0, "not yet due");
        clock.advance(chrono::Duration::minutes(2));
        eventually("the assignee's reminder", || async {
            Ok((count(&log(sparky.clone()).await?, "work_order.overdue") == 1).then_some(()))
        })
        .await?;
        assert_eq!(count(&log(manager_id.clone()).await?, "work_order.overdue_escalated"), 0);
        // The tenant's escalation policy repeats every 10 minutes: the managers hear next.
        clock.advance(chrono::Duration::minutes(10));
        eventually("the escalation", || async {
            Ok((count(&log(manager_id.clone()).await?, "work_order.overdue_escalated") == 1).then_some(()))
        })
        .await?;
        let q = "query($id: ID!) { workOrder(id: $id) { overdue } }";
        let manager = demo.login("manager@demo.local").await?;
        assert_eq!(manager.ok(q, json!({"id": id})).await?["workOrder"]["overdue"], true);

        // Handed in: the reminders stop.
        let electrician = demo.login("electrician@demo.local").await?;
        act(&electrician, "startWorkOrder", &id).await?;
        submit(&electrician, json!({"id": id, "report": "done"})).await?;
        assert_eq!(count(&log(manager_id.clone()).await?, "work_order.submitted"), 1, "managers hear of submissions");
        clock.advance(chrono::Duration::minutes(30));
        demo.server.services.fire_reminders(&fast_jobs()).await?;
        assert_eq!(count(&log(manager_id.clone()).await?, "work_order.overdue_escalated"), 1);
    }
    Ok(())
}

#[tokio::test]
async fn a_page_of_200_orders_takes_a_constant_number_of_queries() -> anyhow::Result<()> {
    for backend in backends() {
        // Background jobs asleep, so the pool runs only this test's statements.
        let jobs = JobSettings { tick: Duration::from_secs(3600), ..JobSettings::default() };
        let demo = Demo::start(&backend, Options { jobs, ..Options::default() }).await?;
        let services = &demo.server.services;
        let system = Principal::system(demo.tenant, "test");
        let electrician = demo.login("electrician@demo.local").await?;
        let sparky: UserId = me(&electrician).await?.parse()?;
        for i in 0..200 {
            let h: Uuid = demo.alarm(demo.mall, &format!("leak:{}", 100 + i)).await?.parse()?;
            let new = NewOrder {
                hazard_ids: vec![h],
                assignee: Some(sparky),
                due_at: Some(Utc::now() + chrono::Duration::hours(1)),
                ..NewOrder::default()
            };
            let order = services.dispatch_hazards(&system, new, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let photo = Attachment {
                id: Uuid::now_v7(),
                tenant_id: demo.tenant,
                uploaded_by: sparky,
                content_type: "image/jpeg".into(),
                size: 1,
                storage_key: format!("k/{i}"),
                sha256: "0".repeat(64),
                project_id: Some(demo.mall.project),
                subject_type: Some("work_order".into()),
                subject_id: Some(order.id),
                created_at: Utc::now(),
            };
            attachments::insert(services.store().db(), &photo).await?;
        }
        let manager = demo.login("manager@demo.local").await?;
        // What a work bench shows (a page of 200 with all of `ORDER` exceeds the complexity limit).
        let node = "id status overdue allowedActions project { name } assignee { id displayName } \
            hazards { id status } attachments { id } history { action }";
        let q = format!("query($n: Int) {{ workOrders(first: $n) {{ totalCount edges {{ node {{ {node} }} }} }} }}");
        let mut counts = Vec::new();
        for n in [2, 20, 200] {
            let before = services.store().statements();
            let started = std::time::Instant::now();
            let res = manager.ok(&q, json!({"n": n})).await?;
            counts.push(services.store().statements() - before);
            println!("page of {n}: {:?}", started.elapsed());
            let edges = res["workOrders"]["edges"].as_array().cloned().unwrap_or_default();
            assert_eq!(edges.len(), n as usize);
            assert!(edges.iter().all(|e| e["node"]["hazards"].as_array().is_some_and(|h| h.len() == 1)));
            assert!(edges.iter().all(|e| e["node"]["attachments"].as_array().is_some_and(|a| a.len() == 1)));
            assert!(edges.iter().all(|e| e["node"]["assignee"]["id"] == sparky.to_string()));
        }
        println!("statements per workOrders page of 2 / 20 / 200 ({backend:?}): {counts:?}");
        assert!(counts.iter().all(|c| *c == counts[0]), "statements per page: {counts:?}");
    }
    Ok(())
}

#[tokio::test]
async fn work_order_changes_reach_subscribers_in_scope() -> anyhow::Result<()> {
    const CHANGED: &str =
        "subscription { workOrderChanged { id status allowedActions assignee { id } hazards { status } } }";
    for backend in backends() {
        let demo = Demo::start(&backend, Options::default()).await?;
        let manager = demo.login("manager@demo.local").await?;
        let electrician = demo.login("electrician@demo.local").await?;
        let other_tenant = demo.login("admin@demo-b.local").await?;
        let mut ws_manager = WsClient::signed_in(&demo.server, manager.token.as_deref().unwrap_or_default()).await?;
        let mut ws_electrician =
            WsClient::signed_in(&demo.server, electrician.token.as_deref().unwrap_or_default()).await?;
        let mut ws_other = WsClient::signed_in(&demo.server, other_tenant.token.as_deref().unwrap_or_default()).await?;
        for ws in [&mut ws_manager, &mut ws_electrician, &mut ws_other] {
            ws.subscribe("w", CHANGED, json!({})).await?;
        }
        // Every subscription is taken up before the first change.
        eventually("three open subscriptions", || async {
            Ok((metric(&demo.server, "sparkwatch_subscriptions_open").await? == 3.0).then_some(()))
        })
        .await?;
        let wait = Duration::from_secs(10);

        // A school order: the manager hears of it, the mall-only electrician does not.
        let school_h = demo.alarm(demo.school, "leak:1").await?;
        let school = dispatch(&manager, json!({"hazardIds": [school_h]})).await?;
        let seen = ws_manager.next_of("w", wait).await?;
        assert_eq!(seen["data"]["workOrderChanged"]["id"], school["id"]);
        // A mall order reaches both; taking it is a change too. Shared events carry the
        // role's actions (take), never one person's.
        let h = demo.alarm(demo.mall, "leak:1").await?;
        let mall = dispatch(&manager, json!({"hazardIds": [h]})).await?;
        let id = mall["id"].as_str().unwrap_or_default().to_owned();
        let e = ws_electrician.next_of("w", wait).await?;
        assert_eq!(e["data"]["workOrderChanged"]["id"], mall["id"], "{e}");
        assert_eq!(e["data"]["workOrderChanged"]["allowedActions"], json!(["TAKE"]));
        assert_eq!(e["data"]["workOrderChanged"]["hazards"], json!([{"status": "DISPATCHED"}]));
        act(&electrician, "takeWorkOrder", &id).await?;
        let taken = ws_electrician.next_of("w", wait).await?;
        assert_eq!(taken["data"]["workOrderChanged"]["status"], "ACCEPTED");
        assert_eq!(taken["data"]["workOrderChanged"]["allowedActions"], json!([]));
        let m = ws_manager.next_of("w", wait).await?;
        assert_eq!(m["data"]["workOrderChanged"]["id"], mall["id"]);
        // Demo B's own order is the first change its admin hears: nothing of Demo A's leaked.
        let depot = demo.spot_of(&other_tenant, "Demo B", "SW-DEMOB-0001").await?;
        let depot_h = demo.alarm(depot, "leak:1").await?;
        let theirs = dispatch(&other_tenant, json!({"hazardIds": [depot_h]})).await?;
        let first = ws_other.next_of("w", wait).await?;
        assert_eq!(first["data"]["workOrderChanged"]["id"], theirs["id"], "Demo B heard {first}");
    }
    Ok(())
}
