//! Patrol over real HTTP against SQLite and (when configured) PostgreSQL: checkpoints with
//! signed QR codes and printable labels, plans and their tasks, offline check-ins replayed
//! twice and out of order, forged and foreign codes, missed tasks reminded on a test clock,
//! the task job racing itself, and who may do what.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use sparkwatch_api::service::{Clock, ManualClock};
use sparkwatch_entity::{notification, operation_log, patrol_task, reminder};
use sparkwatch_tests::{Backend, Gql, Options, TestServer, backends, eventually, fast_jobs};

const CREATE_CHECKPOINT: &str = "mutation($i: CreateCheckpointInput!) { createCheckpoint(input: $i) { id name position checklist qrPayload labelUrl project { id } } }";
const CREATE_PLAN: &str = "mutation($i: CreatePatrolPlanInput!) { createPatrolPlan(input: $i) { id name schedule startsOn project { id } checkpoints { id } assignees { id } } }";
const TASKS: &str = "query($f: PatrolTaskFilter) { patrolTasks(filter: $f, first: 100) { totalCount edges { node { id status dueAt startsAt plan { id name } checkIns { id checkpoint { id } actor answers { item ok note } } checkpoints { checked checkpoint { id } checkIn { id } } } } } }";
const CHECK_IN: &str = "mutation($i: CheckInInput!) { checkIn(input: $i) { id at receivedAt actor note answers { item ok note } checkpoint { id } attachments { id } hazards { id } } }";
const CHECKLIST: [&str; 2] = ["Cabinet closed", "No smell of burning"];

/// The demo tenants signed in.
struct Site {
    server: TestServer,
    manager: Gql,
    electrician: Gql,
    admin_b: Gql,
    electrician_id: String,
    mall: String,
    school: String,
    depot: String,
}

async fn project_id(gql: &Gql, name: &str) -> anyhow::Result<String> {
    let data = gql.ok("{ projects(first: 50) { edges { node { id name } } } }", json!({})).await?;
    let edges = data["projects"]["edges"].as_array().cloned().unwrap_or_default();
    let found = edges.iter().find(|e| e["node"]["name"] == name).map(|e| e["node"]["id"].as_str().unwrap_or_default());
    Ok(found.ok_or_else(|| anyhow::anyhow!("no project {name}"))?.to_owned())
}

impl Site {
    async fn start(backend: &Backend, opts: Options) -> anyhow::Result<Site> {
        let server = TestServer::start_opts(backend, opts).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let manager = server.demo_login("manager@demo.local").await?;
        let electrician = server.demo_login("electrician@demo.local").await?;
        let admin_b = server.demo_login("admin@demo-b.local").await?;
        let me = electrician.ok("{ me { id } }", json!({})).await?;
        Ok(Site {
            electrician_id: me["me"]["id"].as_str().unwrap_or_default().to_owned(),
            mall: project_id(&manager, "Riverside Mall").await?,
            school: project_id(&manager, "No. 3 Primary School").await?,
            depot: project_id(&admin_b, "Harbour Depot").await?,
            server,
            manager,
            electrician,
            admin_b,
        })
    }

    async fn checkpoint(&self, gql: &Gql, project: &str, name: &str) -> anyhow::Result<Value> {
        let input = json!({"projectId": project, "name": name, "position": "B1, east wall", "checklist": CHECKLIST});
        Ok(gql.ok(CREATE_CHECKPOINT, json!({"i": input})).await?["createCheckpoint"].clone())
    }

    /// A daily plan in the mall over `checkpoints`, walked by the electrician.
    async fn plan(&self, name: &str, checkpoints: &[&Value]) -> anyhow::Result<Value> {
        let ids: Vec<&Value> = checkpoints.iter().map(|c| &c["id"]).collect();
        let input = json!({"projectId": self.mall, "name": name, "checkpointIds": ids, "schedule": "DAILY",
            "assigneeIds": [self.electrician_id]});
        Ok(self.manager.ok(CREATE_PLAN, json!({"i": input})).await?["createPatrolPlan"].clone())
    }

