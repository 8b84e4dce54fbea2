//! Patrol: checkpoints with signed QR codes, plans, tasks and check-ins — types and the
//! `PatrolQuery`/`PatrolMutation` parts merged into the roots.
//!
//! Task lists are loaded in one go by the service (plans, checkpoints, assignees,
//! check-ins, photos and hazards: a constant number of queries per page), so the objects
//! here only read what they were given.

use std::sync::Arc;

use async_graphql::{
    Context, Enum, ID, InputObject, InputValueError, InputValueResult, Object, Scalar, ScalarType, Value,
};
use chrono::{DateTime, NaiveDate, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::patrol::{Answer, PatrolSchedule, PatrolTaskStatus};
use uuid::Uuid;

use super::Result;
use super::attachments::AttachmentObj;
use super::field::ReportHazardInput;
use super::guard::{Require, RequireAny, caller};
use super::hazards::HazardObj;
use super::input::{parse_id, parse_projects};
use super::object::{Conn, ProjectObj, UserObj, connection};
use crate::service::checkins::CheckInDraft;
use crate::service::page_request;
use crate::service::patrol::{CheckInView, CheckpointDraft, PlanDraft, PlanView, TaskQuery, TaskView};
use crate::store::patrol::Checkpoint;
use sparkwatch_domain::site::Project;

// ---- scalars and enums ----

/// A calendar day, `YYYY-MM-DD` (site time).
#[derive(Clone, Copy, Debug)]
pub struct Date(pub NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => s.parse().map(Date).map_err(|_| InputValueError::custom("expected a date YYYY-MM-DD")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// How often a plan's checkpoints are walked (periods in site time).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "PatrolSchedule", remote = "PatrolSchedule")]
pub enum PatrolScheduleGql {
    /// Every day.
    Daily,
    /// Every ISO week, Monday to Sunday.
    Weekly,
    /// Every calendar month.
    Monthly,
}

/// Where a patrol task is.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "PatrolTaskStatus", remote = "PatrolTaskStatus")]
pub enum PatrolTaskStatusGql {
    /// Not started.
    Due,
    /// Some checkpoints checked.
    InProgress,
    /// Every checkpoint checked.
    Done,
    /// Its due time passed before it was done.
    Missed,
}

// ---- inputs ----

/// A new checkpoint.
#[derive(InputObject)]
pub struct CreateCheckpointInput {
    /// Its project.
    pub project_id: ID,
    /// Name (printed on the label).
    pub name: String,
    /// Where it is (printed on the label).
    pub position: Option<String>,
    /// What to check there, in order.
    pub checklist: Vec<String>,
}

/// A new patrol plan.
#[derive(InputObject)]
pub struct CreatePatrolPlanInput {
    /// Its project.
    pub project_id: ID,
    /// Name.
    pub name: String,
    /// Checkpoints of the project, in walking order.
    pub checkpoint_ids: Vec<ID>,
    /// How often.
    pub schedule: PatrolScheduleGql,
    /// Who walks it: active users with field work and the project in scope.
    pub assignee_ids: Vec<ID>,
    /// First day (site time); today when absent.
    pub starts_on: Option<Date>,
}

/// Filters for `patrolTasks`.
#[derive(InputObject, Default)]
pub struct PatrolTaskFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ID>>,
    /// Only tasks of plans the caller is assigned to.
    pub assigned_to_me: Option<bool>,
    /// Only these statuses.
    pub statuses: Option<Vec<PatrolTaskStatusGql>>,
}

/// One answer to a checklist item.
#[derive(InputObject)]
pub struct ChecklistAnswerInput {
    /// The item, as written in the checklist.
    pub item: String,
    /// Whether it is in order.
    pub ok: bool,
    /// What is wrong.
    pub note: Option<String>,
}

/// A check-in at a checkpoint during a task (an offline operation: repeat it with the same
/// `clientId` and get the same check-in).
#[derive(InputObject)]
pub struct CheckInInput {
    /// The app's id of this operation (a UUID).
    pub client_id: ID,
    /// The task.
    pub task_id: ID,
    /// The scanned code.
    pub qr_payload: String,
    /// When it was scanned (device time).
    pub at: DateTime<Utc>,
    /// An answer to every checklist item.
    pub answers: Vec<ChecklistAnswerInput>,
    /// A note.
    pub note: Option<String>,
    /// Uploaded photos (`POST /attachments`).
    pub attachment_ids: Option<Vec<ID>>,
    /// Hazards found there: each becomes a hazard of the task's project, at this checkpoint
    /// unless it names another, seen at `at` unless it says (their `clientId`s are not used:
    /// the check-in's covers them).
    pub hazards: Option<Vec<ReportHazardInput>>,
}

impl CheckInInput {
    /// The service's draft.
    pub fn into_draft(self) -> crate::error::AppResult<CheckInDraft> {
        Ok(CheckInDraft {
            client_id: parse_id("clientId", &self.client_id)?,
            task: parse_id("taskId", &self.task_id)?,
            qr_payload: self.qr_payload,
            at: self.at,
            answers: self.answers.into_iter().map(|a| Answer { item: a.item, ok: a.ok, note: a.note }).collect(),
            note: self.note,
            attachment_ids: self
                .attachment_ids
                .unwrap_or_default()
                .iter()
                .map(|id| parse_id("attachmentIds", id))
                .collect::<crate::error::AppResult<_>>()?,
            hazards: self
                .hazards
                .unwrap_or_default()
                .iter()
                .map(|h| h.draft())
                .collect::<crate::error::AppResult<_>>()?,
        })
    }
}

// ---- objects ----

/// A place on a patrol route, with a checklist and a printed QR label.
pub struct CheckpointObj(pub Checkpoint, pub Option<Project>);

impl CheckpointObj {
    /// A checkpoint whose project is looked up when asked for.
    pub fn new(c: Checkpoint) -> Self {
        CheckpointObj(c, None)
    }
}

#[Object(name = "Checkpoint")]
impl CheckpointObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Where it is.
    async fn position(&self) -> Option<&str> {
        self.0.position.as_deref()
    }
    /// What to check there, in order.
    async fn checklist(&self) -> &[String] {
        &self.0.checklist
    }
    /// The project; `null` only when it was deleted since.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn project(&self, ctx: &Context<'_>) -> Result<Option<ProjectObj>> {
        if let Some(p) = &self.1 {
            return Ok(Some(ProjectObj(p.clone())));
        }
        let (s, who) = caller(ctx)?;
        Ok(super::absent(s.project(who, self.0.project_id).await)?.map(ProjectObj))
    }
    /// The code printed on the label, signed by the server (`SWQ1.<id>.<tag>`).
    async fn qr_payload(&self, ctx: &Context<'_>) -> Result<String> {
        let (s, _) = caller(ctx)?;
        Ok(s.qr_payload(&self.0))
    }
    /// The printable label (SVG; `.png` for a bitmap): GET it with the same bearer token.
    async fn label_url(&self) -> String {
        format!("/checkpoints/{}/qr.svg", self.0.id)
    }
}

