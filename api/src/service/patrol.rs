//! Patrol: checkpoints and their signed QR codes, plans, the task generation job, the
//! task lists and the missed-task reminders. Check-ins are in [`super::checkins`].
//!
//! - **QR codes.** A checkpoint's label carries [`QrPayload`]: its id and the first 12
//!   bytes of HMAC-SHA256 over (tenant, checkpoint) under a key derived from the server's
//!   JWT secret with its own label, so only this server can make one, an altered code does
//!   not verify, and a code of another tenant's checkpoint does not verify for the caller's
//!   tenant. Tags are compared in constant time. Changing the JWT secret voids every
//!   printed label (print them again).
//! - **Site time.** Periods are local days, ISO weeks and months at the configured UTC
//!   offset (`--patrol-utc-offset`, default +08:00).
//! - **Tasks.** Every instance runs [`Services::run_patrol_pass`] every ten job ticks (10 s
//!   by default; an idle pass is three reads). It marks tasks past due `MISSED` (one
//!   conditional `UPDATE`, with their reminders in the same transaction) and makes sure
//!   each active plan has the task of the current period (`INSERT … ON CONFLICT (plan_id,
//!   period_start) DO NOTHING`: the database keeps one). Only the current period is
//!   created; periods the server was down for are not made up.
//! - **Reminders.** A missed task is pushed to its assignees at once and, if still missed
//!   after the tenant's escalation delay, urgently to its managers (people with
//!   `patrol.manage` on the project), like an unacknowledged alarm; both are recorded in
//!   the operation log.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sparkwatch_domain::access::{Permission, ProjectScope};
use sparkwatch_domain::ids::{ProjectId, TenantId, UserId};
use sparkwatch_domain::patrol::{self as rules, PatrolSchedule, PatrolTaskStatus, QR_TAG_BYTES, QrPayload};
use sparkwatch_domain::site::Project;
use uuid::Uuid;

use super::notify::PeopleNotice;
use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::access::User;
use crate::store::attachments::{self, Attachment};
use crate::store::hazards::{self as hz, Hazard};
use crate::store::notify::{self as nt, NewReminder};
use crate::store::oplog::Entry;
use crate::store::patrol::{self as st, CheckIn, Checkpoint, Plan, Task, TaskFilter};
use crate::store::{Page, PageRequest, new_id, tenants};

/// The purpose of the reminder a missed task gets.
pub const PATROL_MISSED: &str = "patrol.missed";

type HmacSha256 = Hmac<Sha256>;

/// The patrol settings the services keep: the QR key and the sites' UTC offset.
pub(crate) struct PatrolKeys {
    qr_key: [u8; 32],
    offset: FixedOffset,
}

impl PatrolKeys {
    /// Derives the QR key from the JWT secret (a label of its own, so a tag is never a
    /// token signature or the other way round).
    pub(crate) fn new(jwt_secret: &str, offset: FixedOffset) -> Self {
        let mut qr_key = [0u8; 32];
        if let Ok(mac) = HmacSha256::new_from_slice(jwt_secret.as_bytes()) {
            qr_key.copy_from_slice(&mac.chain_update(b"sparkwatch qr v1").finalize().into_bytes());
        }
        PatrolKeys { qr_key, offset }
    }

    fn mac(&self, tenant: TenantId, checkpoint: Uuid) -> Option<HmacSha256> {
        let mac = HmacSha256::new_from_slice(&self.qr_key).ok()?;
        Some(mac.chain_update(QrPayload::signed_bytes(tenant.as_uuid(), checkpoint)))
    }
}

/// A new checkpoint, as the manager enters it.
#[derive(Clone, Debug)]
pub struct CheckpointDraft {
    /// Project.
    pub project: ProjectId,
    /// Name.
    pub name: String,
    /// Where it is.
    pub position: Option<String>,
    /// What to check.
    pub checklist: Vec<String>,
}

