//! The idempotency record of offline field operations: the entity the first answer named,
//! under (user, client id).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use sparkwatch_domain::field::FieldOperationKind;
use sparkwatch_domain::ids::{TenantId, UserId};
use sparkwatch_entity::field_operation;
use uuid::Uuid;

use super::new_id;

/// An operation recorded earlier under the same (user, client id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// What it was.
    pub kind: Option<FieldOperationKind>,
    /// The object it created or changed.
    pub entity: Option<Uuid>,
}

/// The operation recorded under (user, client id), if any.
pub async fn recorded<C: ConnectionTrait>(db: &C, user: UserId, client: Uuid) -> Result<Option<Recorded>, DbErr> {
    Ok(field_operation::Entity::find()
        .filter(field_operation::Column::UserId.eq(user.as_uuid()))
        .filter(field_operation::Column::ClientId.eq(client))
        .one(db)
        .await?
        .map(|m| Recorded { kind: FieldOperationKind::from_code(&m.kind), entity: m.entity_id }))
}

/// Records an operation unless one is recorded under (user, client id) already; returns
/// whether this call recorded it. On PostgreSQL a concurrent transaction recording the same
/// key makes this wait for it and then record nothing, so exactly one of them applies.
#[allow(clippy::too_many_arguments)]
pub async fn record<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    user: UserId,
    client: Uuid,
    kind: FieldOperationKind,
    entity: Uuid,
    device_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let row = field_operation::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(tenant.as_uuid()),
        user_id: Set(user.as_uuid()),
        client_id: Set(client),
        kind: Set(kind.code().to_owned()),
        entity_id: Set(Some(entity)),
        device_at: Set(device_at),
        recorded_at: Set(now),
    };
    let on_conflict = OnConflict::columns([field_operation::Column::UserId, field_operation::Column::ClientId])
        .do_nothing()
        .to_owned();
    let inserted = field_operation::Entity::insert(row).on_conflict(on_conflict).exec_without_returning(db).await?;
    Ok(inserted > 0)
}

/// The operations recorded under `clients` for `user` (one query for a whole sync).
pub async fn recorded_many<C: ConnectionTrait>(
    db: &C,
    user: UserId,
    clients: &[Uuid],
) -> Result<Vec<(Uuid, Recorded)>, DbErr> {
    let mut out = Vec::with_capacity(clients.len());
    for chunk in clients.chunks(500) {
        let rows = field_operation::Entity::find()
            .filter(field_operation::Column::UserId.eq(user.as_uuid()))
            .filter(field_operation::Column::ClientId.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        out.extend(
            rows.into_iter()
                .map(|m| (m.client_id, Recorded { kind: FieldOperationKind::from_code(&m.kind), entity: m.entity_id })),
        );
    }
    Ok(out)
}
