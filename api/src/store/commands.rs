//! The command ledger (`commands`). Status changes are conditional UPDATEs that name the
//! statuses a change may start from ([`CommandStatus::reachable_from`]) and return the row
//! only when they applied, so two instances, a late device answer and the expiry job can
//! race without ever moving a finished command.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sparkwatch_domain::access::ProjectScope;
use sparkwatch_domain::command::{CommandOp, CommandOutcome, CommandStatus};
use sparkwatch_domain::ids::{ApiKeyId, CommandId, DetectorId, DeviceId, ProjectId, TenantId, UserId};
use sparkwatch_domain::site::DeviceTransport;
use sparkwatch_entity::command;

use super::{Page, PageRequest, in_scope, page_desc};

/// A command as the API and the bus show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Id (also what the device echoes).
    pub id: CommandId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Project of the detector.
    pub project_id: ProjectId,
    /// Device (MQTT module or Modbus gateway).
    pub device_id: DeviceId,
    /// Detector.
    pub detector_id: DetectorId,
    /// Operation.
    pub op: CommandOp,
    /// Set-points of a set-threshold command, as the API names them.
    pub params: Option<Value>,
    /// Where it stands.
    pub status: CommandStatus,
    /// Why it was sent.
    pub reason: Option<String>,
    /// Who sent it, as the operation log shows it.
    pub actor: String,
    /// How it travels.
    pub transport: DeviceTransport,
    /// Accepted.
    pub created_at: DateTime<Utc>,
    /// Handed to the broker or the gateway.
    pub sent_at: Option<DateTime<Utc>>,
    /// Finished (acknowledged, failed or expired).
    pub finished_at: Option<DateTime<Utc>>,
    /// The device must answer by then.
    pub expires_at: DateTime<Utc>,
    /// The outcome ([`CommandOutcome`] as JSON).
    pub result: Option<Value>,
}

fn transport_from(code: &str) -> DeviceTransport {
    if code == DeviceTransport::ModbusTcp.code() { DeviceTransport::ModbusTcp } else { DeviceTransport::Mqtt }
}

fn from_model(m: command::Model) -> Result<Command, DbErr> {
    let corrupt = |what: &str, value: &str| DbErr::Custom(format!("command {}: unknown {what} `{value}`", m.id));
    Ok(Command {
        id: m.id.into(),
        tenant_id: m.tenant_id.into(),
        project_id: m.project_id.into(),
        device_id: m.device_id.into(),
        detector_id: m.detector_id.into(),
        op: CommandOp::from_code(&m.op).ok_or_else(|| corrupt("op", &m.op))?,
        status: CommandStatus::from_code(&m.status).ok_or_else(|| corrupt("status", &m.status))?,
        params: m.params,
        reason: m.reason,
        actor: m.actor,
        transport: transport_from(&m.transport),
        created_at: m.created_at,
        sent_at: m.sent_at,
        finished_at: m.finished_at,
        expires_at: m.expires_at,
        result: m.result,
    })
}

fn all(models: Vec<command::Model>) -> Result<Vec<Command>, DbErr> {
    models.into_iter().map(from_model).collect()
}

/// Records a new command as given (the service builds it `QUEUED`), sent by `actor_user` or
/// `actor_api_key` (neither for the system).
pub async fn insert<C: ConnectionTrait>(
    db: &C,
    c: &Command,
    actor_user: Option<UserId>,
    actor_api_key: Option<ApiKeyId>,
) -> Result<(), DbErr> {
    let row = command::ActiveModel {
        id: Set(c.id.as_uuid()),
        tenant_id: Set(c.tenant_id.as_uuid()),
        project_id: Set(c.project_id.as_uuid()),
        device_id: Set(c.device_id.as_uuid()),
        detector_id: Set(c.detector_id.as_uuid()),
        op: Set(c.op.code().to_owned()),
        params: Set(c.params.clone()),
        status: Set(c.status.code().to_owned()),
        reason: Set(c.reason.clone()),
        actor: Set(c.actor.clone()),
        actor_user_id: Set(actor_user.map(|u| u.as_uuid())),
        actor_api_key_id: Set(actor_api_key.map(|k| k.as_uuid())),
        transport: Set(c.transport.code().to_owned()),
        created_at: Set(c.created_at),
        sent_at: Set(c.sent_at),
        finished_at: Set(c.finished_at),
        expires_at: Set(c.expires_at),
        result: Set(c.result.clone()),
    };
    command::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// A command of `tenant` within `scope`.
pub async fn get<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    id: CommandId,
) -> Result<Option<Command>, DbErr> {
    in_scope(command::Entity::find_by_id(id.as_uuid()), command::Column::ProjectId, scope)
        .filter(command::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(from_model)
        .transpose()
}

/// A command sent to `device` (what a device's answer may refer to); none for another
/// device's command, so a device cannot answer for commands it was not sent.
pub async fn for_device<C: ConnectionTrait>(db: &C, id: CommandId, device: DeviceId) -> Result<Option<Command>, DbErr> {
    command::Entity::find_by_id(id.as_uuid())
        .filter(command::Column::DeviceId.eq(device.as_uuid()))
        .one(db)
        .await?
        .map(from_model)
        .transpose()
}

/// A detector's commands, newest first (the detector's visibility is checked by the caller).
pub async fn of_detector<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    detector: DetectorId,
    req: PageRequest,
) -> Result<Page<Command>, DbErr> {
    let q = command::Entity::find()
        .filter(command::Column::TenantId.eq(tenant.as_uuid()))
        .filter(command::Column::DetectorId.eq(detector.as_uuid()));
    let page = page_desc(db, q, command::Column::Id, req).await?;
    let has = (page.has_next, page.has_previous, page.total);
    Ok(Page { items: all(page.items)?, has_next: has.0, has_previous: has.1, total: has.2 })
}

