//! The append-only operation log. Rows are only ever inserted (the database refuses UPDATE
//! and DELETE on this table).

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde_json::Value;
use sparkwatch_domain::ids::{OperationId, TenantId};
use sparkwatch_entity::operation_log;

use super::{Page, PageRequest, new_id, page};
use crate::auth::{Actor, Principal};

/// One recorded operation.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Id.
    pub id: OperationId,
    /// Tenant the target belongs to (none for platform operations on tenants themselves).
    pub tenant_id: Option<TenantId>,
    /// Who did it (e-mail, phone, key name or `system`).
    pub actor: String,
    /// What was done, e.g. `device.create`.
    pub action: String,
    /// Kind of object changed.
    pub target_type: String,
    /// Id of the object changed.
    pub target_id: Option<String>,
    /// State before (absent for creations).
    pub before: Option<Value>,
    /// State after (absent for deletions).
    pub after: Option<Value>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What is being recorded.
pub struct Entry<'a> {
    /// Tenant of the target.
    pub tenant: Option<TenantId>,
    /// Action code.
    pub action: &'a str,
    /// Target kind.
    pub target_type: &'a str,
    /// Target id.
    pub target_id: Option<String>,
    /// Before.
    pub before: Option<Value>,
    /// After.
    pub after: Option<Value>,
}

impl<'a> Entry<'a> {
    /// An entry without snapshots.
    pub fn new(tenant: Option<TenantId>, action: &'a str, target_type: &'a str, target_id: Option<String>) -> Self {
        Entry { tenant, action, target_type, target_id, before: None, after: None }
    }

    /// With the target as it was.
    pub fn before(mut self, snapshot: Option<Value>) -> Self {
        self.before = snapshot;
        self
    }

    /// With the target as it is now.
    pub fn after(mut self, snapshot: Option<Value>) -> Self {
        self.after = snapshot;
        self
    }
}

/// Appends an entry for `who`.
pub async fn append<C: ConnectionTrait>(
    db: &C,
    who: &Principal,
    entry: Entry<'_>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let (user, key) = match who.actor {
        Actor::User(u) => (Some(u.as_uuid()), None),
        Actor::ApiKey(k) => (None, Some(k.as_uuid())),
        Actor::System => (None, None),
    };
    let row = operation_log::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(entry.tenant.map(|t| t.as_uuid())),
        actor_user_id: Set(user),
        actor_api_key_id: Set(key),
        actor: Set(who.label.clone()),
        action: Set(entry.action.to_owned()),
        target_type: Set(entry.target_type.to_owned()),
        target_id: Set(entry.target_id),
        before: Set(entry.before),
        after: Set(entry.after),
        at: Set(now),
    };
    operation_log::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// A page of a tenant's log, oldest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    only_actor: Option<&Actor>,
    req: PageRequest,
) -> Result<Page<Operation>, DbErr> {
    let mut q = operation_log::Entity::find().filter(operation_log::Column::TenantId.eq(tenant.as_uuid()));
    match only_actor {
        Some(Actor::User(u)) => q = q.filter(operation_log::Column::ActorUserId.eq(u.as_uuid())),
        Some(Actor::ApiKey(k)) => q = q.filter(operation_log::Column::ActorApiKeyId.eq(k.as_uuid())),
        Some(Actor::System) | None => {}
    }
    Ok(page(db, q, operation_log::Column::Id, req).await?.map(|m| Operation {
        id: m.id.into(),
        tenant_id: m.tenant_id.map(Into::into),
        actor: m.actor,
        action: m.action,
        target_type: m.target_type,
        target_id: m.target_id,
        before: m.before,
        after: m.after,
        at: m.at,
    }))
}
