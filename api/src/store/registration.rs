//! Who may register what: the owners of Modbus gateway addresses and the serial claim pool
//! (issue 14). The rules are in [`crate::service::registration`]; this module only keeps the
//! rows, with single conditional statements so that two tenants racing for one address
//! cannot both win.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, TryInsertResult,
};
use sparkwatch_domain::ids::TenantId;
use sparkwatch_domain::site::DeviceTransport;
use sparkwatch_entity::{device, gateway_owner, serial_claim};

use crate::ingest::modbus::network::endpoint_key;

/// Makes `endpoint` the tenant's if nobody owns it, the tenant already does, or its owner
/// released it at or before `free_before`. False when another tenant holds it.
pub async fn take_gateway<C: ConnectionTrait>(
    db: &C,
    endpoint: &str,
    tenant: TenantId,
    now: DateTime<Utc>,
    free_before: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let row = gateway_owner::ActiveModel {
        endpoint: Set(endpoint.to_owned()),
        tenant_id: Set(tenant.as_uuid()),
        claimed_at: Set(now),
        released_at: Set(None),
    };
    // DO NOTHING rather than catching a unique violation: on PostgreSQL that would abort
    // the caller's transaction.
    let inserted = gateway_owner::Entity::insert(row).on_conflict_do_nothing().exec_without_returning(db).await?;
    if matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
        return Ok(true);
    }
    let ours = gateway_owner::Entity::update_many()
        .col_expr(gateway_owner::Column::ReleasedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(gateway_owner::Column::Endpoint.eq(endpoint))
        .filter(gateway_owner::Column::TenantId.eq(tenant.as_uuid()))
        .exec(db)
        .await?;
    if ours.rows_affected > 0 {
        return Ok(true);
    }
    let taken_over = gateway_owner::Entity::update_many()
        .col_expr(gateway_owner::Column::TenantId, Expr::value(tenant.as_uuid()))
        .col_expr(gateway_owner::Column::ClaimedAt, Expr::value(now))
        .col_expr(gateway_owner::Column::ReleasedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(gateway_owner::Column::Endpoint.eq(endpoint))
        .filter(gateway_owner::Column::ReleasedAt.lte(free_before))
        .exec(db)
        .await?;
    Ok(taken_over.rows_affected > 0)
}

/// Whether a tenant other than `tenant` owns `endpoint` (and did not release it at or
/// before `free_before`).
pub async fn held_by_other<C: ConnectionTrait>(
    db: &C,
    endpoint: &str,
    tenant: TenantId,
    free_before: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let row = gateway_owner::Entity::find_by_id(endpoint.to_owned()).one(db).await?;
    Ok(row.is_some_and(|r| {
        r.tenant_id != tenant.as_uuid() && r.released_at.is_none_or(|released| released > free_before)
    }))
}

/// Starts the hold period of `endpoint` when `tenant` owns it and no longer has a Modbus
/// device on it.
pub async fn release_gateway_if_unused<C: ConnectionTrait>(
    db: &C,
    endpoint: &str,
    tenant: TenantId,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    if !tenants_on(db, endpoint, Some(tenant)).await?.is_empty() {
        return Ok(());
    }
    gateway_owner::Entity::update_many()
        .col_expr(gateway_owner::Column::ReleasedAt, Expr::value(Some(now)))
        .filter(gateway_owner::Column::Endpoint.eq(endpoint))
        .filter(gateway_owner::Column::TenantId.eq(tenant.as_uuid()))
        .filter(gateway_owner::Column::ReleasedAt.is_null())
        .exec(db)
        .await
        .map(|_| ())
}

/// The tenants with a Modbus device on `endpoint` (only `tenant`, when given). Devices
/// registered before owners were recorded count too, so an upgrade does not open their
/// gateways to the first other tenant that asks.
pub async fn tenants_on<C: ConnectionTrait>(
    db: &C,
    endpoint: &str,
    tenant: Option<TenantId>,
) -> Result<Vec<TenantId>, DbErr> {
    let port: Option<i32> = endpoint.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    let mut q = device::Entity::find()
        .select_only()
        .columns([device::Column::TenantId, device::Column::Host, device::Column::Port])
        .filter(device::Column::Transport.eq(DeviceTransport::ModbusTcp.code()))
        .filter(device::Column::Port.eq(port));
    if let Some(t) = tenant {
        q = q.filter(device::Column::TenantId.eq(t.as_uuid()));
    }
    let rows = q.into_tuple::<(uuid::Uuid, Option<String>, Option<i32>)>().all(db).await?;
    let mut out: Vec<TenantId> = rows
        .into_iter()
        .filter(|(_, host, port)| match (host, port) {
            (Some(h), Some(p)) => u16::try_from(*p).is_ok_and(|p| endpoint_key(h, p) == endpoint),
            _ => false,
        })
        .map(|(t, _, _)| TenantId::from(t))
        .collect();
    out.sort_by_key(|t| t.as_uuid());
    out.dedup();
    Ok(out)
}

/// The tenant owning `serial`'s device, if it is registered.
pub async fn serial_owner<C: ConnectionTrait>(db: &C, serial: &str) -> Result<Option<TenantId>, DbErr> {
    Ok(device::Entity::find()
        .select_only()
        .column(device::Column::TenantId)
        .filter(device::Column::Serial.eq(serial))
        .into_tuple::<uuid::Uuid>()
        .one(db)
        .await?
        .map(TenantId::from))
}

/// The stored digest of `serial`'s claim code.
pub async fn claim_digest<C: ConnectionTrait>(db: &C, serial: &str) -> Result<Option<String>, DbErr> {
    Ok(serial_claim::Entity::find_by_id(serial.to_owned()).one(db).await?.map(|c| c.digest))
}

/// Adds claims to the pool, replacing the digest of serials already in it.
pub async fn put_claims<C: ConnectionTrait>(
    db: &C,
    claims: Vec<(String, String)>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    // 3 parameters a row; chunks stay far below SQLite's and PostgreSQL's limits.
    for chunk in claims.chunks(1000) {
        let rows = chunk.iter().map(|(serial, digest)| serial_claim::ActiveModel {
            serial: Set(serial.clone()),
            digest: Set(digest.clone()),
            loaded_at: Set(now),
        });
        serial_claim::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(serial_claim::Column::Serial)
                    .update_columns([serial_claim::Column::Digest, serial_claim::Column::LoadedAt])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}
