//! Events and the dead-letter log.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter,
};
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use sparkwatch_domain::reading::{Channel, EventKind, EventSource};
use sparkwatch_entity::{dead_letter, event};
use uuid::Uuid;

use super::Occurrence;
use crate::store::new_id;

/// An event to record.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Tenant.
    pub tenant: TenantId,
    /// Project.
    pub project: ProjectId,
    /// Device.
    pub device: DeviceId,
    /// Detector, unless device-wide.
    pub detector: Option<DetectorId>,
    /// Episode it belongs to.
    pub episode: Option<Uuid>,
    /// Kind code.
    pub kind: &'static str,
    /// Category code.
    pub category: &'static str,
    /// Who decided it.
    pub source: EventSource,
    /// Channel code.
    pub channel: String,
    /// Device time.
    pub at: DateTime<Utc>,
    /// Ingest time.
    pub received_at: DateTime<Utc>,
    /// Value.
    pub value: Option<f64>,
    /// Set-point.
    pub setpoint: Option<f64>,
    /// Remarks for the event view.
    pub remarks: Option<String>,
}

impl Occurrence {
    /// The event recording this occurrence (or its end, with another kind).
    pub fn event(&self, episode: Option<Uuid>, remarks: Option<String>) -> NewEvent {
        NewEvent {
            tenant: self.tenant,
            project: self.project,
            device: self.device,
            detector: self.detector,
            episode,
            kind: self.kind,
            category: self.category,
            source: self.source,
            channel: self.channel.clone(),
            at: self.at,
            received_at: self.ingested_at,
            value: self.value,
            setpoint: self.setpoint,
            remarks,
        }
    }
}

/// Records an event; returns its id.
pub async fn insert_event<C: ConnectionTrait>(db: &C, e: &NewEvent) -> Result<event::Model, DbErr> {
    let row = event::Model {
        id: new_id(),
        tenant_id: e.tenant.as_uuid(),
        project_id: e.project.as_uuid(),
        device_id: e.device.as_uuid(),
        detector_id: e.detector.map(|d| d.as_uuid()),
        episode_id: e.episode,
        kind: e.kind.to_owned(),
        category: e.category.to_owned(),
        source: e.source.code().to_owned(),
        channel: e.channel.clone(),
        at: e.at,
        received_at: e.received_at,
        value: e.value,
        setpoint: e.setpoint,
        remarks: e.remarks.clone(),
    };
    event::Entity::insert(row.clone().into_active_model().reset_all()).exec_without_returning(db).await?;
    Ok(row)
}

/// Whether a device-reported event of `detector` with this kind, channel and device time
/// is already recorded: a redelivered device event counts once.
pub async fn device_event_recorded<C: ConnectionTrait>(
    db: &C,
    detector: DetectorId,
    kind: EventKind,
    channel: &Channel,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    Ok(event::Entity::find()
        .filter(event::Column::DetectorId.eq(detector.as_uuid()))
        .filter(event::Column::Kind.eq(kind.code()))
        .filter(event::Column::Channel.eq(channel.code()))
        .filter(event::Column::At.eq(at))
        .filter(event::Column::Source.eq(EventSource::Device.code()))
        .one(db)
        .await?
        .is_some())
}

/// Rejected device input, as kept in the dead-letter log.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter<'a> {
    /// Tenant of the device, when it is known.
    pub tenant: Option<TenantId>,
    /// Serial from the topic, when it was readable.
    pub serial: Option<&'a str>,
    /// Topic.
    pub topic: &'a str,
    /// Reason code (the metrics label).
    pub reason: &'a str,
    /// What exactly was wrong.
    pub detail: &'a str,
    /// The payload as received.
    pub payload: &'a [u8],
    /// When it was received.
    pub at: DateTime<Utc>,
}

/// Keeps rejected input with its reason (payload truncated to 4 KiB). Text is kept as
/// text PostgreSQL accepts: invalid UTF-8 becomes U+FFFD and so does a NUL byte, which
/// PostgreSQL refuses in `text` — a dead letter must always be writable, since the
/// delivery it records is acknowledged only once it is.
pub async fn insert_dead_letter<C: ConnectionTrait>(db: &C, d: DeadLetter<'_>) -> Result<(), DbErr> {
    dead_letter::Entity::insert(dead_letter_row(d)).exec_without_returning(db).await.map(|_| ())
}

/// Several dead letters in one statement (ingestion collects a batch's; one INSERT each let
/// a junk flood hold up real alarms).
pub async fn insert_dead_letters<C: ConnectionTrait>(db: &C, rows: Vec<dead_letter::ActiveModel>) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    dead_letter::Entity::insert_many(rows).exec_without_returning(db).await.map(|_| ())
}

/// Deletes dead letters received before `before` (`--dead-letter-retention-days`).
pub async fn prune_dead_letters<C: ConnectionTrait>(db: &C, before: DateTime<Utc>) -> Result<u64, DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let res = dead_letter::Entity::delete_many().filter(dead_letter::Column::ReceivedAt.lt(before)).exec(db).await?;
    Ok(res.rows_affected)
}

/// The row of a dead letter (see [`insert_dead_letter`]).
pub fn dead_letter_row(d: DeadLetter<'_>) -> dead_letter::ActiveModel {
    let clean = |s: &str| if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s.to_owned() };
    let text = clean(&String::from_utf8_lossy(&d.payload[..d.payload.len().min(4096)]));
    dead_letter::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(d.tenant.map(|t| t.as_uuid())),
        serial: Set(d.serial.map(clean)),
        topic: Set(clean(d.topic)),
        reason: Set(d.reason.to_owned()),
        detail: Set(clean(d.detail)),
        payload: Set(text),
        received_at: Set(d.at),
    }
}