    /// The tasks of `plan` as `gql` sees them, newest first.
    async fn tasks(&self, gql: &Gql, plan: &Value) -> anyhow::Result<Vec<Value>> {
        let data = gql.ok(TASKS, json!({"f": {"projectIds": [self.mall]}})).await?;
        let edges = data["patrolTasks"]["edges"].as_array().cloned().unwrap_or_default();
        Ok(edges.into_iter().map(|e| e["node"].clone()).filter(|t| t["plan"]["id"] == plan["id"]).collect())
    }
}

fn answers(ok: bool) -> Value {
    json!(
        CHECKLIST
            .iter()
            .map(|item| json!({"item": item, "ok": ok, "note": if ok { None } else { Some("loose door") }}))
            .collect::<Vec<_>>()
    )
}

fn check_in(client: &str, task: &Value, code: &Value, at: chrono::DateTime<Utc>) -> Value {
    json!({"i": {"clientId": client, "taskId": task["id"], "qrPayload": code, "at": at.to_rfc3339(), "answers": answers(true)}})
}

#[tokio::test]
async fn offline_check_ins_replayed_twice_and_out_of_order_give_one_result() -> anyhow::Result<()> {
    for backend in backends() {
        let site = Site::start(&backend, Options::default()).await?;
        let mut points = Vec::new();
        for name in ["配电室 1号柜", "Pump room", "Roof"] {
            points.push(site.checkpoint(&site.manager, &site.mall, name).await?);
        }
        let plan = site.plan("Night round", &points.iter().collect::<Vec<_>>()).await?;
        assert_eq!(plan["schedule"], "DAILY");
        assert_eq!(plan["checkpoints"].as_array().map(Vec::len), Some(3));
        let tasks = site.tasks(&site.electrician, &plan).await?;
        assert_eq!(tasks.len(), 1, "the plan starts with today's task: {tasks:?}");
        let task = &tasks[0];
        assert_eq!(task["status"], "DUE");

        // The phone was offline: three scans, synced out of order, then all again at once.
        let at = Utc::now() - chrono::Duration::minutes(30);
        let ops: Vec<Value> = (0..3)
            .map(|i| {
                let client = uuid::Uuid::now_v7().to_string();
                check_in(&client, task, &points[i]["qrPayload"], at + chrono::Duration::minutes(i as i64))
            })
            .collect();
        let mut ops = ops;
        // A photo with the roof's check-in: its printed label, uploaded as a PNG.
        let token = site.electrician.token.clone().unwrap_or_default();
        let label = points[2]["labelUrl"].as_str().unwrap_or_default().replace("qr.svg", "qr.png");
        let (status, png) = get(&site, &label, Some(&token)).await?;
        assert_eq!(status, 200);
        let part = reqwest::multipart::Part::bytes(png).file_name("label.png").mime_str("image/png")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let res =
            site.server.http.post(format!("{}/attachments", site.server.base)).bearer_auth(&token).multipart(form);
        let photo: Value = res.send().await?.json().await?;
        ops[2]["i"]["attachmentIds"] = json!([photo["id"]]);
        ops[1]["i"]["hazards"] = json!([{"projectId": site.mall, "description": "Burnt smell at the pump's cabinet"}]);
        let mut first = Vec::new();
        for i in [2, 0, 1] {
            first.push((i, site.electrician.ok(CHECK_IN, ops[i].clone()).await?["checkIn"].clone()));
        }
        let replays =
            futures_util::future::join_all([1, 2, 0, 2].map(|i| site.electrician.ok(CHECK_IN, ops[i].clone()))).await;
        for (i, replay) in [1, 2, 0, 2].into_iter().zip(replays) {
            let replay = replay?["checkIn"].clone();
            let original = first.iter().find(|(j, _)| *j == i).map(|(_, c)| c.clone()).unwrap_or_default();
            assert_eq!(replay, original, "a replay returns the check-in as stored");
        }
        // The hazard found at the pump room: one, at that checkpoint, however often synced.
        let pump = first.iter().find(|(i, _)| *i == 1).map(|(_, c)| c.clone()).unwrap_or_default();
        assert_eq!(pump["hazards"].as_array().map(Vec::len), Some(1), "{pump}");
        let q = "query($id: ID!) { hazard(id: $id) { id kind status description checkpointId checkpoint { id } } }";
        let hazard = site.manager.ok(q, json!({"id": pump["hazards"][0]["id"]})).await?["hazard"].clone();
        assert_eq!(hazard["kind"], "FIELD_REPORT");
        assert_eq!(hazard["status"], "OPEN");
        assert_eq!(hazard["checkpointId"], points[1]["id"], "{hazard}");
        assert_eq!(hazard["checkpoint"]["id"], points[1]["id"], "{hazard}");
        let c = &first[0].1;
        assert_eq!(c["checkpoint"]["id"], points[2]["id"]);
        assert_eq!(c["attachments"], json!([{"id": photo["id"]}]), "{c}");
        assert_eq!(c["actor"], "electrician@demo.local");
        assert_eq!(c["answers"][0], json!({"item": "Cabinet closed", "ok": true, "note": null}));

        let tasks = site.tasks(&site.manager, &plan).await?;
        assert_eq!(tasks.len(), 1);
        let task = &tasks[0];
        assert_eq!(task["status"], "DONE", "{task}");
        assert_eq!(task["checkIns"].as_array().map(Vec::len), Some(3), "one check-in per checkpoint: {task}");
        assert!(task["checkpoints"].as_array().into_iter().flatten().all(|c| c["checked"] == true), "{task}");
        let order: Vec<&Value> =
            task["checkpoints"].as_array().into_iter().flatten().map(|c| &c["checkpoint"]["id"]).collect();
        assert_eq!(order, points.iter().map(|p| &p["id"]).collect::<Vec<_>>(), "walking order kept");

        // Another scan of a checked checkpoint (a new client id) is a conflict.
        let again = check_in(&uuid::Uuid::now_v7().to_string(), task, &points[0]["qrPayload"], Utc::now());
        assert_eq!(site.electrician.code(CHECK_IN, again).await?, "CONFLICT");
        // The client id is required.
        let mut no_client = check_in("x", task, &points[0]["qrPayload"], Utc::now());
        no_client["i"].as_object_mut().map(|o| o.remove("clientId"));
        assert!(site.electrician.run(CHECK_IN, no_client).await?["errors"][0].is_object());
    }
    Ok(())
}

