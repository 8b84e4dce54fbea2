//! Patrol checkpoints, plans, tasks and check-ins: persistence.
//!
//! Races are settled by the database: one task per (plan, period) (`INSERT … ON CONFLICT
//! DO NOTHING`, so every instance may run the generation job), one check-in per (task,
//! checkpoint), and status changes are conditional on the status they start from.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::Serialize;
use std::collections::BTreeSet;

use sparkwatch_domain::access::{Permission, ProjectScope};
use sparkwatch_domain::ids::{ProjectId, TenantId, UserId};
use sparkwatch_domain::patrol::{Answer, PatrolSchedule, PatrolTaskStatus};
use sparkwatch_domain::site::Project;
use sparkwatch_entity::{
    check_in, check_in_hazard, checkpoint, patrol_plan, patrol_plan_assignee, patrol_plan_checkpoint, patrol_task,
    project, user, user_project_scope,
};
use uuid::Uuid;

use super::access::{RoleRef, User, user_from};
use super::{Page, PageRequest, in_scope, page, page_desc};

// ---- checkpoints ----

/// A place on a patrol route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Project.
    pub project_id: ProjectId,
    /// Name (printed on the label).
    pub name: String,
    /// Where it is (printed on the label).
    pub position: Option<String>,
    /// What to check there, in order.
    pub checklist: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

fn checkpoint_from(m: checkpoint::Model) -> Checkpoint {
    Checkpoint {
        id: m.id,
        tenant_id: m.tenant_id.into(),
        project_id: m.project_id.into(),
        name: m.name,
        position: m.position,
        checklist: serde_json::from_value(m.checklist).unwrap_or_default(),
        created_at: m.created_at,
    }
}

/// Stores a new checkpoint.
pub async fn insert_checkpoint<C: ConnectionTrait>(db: &C, c: &Checkpoint) -> Result<(), DbErr> {
    let row = checkpoint::ActiveModel {
        id: Set(c.id),
        tenant_id: Set(c.tenant_id.as_uuid()),
        project_id: Set(c.project_id.as_uuid()),
        name: Set(c.name.clone()),
        position: Set(c.position.clone()),
        checklist: Set(serde_json::json!(c.checklist)),
        created_at: Set(c.created_at),
    };
    checkpoint::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// The tenant's checkpoints among `ids` that are visible in `scope` (any order).
pub async fn checkpoints_by_ids<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    ids: &[Uuid],
) -> Result<Vec<Checkpoint>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let q = checkpoint::Entity::find()
        .filter(checkpoint::Column::TenantId.eq(tenant.as_uuid()))
        .filter(checkpoint::Column::Id.is_in(ids.iter().copied()));
    Ok(in_scope(q, checkpoint::Column::ProjectId, scope).all(db).await?.into_iter().map(checkpoint_from).collect())
}

/// A project's checkpoints, oldest first.
pub async fn checkpoints<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    project: ProjectId,
    req: PageRequest,
) -> Result<Page<Checkpoint>, DbErr> {
    let q = checkpoint::Entity::find()
        .filter(checkpoint::Column::TenantId.eq(tenant.as_uuid()))
        .filter(checkpoint::Column::ProjectId.eq(project.as_uuid()));
    Ok(page(db, q, checkpoint::Column::Id, req).await?.map(checkpoint_from))
}

// ---- plans ----

/// A recurring patrol over ordered checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Project.
    pub project_id: ProjectId,
    /// Name.
    pub name: String,
    /// How often.
    pub schedule: PatrolSchedule,
    /// First day (site time).
    pub starts_on: NaiveDate,
    /// Whether tasks are generated.
    pub active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Checkpoints in walking order.
    pub checkpoints: Vec<Uuid>,
    /// Who walks it.
    pub assignees: Vec<UserId>,
}