/// A new plan, as the manager enters it.
#[derive(Clone, Debug)]
pub struct PlanDraft {
    /// Project.
    pub project: ProjectId,
    /// Name.
    pub name: String,
    /// Checkpoints in walking order.
    pub checkpoints: Vec<Uuid>,
    /// How often.
    pub schedule: PatrolSchedule,
    /// Who walks it.
    pub assignees: Vec<UserId>,
    /// First day (site time); today when absent.
    pub starts_on: Option<NaiveDate>,
}

/// A plan with its checkpoints and assignees.
#[derive(Clone, Debug)]
pub struct PlanView {
    /// The plan.
    pub plan: Plan,
    /// Its project (`None` only if deleted since).
    pub project: Option<Project>,
    /// Its checkpoints in walking order.
    pub checkpoints: Vec<Checkpoint>,
    /// Its assignees.
    pub assignees: Vec<User>,
}

/// A check-in with what it references.
#[derive(Clone, Debug)]
pub struct CheckInView {
    /// The check-in.
    pub check_in: CheckIn,
    /// The checkpoint visited.
    pub checkpoint: Option<Checkpoint>,
    /// Photos.
    pub attachments: Vec<Attachment>,
    /// Hazards reported with it.
    pub hazards: Vec<Hazard>,
}

/// A task with its plan and check-ins.
#[derive(Clone, Debug)]
pub struct TaskView {
    /// The task.
    pub task: Task,
    /// Its plan.
    pub plan: Arc<PlanView>,
    /// Its check-ins, oldest first.
    pub check_ins: Vec<CheckInView>,
}

/// Which tasks `patrolTasks` shows.
#[derive(Clone, Debug, Default)]
pub struct TaskQuery {
    /// Only these projects.
    pub project_ids: Option<Vec<ProjectId>>,
    /// Only tasks of plans the caller is assigned to.
    pub assigned_to_me: bool,
    /// Only these statuses.
    pub statuses: Option<Vec<PatrolTaskStatus>>,
}

/// What one pass of the task job did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatrolPass {
    /// Tasks created for the current period.
    pub created: u64,
    /// Tasks marked missed.
    pub missed: usize,
}

fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(i) {
            out.push(*i);
        }
    }
    out
}

impl Services {
    // ---- QR ----

    /// The payload printed on a checkpoint's label.
    pub fn qr_payload(&self, c: &Checkpoint) -> String {
        let mut tag = [0u8; QR_TAG_BYTES];
        if let Some(mac) = self.inner.patrol.mac(c.tenant_id, c.id) {
            tag.copy_from_slice(&mac.finalize().into_bytes()[..QR_TAG_BYTES]);
        }
        QrPayload { checkpoint: c.id, tag }.encode()
    }

    /// The checkpoint a scanned payload names, if this server signed it for `tenant`
    /// (`VALIDATION` on `qrPayload` otherwise).
    pub(crate) fn verify_qr(&self, tenant: TenantId, text: &str) -> AppResult<Uuid> {
        let payload = QrPayload::parse(text)?;
        let verified =
            self.inner.patrol.mac(tenant, payload.checkpoint).map(|mac| mac.verify_truncated_left(&payload.tag));
        match verified {
            Some(Ok(())) => Ok(payload.checkpoint),
            _ => Err(AppError::invalid("qrPayload", "this checkpoint code was not issued for your organisation")),
        }
    }

    /// The sites' UTC offset.
    pub fn site_offset(&self) -> FixedOffset {
        self.inner.patrol.offset
    }

    // ---- checkpoints ----

    /// Creates a checkpoint in a project the caller sees.
    pub async fn create_checkpoint(&self, who: &Principal, d: CheckpointDraft) -> AppResult<Checkpoint> {
        let tenant = who.tenant()?;
        self.project(who, d.project).await?;
        let (name, position, checklist) = rules::check_checkpoint(&d.name, d.position.as_deref(), &d.checklist)?;
        let c = Checkpoint {
            id: new_id(),
            tenant_id: tenant,
            project_id: d.project,
            name,
            position,
            checklist,
            created_at: self.now(),
        };
        let tx = self.begin().await?;
        st::insert_checkpoint(&tx, &c).await?;
        let entry = Entry::new(Some(tenant), "checkpoint.create", "checkpoint", Some(c.id.to_string()));
        self.log(&tx, who, entry.after(snapshot(&c))).await?;
        tx.commit().await?;
        Ok(c)
    }