#[tokio::test]
async fn an_offline_batch_of_check_ins_synced_twice_and_reversed_gives_one_result() -> anyhow::Result<()> {
    const SYNC: &str = "mutation($ops: [FieldOperationInput!]!) { syncFieldOperations(operations: $ops) { clientId \
                        status code field entityId checkIn { checkpoint { id } hazards { id } } } }";
    for backend in backends() {
        let site = Site::start(&backend, Options::default()).await?;
        let mut points = Vec::new();
        for name in ["Switch room", "Pump room"] {
            points.push(site.checkpoint(&site.manager, &site.mall, name).await?);
        }
        let plan = site.plan("Evening round", &points.iter().collect::<Vec<_>>()).await?;
        let task = site.tasks(&site.electrician, &plan).await?.into_iter().next().unwrap_or_default();
        let at = Utc::now() - chrono::Duration::minutes(20);
        let mut ops: Vec<Value> = points
            .iter()
            .map(|p| {
                let mut c = check_in(&uuid::Uuid::now_v7().to_string(), &task, &p["qrPayload"], at)["i"].clone();
                c["hazards"] = json!([{"projectId": site.mall, "description": "Cabinet door will not close"}]);
                json!({"clientId": c["clientId"], "at": at.to_rfc3339(), "checkIn": c})
            })
            .collect();
        // A forged code in the same batch is refused alone.
        let mut forged = ops[0].clone();
        forged["clientId"] = json!(uuid::Uuid::now_v7().to_string());
        let code = forged["checkIn"]["qrPayload"].as_str().unwrap_or_default().to_owned();
        let mut tampered = code.into_bytes();
        if let Some(last) = tampered.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        forged["checkIn"]["qrPayload"] = json!(String::from_utf8(tampered)?);
        ops.push(forged);

        let first = site.electrician.ok(SYNC, json!({"ops": ops})).await?;
        let a = first["syncFieldOperations"].as_array().cloned().unwrap_or_default();
        let statuses: Vec<&str> = a.iter().map(|x| x["status"].as_str().unwrap_or_default()).collect();
        assert_eq!(statuses, ["APPLIED", "APPLIED", "REJECTED"], "{backend:?} {first}");
        assert_eq!(a[2]["field"], "qrPayload", "{first}");
        assert_eq!(a[0]["checkIn"]["checkpoint"]["id"], points[0]["id"]);
        assert_eq!(a[0]["checkIn"]["hazards"].as_array().map(Vec::len), Some(1), "{first}");

        ops.truncate(2);
        ops.reverse();
        let second = site.electrician.ok(SYNC, json!({"ops": ops})).await?;
        let b = second["syncFieldOperations"].as_array().cloned().unwrap_or_default();
        assert!(b.iter().all(|x| x["status"] == "DUPLICATE"), "{second}");
        assert_eq!(b[1]["entityId"], a[0]["entityId"], "a duplicate names the first check-in");

        let tasks = site.tasks(&site.manager, &plan).await?;
        assert_eq!(tasks[0]["status"], "DONE", "{backend:?} {tasks:?}");
        assert_eq!(tasks[0]["checkIns"].as_array().map(Vec::len), Some(2));
        let found = site.manager.ok("{ hazards(filter: {kinds: [FIELD_REPORT]}) { totalCount } }", json!({})).await?;
        assert_eq!(found["hazards"]["totalCount"], 2, "one hazard per check-in, however often synced");
    }
    Ok(())
}