/// A recurring patrol over ordered checkpoints.
pub struct PatrolPlanObj(pub Arc<PlanView>);

#[Object(name = "PatrolPlan")]
impl PatrolPlanObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.plan.id.to_string())
    }
    /// Name.
    async fn name(&self) -> &str {
        &self.0.plan.name
    }
    /// The project; `null` only when it was deleted since.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn project(&self) -> Option<ProjectObj> {
        self.0.project.clone().map(ProjectObj)
    }
    /// How often.
    async fn schedule(&self) -> PatrolScheduleGql {
        self.0.plan.schedule.into()
    }
    /// First day (site time).
    async fn starts_on(&self) -> Date {
        Date(self.0.plan.starts_on)
    }
    /// Checkpoints in walking order.
    async fn checkpoints(&self) -> Vec<CheckpointObj> {
        self.0.checkpoints.iter().map(|c| CheckpointObj(c.clone(), self.0.project.clone())).collect()
    }
    /// Who walks it.
    async fn assignees(&self) -> Vec<UserObj> {
        self.0.assignees.iter().cloned().map(UserObj).collect()
    }
}

/// One period of a plan: walk every checkpoint before `dueAt`.
pub struct PatrolTaskObj(pub TaskView);

#[Object(name = "PatrolTask")]
impl PatrolTaskObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.task.id.to_string())
    }
    /// The plan.
    async fn plan(&self) -> PatrolPlanObj {
        PatrolPlanObj(self.0.plan.clone())
    }
    /// When the period starts.
    async fn starts_at(&self) -> DateTime<Utc> {
        self.0.task.starts_at
    }
    /// When it ends: the task is due.
    async fn due_at(&self) -> DateTime<Utc> {
        self.0.task.due_at
    }
    /// Status.
    async fn status(&self) -> PatrolTaskStatusGql {
        self.0.task.status.into()
    }
    /// When every checkpoint was checked.
    async fn done_at(&self) -> Option<DateTime<Utc>> {
        self.0.task.done_at
    }
    /// When it was marked missed.
    async fn missed_at(&self) -> Option<DateTime<Utc>> {
        self.0.task.missed_at
    }
    /// Check-ins, oldest first.
    async fn check_ins(&self) -> Vec<CheckInObj> {
        self.0.check_ins.iter().cloned().map(CheckInObj).collect()
    }
    /// The plan's checkpoints in walking order, each with whether it is checked.
    async fn checkpoints(&self) -> Vec<PatrolTaskCheckpointObj> {
        self.0
            .plan
            .checkpoints
            .iter()
            .map(|c| PatrolTaskCheckpointObj {
                checkpoint: c.clone(),
                check_in: self.0.check_ins.iter().find(|v| v.check_in.checkpoint_id == c.id).cloned(),
            })
            .collect()
    }
}

