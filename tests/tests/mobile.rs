//! Mobile bindings against the server's rules and the real server.
//!
//! - The case table `mobile-bindings/tests/cases.json` is checked here against the domain
//!   functions the server's services and guards call; the Python and Kotlin programs check
//!   the generated bindings against the same table, so a difference on either side fails.
//! - An outbox (`domain::outbox`, what the bindings wrap) is round-tripped through the real
//!   `syncFieldOperations` over HTTP on SQLite and PostgreSQL, each answer compared with
//!   what the app predicted offline with the state machines.
//! - The Python (pytest) and Kotlin (JVM) programs run over the generated bindings against a
//!   real server per backend. They need `mobile-bindings/generate.sh` to have run and their
//!   tools (pytest, kotlinc, JNA); without them they print "skipped" (`.ci/run` installs
//!   everything and generates the bindings first).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};
use sparkwatch_domain::access::{BuiltinRole, Permission};
use sparkwatch_domain::hazard::{self as hz, HazardAction, HazardStatus, Refusal, TransitionError};
use sparkwatch_domain::outbox::{FieldOp, Outbox, ReportDraft, SYNC_MUTATION};
use sparkwatch_domain::patrol::{self as pt, PatrolTaskStatus};
use sparkwatch_domain::workorder::{self as wo, WorkOrderAction, WorkOrderError, WorkOrderStatus};
use sparkwatch_tests::{Backend, Gql, TestServer, backends};
use uuid::Uuid;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases() -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(repo().join("mobile-bindings/tests/cases.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn role(v: &Value) -> anyhow::Result<Vec<Permission>> {
    let key = v.as_str().context("role")?;
    Ok(BuiltinRole::from_key(key).context("unknown role")?.permissions().into_iter().collect())
}

fn text(v: &Value, k: &str) -> Option<String> {
    v[k].as_str().map(str::to_owned)
}

fn count(v: &Value, k: &str) -> usize {
    v[k].as_u64().unwrap_or(0) as usize
}

/// The server's answer to a hazard action, in the table's words.
fn hazard_case(c: &Value) -> anyhow::Result<String> {
    let from = HazardStatus::from_code(c["from"].as_str().context("from")?).context("status")?;
    let held = role(&c["role"])?;
    let note = text(c, "text").unwrap_or_default();
    let action = match c["action"].as_str().context("action")? {
        "ACKNOWLEDGE" => HazardAction::Acknowledge,
        "DISPATCH" => HazardAction::Dispatch,
        "RECTIFY" => HazardAction::Rectify { note, photos: vec!["photo".into(); count(c, "photos")] },
        "VERIFY" => HazardAction::Verify { passed: c["passed"].as_bool().unwrap_or(false), note: text(c, "text") },
        "MARK_FALSE_ALARM" => HazardAction::MarkFalseAlarm { reason: note },
        "IGNORE" => HazardAction::Ignore { reason: note },
        "AUTO_CLOSE" => HazardAction::AutoClose,
        other => anyhow::bail!("unknown action {other}"),
    };
    Ok(match hz::transition_as(from, &action, |p| held.contains(&p)) {
        Ok(to) => to.code().to_owned(),
        Err(Refusal::Forbidden(_)) => "FORBIDDEN".into(),
        Err(Refusal::Transition(TransitionError::Already { .. })) => "UNCHANGED".into(),
        Err(Refusal::Transition(TransitionError::NotAllowed { .. })) => "CONFLICT".into(),
        Err(Refusal::Transition(TransitionError::Invalid(v))) => format!("VALIDATION:{}", v.field),
    })
}

fn order_state(c: &Value) -> anyhow::Result<wo::OrderState> {
    Ok(wo::OrderState {
        status: WorkOrderStatus::from_code(c["status"].as_str().context("status")?).context("status")?,
        assigned: c["assigned"].as_bool().unwrap_or(false),
        has_hazards: c["hasHazards"].as_bool().unwrap_or(false),
    })
}

fn order_case(c: &Value) -> anyhow::Result<String> {
    let held = role(&c["role"])?;
    let actor = wo::Actor::of(|p| held.contains(&p), c["assignee"].as_bool().unwrap_or(false));
    let action = WorkOrderAction::from_code(c["action"].as_str().context("action")?).context("action")?;
    let input = wo::ActionInput {
        text: text(c, "text").map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
        photos: count(c, "photos"),
    };
    Ok(match wo::transition(&order_state(c)?, &actor, action, &input) {
        Ok(to) => to.code().to_owned(),
        Err(WorkOrderError::Forbidden(_)) => "FORBIDDEN".into(),
        Err(WorkOrderError::Conflict(_)) => "CONFLICT".into(),
        Err(WorkOrderError::Invalid(v)) => format!("VALIDATION:{}", v.field),
    })
}

fn task_case(c: &Value) -> anyhow::Result<(Vec<String>, String)> {
    let status = PatrolTaskStatus::from_code(c["status"].as_str().context("status")?).context("status")?;
    let due = c["dueAt"].as_str().context("dueAt")?.parse()?;
    let at = c["at"].as_str().context("at")?.parse()?;
    let held = role(&c["role"])?;
    let field_worker = pt::TaskAction::CheckIn.permissions().iter().any(|p| held.contains(p));
    let actions = pt::task_actions(status, due, at, field_worker, c["onPlan"].as_bool().unwrap_or(false));
    let after = match pt::after_check_in(status, due, at, count(c, "checked"), count(c, "total")) {
        Ok(s) => s.code().to_owned(),
        Err(v) => format!("VALIDATION:{}", v.field),
    };
    Ok((actions.iter().map(|a| a.code().to_owned()).collect(), after))
}

fn codes(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn case_table_matches_the_server_rules() -> anyhow::Result<()> {
    let table = cases()?;
    let mut rows = Vec::new();
    for c in table["hazard"].as_array().context("hazard")? {
        rows.push((
            format!("hazard {} {} by {}", c["from"], c["action"], c["role"]),
            hazard_case(c)?,
            c["expect"].clone(),
        ));
    }
    for c in table["hazardActions"].as_array().context("hazardActions")? {
        let held = role(&c["role"])?;
        let from = HazardStatus::from_code(c["from"].as_str().context("from")?).context("from")?;
        let got: Vec<String> =
            hz::allowed_actions(from, |p| held.contains(&p)).iter().map(|k| k.code().to_owned()).collect();
        rows.push((
            format!("hazard {} actions for {}", c["from"], c["role"]),
            json!(got).to_string(),
            json!(codes(&c["expect"])),
        ));
    }
    for c in table["workOrder"].as_array().context("workOrder")? {
        let what = format!("order {} {} by {} (assignee {})", c["status"], c["action"], c["role"], c["assignee"]);
        rows.push((what, order_case(c)?, c["expect"].clone()));
    }
    for c in table["workOrderActions"].as_array().context("workOrderActions")? {
        let held = role(&c["role"])?;
        let actor = wo::Actor::of(|p| held.contains(&p), c["assignee"].as_bool().unwrap_or(false));
        let got: Vec<String> =
            wo::allowed_actions(&order_state(c)?, &actor).iter().map(|a| a.code().to_owned()).collect();
        rows.push((
            format!("order {} actions for {}", c["status"], c["role"]),
            json!(got).to_string(),
            json!(codes(&c["expect"])),
        ));
    }
    for c in table["patrolTask"].as_array().context("patrolTask")? {
        let (actions, after) = task_case(c)?;
        let what = format!("task {} at {} by {}", c["status"], c["at"], c["role"]);
        rows.push((format!("{what}: actions"), json!(actions).to_string(), json!(codes(&c["actions"]))));
        rows.push((format!("{what}: check-in"), after, c["expect"].clone()));
    }
    let mut differences = 0;
    for (what, got, expected) in &rows {
        let expected = expected.as_str().map(str::to_owned).unwrap_or_else(|| expected.to_string());
        let mark = if *got == expected { "same" } else { "DIFFERENT" };
        if *got != expected {
            differences += 1;
        }
        println!("{mark:9} {what}: server rules {got}, table {expected}");
    }
    println!("{} cases, {differences} different", rows.len());
    anyhow::ensure!(differences == 0, "{differences} cases differ from the table");
    Ok(())
}

const ORDERS: &str =
    "{ workOrders(first: 10) { nodes { id status assignee { id } allowedActions hazards { id status } } } }";

/// What the app predicts offline for an operation on an object it knows the state of.
fn predicted(result: Result<String, (String, Option<String>)>) -> (String, Option<String>, Option<String>) {
    match result {
        Ok(_) => ("APPLIED".into(), None, None),
        Err((code, field)) if code == "CONFLICT" => ("CONFLICT".into(), Some(code), field),
        Err((code, field)) => ("REJECTED".into(), Some(code), field),
    }
}

fn order_step(
    state: &wo::OrderState,
    actor: &wo::Actor,
    action: WorkOrderAction,
    report: Option<&str>,
    photos: usize,
) -> Result<String, (String, Option<String>)> {
    let input = wo::ActionInput { text: report.map(str::to_owned), photos };
    match wo::transition(state, actor, action, &input) {
        Ok(to) => Ok(to.code().to_owned()),
        Err(WorkOrderError::Forbidden(_)) => Err(("FORBIDDEN".into(), None)),
        Err(WorkOrderError::Conflict(_)) => Err(("CONFLICT".into(), None)),
        Err(WorkOrderError::Invalid(v)) => Err(("VALIDATION".into(), Some(v.field))),
    }
}

fn hazard_step(
    from: HazardStatus,
    action: &HazardAction,
    held: &[Permission],
) -> Result<String, (String, Option<String>)> {
    match hz::transition_as(from, action, |p| held.contains(&p)) {
        Ok(to) => Ok(to.code().to_owned()),
        Err(Refusal::Transition(TransitionError::Already { status })) => Ok(status.code().to_owned()),
        Err(Refusal::Forbidden(_)) => Err(("FORBIDDEN".into(), None)),
        Err(Refusal::Transition(TransitionError::NotAllowed { .. })) => Err(("CONFLICT".into(), None)),
        Err(Refusal::Transition(TransitionError::Invalid(v))) => Err(("VALIDATION".into(), Some(v.field))),
    }
}

async fn sync(gql: &Gql, outbox: &mut Outbox) -> anyhow::Result<Vec<sparkwatch_domain::outbox::Settled>> {
    let batch = outbox.next_batch(100);
    let answer = gql.run(SYNC_MUTATION, batch.variables).await?;
    outbox.settle(&batch.client_ids, &answer).map_err(|e| anyhow::anyhow!("{e}: {answer}"))
}

async fn round_trip(backend: &Backend) -> anyhow::Result<()> {
    let server = TestServer::demo(backend).await?;
    sparkwatch_api::demo::seed_field_work(&server.services).await?;
    let electrician = server.demo_login("electrician@demo.local").await?;
    let manager = server.demo_login("manager@demo.local").await?;
    let field: Vec<Permission> = BuiltinRole::Electrician.permissions().into_iter().collect();
    let managing: Vec<Permission> = BuiltinRole::Manager.permissions().into_iter().collect();

    let data = electrician.ok(ORDERS, json!({})).await?;
    let order = data["workOrders"]["nodes"][0].clone();
    let order_id: Uuid = order["id"].as_str().context("order id")?.parse()?;
    let hazard_id: Uuid = order["hazards"][0]["id"].as_str().context("hazard id")?.parse()?;
    let mut state = wo::OrderState {
        status: WorkOrderStatus::from_code(order["status"].as_str().context("status")?).context("status")?,
        assigned: !order["assignee"].is_null(),
        has_hazards: true,
    };
    let mine = wo::Actor::of(|p| field.contains(&p), false);
    let offered: Vec<String> = wo::allowed_actions(&state, &mine).iter().map(|a| a.code().to_owned()).collect();
    assert_eq!(json!(offered), order["allowedActions"], "the server offers what the rules allow");

    electrician.ok("mutation($id: ID!) { takeWorkOrder(id: $id) { id } }", json!({"id": order_id})).await?;
    state = wo::OrderState { status: WorkOrderStatus::Accepted, assigned: true, ..state };
    let me = wo::Actor::of(|p| field.contains(&p), true);
    let photo: Uuid = server.upload_photo(&electrician).await?.parse()?;
    let project: Uuid = {
        let d = electrician.ok("{ projects(first: 1) { nodes { id } } }", json!({})).await?;
        d["projects"]["nodes"][0]["id"].as_str().context("project")?.parse()?
    };

    // The outbox the phone filled offline, with the app's prediction for each operation made
    // against the state it expects after the ones before.
    let now = chrono::Utc::now();
    let mut outbox = Outbox::new();
    let mut expected = Vec::new();
    let start = Uuid::now_v7();
    expected.push(predicted(order_step(&state, &me, WorkOrderAction::Start, None, 0)));
    outbox.push(start, now, FieldOp::StartWorkOrder { id: order_id })?;
    state.status = WorkOrderStatus::InProgress;
    expected.push(predicted(order_step(&state, &me, WorkOrderAction::Start, None, 0)));
    outbox.push(Uuid::now_v7(), now, FieldOp::StartWorkOrder { id: order_id })?;
    expected.push(predicted(order_step(&state, &me, WorkOrderAction::Submit, Some("replaced"), 0)));
    let no_photo =
        FieldOp::SubmitWorkOrder { id: order_id, report: "replaced the section".into(), attachment_ids: vec![] };
    outbox.push(Uuid::now_v7(), now, no_photo)?;
    expected.push(predicted(hazard_step(HazardStatus::Dispatched, &HazardAction::Acknowledge, &field)));
    outbox.push(Uuid::now_v7(), now, FieldOp::AcknowledgeHazard { hazard_id, note: None })?;
    expected.push(("APPLIED".into(), None, None));
    let report = ReportDraft {
        project_id: project,
        detector_id: None,
        checkpoint_id: None,
        description: "Cover of the 3F junction box missing".into(),
        attachment_ids: vec![],
        at: Some(now),
    };
    outbox.push(Uuid::now_v7(), now, FieldOp::ReportHazard(report))?;
    expected.push(predicted(order_step(&state, &me, WorkOrderAction::Submit, Some("replaced"), 1)));
    let submit =
        FieldOp::SubmitWorkOrder { id: order_id, report: "replaced the section".into(), attachment_ids: vec![photo] };
    outbox.push(Uuid::now_v7(), now, submit)?;

    let stored = Outbox::from_bytes(&outbox.to_bytes())?;
    let mut outbox = stored;
    let settled = sync(&electrician, &mut outbox).await?;
    let got: Vec<(String, Option<String>, Option<String>)> = settled
        .iter()
        .map(|s| (s.outcome.map(|o| o.code().to_owned()).unwrap_or_default(), s.code.clone(), s.field.clone()))
        .collect();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        println!("{backend:?} op {i}: server {g:?}, predicted {e:?}");
    }
    assert_eq!(got, expected, "the server decided as the app predicted");
    assert!(outbox.pending().is_empty(), "every answer was final: {:?}", outbox.pending());
    let reported: Uuid = settled[4].entity_id.as_deref().context("reported hazard")?.parse()?;

    // Repeats and the reported hazard, then the manager closes the order.
    outbox.push(start, now, FieldOp::StartWorkOrder { id: order_id })?;
    outbox.push(Uuid::now_v7(), now, FieldOp::AcknowledgeHazard { hazard_id: reported, note: None })?;
    outbox.push(Uuid::now_v7(), now, FieldOp::AcknowledgeHazard { hazard_id: reported, note: Some("seen".into()) })?;
    let settled = sync(&electrician, &mut outbox).await?;
    let got: Vec<String> = settled.iter().map(|s| s.outcome.map(|o| o.code()).unwrap_or_default().to_owned()).collect();
    assert_eq!(got, ["DUPLICATE", "APPLIED", "APPLIED"]);
    assert_eq!(hazard_step(HazardStatus::Acknowledged, &HazardAction::Acknowledge, &field), Ok("ACKNOWLEDGED".into()));

    let verifier = wo::Actor::of(|p| managing.contains(&p), false);
    state.status = WorkOrderStatus::Submitted;
    let offered: Vec<String> = wo::allowed_actions(&state, &verifier).iter().map(|a| a.code().to_owned()).collect();
    let data = manager.ok(ORDERS, json!({})).await?;
    let now_order =
        data["workOrders"]["nodes"].as_array().and_then(|o| o.iter().find(|o| o["id"] == json!(order_id))).cloned();
    let now_order = now_order.context("order")?;
    assert_eq!(json!(offered), now_order["allowedActions"]);
    assert_eq!(now_order["hazards"][0]["status"], "RECTIFIED");
    let approved = manager
        .ok("mutation($id: ID!) { approveWorkOrder(id: $id) { status hazards { status } } }", json!({"id": order_id}))
        .await?;
    let predicted_order = order_step(&state, &verifier, WorkOrderAction::Approve, None, 0);
    let predicted_hazard =
        hazard_step(HazardStatus::Rectified, &HazardAction::Verify { passed: true, note: None }, &managing);
    assert_eq!(approved["approveWorkOrder"]["status"], json!(predicted_order.ok()));
    assert_eq!(approved["approveWorkOrder"]["hazards"][0]["status"], json!(predicted_hazard.ok()));
    Ok(())
}

#[tokio::test]
async fn outbox_round_trips_through_sync() -> anyhow::Result<()> {
    for backend in backends() {
        round_trip(&backend).await.with_context(|| format!("{backend:?}"))?;
    }
    Ok(())
}

/// Where `mobile-bindings/generate.sh` put the bindings (its default: the target dir).
fn generated() -> Option<PathBuf> {
    let dir = match std::env::var_os("SPARKWATCH_MOBILE_BINDINGS") {
        Some(d) => PathBuf::from(d),
        None => std::env::current_exe().ok()?.parent()?.parent()?.parent()?.join("mobile-bindings"),
    };
    dir.join("python/sparkwatch_mobile.py").exists().then_some(dir)
}

/// Runs a foreign-language program against a demo server per backend; its output is shown.
async fn run_against_servers(name: &str, program: &[String], env: &[(&str, String)]) -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        sparkwatch_api::demo::seed_field_work(&server.services).await?;
        let mut cmd = tokio::process::Command::new(&program[0]);
        cmd.args(&program[1..])
            .env("SPARKWATCH_URL", &server.base)
            .env("SPARKWATCH_CASES", repo().join("mobile-bindings/tests/cases.json"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().await.with_context(|| format!("running {name}"))?;
        println!(
            "---- {name} on {backend:?}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::ensure!(out.status.success(), "{name} failed on {backend:?}");
    }
    Ok(())
}

fn works(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_program_over_the_bindings() -> anyhow::Result<()> {
    let Some(dir) = generated() else {
        eprintln!("skipped: no generated bindings (run mobile-bindings/generate.sh)");
        return Ok(());
    };
    if !works("python3", &["-m", "pytest", "--version"]) {
        eprintln!(
            "skipped: python3 with pytest is not installed (pip install -r mobile-bindings/tests/python/requirements.txt)"
        );
        return Ok(());
    }
    let tests = repo().join("mobile-bindings/tests/python");
    let program: Vec<String> = ["python3", "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
        .iter()
        .map(|s| s.to_string())
        .chain([tests.display().to_string()])
        .collect();
    run_against_servers("pytest", &program, &[("SPARKWATCH_PYTHON_BINDINGS", dir.join("python").display().to_string())])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn kotlin_program_over_the_bindings() -> anyhow::Result<()> {
    let Some(dir) = generated() else {
        eprintln!("skipped: no generated bindings (run mobile-bindings/generate.sh)");
        return Ok(());
    };
    let kotlin = repo().join("mobile-bindings/tests/kotlin");
    let kotlinc = kotlin.join("node_modules/kotlin-compiler/bin/kotlinc");
    let jna = PathBuf::from(std::env::var("SPARKWATCH_JNA_JAR").unwrap_or_else(|_| "/usr/share/java/jna.jar".into()));
    if !kotlinc.exists() || !jna.exists() || !works("java", &["-version"]) {
        eprintln!(
            "skipped: kotlinc (npm ci in mobile-bindings/tests/kotlin), JNA (Debian libjna-java) or java is missing"
        );
        return Ok(());
    }
    let jar = dir.join("kotlin-tests.jar");
    let generated_kt = dir.join("kotlin/com/sparkwatch/mobile/sparkwatch_mobile.kt");
    // Through bash: the compiler's launcher is a bash script whose mode npm may not keep.
    let status = tokio::process::Command::new("bash")
        .arg(&kotlinc)
        .arg(&generated_kt)
        .arg(kotlin.join("MobileTest.kt"))
        .args(["-cp", &jna.display().to_string(), "-include-runtime", "-nowarn", "-d", &jar.display().to_string()])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "kotlinc failed");
    let classpath = format!("{}:{}", jar.display(), jna.display());
    let program: Vec<String> = vec![
        "java".into(),
        format!("-Djna.library.path={}", dir.join("kotlin").display()),
        "-cp".into(),
        classpath,
        "MobileTestKt".into(),
    ];
    run_against_servers("kotlin", &program, &[]).await
}
