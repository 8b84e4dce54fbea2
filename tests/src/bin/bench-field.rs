//! Field-operations benchmark (not a test), against the real server over HTTP on SQLite and,
//! when `SPARKWATCH_TEST_DATABASE_URL` is set, PostgreSQL:
//!
//! 1. One `syncFieldOperations` call carrying a phone's whole offline outbox: N/2 patrol
//!    check-ins (each with its checklist answers) and N/2 hazard reports; then the same call
//!    again (every operation a duplicate).
//! 2. One page of 200 work orders with their hazards, assignees, photos and history: its
//!    time and the number of database statements it ran (the same for a page of 2).
//!
//! Same-run floor: one trivial authenticated GraphQL request (`me`).
//!
//! `cargo run --release -p sparkwatch-tests --bin bench-field -- [--operations 500] [--runs 3]`

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sparkwatch_tests::bench::arg;
use sparkwatch_tests::{Backend, Gql, TestServer, backends};

const SYNC: &str =
    "mutation($ops: [FieldOperationInput!]!) { syncFieldOperations(operations: $ops) { status code message } }";
const CHECKLIST: [&str; 3] = ["Cabinet closed", "No smell of burning", "Indicator lamps normal"];
const ORDERS: &str = "query($n: Int) { workOrders(first: $n) { totalCount edges { node { id title status overdue \
                      allowedActions assignee { id email } project { id name } hazards { id status kind description } \
                      attachments { id } history { action actor at } } } } }";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The demo tenant signed in, the mall's id and the electrician's id.
struct Site {
    server: TestServer,
    manager: Gql,
    electrician: Gql,
    mall: String,
    electrician_id: String,
}

