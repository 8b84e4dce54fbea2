//! Work orders, their history, and the batch reads that keep lists free of N+1 queries
//! (hazards, assignees, attachments and history of a whole page in one query each).
//!
//! Status changes are conditional updates naming the status (and, for taking, the absence
//! of an assignee) they start from: two writers racing for one order cannot both win, and
//! the loser's `rows_affected == 0` becomes a `CONFLICT` in the service.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use sparkwatch_domain::access::ProjectScope;
use sparkwatch_domain::ids::{ProjectId, TenantId, UserId};
use sparkwatch_domain::workorder::{WorkOrderAction, WorkOrderStatus};
use sparkwatch_entity::{hazard, reminder, user, work_order, work_order_transition};
use uuid::Uuid;

use super::access::{User, user_from};
use super::hazards::{Hazard, hazard_from};
use super::{Page, PageRequest, in_scope, new_id, page_desc};

/// A work order as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkOrder {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Project (site).
    pub project_id: ProjectId,
    /// Short title.
    pub title: String,
    /// What is to be done.
    pub description: Option<String>,
    /// Lifecycle status (never `REJECTED`: a rejection returns it to `IN_PROGRESS`).
    pub status: WorkOrderStatus,
    /// The electrician doing it; `None` while open for anyone in scope to take.
    pub assignee_id: Option<UserId>,
    /// Deadline.
    pub due_at: Option<DateTime<Utc>>,
    /// Completion report (the latest submission).
    pub report: Option<String>,
    /// Who created it (label).
    pub created_by: String,
    /// Who created it (user).
    pub created_by_user_id: Option<UserId>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Latest submission.
    pub submitted_at: Option<DateTime<Utc>>,
    /// Approval.
    pub approved_at: Option<DateTime<Utc>>,
}

fn order_from(m: work_order::Model) -> WorkOrder {
    WorkOrder {
        id: m.id,
        tenant_id: m.tenant_id.into(),
        project_id: m.project_id.into(),
        title: m.title,
        description: m.description,
        // Written by this program from the same enum; an unknown code can only be a newer
        // version's and is shown as pending.
        status: WorkOrderStatus::from_code(&m.status).unwrap_or(WorkOrderStatus::Pending),
        assignee_id: m.assignee_id.map(Into::into),
        due_at: m.due_at,
        report: m.report,
        created_by: m.created_by,
        created_by_user_id: m.created_by_user_id.map(Into::into),
        created_at: m.created_at,
        updated_at: m.updated_at,
        submitted_at: m.submitted_at,
        approved_at: m.approved_at,
    }
}

/// Stores a new order.
pub async fn insert<C: ConnectionTrait>(db: &C, o: &WorkOrder) -> Result<(), DbErr> {
    let row = work_order::ActiveModel {
        id: Set(o.id),
        tenant_id: Set(o.tenant_id.as_uuid()),
        project_id: Set(o.project_id.as_uuid()),
        title: Set(o.title.clone()),
        description: Set(o.description.clone()),
        status: Set(o.status.code().to_owned()),
        assignee_id: Set(o.assignee_id.map(|u| u.as_uuid())),
        due_at: Set(o.due_at),
        report: Set(o.report.clone()),
        created_by: Set(o.created_by.clone()),
        created_by_user_id: Set(o.created_by_user_id.map(|u| u.as_uuid())),
        created_at: Set(o.created_at),
        updated_at: Set(o.updated_at),
        submitted_at: Set(o.submitted_at),
        approved_at: Set(o.approved_at),
    };
    work_order::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

fn visible(tenant: TenantId, scope: &ProjectScope) -> sea_orm::Select<work_order::Entity> {
    in_scope(work_order::Entity::find(), work_order::Column::ProjectId, scope)
        .filter(work_order::Column::TenantId.eq(tenant.as_uuid()))
}

/// A visible order.
pub async fn by_id<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    id: Uuid,
) -> Result<Option<WorkOrder>, DbErr> {
    Ok(visible(tenant, scope).filter(work_order::Column::Id.eq(id)).one(db).await?.map(order_from))
}

/// An order by id, whatever its tenant (for jobs that hold only its id).
pub async fn by_id_any<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<WorkOrder>, DbErr> {
    Ok(work_order::Entity::find_by_id(id).one(db).await?.map(order_from))
}

