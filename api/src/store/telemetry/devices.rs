//! Devices and detectors as ingestion sees them, and when devices were last heard from.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use sparkwatch_domain::site::DeviceTransport;
use sparkwatch_entity::{detector, device};
use uuid::Uuid;

use super::json_batches;
use crate::store::hazards::EventPlace;

/// What ingestion needs to know about a detector.
#[derive(Clone, Debug)]
pub struct DetectorInfo {
    /// Id.
    pub id: DetectorId,
    /// Bus address.
    pub address: u8,
    /// Project.
    pub project: ProjectId,
    /// Region, for the event view.
    pub region: Option<String>,
    /// Position, for the event view.
    pub position: Option<String>,
}

/// What ingestion needs to know about a device and its detectors.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Id.
    pub id: DeviceId,
    /// Tenant.
    pub tenant: TenantId,
    /// Project.
    pub project: ProjectId,
    /// Serial.
    pub serial: String,
    /// Name (device name, type, region and position are for the event view).
    pub name: String,
    /// Device type.
    pub device_type: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Position.
    pub position: Option<String>,
    /// Transport.
    pub transport: DeviceTransport,
    /// Gateway host (Modbus).
    pub host: Option<String>,
    /// Gateway port (Modbus).
    pub port: Option<u16>,
    /// Reporting / polling interval, seconds.
    pub interval_s: u32,
    /// Online flag as stored.
    pub online: bool,
    /// Last time it was heard from.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Detectors on its bus.
    pub detectors: Vec<DetectorInfo>,
}

impl DeviceInfo {
    /// The detector at a bus address.
    pub fn detector(&self, address: u8) -> Option<&DetectorInfo> {
        self.detectors.iter().find(|d| d.address == address)
    }

    /// The event view's columns for an event of this device (and one of its detectors), as
    /// [`crate::store::hazards::events_by_ids`] would join them.
    pub fn place(&self, detector: Option<DetectorId>) -> EventPlace {
        let det = detector.and_then(|id| self.detectors.iter().find(|d| d.id == id));
        EventPlace {
            device_name: Some(self.name.clone()),
            device_type: self.device_type.clone(),
            detector_address: det.map(|d| d.address),
            region: det.and_then(|d| d.region.clone()).or_else(|| self.region.clone()),
            position: det.and_then(|d| d.position.clone()).or_else(|| self.position.clone()),
        }
    }
}

async fn with_detectors<C: ConnectionTrait>(db: &C, devices: Vec<device::Model>) -> Result<Vec<DeviceInfo>, DbErr> {
    if devices.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<Uuid> = devices.iter().map(|d| d.id).collect();
    let mut detectors: HashMap<Uuid, Vec<detector::Model>> = HashMap::new();
    for chunk in ids.chunks(500) {
        let found = detector::Entity::find()
            .filter(detector::Column::DeviceId.is_in(chunk.iter().copied()))
            .order_by_asc(detector::Column::Address)
            .all(db)
            .await?;
        for x in found {
            detectors.entry(x.device_id).or_default().push(x);
        }
    }
    Ok(devices
        .into_iter()
        .map(|d| DeviceInfo {
            id: d.id.into(),
            tenant: d.tenant_id.into(),
            project: d.project_id.into(),
            transport: DeviceTransport::parse("transport", &d.transport).unwrap_or(DeviceTransport::Mqtt),
            host: d.host,
            port: d.port.and_then(|p| u16::try_from(p).ok()),
            interval_s: u32::try_from(d.interval_s).unwrap_or(10),
            online: d.online,
            last_seen_at: d.last_seen_at,
            detectors: detectors
                .remove(&d.id)
                .unwrap_or_default()
                .into_iter()
                .map(|x| DetectorInfo {
                    id: x.id.into(),
                    address: u8::try_from(x.address).unwrap_or(0),
                    project: x.project_id.into(),
                    region: x.region,
                    position: x.position,
                })
                .collect(),
            serial: d.serial,
            name: d.name,
            device_type: d.device_type,
            region: d.region,
            position: d.position,
        })
        .collect())
}

/// The devices with any of `serials`, with their detectors: two queries per 500 serials, so
/// ingestion looks up a whole batch's devices at once.
pub async fn devices_by_serials<C: ConnectionTrait>(db: &C, serials: &[String]) -> Result<Vec<DeviceInfo>, DbErr> {
    let mut found = Vec::new();
    for chunk in serials.chunks(500) {
        found.extend(device::Entity::find().filter(device::Column::Serial.is_in(chunk.iter().cloned())).all(db).await?);
    }
    with_detectors(db, found).await
}

/// Every device of a transport (all tenants), with detectors; for pollers and heartbeats.
pub async fn devices_by_transport<C: ConnectionTrait>(db: &C, t: DeviceTransport) -> Result<Vec<DeviceInfo>, DbErr> {
    let found = device::Entity::find().filter(device::Column::Transport.eq(t.code())).all(db).await?;
    with_detectors(db, found).await
}

/// Records that a device was heard from (or went offline).
pub async fn set_device_seen<C: ConnectionTrait>(
    db: &C,
    id: DeviceId,
    online: bool,
    at: Option<DateTime<Utc>>,
) -> Result<(), DbErr> {
    let mut q = device::Entity::update_many().col_expr(device::Column::Online, Expr::value(online));
    if let Some(at) = at {
        q = q.col_expr(device::Column::LastSeenAt, Expr::value(at));
    }
    q.filter(device::Column::Id.eq(id.as_uuid())).exec(db).await.map(|_| ())
}

/// Writes back when many devices were last heard from: one statement on PostgreSQL, one per
/// device on SQLite (where a statement costs no round trip). Only `last_seen_at`: the online
/// flag changes in the transaction that records the change, and this write-back runs beside
/// that transaction, so writing it here could undo a newer change.
pub async fn set_last_seen<C: ConnectionTrait>(db: &C, seen: &[(DeviceId, DateTime<Utc>)]) -> Result<(), DbErr> {
    if seen.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        for (id, at) in seen {
            device::Entity::update_many()
                .col_expr(device::Column::LastSeenAt, Expr::value(*at))
                .filter(device::Column::Id.eq(id.as_uuid()))
                .exec(db)
                .await?;
        }
        return Ok(());
    }
    let rows = seen.iter().map(|(id, at)| {
        serde_json::json!({"id": id.as_uuid(), "at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)})
    });
    for batch in json_batches(rows) {
        let stmt = sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "UPDATE devices SET last_seen_at = v.at \
             FROM jsonb_to_recordset($1::jsonb) AS v(id uuid, at timestamptz) WHERE devices.id = v.id",
            [batch.into()],
        );
        db.execute_raw(stmt).await?;
    }
    Ok(())
}