/// Stores a new plan with its checkpoints and assignees.
pub async fn insert_plan<C: ConnectionTrait>(db: &C, p: &Plan) -> Result<(), DbErr> {
    let row = patrol_plan::ActiveModel {
        id: Set(p.id),
        tenant_id: Set(p.tenant_id.as_uuid()),
        project_id: Set(p.project_id.as_uuid()),
        name: Set(p.name.clone()),
        schedule: Set(p.schedule.code().to_owned()),
        starts_on: Set(p.starts_on),
        active: Set(p.active),
        created_at: Set(p.created_at),
    };
    patrol_plan::Entity::insert(row).exec_without_returning(db).await?;
    let stops = p.checkpoints.iter().enumerate().map(|(i, c)| patrol_plan_checkpoint::ActiveModel {
        plan_id: Set(p.id),
        checkpoint_id: Set(*c),
        position: Set(i as i32),
    });
    patrol_plan_checkpoint::Entity::insert_many(stops).exec_without_returning(db).await?;
    let people =
        p.assignees.iter().map(|u| patrol_plan_assignee::ActiveModel { plan_id: Set(p.id), user_id: Set(u.as_uuid()) });
    patrol_plan_assignee::Entity::insert_many(people).exec_without_returning(db).await?;
    Ok(())
}

/// Plans with their checkpoints and assignees: three queries for any number of rows.
async fn complete_plans<C: ConnectionTrait>(db: &C, rows: Vec<patrol_plan::Model>) -> Result<Vec<Plan>, DbErr> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|p| p.id).collect();
    let stops = patrol_plan_checkpoint::Entity::find()
        .filter(patrol_plan_checkpoint::Column::PlanId.is_in(ids.clone()))
        .order_by_asc(patrol_plan_checkpoint::Column::Position)
        .all(db)
        .await?;
    let people =
        patrol_plan_assignee::Entity::find().filter(patrol_plan_assignee::Column::PlanId.is_in(ids)).all(db).await?;
    Ok(rows
        .into_iter()
        .map(|m| Plan {
            checkpoints: stops.iter().filter(|s| s.plan_id == m.id).map(|s| s.checkpoint_id).collect(),
            assignees: people.iter().filter(|a| a.plan_id == m.id).map(|a| a.user_id.into()).collect(),
            id: m.id,
            tenant_id: m.tenant_id.into(),
            project_id: m.project_id.into(),
            name: m.name,
            schedule: PatrolSchedule::from_code(&m.schedule).unwrap_or(PatrolSchedule::Daily),
            starts_on: m.starts_on,
            active: m.active,
            created_at: m.created_at,
        })
        .collect())
}

/// The tenant's plans among `ids` (any order).
pub async fn plans_by_ids<C: ConnectionTrait>(db: &C, tenant: TenantId, ids: &[Uuid]) -> Result<Vec<Plan>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = patrol_plan::Entity::find()
        .filter(patrol_plan::Column::TenantId.eq(tenant.as_uuid()))
        .filter(patrol_plan::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    complete_plans(db, rows).await
}

/// Every tenant's active plans that have started by `today` (the generation job).
pub async fn active_plans<C: ConnectionTrait>(db: &C, today: NaiveDate) -> Result<Vec<patrol_plan::Model>, DbErr> {
    patrol_plan::Entity::find()
        .filter(patrol_plan::Column::Active.eq(true))
        .filter(patrol_plan::Column::StartsOn.lte(today))
        .all(db)
        .await
}

/// Users among `ids` (any tenant; callers check).
pub async fn users_by_ids<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> Result<Vec<User>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = user::Entity::find().filter(user::Column::Id.is_in(ids.iter().copied())).all(db).await?;
    Ok(rows.into_iter().map(user_from).collect())
}

/// A person with what they may do and see.
#[derive(Clone, Debug)]
pub struct Person {
    /// The user.
    pub user: User,
    /// Permissions of their role.
    pub permissions: BTreeSet<Permission>,
    /// Projects they see.
    pub scope: ProjectScope,
}

/// The tenant's active users (all of them, or those among `ids`) with their permissions
/// and scope: three queries.
pub async fn people<C: ConnectionTrait>(db: &C, tenant: TenantId, ids: Option<&[Uuid]>) -> Result<Vec<Person>, DbErr> {
    let mut q =
        user::Entity::find().filter(user::Column::TenantId.eq(tenant.as_uuid())).filter(user::Column::Active.eq(true));
    if let Some(ids) = ids {
        q = q.filter(user::Column::Id.is_in(ids.iter().copied()));
    }
    let users: Vec<User> = q.all(db).await?.into_iter().map(user_from).collect();
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let roles = super::access::roles(db, tenant).await?;
    let scopes = user_project_scope::Entity::find()
        .filter(user_project_scope::Column::UserId.is_in(users.iter().map(|u| u.id.as_uuid())))
        .all(db)
        .await?;
    Ok(users
        .into_iter()
        .map(|user| {
            let permissions = match user.role {
                RoleRef::Builtin(b) => b.permissions(),
                RoleRef::Custom(id) => {
                    roles.iter().find(|r| r.id == id).map(|r| r.permissions.clone()).unwrap_or_default()
                }
            };
            let projects = scopes.iter().filter(|s| s.user_id == user.id.as_uuid()).map(|s| s.project_id.into());
            let scope = ProjectScope::new(&permissions, projects);
            Person { user, permissions, scope }
        })
        .collect())
}