/// Filters of order lists.
#[derive(Clone, Debug, Default)]
pub struct WorkOrderFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ProjectId>>,
    /// Only these statuses.
    pub statuses: Option<Vec<WorkOrderStatus>>,
    /// Only orders assigned to this user.
    pub assignee: Option<UserId>,
    /// Only unassigned (`true`) or only assigned (`false`) orders.
    pub unassigned: Option<bool>,
    /// Only overdue (`true`) or only not overdue (`false`) orders, as of `now`.
    pub overdue: Option<bool>,
    /// The time `overdue` is judged at.
    pub now: DateTime<Utc>,
}

/// The statuses in which the deadline applies.
fn open_for_field() -> Vec<&'static str> {
    WorkOrderStatus::ALL.into_iter().filter(|s| s.is_open_for_field()).map(|s| s.code()).collect()
}

/// A page of visible orders, newest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    f: &WorkOrderFilter,
    req: PageRequest,
) -> Result<Page<WorkOrder>, DbErr> {
    let mut q = visible(tenant, scope);
    if let Some(p) = &f.project_ids {
        q = q.filter(work_order::Column::ProjectId.is_in(p.iter().map(|p| p.as_uuid())));
    }
    if let Some(s) = &f.statuses {
        q = q.filter(work_order::Column::Status.is_in(s.iter().map(|s| s.code())));
    }
    if let Some(u) = f.assignee {
        q = q.filter(work_order::Column::AssigneeId.eq(u.as_uuid()));
    }
    match f.unassigned {
        Some(true) => q = q.filter(work_order::Column::AssigneeId.is_null()),
        Some(false) => q = q.filter(work_order::Column::AssigneeId.is_not_null()),
        None => {}
    }
    let overdue = Condition::all()
        .add(work_order::Column::Status.is_in(open_for_field()))
        .add(work_order::Column::DueAt.lte(f.now));
    match f.overdue {
        Some(true) => q = q.filter(overdue),
        // Spelled out rather than negated: `NOT (… AND due_at <= now)` is NULL, not true,
        // for orders without a deadline.
        Some(false) => {
            q = q.filter(
                Condition::any()
                    .add(work_order::Column::Status.is_not_in(open_for_field()))
                    .add(work_order::Column::DueAt.is_null())
                    .add(work_order::Column::DueAt.gt(f.now)),
            )
        }
        None => {}
    }
    Ok(page_desc(db, q, work_order::Column::Id, req).await?.map(order_from))
}

/// What a status change writes besides the status.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// New assignee (taking).
    pub assignee: Option<UserId>,
    /// Completion report (submitting).
    pub report: Option<String>,
}

/// Moves `o` from the status it was read in to `to`. Taking also requires that nobody is
/// assigned. Returns false, writing nothing, when someone else changed the order first.
pub async fn set_status<C: ConnectionTrait>(
    db: &C,
    o: &WorkOrder,
    action: WorkOrderAction,
    to: WorkOrderStatus,
    change: &Change,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let mut q = work_order::Entity::update_many()
        .col_expr(work_order::Column::Status, Expr::value(to.code()))
        .col_expr(work_order::Column::UpdatedAt, Expr::value(at))
        .filter(work_order::Column::Id.eq(o.id))
        .filter(work_order::Column::TenantId.eq(o.tenant_id.as_uuid()))
        .filter(work_order::Column::Status.eq(o.status.code()));
    if let Some(u) = change.assignee {
        q = q.col_expr(work_order::Column::AssigneeId, Expr::value(u.as_uuid()));
    }
    if let Some(r) = &change.report {
        q = q.col_expr(work_order::Column::Report, Expr::value(r.clone()));
    }
    match action {
        WorkOrderAction::Take => q = q.filter(work_order::Column::AssigneeId.is_null()),
        WorkOrderAction::Submit => q = q.col_expr(work_order::Column::SubmittedAt, Expr::value(at)),
        WorkOrderAction::Approve => q = q.col_expr(work_order::Column::ApprovedAt, Expr::value(at)),
        _ => {}
    }
    Ok(q.exec(db).await?.rows_affected == 1)
}

// ---- history ----