    /// A visible checkpoint.
    pub async fn checkpoint(&self, who: &Principal, id: Uuid) -> AppResult<Checkpoint> {
        let found = st::checkpoints_by_ids(self.inner.store.db(), who.tenant()?, &who.access.scope, &[id]).await?;
        found.into_iter().next().ok_or(AppError::NotFound("checkpoint"))
    }

    /// A visible project and a page of its checkpoints, oldest first.
    pub async fn checkpoints(
        &self,
        who: &Principal,
        project: ProjectId,
        req: PageRequest,
    ) -> AppResult<(Project, Page<Checkpoint>)> {
        let p = self.project(who, project).await?;
        Ok((p, st::checkpoints(self.inner.store.db(), who.tenant()?, project, req).await?))
    }

    // ---- plans ----

    /// Creates a plan; its first task (the current period's) is created with it.
    pub async fn create_patrol_plan(&self, who: &Principal, d: PlanDraft) -> AppResult<PlanView> {
        let tenant = who.tenant()?;
        let db = self.inner.store.db();
        let project = self.project(who, d.project).await?;
        let (checkpoint_ids, assignee_ids) = (dedup(&d.checkpoints), dedup(&d.assignees));
        let name = rules::check_plan(&d.name, checkpoint_ids.len(), assignee_ids.len())?;
        let found = st::checkpoints_by_ids(db, tenant, &who.access.scope, &checkpoint_ids).await?;
        let mut checkpoints = Vec::with_capacity(checkpoint_ids.len());
        for id in &checkpoint_ids {
            let c = found.iter().find(|c| c.id == *id && c.project_id == d.project).ok_or_else(|| {
                AppError::invalid("checkpointIds", format!("checkpoint {id} is not a checkpoint of this project"))
            })?;
            checkpoints.push(c.clone());
        }
        let raw: Vec<Uuid> = assignee_ids.iter().map(|u| u.as_uuid()).collect();
        let people = st::people(db, tenant, Some(&raw)).await?;
        let mut assignees = Vec::with_capacity(assignee_ids.len());
        for id in &assignee_ids {
            let p = people.iter().find(|p| p.user.id == *id).ok_or_else(|| {
                AppError::invalid("assigneeIds", format!("user {id} is not an active user of your organisation"))
            })?;
            if !p.permissions.contains(&Permission::FieldWork) || !p.scope.contains(d.project) {
                return Err(AppError::invalid(
                    "assigneeIds",
                    format!(
                        "{} cannot patrol this project (needs field work with the project in scope)",
                        p.user.display_name
                    ),
                ));
            }
            assignees.push(p.user.clone());
        }
        let now = self.now();
        let plan = Plan {
            id: new_id(),
            tenant_id: tenant,
            project_id: d.project,
            name,
            schedule: d.schedule,
            starts_on: d.starts_on.unwrap_or_else(|| now.with_timezone(&self.site_offset()).date_naive()),
            active: true,
            created_at: now,
            checkpoints: checkpoint_ids,
            assignees: assignee_ids,
        };
        let tx = self.begin().await?;
        st::insert_plan(&tx, &plan).await?;
        st::ensure_tasks(&tx, &self.current_task(&plan, now).into_iter().collect::<Vec<_>>()).await?;
        let entry = Entry::new(Some(tenant), "patrol_plan.create", "patrol_plan", Some(plan.id.to_string()));
        self.log(&tx, who, entry.after(snapshot(&plan))).await?;
        tx.commit().await?;
        Ok(PlanView { plan, project: Some(project), checkpoints, assignees })
    }