#[tokio::test]
async fn forged_foreign_and_misplaced_codes_are_refused_and_roles_hold() -> anyhow::Result<()> {
    for backend in backends() {
        let site = Site::start(&backend, Options::default()).await?;
        let a = site.checkpoint(&site.manager, &site.mall, "Switch room").await?;
        let b = site.checkpoint(&site.manager, &site.mall, "Car park").await?;
        let plan = site.plan("Day round", &[&a]).await?;
        let task = site.tasks(&site.electrician, &plan).await?.first().cloned().unwrap_or_default();
        let foreign = site.checkpoint(&site.admin_b, &site.depot, "Depot gate").await?;
        let code = a["qrPayload"].as_str().unwrap_or_default();
        assert!(code.starts_with("SWQ1.") && code.len() == 44, "{code}");

        // The tag altered (last character changed), the id altered, junk.
        let last = if code.ends_with('A') { "B" } else { "A" };
        let forged_tag = format!("{}{last}", &code[..43]);
        let b_code = b["qrPayload"].as_str().unwrap_or_default();
        let forged_id = format!("{}{}", &b_code[..28], &code[28..]);
        for payload in [forged_tag.as_str(), forged_id.as_str(), "SWQ1.nonsense", "https://example.com"] {
            let vars = check_in(&uuid::Uuid::now_v7().to_string(), &task, &json!(payload), Utc::now());
            let (code, field) = site.electrician.refused(CHECK_IN, vars).await?;
            assert_eq!((code.as_str(), field.as_str()), ("VALIDATION", "qrPayload"), "{payload}");
        }
        // A genuine code of a checkpoint that is not on this plan; another tenant's code.
        for other in [&b, &foreign] {
            let vars = check_in(&uuid::Uuid::now_v7().to_string(), &task, &other["qrPayload"], Utc::now());
            let (code, field) = site.electrician.refused(CHECK_IN, vars).await?;
            assert_eq!((code.as_str(), field.as_str()), ("VALIDATION", "qrPayload"), "{other}");
        }
        // Answers must cover the checklist exactly.
        let mut partial = check_in(&uuid::Uuid::now_v7().to_string(), &task, &a["qrPayload"], Utc::now());
        partial["i"]["answers"] = json!([{"item": "Cabinet closed", "ok": true}]);
        let (code, field) = site.electrician.refused(CHECK_IN, partial).await?;
        assert_eq!((code.as_str(), field.as_str()), ("VALIDATION", "answers"));

        // The electrician checks in but does not plan.
        let input = json!({"projectId": site.mall, "name": "Mine", "checklist": ["x"]});
        assert_eq!(site.electrician.code(CREATE_CHECKPOINT, json!({"i": input})).await?, "FORBIDDEN");
        let input = json!({"projectId": site.mall, "name": "Mine", "checkpointIds": [a["id"]], "schedule": "DAILY",
            "assigneeIds": [site.electrician_id]});
        assert_eq!(site.electrician.code(CREATE_PLAN, json!({"i": input})).await?, "FORBIDDEN");
        // The manager plans but is not the plan's assignee.
        let vars = check_in(&uuid::Uuid::now_v7().to_string(), &task, &a["qrPayload"], Utc::now());
        assert_eq!(site.manager.code(CHECK_IN, vars).await?, "FORBIDDEN");
        // Another electrician of the mall neither sees nor touches a plan he is not on.
        let admin = site.server.demo_login("admin@demo.local").await?;
        let create = "mutation($p: [ID!]) { createUser(input: {email: \"sparky2@demo.local\", password: \"sparkwatch-2\", \
            roleId: \"electrician\", projectIds: $p}) { id } }";
        admin.ok(create, json!({"p": [site.mall]})).await?;
        let other = site.server.login("sparky2@demo.local", "sparkwatch-2").await?;
        assert!(site.tasks(&other, &plan).await?.is_empty(), "only plans he walks");
        let vars = check_in(&uuid::Uuid::now_v7().to_string(), &task, &a["qrPayload"], Utc::now());
        assert_eq!(other.code(CHECK_IN, vars).await?, "NOT_FOUND");
        assert_eq!(site.tasks(&site.electrician, &plan).await?.len(), 1);
        // Another tenant sees neither the tasks nor the checkpoints.
        let b_tasks = site.admin_b.ok(TASKS, json!({})).await?;
        assert_eq!(b_tasks["patrolTasks"]["totalCount"], 0);
        let q = "query($p: ID!) { checkpoints(projectId: $p) { totalCount } }";
        assert_eq!(site.admin_b.code(q, json!({"p": site.mall})).await?, "NOT_FOUND");
        assert_eq!(site.manager.ok(q, json!({"p": site.mall})).await?["checkpoints"]["totalCount"], 2);
        // Plans only take the project's checkpoints and people who can patrol it.
        let school_point = site.checkpoint(&site.manager, &site.school, "Boiler room").await?;
        let input = json!({"projectId": site.mall, "name": "Mixed", "checkpointIds": [a["id"], school_point["id"]],
            "schedule": "WEEKLY", "assigneeIds": [site.electrician_id]});
        let (code, field) = site.manager.refused(CREATE_PLAN, json!({"i": input})).await?;
        assert_eq!((code.as_str(), field.as_str()), ("VALIDATION", "checkpointIds"));
        let input = json!({"projectId": site.school, "name": "School", "checkpointIds": [school_point["id"]],
            "schedule": "MONTHLY", "assigneeIds": [site.electrician_id]});
        let (code, field) = site.manager.refused(CREATE_PLAN, json!({"i": input})).await?;
        assert_eq!((code.as_str(), field.as_str()), ("VALIDATION", "assigneeIds"), "the electrician has no school");
        let input = json!({"projectId": site.depot, "name": "Theirs", "checklist": ["x"]});
        assert_eq!(site.manager.code(CREATE_CHECKPOINT, json!({"i": input})).await?, "NOT_FOUND");
    }
    Ok(())
}