/// One recorded action on an order.
#[derive(Clone, Debug, Serialize)]
pub struct OrderTransition {
    /// The order.
    pub work_order_id: Uuid,
    /// What was done (`DISPATCH`/`CREATE` for the creation, else a [`WorkOrderAction`] code).
    pub action: String,
    /// Status before (`None` for the creation).
    pub from: Option<WorkOrderStatus>,
    /// Status after.
    pub to: WorkOrderStatus,
    /// Who (label).
    pub actor: String,
    /// The user, when a user did it.
    pub actor_user_id: Option<UserId>,
    /// Note, report or reason.
    pub note: Option<String>,
    /// Server time.
    pub at: DateTime<Utc>,
    /// Device time, for operations made on a phone (maybe offline).
    pub device_at: Option<DateTime<Utc>>,
}

/// Records an action (the creation has `from: None`, stored as an empty status).
pub async fn insert_transition<C: ConnectionTrait>(db: &C, tenant: TenantId, t: &OrderTransition) -> Result<(), DbErr> {
    let row = work_order_transition::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(tenant.as_uuid()),
        work_order_id: Set(t.work_order_id),
        action: Set(t.action.clone()),
        from_status: Set(t.from.map(|s| s.code()).unwrap_or_default().to_owned()),
        to_status: Set(t.to.code().to_owned()),
        actor: Set(t.actor.clone()),
        actor_user_id: Set(t.actor_user_id.map(|u| u.as_uuid())),
        note: Set(t.note.clone()),
        at: Set(t.at),
        device_at: Set(t.device_at),
    };
    work_order_transition::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// The history of each of `orders`, oldest first (one query).
pub async fn history_of<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    orders: &[Uuid],
) -> Result<Vec<OrderTransition>, DbErr> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let rows = work_order_transition::Entity::find()
        .filter(work_order_transition::Column::TenantId.eq(tenant.as_uuid()))
        .filter(work_order_transition::Column::WorkOrderId.is_in(orders.iter().copied()))
        .order_by_asc(work_order_transition::Column::At)
        .order_by_asc(work_order_transition::Column::Id)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|m| OrderTransition {
            work_order_id: m.work_order_id,
            action: m.action,
            from: WorkOrderStatus::from_code(&m.from_status),
            to: WorkOrderStatus::from_code(&m.to_status).unwrap_or(WorkOrderStatus::Pending),
            actor: m.actor,
            actor_user_id: m.actor_user_id.map(Into::into),
            note: m.note,
            at: m.at,
            device_at: m.device_at,
        })
        .collect())
}

// ---- hazards and people ----

/// Points hazards at the order handling them.
pub async fn link_hazards<C: ConnectionTrait>(db: &C, hazards: &[Uuid], order: Uuid) -> Result<(), DbErr> {
    if hazards.is_empty() {
        return Ok(());
    }
    hazard::Entity::update_many()
        .col_expr(hazard::Column::WorkOrderId, Expr::value(order))
        .filter(hazard::Column::Id.is_in(hazards.iter().copied()))
        .exec(db)
        .await
        .map(|_| ())
}

/// The hazards of each of `orders` (one query), oldest first.
pub async fn hazards_of<C: ConnectionTrait>(db: &C, tenant: TenantId, orders: &[Uuid]) -> Result<Vec<Hazard>, DbErr> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    Ok(hazard::Entity::find()
        .filter(hazard::Column::TenantId.eq(tenant.as_uuid()))
        .filter(hazard::Column::WorkOrderId.is_in(orders.iter().copied()))
        .order_by_asc(hazard::Column::OpenedAt)
        .order_by_asc(hazard::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(hazard_from)
        .collect())
}

/// Users of the tenant among `ids` (one query).
pub async fn users<C: ConnectionTrait>(db: &C, tenant: TenantId, ids: &[Uuid]) -> Result<Vec<User>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant.as_uuid()))
        .filter(user::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(user_from)
        .collect())
}

/// Re-arms a finished reminder of an order (a rejected order is open for field work again):
/// due at `due`, from level 0. Returns false when the order has no such reminder.
pub async fn rearm_reminder<C: ConnectionTrait>(
    db: &C,
    purpose: &str,
    order: Uuid,
    due: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let res = reminder::Entity::update_many()
        .col_expr(reminder::Column::DueAt, Expr::value(due))
        .col_expr(reminder::Column::Level, Expr::value(0))
        .col_expr(reminder::Column::DoneAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(reminder::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(reminder::Column::Purpose.eq(purpose))
        .filter(reminder::Column::SubjectType.eq("work_order"))
        .filter(reminder::Column::SubjectId.eq(order))
        .exec(db)
        .await?;
    Ok(res.rows_affected > 0)
}