    /// The task of `plan`'s current period, if the plan has started.
    fn current_task(&self, plan: &Plan, now: DateTime<Utc>) -> Option<Task> {
        let period = rules::current_period(plan.schedule, plan.starts_on, now, self.site_offset())?;
        Some(Task {
            id: new_id(),
            tenant_id: plan.tenant_id,
            project_id: plan.project_id,
            plan_id: plan.id,
            period_start: period.start,
            starts_at: period.starts_at,
            due_at: period.due_at,
            status: PatrolTaskStatus::Due,
            done_at: None,
            missed_at: None,
            created_at: now,
            updated_at: now,
        })
    }

    /// Plans with their checkpoints and assignees (a constant number of queries).
    async fn plan_views(&self, tenant: TenantId, ids: &[Uuid]) -> AppResult<HashMap<Uuid, Arc<PlanView>>> {
        let db = self.inner.store.db();
        let plans = st::plans_by_ids(db, tenant, ids).await?;
        let checkpoint_ids: Vec<Uuid> = plans.iter().flat_map(|p| p.checkpoints.iter().copied()).collect();
        let checkpoints = st::checkpoints_by_ids(db, tenant, &ProjectScope::All, &dedup(&checkpoint_ids)).await?;
        let user_ids: Vec<Uuid> = plans.iter().flat_map(|p| p.assignees.iter().map(|u| u.as_uuid())).collect();
        let users = st::users_by_ids(db, &dedup(&user_ids)).await?;
        let project_ids = dedup(&plans.iter().map(|p| p.project_id).collect::<Vec<_>>());
        let projects = st::projects_by_ids(db, tenant, &ProjectScope::All, &project_ids).await?;
        Ok(plans
            .into_iter()
            .map(|plan| {
                let view = PlanView {
                    project: projects.iter().find(|p| p.id == plan.project_id).cloned(),
                    checkpoints: plan
                        .checkpoints
                        .iter()
                        .filter_map(|id| checkpoints.iter().find(|c| c.id == *id).cloned())
                        .collect(),
                    assignees: plan
                        .assignees
                        .iter()
                        .filter_map(|id| users.iter().find(|u| u.id == *id).cloned())
                        .collect(),
                    plan,
                };
                (view.plan.id, Arc::new(view))
            })
            .collect())
    }

    // ---- tasks ----

    /// Tasks in the caller's scope, newest first: managers (`patrol.manage`) see every task
    /// of their projects, others only the tasks of plans they are assigned to.
    pub async fn patrol_tasks(&self, who: &Principal, q: &TaskQuery, req: PageRequest) -> AppResult<Page<TaskView>> {
        let tenant = who.tenant()?;
        let me = who.user_id();
        let assignee = if q.assigned_to_me || !who.access.can(Permission::PatrolManage) {
            // API keys are assigned to nothing.
            Some(me.ok_or_else(|| AppError::invalid("assignedToMe", "only people are assigned to patrols"))?)
        } else {
            None
        };
        let filter = TaskFilter { project_ids: q.project_ids.clone(), assignee, statuses: q.statuses.clone() };
        let page = st::tasks(self.inner.store.db(), tenant, &who.access.scope, &filter, req).await?;
        let views = self.task_views(tenant, page.items.clone()).await?;
        Ok(Page { items: views, has_next: page.has_next, has_previous: page.has_previous, total: page.total })
    }