/// A checkpoint of a task, checked or not.
pub struct PatrolTaskCheckpointObj {
    checkpoint: Checkpoint,
    check_in: Option<CheckInView>,
}

#[Object(name = "PatrolTaskCheckpoint")]
impl PatrolTaskCheckpointObj {
    /// The checkpoint.
    async fn checkpoint(&self) -> CheckpointObj {
        CheckpointObj::new(self.checkpoint.clone())
    }
    /// Whether it has a check-in in this task.
    async fn checked(&self) -> bool {
        self.check_in.is_some()
    }
    /// Its check-in in this task.
    async fn check_in(&self) -> Option<CheckInObj> {
        self.check_in.clone().map(CheckInObj)
    }
}

/// A visit to a checkpoint during a task.
pub struct CheckInObj(pub CheckInView);

#[Object(name = "CheckIn")]
impl CheckInObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.check_in.id.to_string())
    }
    /// The checkpoint.
    async fn checkpoint(&self) -> Option<CheckpointObj> {
        self.0.checkpoint.clone().map(CheckpointObj::new)
    }
    /// When the code was scanned (device time).
    async fn at(&self) -> DateTime<Utc> {
        self.0.check_in.at
    }
    /// When the server received it.
    async fn received_at(&self) -> DateTime<Utc> {
        self.0.check_in.received_at
    }
    /// Checklist answers, in checklist order.
    async fn answers(&self) -> Vec<ChecklistAnswerObj> {
        self.0.check_in.answers.iter().cloned().map(ChecklistAnswerObj).collect()
    }
    /// A note.
    async fn note(&self) -> Option<&str> {
        self.0.check_in.note.as_deref()
    }
    /// Photos.
    async fn attachments(&self) -> Vec<AttachmentObj> {
        self.0.attachments.iter().cloned().map(AttachmentObj).collect()
    }
    /// Hazards reported with it.
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn hazards(&self) -> Vec<HazardObj> {
        self.0.hazards.iter().cloned().map(HazardObj).collect()
    }
    /// Who checked in (e-mail or phone).
    async fn actor(&self) -> &str {
        &self.0.check_in.actor
    }
}

/// One answer to a checklist item.
pub struct ChecklistAnswerObj(pub Answer);