/// `GET url` with `token`: status and body.
async fn get(site: &Site, url: &str, token: Option<&str>) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut req = site.server.http.get(format!("{}{url}", site.server.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    Ok((res.status().as_u16(), res.bytes().await?.to_vec()))
}

/// The text of the QR code in a PNG.
fn decode_png(bytes: &[u8]) -> anyhow::Result<String> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[(y * w + x) * channels]);
    let grids = img.detect_grids();
    let grid = grids.first().ok_or_else(|| anyhow::anyhow!("no QR code found in the PNG"))?;
    Ok(grid.decode()?.1)
}

#[tokio::test]
async fn labels_are_printed_for_the_projects_people_only() -> anyhow::Result<()> {
    for backend in backends() {
        let site = Site::start(&backend, Options::default()).await?;
        let c = site.checkpoint(&site.manager, &site.mall, "配电室 1号柜").await?;
        let school = site.checkpoint(&site.manager, &site.school, "Boiler room").await?;
        let svg_url = c["labelUrl"].as_str().unwrap_or_default().to_owned();
        assert!(svg_url.ends_with("/qr.svg"), "{svg_url}");
        let png_url = svg_url.replace("qr.svg", "qr.png");
        let token = site.electrician.token.clone().unwrap_or_default();

        let (status, svg) = get(&site, &svg_url, Some(&token)).await?;
        assert_eq!(status, 200);
        let svg = String::from_utf8(svg)?;
        assert!(svg.starts_with("<svg") && svg.contains("配电室 1号柜") && svg.contains("B1, east wall"), "{svg}");
        let (status, png) = get(&site, &png_url, Some(&token)).await?;
        assert_eq!(status, 200);
        assert_eq!(decode_png(&png)?, c["qrPayload"].as_str().unwrap_or_default(), "the printed code scans");

        // Outside the scope, another tenant, no token, not an id.
        let school_url = school["labelUrl"].as_str().unwrap_or_default();
        assert_eq!(get(&site, school_url, Some(&token)).await?.0, 404, "the electrician has no school");
        let b_token = site.admin_b.token.clone().unwrap_or_default();
        assert_eq!(get(&site, &svg_url, Some(&b_token)).await?.0, 404);
        assert_eq!(get(&site, &png_url, Some(&b_token)).await?.0, 404);
        assert_eq!(get(&site, &svg_url, None).await?.0, 401);
        assert_eq!(get(&site, &png_url, Some("not-a-token")).await?.0, 401);
        assert_eq!(get(&site, "/checkpoints/nope/qr.svg", Some(&token)).await?.0, 404);
    }
    Ok(())
}

