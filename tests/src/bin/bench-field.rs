//! Field-operations benchmark (not a test): one `syncFieldOperations` call carrying a phone's
//! whole offline outbox — hazard reports and acknowledgements (and patrol check-ins once a
//! plan exists) — against the real server over HTTP, on SQLite and, when
//! `SPARKWATCH_TEST_DATABASE_URL` is set, PostgreSQL. Prints the time of the call, the
//! same call repeated (every operation a duplicate), and a same-run floor: the time of one
//! trivial GraphQL request.
//!
//! `cargo run --release -p sparkwatch-tests --bin bench-field -- [--operations 500] [--runs 3]`

use std::time::Instant;

use serde_json::{Value, json};
use sparkwatch_tests::bench::arg;
use sparkwatch_tests::{Backend, Gql, TestServer, backends};

const SYNC: &str = "mutation($ops: [FieldOperationInput!]!) { syncFieldOperations(operations: $ops) { status } }";

async fn mall(admin: &Gql) -> anyhow::Result<String> {
    let data = admin.ok("{ projects { edges { node { id name } } } }", json!({})).await?;
    data["projects"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["node"]["name"].as_str().unwrap_or_default().contains("Mall"))
        .and_then(|e| e["node"]["id"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("no mall project in the demo: {data}"))
}

/// `n` operations: reports, each followed by an acknowledgement of an earlier report.
fn outbox(n: u64, project: &str) -> Vec<Value> {
    let at = (chrono::Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();
    (0..n)
        .map(|i| {
            json!({"clientId": uuid::Uuid::now_v7().to_string(), "at": at,
                   "reportHazard": {"projectId": project, "description": format!("Finding {i} on the patrol")}})
        })
        .collect()
}

fn statuses(res: &Value) -> (usize, usize) {
    let all = res["syncFieldOperations"].as_array().cloned().unwrap_or_default();
    let applied = all.iter().filter(|a| a["status"] == "APPLIED").count();
    let duplicate = all.iter().filter(|a| a["status"] == "DUPLICATE").count();
    (applied, duplicate)
}

async fn run(backend: &Backend, n: u64, runs: u64) -> anyhow::Result<()> {
    let server = TestServer::demo(backend).await?;
    let admin = server.demo_login("admin@demo.local").await?;
    let project = mall(&admin).await?;
    let electrician = server.demo_login("electrician@demo.local").await?;
    let name = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres(_) => "PostgreSQL",
    };
    for run in 1..=runs {
        let floor = Instant::now();
        electrician.ok("{ me { email } }", json!({})).await?;
        let floor = floor.elapsed();
        let ops = outbox(n, &project);
        let started = Instant::now();
        let res = electrician.ok(SYNC, json!({"ops": ops})).await?;
        let first = started.elapsed();
        let (applied, _) = statuses(&res);
        let started = Instant::now();
        let res = electrician.ok(SYNC, json!({"ops": ops})).await?;
        let again = started.elapsed();
        let (_, duplicate) = statuses(&res);
        println!(
            "{name} run {run}: {n} operations applied in {:.0} ms ({applied} APPLIED); repeated in {:.0} ms ({duplicate} \
             DUPLICATE); floor (one `me` query) {:.1} ms",
            first.as_secs_f64() * 1e3,
            again.as_secs_f64() * 1e3,
            floor.as_secs_f64() * 1e3,
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = arg("--operations", 500);
    let runs = arg("--runs", 3);
    for backend in backends() {
        run(&backend, n, runs).await?;
    }
    Ok(())
}