/// The tenant's projects among `ids` that are visible in `scope` (any order).
pub async fn projects_by_ids<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    ids: &[ProjectId],
) -> Result<Vec<Project>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let q = project::Entity::find()
        .filter(project::Column::TenantId.eq(tenant.as_uuid()))
        .filter(project::Column::Id.is_in(ids.iter().map(|p| p.as_uuid())));
    Ok(in_scope(q, project::Column::Id, scope).all(db).await?.into_iter().map(super::sites::project_from).collect())
}

// ---- tasks ----

/// One period of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Project.
    pub project_id: ProjectId,
    /// Plan.
    pub plan_id: Uuid,
    /// The period's first day (site time).
    pub period_start: NaiveDate,
    /// When the period starts.
    pub starts_at: DateTime<Utc>,
    /// When it ends: the task is due.
    pub due_at: DateTime<Utc>,
    /// Status.
    pub status: PatrolTaskStatus,
    /// When every checkpoint was checked.
    pub done_at: Option<DateTime<Utc>>,
    /// When it was marked missed.
    pub missed_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

fn task_from(m: patrol_task::Model) -> Task {
    Task {
        id: m.id,
        tenant_id: m.tenant_id.into(),
        project_id: m.project_id.into(),
        plan_id: m.plan_id,
        period_start: m.period_start,
        starts_at: m.starts_at,
        due_at: m.due_at,
        status: PatrolTaskStatus::from_code(&m.status).unwrap_or(PatrolTaskStatus::Due),
        done_at: m.done_at,
        missed_at: m.missed_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn task_row(t: &Task) -> patrol_task::ActiveModel {
    patrol_task::ActiveModel {
        id: Set(t.id),
        tenant_id: Set(t.tenant_id.as_uuid()),
        project_id: Set(t.project_id.as_uuid()),
        plan_id: Set(t.plan_id),
        period_start: Set(t.period_start),
        starts_at: Set(t.starts_at),
        due_at: Set(t.due_at),
        status: Set(t.status.code().to_owned()),
        done_at: Set(t.done_at),
        missed_at: Set(t.missed_at),
        created_at: Set(t.created_at),
        updated_at: Set(t.updated_at),
    }
}

/// Inserts the tasks that do not exist yet for their (plan, period); returns how many were
/// new. Concurrent callers (every instance runs the job) agree on one row per period.
pub async fn ensure_tasks<C: ConnectionTrait>(db: &C, tasks: &[Task]) -> Result<u64, DbErr> {
    let mut created = 0;
    for chunk in tasks.chunks(500) {
        let on_conflict = OnConflict::columns([patrol_task::Column::PlanId, patrol_task::Column::PeriodStart])
            .do_nothing()
            .to_owned();
        created += patrol_task::Entity::insert_many(chunk.iter().map(task_row))
            .on_conflict(on_conflict)
            .exec_without_returning(db)
            .await?;
    }
    Ok(created)
}

/// The (plan, period start) pairs among `plans` × `starts` that have a task.
pub async fn existing_periods<C: ConnectionTrait>(
    db: &C,
    plans: &[Uuid],
    starts: &[NaiveDate],
) -> Result<Vec<(Uuid, NaiveDate)>, DbErr> {
    let mut out = Vec::new();
    for chunk in plans.chunks(500) {
        let rows: Vec<(Uuid, NaiveDate)> = patrol_task::Entity::find()
            .filter(patrol_task::Column::PlanId.is_in(chunk.iter().copied()))
            .filter(patrol_task::Column::PeriodStart.is_in(starts.iter().copied()))
            .select_only()
            .column(patrol_task::Column::PlanId)
            .column(patrol_task::Column::PeriodStart)
            .into_tuple()
            .all(db)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

fn open_statuses() -> [&'static str; 2] {
    [PatrolTaskStatus::Due.code(), PatrolTaskStatus::InProgress.code()]
}

/// Whether any task is past its due time and not done (a read, so an idle job takes no
/// write lock).
pub async fn overdue_exists<C: ConnectionTrait>(db: &C, now: DateTime<Utc>) -> Result<bool, DbErr> {
    Ok(patrol_task::Entity::find()
        .filter(patrol_task::Column::Status.is_in(open_statuses()))
        .filter(patrol_task::Column::DueAt.lte(now))
        .one(db)
        .await?
        .is_some())
}

/// Marks every task past its due time that is not done as `MISSED`; returns them.
pub async fn miss_overdue<C: ConnectionTrait>(db: &C, now: DateTime<Utc>) -> Result<Vec<Task>, DbErr> {
    Ok(patrol_task::Entity::update_many()
        .col_expr(patrol_task::Column::Status, Expr::value(PatrolTaskStatus::Missed.code()))
        .col_expr(patrol_task::Column::MissedAt, Expr::value(now))
        .col_expr(patrol_task::Column::UpdatedAt, Expr::value(now))
        .filter(patrol_task::Column::Status.is_in(open_statuses()))
        .filter(patrol_task::Column::DueAt.lte(now))
        .exec_with_returning(db)
        .await?
        .into_iter()
        .map(task_from)
        .collect())
}

/// A task by id, whatever its tenant (jobs).
pub async fn task_by_id<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<Task>, DbErr> {
    Ok(patrol_task::Entity::find_by_id(id).one(db).await?.map(task_from))
}

/// Locks a task for a check-in (a no-op write: on PostgreSQL the row lock serialises
/// check-ins of one task, so the last of them sees every other and completes it) and
/// reads it; `None` when the tenant has no such task in `scope`.
pub async fn lock_task<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Task>, DbErr> {
    let q = patrol_task::Entity::update_many()
        .col_expr(patrol_task::Column::UpdatedAt, Expr::value(now))
        .filter(patrol_task::Column::Id.eq(id))
        .filter(patrol_task::Column::TenantId.eq(tenant.as_uuid()));
    let q = match scope {
        ProjectScope::All => q,
        ProjectScope::Only(ids) => q.filter(patrol_task::Column::ProjectId.is_in(ids.iter().map(|p| p.as_uuid()))),
    };
    Ok(q.exec_with_returning(db).await?.into_iter().next().map(task_from))
}

/// Moves a task from `from` to `to`; `false` when it was not in `from`.
pub async fn set_task_status<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    from: PatrolTaskStatus,
    to: PatrolTaskStatus,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let mut q = patrol_task::Entity::update_many()
        .col_expr(patrol_task::Column::Status, Expr::value(to.code()))
        .col_expr(patrol_task::Column::UpdatedAt, Expr::value(now));
    if to == PatrolTaskStatus::Done {
        q = q.col_expr(patrol_task::Column::DoneAt, Expr::value(now));
    }
    let done =
        q.filter(patrol_task::Column::Id.eq(id)).filter(patrol_task::Column::Status.eq(from.code())).exec(db).await?;
    Ok(done.rows_affected > 0)
}

/// Which tasks a list shows.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ProjectId>>,
    /// Only tasks of plans this user is assigned to.
    pub assignee: Option<UserId>,
    /// Only these statuses.
    pub statuses: Option<Vec<PatrolTaskStatus>>,
}

/// The tenant's tasks in `scope` matching `filter`, newest first.
pub async fn tasks<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    filter: &TaskFilter,
    req: PageRequest,
) -> Result<Page<Task>, DbErr> {
    let mut q = in_scope(
        patrol_task::Entity::find().filter(patrol_task::Column::TenantId.eq(tenant.as_uuid())),
        patrol_task::Column::ProjectId,
        scope,
    );
    if let Some(projects) = &filter.project_ids {
        q = q.filter(patrol_task::Column::ProjectId.is_in(projects.iter().map(|p| p.as_uuid())));
    }
    if let Some(user) = filter.assignee {
        let plans = Query::select()
            .column(patrol_plan_assignee::Column::PlanId)
            .from(patrol_plan_assignee::Entity)
            .and_where(patrol_plan_assignee::Column::UserId.eq(user.as_uuid()))
            .to_owned();
        q = q.filter(patrol_task::Column::PlanId.in_subquery(plans));
    }
    if let Some(statuses) = &filter.statuses {
        q = q.filter(patrol_task::Column::Status.is_in(statuses.iter().map(|s| s.code())));
    }
    Ok(page_desc(db, q, patrol_task::Column::Id, req).await?.map(task_from))
}

// ---- check-ins ----

/// A visit to a checkpoint during a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckIn {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Project.
    pub project_id: ProjectId,
    /// Task.
    pub task_id: Uuid,
    /// Checkpoint.
    pub checkpoint_id: Uuid,
    /// Who (log label).
    pub actor: String,
    /// Who (user).
    pub user_id: Option<UserId>,
    /// When the code was scanned (device time).
    pub at: DateTime<Utc>,
    /// When the server received it.
    pub received_at: DateTime<Utc>,
    /// Checklist answers, in checklist order.
    pub answers: Vec<Answer>,
    /// A note.
    pub note: Option<String>,
}