/// Serialises command sending per detector for the rest of the transaction, so the cool-down
/// check sees every earlier command. PostgreSQL locks the detector row; SQLite needs nothing:
/// the command's insert, which comes before the check, takes the database's write lock.
pub async fn lock_detector<C: ConnectionTrait>(db: &C, detector: DetectorId) -> Result<(), DbErr> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        sparkwatch_entity::detector::Entity::find_by_id(detector.as_uuid())
            .select_only()
            .column(sparkwatch_entity::detector::Column::Id)
            .lock_exclusive()
            .into_tuple::<uuid::Uuid>()
            .one(db)
            .await?;
    }
    Ok(())
}

/// When the detector's newest command before `id` was created (for the cool-down).
pub async fn last_created_before<C: ConnectionTrait>(
    db: &C,
    detector: DetectorId,
    id: CommandId,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    Ok(command::Entity::find()
        .filter(command::Column::DetectorId.eq(detector.as_uuid()))
        .filter(command::Column::Id.ne(id.as_uuid()))
        .order_by_desc(command::Column::Id)
        .limit(1)
        .one(db)
        .await?
        .map(|m| m.created_at))
}

/// Moves a command to `SENT` if it is still `QUEUED`; the row when it moved. For Modbus this
/// is also the claim: of several instances, only the one whose UPDATE applied writes.
pub async fn mark_sent<C: ConnectionTrait>(
    db: &C,
    id: CommandId,
    now: DateTime<Utc>,
) -> Result<Option<Command>, DbErr> {
    let to = CommandStatus::Sent;
    let rows = command::Entity::update_many()
        .col_expr(command::Column::Status, Expr::value(to.code()))
        .col_expr(command::Column::SentAt, Expr::value(now))
        .filter(command::Column::Id.eq(id.as_uuid()))
        .filter(command::Column::Status.is_in(to.reachable_from().iter().map(|s| s.code())))
        .exec_with_returning(db)
        .await?;
    Ok(all(rows)?.pop())
}

/// Finishes a command with `outcome` if its status allows it; the row when it changed.
pub async fn finish<C: ConnectionTrait>(
    db: &C,
    id: CommandId,
    outcome: &CommandOutcome,
    now: DateTime<Utc>,
) -> Result<Option<Command>, DbErr> {
    let to = outcome.status();
    let rows = command::Entity::update_many()
        .col_expr(command::Column::Status, Expr::value(to.code()))
        .col_expr(command::Column::FinishedAt, Expr::value(now))
        .col_expr(command::Column::Result, Expr::value(outcome.to_json()))
        .filter(command::Column::Id.eq(id.as_uuid()))
        .filter(command::Column::Status.is_in(to.reachable_from().iter().map(|s| s.code())))
        .exec_with_returning(db)
        .await?;
    Ok(all(rows)?.pop())
}

/// Whether some open command is past its expiry.
pub async fn any_due<C: ConnectionTrait>(db: &C, now: DateTime<Utc>) -> Result<bool, DbErr> {
    Ok(command::Entity::find()
        .select_only()
        .column(command::Column::Id)
        .filter(command::Column::Status.is_in(CommandStatus::Expired.reachable_from().iter().map(|s| s.code())))
        .filter(command::Column::ExpiresAt.lte(now))
        .limit(1)
        .into_tuple::<uuid::Uuid>()
        .one(db)
        .await?
        .is_some())
}

/// Expires every open command whose expiry has passed, in one UPDATE (safe on several
/// instances: each row changes once); the rows that expired.
pub async fn expire_due<C: ConnectionTrait>(db: &C, now: DateTime<Utc>) -> Result<Vec<Command>, DbErr> {
    let to = CommandStatus::Expired;
    let rows = command::Entity::update_many()
        .col_expr(command::Column::Status, Expr::value(to.code()))
        .col_expr(command::Column::FinishedAt, Expr::value(now))
        .col_expr(command::Column::Result, Expr::value(CommandOutcome::expired().to_json()))
        .filter(command::Column::Status.is_in(to.reachable_from().iter().map(|s| s.code())))
        .filter(command::Column::ExpiresAt.lte(now))
        .exec_with_returning(db)
        .await?;
    all(rows)
}

/// Queued Modbus commands that have not expired, oldest first (the gateways' work list).
pub async fn queued_modbus<C: ConnectionTrait>(db: &C, now: DateTime<Utc>) -> Result<Vec<Command>, DbErr> {
    let rows = command::Entity::find()
        .filter(command::Column::Status.eq(CommandStatus::Queued.code()))
        .filter(command::Column::ExpiresAt.gt(now))
        .filter(command::Column::Transport.eq(DeviceTransport::ModbusTcp.code()))
        .order_by_asc(command::Column::Id)
        .limit(500)
        .all(db)
        .await?;
    all(rows)
}