fn clocked() -> (Arc<ManualClock>, Options) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let opts = Options {
        clock: clock.clone(),
        jobs: fast_jobs(),
        // The test moves the clock by days; the sign-ins must outlive that.
        access_token_ttl: Some(Duration::from_secs(30 * 86_400)),
        ..Options::default()
    };
    (clock, opts)
}

#[tokio::test]
async fn a_missed_task_is_marked_reminded_and_escalated() -> anyhow::Result<()> {
    for backend in backends() {
        let (clock, opts) = clocked();
        let site = Site::start(&backend, opts).await?;
        let db = site.server.services.store().db();
        let c = site.checkpoint(&site.manager, &site.mall, "Switch room").await?;
        let plan = site.plan("Evening round", &[&c]).await?;
        let task = site.tasks(&site.electrician, &plan).await?.first().cloned().unwrap_or_default();
        let due: chrono::DateTime<Utc> = task["dueAt"].as_str().unwrap_or_default().parse()?;
        let task_id: uuid::Uuid = task["id"].as_str().unwrap_or_default().parse()?;
        // Phones to push to (no provider configured: notifications are logged, not sent).
        let register = "mutation($i: RegisterPushTokenInput!) { registerPushToken(input: $i) { id } }";
        for (gql, token) in [(&site.electrician, "phone-of-electrician"), (&site.manager, "phone-of-manager")] {
            gql.ok(register, json!({"i": {"platform": "ANDROID", "token": token, "appId": "com.sparkwatch.field"}}))
                .await?;
        }
        let manager_id =
            site.manager.ok("{ me { id } }", json!({})).await?["me"]["id"].as_str().unwrap_or_default().to_owned();
        let pushed = |reason: &'static str| async move {
            let rows = notification::Entity::find().filter(notification::Column::Reason.eq(reason)).all(db).await?;
            Ok::<_, anyhow::Error>(
                rows.into_iter().map(|n| (n.user_id.to_string(), n.title, n.body)).collect::<Vec<_>>(),
            )
        };

        // Past the due time: the job marks it missed, the assignee is reminded at once.
        clock.advance(due - clock.now() + chrono::Duration::minutes(1));
        let tasks = eventually("the task to be missed and the next one made", || async {
            let tasks = site.tasks(&site.manager, &plan).await?;
            Ok((tasks.len() == 2 && tasks[1]["status"] == "MISSED").then_some(tasks))
        })
        .await?;
        assert_eq!(tasks[0]["status"], "DUE", "the current period's task: {tasks:?}");
        assert_eq!(tasks[0]["startsAt"], tasks[1]["dueAt"]);
        let reminder = || async {
            Ok::<_, anyhow::Error>(
                reminder::Entity::find()
                    .filter(reminder::Column::SubjectId.eq(task_id))
                    .filter(reminder::Column::Purpose.eq("patrol.missed"))
                    .one(db)
                    .await?,
            )
        };
        eventually("the assignees' reminder", || async { Ok(reminder().await?.filter(|r| r.level == 1)) }).await?;
        let logged = |action: &'static str| async move {
            Ok::<_, anyhow::Error>(
                operation_log::Entity::find()
                    .filter(operation_log::Column::Action.eq(action))
                    .filter(operation_log::Column::TargetId.eq(task_id.to_string()))
                    .all(db)
                    .await?,
            )
        };
        let remind = logged("patrol_task.remind").await?;
        assert_eq!(remind.len(), 1);
        assert!(format!("{:?}", remind[0].after).contains(&site.electrician_id), "{:?}", remind[0].after);
        assert!(logged("patrol_task.escalate").await?.is_empty(), "not escalated before the delay");
        let told = pushed("patrol.missed").await?;
        assert_eq!(told.len(), 1, "the assignee's phone: {told:?}");
        assert_eq!(told[0].0, site.electrician_id);
        assert!(told[0].1.contains("Riverside Mall") && told[0].2.contains("Evening round"), "{told:?}");

        // Still missed after the escalation delay: the managers are told, once.
        clock.advance(chrono::Duration::hours(1));
        eventually("the escalation", || async { Ok(reminder().await?.filter(|r| r.done_at.is_some())) }).await?;
        let escalate = logged("patrol_task.escalate").await?;
        assert_eq!(escalate.len(), 1);
        assert!(format!("{:?}", escalate[0].after).contains(&manager_id));
        let told = pushed("patrol.missed.escalated").await?;
        assert!(told.iter().any(|(user, _, _)| *user == manager_id), "the manager's phone: {told:?}");
        assert!(told.iter().all(|(user, _, _)| *user != site.electrician_id), "{told:?}");
        assert_eq!(pushed("patrol.missed").await?.len(), 1, "the assignee is reminded once");

        // A scan made before the due time, synced late, still completes the task.
        let late =
            check_in(&uuid::Uuid::now_v7().to_string(), &task, &c["qrPayload"], due - chrono::Duration::hours(1));
        site.electrician.ok(CHECK_IN, late).await?;
        let tasks = site.tasks(&site.manager, &plan).await?;
        assert_eq!(tasks[1]["status"], "DONE", "{tasks:?}");
        let after =
            check_in(&uuid::Uuid::now_v7().to_string(), &task, &c["qrPayload"], due + chrono::Duration::hours(1));
        assert_eq!(site.electrician.code(CHECK_IN, after).await?, "CONFLICT", "already checked");
    }
    Ok(())
}