fn check_in_from(m: check_in::Model) -> CheckIn {
    CheckIn {
        id: m.id,
        tenant_id: m.tenant_id.into(),
        project_id: m.project_id.into(),
        task_id: m.task_id,
        checkpoint_id: m.checkpoint_id,
        actor: m.actor,
        user_id: m.user_id.map(Into::into),
        at: m.at,
        received_at: m.received_at,
        answers: serde_json::from_value(m.answers).unwrap_or_default(),
        note: m.note,
    }
}

/// Stores a check-in unless its (task, checkpoint) has one; returns whether it was stored.
pub async fn insert_check_in<C: ConnectionTrait>(db: &C, c: &CheckIn) -> Result<bool, DbErr> {
    let row = check_in::ActiveModel {
        id: Set(c.id),
        tenant_id: Set(c.tenant_id.as_uuid()),
        project_id: Set(c.project_id.as_uuid()),
        task_id: Set(c.task_id),
        checkpoint_id: Set(c.checkpoint_id),
        actor: Set(c.actor.clone()),
        user_id: Set(c.user_id.map(|u| u.as_uuid())),
        at: Set(c.at),
        received_at: Set(c.received_at),
        answers: Set(serde_json::json!(c.answers)),
        note: Set(c.note.clone()),
    };
    let on_conflict =
        OnConflict::columns([check_in::Column::TaskId, check_in::Column::CheckpointId]).do_nothing().to_owned();
    Ok(check_in::Entity::insert(row).on_conflict(on_conflict).exec_without_returning(db).await? > 0)
}

