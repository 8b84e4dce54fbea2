//! Device credentials: the keyed digest of each MQTT device's secret.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};
use sparkwatch_domain::ids::{DeviceId, UserId};
use sparkwatch_domain::site::DeviceTransport;
use sparkwatch_entity::{device, device_credential};

/// What CONNECT verification needs of a device: its id (the digest key) and stored digest.
#[derive(Clone, Debug)]
pub struct StoredCredential {
    /// The device.
    pub device_id: DeviceId,
    /// `device_credentials.digest`.
    pub digest: String,
}

/// The credential of the MQTT device with `serial`, if it has one.
pub async fn credential_by_serial<C: ConnectionTrait>(db: &C, serial: &str) -> Result<Option<StoredCredential>, DbErr> {
    let Some(device_id) = device::Entity::find()
        .select_only()
        .column(device::Column::Id)
        .filter(device::Column::Serial.eq(serial))
        .filter(device::Column::Transport.eq(DeviceTransport::Mqtt.code()))
        .into_tuple::<uuid::Uuid>()
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    Ok(device_credential::Entity::find_by_id(device_id)
        .one(db)
        .await?
        .map(|c| StoredCredential { device_id: c.device_id.into(), digest: c.digest }))
}

/// Stores (or replaces: rotation) the digest of a device's secret.
pub async fn put_credential<C: ConnectionTrait>(
    db: &C,
    device_id: DeviceId,
    digest: String,
    issued_at: DateTime<Utc>,
    issued_by: Option<UserId>,
) -> Result<(), DbErr> {
    let row = device_credential::ActiveModel {
        device_id: Set(device_id.as_uuid()),
        digest: Set(digest),
        issued_at: Set(issued_at),
        issued_by: Set(issued_by.map(|u| u.as_uuid())),
    };
    device_credential::Entity::insert(row)
        .on_conflict(
            OnConflict::column(device_credential::Column::DeviceId)
                .update_columns([
                    device_credential::Column::Digest,
                    device_credential::Column::IssuedAt,
                    device_credential::Column::IssuedBy,
                ])
                .to_owned(),
        )
        .exec(db)
        .await
        .map(|_| ())
}

/// When each of `devices` last had credentials issued (devices without any are absent).
pub async fn issued_at<C: ConnectionTrait>(
    db: &C,
    devices: &[DeviceId],
) -> Result<Vec<(DeviceId, DateTime<Utc>)>, DbErr> {
    Ok(device_credential::Entity::find()
        .select_only()
        .columns([device_credential::Column::DeviceId, device_credential::Column::IssuedAt])
        .filter(device_credential::Column::DeviceId.is_in(devices.iter().map(|d| d.as_uuid())))
        .into_tuple::<(uuid::Uuid, DateTime<Utc>)>()
        .all(db)
        .await?
        .into_iter()
        .map(|(d, at)| (d.into(), at))
        .collect())
}

/// The MQTT devices of `tenant` that have no credentials yet.
pub async fn mqtt_devices_without_credentials<C: ConnectionTrait>(
    db: &C,
    tenant: sparkwatch_domain::ids::TenantId,
) -> Result<Vec<sparkwatch_domain::site::Device>, DbErr> {
    let issued = sea_orm::sea_query::Query::select()
        .column(device_credential::Column::DeviceId)
        .from(device_credential::Entity)
        .to_owned();
    Ok(device::Entity::find()
        .filter(device::Column::TenantId.eq(tenant.as_uuid()))
        .filter(device::Column::Transport.eq(DeviceTransport::Mqtt.code()))
        .filter(device::Column::Id.not_in_subquery(issued))
        .all(db)
        .await?
        .into_iter()
        .map(super::sites::device_from)
        .collect())
}

/// The serials of every MQTT device, of all tenants, that has credentials (what an external
/// broker's device accounts must match).
pub async fn mqtt_serials_with_credentials<C: ConnectionTrait>(db: &C) -> Result<Vec<String>, DbErr> {
    let issued = sea_orm::sea_query::Query::select()
        .column(device_credential::Column::DeviceId)
        .from(device_credential::Entity)
        .to_owned();
    device::Entity::find()
        .select_only()
        .column(device::Column::Serial)
        .filter(device::Column::Transport.eq(DeviceTransport::Mqtt.code()))
        .filter(device::Column::Id.in_subquery(issued))
        .into_tuple::<String>()
        .all(db)
        .await
}