#[tokio::test]
async fn the_job_makes_one_task_per_plan_and_period_when_passes_race() -> anyhow::Result<()> {
    for backend in backends() {
        let (clock, mut opts) = clocked();
        // Background passes only every minute: the passes below race each other.
        opts.jobs.tick = Duration::from_secs(60);
        let site = Site::start(&backend, opts.clone()).await?;
        let other = site.server.sibling(opts).await?;
        let c = site.checkpoint(&site.manager, &site.mall, "Switch room").await?;
        let plans = [site.plan("Round A", &[&c]).await?, site.plan("Round B", &[&c]).await?];
        clock.advance(chrono::Duration::days(1));
        let (a, b, c2) = tokio::join!(
            site.server.services.run_patrol_pass(),
            other.services.run_patrol_pass(),
            site.server.services.run_patrol_pass()
        );
        let created: u64 = [a?, b?, c2?].iter().map(|p| p.created).sum();
        let db = site.server.services.store().db();
        let active = sparkwatch_entity::patrol_plan::Entity::find().all(db).await?.len() as u64;
        assert_eq!(created, active, "one new task per plan across all passes");
        for plan in &plans {
            let id: uuid::Uuid = plan["id"].as_str().unwrap_or_default().parse()?;
            let rows = patrol_task::Entity::find().filter(patrol_task::Column::PlanId.eq(id)).all(db).await?;
            assert_eq!(rows.len(), 2, "one task per period: {rows:?}");
            assert_ne!(rows[0].period_start, rows[1].period_start);
        }
        // Passes in the same period change nothing.
        let again = site.server.services.run_patrol_pass().await?;
        assert_eq!(again.created, 0);
    }
    Ok(())
}

