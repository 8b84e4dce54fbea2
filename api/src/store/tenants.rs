//! Tenants and their usage figures.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter};
use sparkwatch_domain::ids::TenantId;
use sparkwatch_domain::notify::EscalationPolicy;
use sparkwatch_domain::site::Tenant;
use sparkwatch_entity::{device, tenant};

use super::{Page, PageRequest, new_id, page};

fn to_domain(m: tenant::Model) -> Tenant {
    let escalation = EscalationPolicy {
        after_min: u32::try_from(m.escalate_after_min).unwrap_or(10),
        every_min: u32::try_from(m.escalate_every_min).unwrap_or(10),
    };
    Tenant { id: m.id.into(), name: m.name, active: m.active, created_at: m.created_at, escalation }
}

/// Inserts a tenant.
pub async fn insert<C: ConnectionTrait>(db: &C, name: &str, now: DateTime<Utc>) -> Result<Tenant, DbErr> {
    let row = tenant::ActiveModel {
        id: Set(new_id()),
        name: Set(name.to_owned()),
        active: Set(true),
        created_at: Set(now),
        ..Default::default()
    };
    tenant::Entity::insert(row).exec_with_returning(db).await.map(to_domain)
}

/// A tenant by id.
pub async fn get<C: ConnectionTrait>(db: &C, id: TenantId) -> Result<Option<Tenant>, DbErr> {
    Ok(tenant::Entity::find_by_id(id.as_uuid()).one(db).await?.map(to_domain))
}

/// A tenant by its exact name.
pub async fn by_name<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<Tenant>, DbErr> {
    Ok(tenant::Entity::find().filter(tenant::Column::Name.eq(name)).one(db).await?.map(to_domain))
}

/// A page of tenants.
pub async fn list<C: ConnectionTrait>(db: &C, req: PageRequest) -> Result<Page<Tenant>, DbErr> {
    Ok(page(db, tenant::Entity::find(), tenant::Column::Id, req).await?.map(to_domain))
}

/// Writes name, active flag and escalation policy.
pub async fn update<C: ConnectionTrait>(db: &C, t: &Tenant) -> Result<Tenant, DbErr> {
    let row = tenant::ActiveModel {
        id: Set(t.id.as_uuid()),
        name: Set(t.name.clone()),
        active: Set(t.active),
        created_at: Set(t.created_at),
        escalate_after_min: Set(t.escalation.after_min as i32),
        escalate_every_min: Set(t.escalation.every_min as i32),
    };
    tenant::Entity::update(row).exec(db).await.map(to_domain)
}

/// Devices registered and devices currently connected — the billing figures.
pub async fn device_counts<C: ConnectionTrait>(db: &C, id: TenantId) -> Result<(u64, u64), DbErr> {
    let all = device::Entity::find().filter(device::Column::TenantId.eq(id.as_uuid()));
    let total = all.clone().count(db).await?;
    let online = all.filter(device::Column::Online.eq(true)).count(db).await?;
    Ok((total, online))
}