/// The tenant's check-ins of `tasks`, oldest first.
pub async fn check_ins_of_tasks<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    tasks: &[Uuid],
) -> Result<Vec<CheckIn>, DbErr> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    Ok(check_in::Entity::find()
        .filter(check_in::Column::TenantId.eq(tenant.as_uuid()))
        .filter(check_in::Column::TaskId.is_in(tasks.iter().copied()))
        .order_by_asc(check_in::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(check_in_from)
        .collect())
}

/// A check-in of the tenant.
pub async fn check_in_by_id<C: ConnectionTrait>(db: &C, tenant: TenantId, id: Uuid) -> Result<Option<CheckIn>, DbErr> {
    Ok(check_in::Entity::find_by_id(id)
        .filter(check_in::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(check_in_from))
}

/// Records that `hazard` was reported within `check_in`.
pub async fn link_hazard<C: ConnectionTrait>(db: &C, check_in: Uuid, hazard: Uuid) -> Result<(), DbErr> {
    let row = check_in_hazard::ActiveModel { check_in_id: Set(check_in), hazard_id: Set(hazard) };
    check_in_hazard::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// (check-in, hazard) pairs of `check_ins`.
pub async fn hazards_of_check_ins<C: ConnectionTrait>(db: &C, check_ins: &[Uuid]) -> Result<Vec<(Uuid, Uuid)>, DbErr> {
    if check_ins.is_empty() {
        return Ok(Vec::new());
    }
    check_in_hazard::Entity::find()
        .filter(check_in_hazard::Column::CheckInId.is_in(check_ins.iter().copied()))
        .order_by_asc(check_in_hazard::Column::HazardId)
        .select_only()
        .column(check_in_hazard::Column::CheckInId)
        .column(check_in_hazard::Column::HazardId)
        .into_tuple()
        .all(db)
        .await
}