#[Object(name = "ChecklistAnswer")]
impl ChecklistAnswerObj {
    /// The item.
    async fn item(&self) -> &str {
        &self.0.item
    }
    /// Whether it is in order.
    async fn ok(&self) -> bool {
        self.0.ok
    }
    /// What is wrong.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
}

// ---- roots ----

/// Read operations on patrol.
#[derive(Default)]
pub struct PatrolQuery;

#[Object]
impl PatrolQuery {
    /// A project's checkpoints, oldest first.
    #[graphql(
        guard = "Require(Permission::SiteRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn checkpoints(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<CheckpointObj>> {
        let (s, who) = caller(ctx)?;
        let project = parse_id("projectId", &project_id)?;
        let (project, page) = s.checkpoints(who, project, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |c| c.id.to_string(), |c| CheckpointObj(c, Some(project.clone()))))
    }

    /// Patrol tasks, newest first: managers see every task of their projects, electricians
    /// the tasks of plans they are assigned to.
    #[graphql(
        guard = "RequireAny(&[Permission::PatrolManage, Permission::FieldWork])",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn patrol_tasks(
        &self,
        ctx: &Context<'_>,
        filter: Option<PatrolTaskFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<PatrolTaskObj>> {
        let (s, who) = caller(ctx)?;
        let f = filter.unwrap_or_default();
        let q = TaskQuery {
            project_ids: f.project_ids.as_deref().map(|p| parse_projects("projectIds", p)).transpose()?,
            assigned_to_me: f.assigned_to_me.unwrap_or(false),
            statuses: f.statuses.map(|s| s.into_iter().map(Into::into).collect()),
        };
        let page = s.patrol_tasks(who, &q, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |t| t.task.id.to_string(), PatrolTaskObj))
    }
}

/// Write operations on patrol.
#[derive(Default)]
pub struct PatrolMutation;

#[Object]
impl PatrolMutation {
    /// Creates a checkpoint; print its label from `labelUrl`.
    #[graphql(guard = "Require(Permission::PatrolManage)")]
    async fn create_checkpoint(&self, ctx: &Context<'_>, input: CreateCheckpointInput) -> Result<CheckpointObj> {
        let (s, who) = caller(ctx)?;
        let draft = CheckpointDraft {
            project: parse_id("projectId", &input.project_id)?,
            name: input.name,
            position: input.position,
            checklist: input.checklist,
        };
        Ok(CheckpointObj::new(s.create_checkpoint(who, draft).await?))
    }

    /// Creates a patrol plan; the task of the current period is created with it.
    #[graphql(guard = "Require(Permission::PatrolManage)")]
    async fn create_patrol_plan(&self, ctx: &Context<'_>, input: CreatePatrolPlanInput) -> Result<PatrolPlanObj> {
        let (s, who) = caller(ctx)?;
        let ids = |field: &str, ids: &[ID]| {
            ids.iter().map(|id| parse_id(field, id)).collect::<crate::error::AppResult<Vec<Uuid>>>()
        };
        let draft = PlanDraft {
            project: parse_id("projectId", &input.project_id)?,
            name: input.name,
            checkpoints: ids("checkpointIds", &input.checkpoint_ids)?,
            schedule: input.schedule.into(),
            assignees: ids("assigneeIds", &input.assignee_ids)?.into_iter().map(Into::into).collect(),
            starts_on: input.starts_on.map(|d| d.0),
        };
        Ok(PatrolPlanObj(Arc::new(s.create_patrol_plan(who, draft).await?)))
    }

    /// Checks in at a checkpoint of a task the caller is assigned to. A code the server did
    /// not sign, or of a checkpoint not on this task's plan, is refused (`VALIDATION` on
    /// `qrPayload`); a second check-in of the same checkpoint is a `CONFLICT`.
    #[graphql(guard = "Require(Permission::FieldWork)")]
    async fn check_in(&self, ctx: &Context<'_>, input: CheckInInput) -> Result<CheckInObj> {
        let (s, who) = caller(ctx)?;
        Ok(CheckInObj(s.check_in(who, input.into_draft()?).await?))
    }
}