    /// Tasks with their plans and check-ins (a constant number of queries for any number).
    pub(crate) async fn task_views(&self, tenant: TenantId, tasks: Vec<Task>) -> AppResult<Vec<TaskView>> {
        let plan_ids = dedup(&tasks.iter().map(|t| t.plan_id).collect::<Vec<_>>());
        let plans = self.plan_views(tenant, &plan_ids).await?;
        let task_ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
        let rows = st::check_ins_of_tasks(self.inner.store.db(), tenant, &task_ids).await?;
        let mut check_ins = self.check_in_views(tenant, rows).await?;
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            let plan = plans.get(&task.plan_id).cloned().ok_or(AppError::NotFound("patrol plan"))?;
            let (mine, rest): (Vec<_>, Vec<_>) = check_ins.into_iter().partition(|c| c.check_in.task_id == task.id);
            check_ins = rest;
            out.push(TaskView { task, plan, check_ins: mine });
        }
        Ok(out)
    }

    /// Check-ins with their checkpoints, photos and hazards (four queries for any number).
    pub(crate) async fn check_in_views(&self, tenant: TenantId, rows: Vec<CheckIn>) -> AppResult<Vec<CheckInView>> {
        let db = self.inner.store.db();
        let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
        let checkpoint_ids = dedup(&rows.iter().map(|c| c.checkpoint_id).collect::<Vec<_>>());
        let checkpoints = st::checkpoints_by_ids(db, tenant, &ProjectScope::All, &checkpoint_ids).await?;
        let photos = attachments::of_subjects(db, tenant, "check_in", &ids).await?;
        let links = st::hazards_of_check_ins(db, &ids).await?;
        let hazard_ids: Vec<Uuid> = links.iter().map(|(_, h)| *h).collect();
        let hazards = hz::hazards_by_ids(db, tenant, &ProjectScope::All, &hazard_ids).await?;
        Ok(rows
            .into_iter()
            .map(|c| CheckInView {
                checkpoint: checkpoints.iter().find(|p| p.id == c.checkpoint_id).cloned(),
                attachments: photos.iter().filter(|a| a.subject_id == Some(c.id)).cloned().collect(),
                hazards: links
                    .iter()
                    .filter(|(ci, _)| *ci == c.id)
                    .filter_map(|(_, h)| hazards.iter().find(|x| x.id == *h).cloned())
                    .collect(),
                check_in: c,
            })
            .collect())
    }

    // ---- the task job ----

    /// One pass of the task job (see the module docs); safe to run on every instance at once.
    /// An idle pass only reads: the writes (and SQLite's write lock) come at period ends.
    pub async fn run_patrol_pass(&self) -> AppResult<PatrolPass> {
        let db = self.inner.store.db();
        let now = self.now();
        let missed = if st::overdue_exists(db, now).await? { self.miss_overdue(now).await? } else { 0 };
        let today = now.with_timezone(&self.site_offset()).date_naive();
        let tasks: Vec<Task> = st::active_plans(db, today)
            .await?
            .into_iter()
            .filter_map(|m| {
                let plan = Plan {
                    id: m.id,
                    tenant_id: m.tenant_id.into(),
                    project_id: m.project_id.into(),
                    name: m.name,
                    schedule: PatrolSchedule::from_code(&m.schedule)?,
                    starts_on: m.starts_on,
                    active: m.active,
                    created_at: m.created_at,
                    checkpoints: Vec::new(),
                    assignees: Vec::new(),
                };
                self.current_task(&plan, now)
            })
            .collect();
        let plan_ids: Vec<Uuid> = tasks.iter().map(|t| t.plan_id).collect();
        let starts = dedup(&tasks.iter().map(|t| t.period_start).collect::<Vec<_>>());
        let existing = st::existing_periods(db, &plan_ids, &starts).await?;
        let missing: Vec<Task> =
            tasks.into_iter().filter(|t| !existing.contains(&(t.plan_id, t.period_start))).collect();
        let created = if missing.is_empty() { 0 } else { st::ensure_tasks(db, &missing).await? };
        if created > 0 || missed > 0 {
            tracing::info!(created, missed, "patrol tasks updated");
        }
        Ok(PatrolPass { created, missed })
    }

    /// Marks overdue tasks missed and schedules their reminders, in one transaction.
    async fn miss_overdue(&self, now: DateTime<Utc>) -> AppResult<usize> {
        let tx = self.begin().await?;
        let missed = st::miss_overdue(&tx, now).await?;
        for t in &missed {
            let reminder = NewReminder {
                tenant: t.tenant_id,
                purpose: PATROL_MISSED,
                subject_type: "patrol_task",
                subject: t.id,
                due_at: now,
                every_s: 0,
            };
            nt::schedule_reminder(&tx, &reminder, now).await?;
            let entry = Entry::new(Some(t.tenant_id), "patrol_task.missed", "patrol_task", Some(t.id.to_string()));
            self.log(&tx, &Principal::system(t.tenant_id, "patrol job"), entry.after(snapshot(t))).await?;
        }
        tx.commit().await?;
        Ok(missed.len())
    }

    /// Fires a patrol reminder (missed tasks); `None` when `r` is not one.
    pub(crate) async fn fire_patrol_reminder(
        &self,
        r: &sparkwatch_entity::reminder::Model,
    ) -> AppResult<Option<usize>> {
        if r.purpose != PATROL_MISSED {
            return Ok(None);
        }
        let db = self.inner.store.db();
        let now = self.now();
        let task = st::task_by_id(db, r.subject_id).await?;
        // Done after all (a check-in made in time, synced late): nothing to remind of.
        let Some(task) = task.filter(|t| t.status == PatrolTaskStatus::Missed) else {
            nt::finish_reminder(db, r.id, now).await?;
            return Ok(Some(0));
        };
        let plans = self.plan_views(task.tenant_id, &[task.plan_id]).await?;
        let plan = plans.get(&task.plan_id).cloned().ok_or(AppError::NotFound("patrol plan"))?;
        let (action, people) = if r.level == 0 {
            ("patrol_task.remind", plan.plan.assignees.clone())
        } else {
            let managers = st::people(db, task.tenant_id, None).await?;
            let managers = managers
                .into_iter()
                .filter(|p| p.permissions.contains(&Permission::PatrolManage) && p.scope.contains(task.project_id))
                .map(|p| p.user.id)
                .collect();
            ("patrol_task.escalate", managers)
        };
        self.tell_about_missed(&task, &plan, r.level, &people).await;
        let tx = self.begin().await?;
        let entry = Entry::new(Some(task.tenant_id), action, "patrol_task", Some(task.id.to_string()));
        let after =
            serde_json::json!({"plan": plan.plan.name, "dueAt": task.due_at, "level": r.level, "users": people});
        self.log(&tx, &Principal::system(task.tenant_id, "patrol job"), entry.after(Some(after))).await?;
        if r.level == 0 {
            let policy = tenants::get(&tx, task.tenant_id).await?.map(|t| t.escalation).unwrap_or_default();
            let next = now + chrono::Duration::minutes(i64::from(policy.after_min));
            nt::reschedule_reminder(&tx, r.id, 1, next).await?;
        } else {
            nt::finish_reminder(&tx, r.id, now).await?;
        }
        tx.commit().await?;
        tracing::info!(task = %task.id, level = r.level, users = people.len(), "missed patrol task reminded");
        Ok(Some(1))
    }

    /// Pushes "task missed" to `people` (level 0: its assignees; then, urgent, its
    /// managers); a failure is logged, not the reminder's error.
    async fn tell_about_missed(&self, task: &Task, plan: &PlanView, level: i32, people: &[UserId]) {
        let due = task.due_at.with_timezone(&self.site_offset()).format("%Y-%m-%d %H:%M").to_string();
        let escalated = level > 0;
        let text = |locale, project: &str| rules::render_missed(&plan.plan.name, &due, escalated, project, locale);
        let mut data = std::collections::BTreeMap::new();
        data.insert("patrolTaskId".to_owned(), task.id.to_string());
        data.insert("patrolPlanId".to_owned(), plan.plan.id.to_string());
        let reason = if escalated { "patrol.missed.escalated" } else { PATROL_MISSED };
        let notice = PeopleNotice { project: task.project_id, reason, data, urgent: escalated, text: &text };
        if let Err(e) = self.notify_people(task.tenant_id, people, &notice).await {
            tracing::warn!(error = %e, task = %task.id, "could not queue missed-patrol notifications");
        }
    }
}

/// Runs the patrol task job every `tick` until `stop` turns true.
pub async fn run_patrol_job(
    services: Services,
    tick: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = services.run_patrol_pass().await {
            tracing::warn!(error = %e, "patrol task job failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
    }
}