async fn site(backend: &Backend) -> anyhow::Result<Site> {
    let server = TestServer::demo(backend).await?;
    let manager = server.demo_login("manager@demo.local").await?;
    let electrician = server.demo_login("electrician@demo.local").await?;
    let data = manager.ok("{ projects { edges { node { id name } } } }", json!({})).await?;
    let mall = data["projects"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["node"]["name"] == "Riverside Mall")
        .and_then(|e| e["node"]["id"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("no mall in the demo: {data}"))?;
    let me = electrician.ok("{ me { id } }", json!({})).await?;
    let electrician_id = me["me"]["id"].as_str().unwrap_or_default().to_owned();
    Ok(Site { server, manager, electrician, mall, electrician_id })
}

/// `(task id, QR payload)` for `n` check-ins: daily plans of at most 200 checkpoints each,
/// walked by the electrician (each plan starts with today's task).
async fn check_in_targets(s: &Site, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut targets = Vec::with_capacity(n);
    let mut plan_no = 0;
    while targets.len() < n {
        plan_no += 1;
        let size = (n - targets.len()).min(200);
        let mut points = Vec::with_capacity(size);
        for i in 0..size {
            let input =
                json!({"projectId": s.mall, "name": format!("Round {plan_no} box {i}"), "checklist": CHECKLIST});
            let c = s
                .manager
                .ok(
                    "mutation($i: CreateCheckpointInput!) { createCheckpoint(input: $i) { id qrPayload } }",
                    json!({"i": input}),
                )
                .await?;
            points.push(c["createCheckpoint"].clone());
        }
        let ids: Vec<&Value> = points.iter().map(|p| &p["id"]).collect();
        let input = json!({"projectId": s.mall, "name": format!("Bench round {plan_no}"), "checkpointIds": ids,
                           "schedule": "DAILY", "assigneeIds": [s.electrician_id]});
        let plan = s
            .manager
            .ok("mutation($i: CreatePatrolPlanInput!) { createPatrolPlan(input: $i) { id } }", json!({"i": input}))
            .await?;
        let plan_id = plan["createPatrolPlan"]["id"].clone();
        let tasks = s
            .electrician
            .ok(
                "{ patrolTasks(filter: {assignedToMe: true}, first: 200) { edges { node { id plan { id } } } } }",
                json!({}),
            )
            .await?;
        let task = tasks["patrolTasks"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["node"]["plan"]["id"] == plan_id)
            .and_then(|e| e["node"]["id"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow::anyhow!("the plan has no task: {tasks}"))?;
        targets.extend(points.iter().map(|p| (task.clone(), p["qrPayload"].as_str().unwrap_or_default().to_owned())));
    }
    Ok(targets)
}

/// The outbox: a check-in and a hazard report, alternately.
fn outbox(s: &Site, targets: &[(String, String)]) -> Vec<Value> {
    let at = (chrono::Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();
    let answers: Vec<Value> = CHECKLIST.iter().map(|item| json!({"item": item, "ok": true})).collect();
    let mut ops = Vec::with_capacity(targets.len() * 2);
    for (i, (task, qr)) in targets.iter().enumerate() {
        let client = uuid::Uuid::now_v7().to_string();
        ops.push(json!({"clientId": client, "at": at, "checkIn": {"clientId": client, "taskId": task,
                        "qrPayload": qr, "at": at, "answers": answers}}));
        ops.push(json!({"clientId": uuid::Uuid::now_v7().to_string(), "at": at,
                        "reportHazard": {"projectId": s.mall, "description": format!("Finding {i} on the round")}}));
    }
    ops
}

fn count(res: &Value, status: &str) -> usize {
    res["syncFieldOperations"].as_array().into_iter().flatten().filter(|a| a["status"] == status).count()
}

async fn sync_runs(s: &Site, name: &str, n: usize, runs: u64) -> anyhow::Result<()> {
    for run in 1..=runs {
        let targets = check_in_targets(s, n / 2).await?;
        let ops = outbox(s, &targets);
        let floor = Instant::now();
        s.electrician.ok("{ me { email } }", json!({})).await?;
        let floor = floor.elapsed();
        let started = Instant::now();
        let first = s.electrician.ok(SYNC, json!({"ops": ops})).await?;
        let first_t = started.elapsed();
        let started = Instant::now();
        let again = s.electrician.ok(SYNC, json!({"ops": ops})).await?;
        let again_t = started.elapsed();
        let applied = count(&first, "APPLIED");
        if applied != ops.len() {
            let sample = first["syncFieldOperations"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["status"] != "APPLIED").cloned());
            eprintln!("  not applied, e.g.: {sample:?}");
        }
        println!(
            "{name} sync run {run}: {} operations ({} check-ins + {} reports) in {:.0} ms ({applied} APPLIED); \
             repeated in {:.0} ms ({} DUPLICATE); floor (one `me` query) {:.1} ms",
            ops.len(),
            targets.len(),
            targets.len(),
            ms(first_t),
            ms(again_t),
            count(&again, "DUPLICATE"),
            ms(floor),
        );
    }
    Ok(())
}

async fn order_page(s: &Site, name: &str) -> anyhow::Result<()> {
    // 200 orders, each dispatching a hazard found on site, assigned to the electrician.
    for i in 0..200 {
        let h = s
            .manager
            .ok(
                "mutation($i: ReportHazardInput!) { reportHazard(input: $i) { id } }",
                json!({"i": {"projectId": s.mall, "description": format!("Bench hazard {i}")}}),
            )
            .await?;
        let input = json!({"hazardIds": [h["reportHazard"]["id"]], "assigneeId": s.electrician_id});
        s.manager
            .ok("mutation($i: DispatchHazardsInput!) { dispatchHazards(input: $i) { id } }", json!({"i": input}))
            .await?;
    }
    let store = s.server.services.store();
    for n in [2, 200] {
        let before = store.statements();
        let started = Instant::now();
        let page = s.manager.ok(ORDERS, json!({"n": n})).await?;
        let took = started.elapsed();
        let statements = store.statements() - before;
        let got = page["workOrders"]["edges"].as_array().map(Vec::len).unwrap_or_default();
        println!("{name} work-order page of {got}: {:.0} ms, {statements} database statements", ms(took));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = arg("--operations", 500) as usize;
    let runs = arg("--runs", 3);
    for backend in backends() {
        let name = match backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        };
        let s = site(&backend).await?;
        sync_runs(&s, name, n, runs).await?;
        order_page(&s, name).await?;
    }
    Ok(())
}