#[tokio::test]
async fn task_lists_take_a_constant_number_of_queries() -> anyhow::Result<()> {
    for backend in backends() {
        let (clock, mut opts) = clocked();
        // Quiet background jobs: only the requests below count.
        opts.jobs.tick = Duration::from_secs(600);
        let site = Site::start(&backend, opts).await?;
        let services = &site.server.services;
        let mut points = Vec::new();
        for i in 0..3 {
            points.push(site.checkpoint(&site.manager, &site.mall, &format!("Point {i}")).await?);
        }
        for i in 0..10 {
            site.plan(&format!("Round {i}"), &points.iter().collect::<Vec<_>>()).await?;
        }
        for _ in 0..2 {
            clock.advance(chrono::Duration::days(1));
            services.run_patrol_pass().await?;
        }
        let node = "id status dueAt plan { id name schedule startsOn project { name } assignees { id displayName } \
            checkpoints { id name project { name } } } checkIns { id } checkpoints { checked checkpoint { id } }";
        let q = format!("query($n: Int) {{ patrolTasks(first: $n) {{ totalCount edges {{ node {{ {node} }} }} }} }}");
        let mut counts = Vec::new();
        for n in [2, 10, 30] {
            let before = services.store().statements();
            let res = site.manager.ok(&q, json!({"n": n})).await?;
            counts.push(services.store().statements() - before);
            let edges = res["patrolTasks"]["edges"].as_array().cloned().unwrap_or_default();
            assert_eq!(edges.len(), n as usize);
            assert!(edges.iter().all(|e| e["node"]["plan"]["project"]["name"] == "Riverside Mall"));
            assert!(edges.iter().all(|e| e["node"]["plan"]["checkpoints"].as_array().is_some_and(|c| c.len() == 3)));
        }
        println!("statements per patrolTasks page of 2 / 10 / 30 ({backend:?}): {counts:?}");
        assert!(counts.iter().all(|c| *c == counts[0]), "statements per page: {counts:?}");
    }
    Ok(())
}
