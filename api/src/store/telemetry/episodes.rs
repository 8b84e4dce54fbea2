//! Episodes (one per subject, channel and kind while open) and the hazards they open.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter,
};
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use sparkwatch_domain::reading::EventSource;
use sparkwatch_entity::{episode, hazard};
use uuid::Uuid;

use crate::store::new_id;

/// Something that opens or re-occurs an episode.
#[derive(Clone, Debug)]
pub struct Occurrence {
    /// Tenant.
    pub tenant: TenantId,
    /// Project.
    pub project: ProjectId,
    /// Device.
    pub device: DeviceId,
    /// Detector, unless the condition is device-wide.
    pub detector: Option<DetectorId>,
    /// Channel code.
    pub channel: String,
    /// Event kind code.
    pub kind: &'static str,
    /// Category code (`ALARM`, `FAULT`).
    pub category: &'static str,
    /// Who decided it: our rules, the device's own logic, or the system (heartbeats, polls).
    pub source: EventSource,
    /// Device time.
    pub at: DateTime<Utc>,
    /// Ingest time.
    pub ingested_at: DateTime<Utc>,
    /// When the pipeline processed it (the hazard's creation time).
    pub processed_at: DateTime<Utc>,
    /// Value.
    pub value: Option<f64>,
    /// Set-point.
    pub setpoint: Option<f64>,
}

impl Occurrence {
    fn subject(&self) -> Uuid {
        self.detector.map_or(self.device.as_uuid(), |d| d.as_uuid())
    }
}

/// The open episode of (subject, channel, kind), if any.
pub async fn open_episode<C: ConnectionTrait>(
    db: &C,
    subject: Uuid,
    channel: &str,
    kind: &str,
) -> Result<Option<episode::Model>, DbErr> {
    episode::Entity::find()
        .filter(episode::Column::SubjectId.eq(subject))
        .filter(episode::Column::Channel.eq(channel))
        .filter(episode::Column::Kind.eq(kind))
        .filter(episode::Column::ClosedAt.is_null())
        .one(db)
        .await
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// The outcome of [`raise`].
#[derive(Clone, Debug)]
pub struct Raised {
    /// The episode.
    pub episode: Uuid,
    /// Its hazard as this transaction left it (`None` only if the hazard row is gone).
    pub hazard: Option<hazard::Model>,
    /// Whether the episode (and hazard) were created now.
    pub new: bool,
}

/// Opens the episode and its hazard, or — when one is open — counts another occurrence.
/// The partial unique index makes concurrent raisers agree on one episode.
pub async fn raise<C: ConnectionTrait>(db: &C, o: &Occurrence) -> Result<Raised, DbErr> {
    let subject = o.subject();
    if let Some(ep) = open_episode(db, subject, &o.channel, o.kind).await? {
        return reoccur(db, ep, o).await;
    }
    let episode_id = new_id();
    let row = episode::ActiveModel {
        id: Set(episode_id),
        tenant_id: Set(o.tenant.as_uuid()),
        project_id: Set(o.project.as_uuid()),
        device_id: Set(o.device.as_uuid()),
        detector_id: Set(o.detector.map(|d| d.as_uuid())),
        subject_id: Set(subject),
        channel: Set(o.channel.clone()),
        kind: Set(o.kind.to_owned()),
        category: Set(o.category.to_owned()),
        source: Set(o.source.code().to_owned()),
        opened_at: Set(o.at),
        ingested_at: Set(o.ingested_at),
        last_at: Set(o.at),
        cleared_at: Set(None),
        closed_at: Set(None),
        occurrences: Set(1),
        peak_value: Set(o.value),
        last_value: Set(o.value),
        setpoint: Set(o.setpoint),
    };
    match episode::Entity::insert(row).exec_without_returning(db).await {
        Ok(_) => {}
        Err(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
            // Another writer opened it first: count ours as an occurrence of theirs.
            let ep = open_episode(db, subject, &o.channel, o.kind).await?.ok_or(e)?;
            return reoccur(db, ep, o).await;
        }
        Err(e) => return Err(e),
    }
    let h = hazard::Model {
        id: new_id(),
        tenant_id: o.tenant.as_uuid(),
        project_id: o.project.as_uuid(),
        device_id: Some(o.device.as_uuid()),
        detector_id: o.detector.map(|d| d.as_uuid()),
        episode_id: Some(episode_id),
        kind: o.kind.to_owned(),
        category: o.category.to_owned(),
        channel: o.channel.clone(),
        status: "OPEN".to_owned(),
        occurrences: 1,
        peak_value: o.value,
        last_value: o.value,
        setpoint: o.setpoint,
        device_at: o.at,
        ingested_at: o.ingested_at,
        opened_at: o.processed_at,
        first_push_at: None,
        first_ack_at: None,
        updated_at: o.processed_at,
        work_order_id: None,
        description: None,
        reported_by: None,
        checkpoint_id: None,
    };
    hazard::Entity::insert(h.clone().into_active_model().reset_all()).exec_without_returning(db).await?;
    Ok(Raised { episode: episode_id, hazard: Some(h), new: true })
}

async fn reoccur<C: ConnectionTrait>(db: &C, ep: episode::Model, o: &Occurrence) -> Result<Raised, DbErr> {
    let peak = max_opt(ep.peak_value, o.value);
    episode::Entity::update_many()
        .col_expr(episode::Column::Occurrences, Expr::col(episode::Column::Occurrences).add(1))
        .col_expr(episode::Column::PeakValue, Expr::value(peak))
        .col_expr(episode::Column::LastValue, Expr::value(o.value))
        .col_expr(episode::Column::LastAt, Expr::value(o.at))
        .col_expr(episode::Column::ClearedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(episode::Column::Id.eq(ep.id))
        .exec(db)
        .await?;
    let h = hazard::Entity::find().filter(hazard::Column::EpisodeId.eq(ep.id)).one(db).await?;
    let mut updated = None;
    if let Some(h) = h {
        // RETURNING: the row as this update left it (a concurrent acknowledgement
        // included), which is what subscribers are told.
        updated = hazard::Entity::update_many()
            .col_expr(hazard::Column::Occurrences, Expr::col(hazard::Column::Occurrences).add(1))
            .col_expr(hazard::Column::PeakValue, Expr::value(max_opt(h.peak_value, o.value)))
            .col_expr(hazard::Column::LastValue, Expr::value(o.value))
            .col_expr(hazard::Column::UpdatedAt, Expr::value(o.processed_at))
            .filter(hazard::Column::Id.eq(h.id))
            .exec_with_returning(db)
            .await?
            .pop();
    }
    Ok(Raised { episode: ep.id, hazard: updated, new: false })
}

/// Updates the peak and last value of an open episode (and its hazard) while the
/// condition continues. Returns false when no episode is open.
pub async fn touch<C: ConnectionTrait>(
    db: &C,
    subject: Uuid,
    channel: &str,
    kind: &str,
    value: f64,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let Some(ep) = open_episode(db, subject, channel, kind).await? else { return Ok(false) };
    if ep.peak_value.is_some_and(|p| p >= value) && ep.last_value == Some(value) {
        return Ok(true);
    }
    let peak = max_opt(ep.peak_value, Some(value));
    episode::Entity::update_many()
        .col_expr(episode::Column::PeakValue, Expr::value(peak))
        .col_expr(episode::Column::LastValue, Expr::value(value))
        .col_expr(episode::Column::LastAt, Expr::value(at))
        .filter(episode::Column::Id.eq(ep.id))
        .exec(db)
        .await?;
    hazard::Entity::update_many()
        .col_expr(hazard::Column::PeakValue, Expr::value(peak))
        .col_expr(hazard::Column::LastValue, Expr::value(value))
        .filter(hazard::Column::EpisodeId.eq(ep.id))
        .exec(db)
        .await?;
    Ok(true)
}

/// Marks the condition of an open episode as ended. Faults close (self-clearing); alarms
/// only record the time and stay latched until their hazard is handled. Returns the
/// episode id when one was open.
pub async fn clear<C: ConnectionTrait>(
    db: &C,
    subject: Uuid,
    channel: &str,
    kind: &str,
    at: DateTime<Utc>,
    close: bool,
) -> Result<Option<Uuid>, DbErr> {
    let Some(ep) = open_episode(db, subject, channel, kind).await? else { return Ok(None) };
    let mut q = episode::Entity::update_many().col_expr(episode::Column::ClearedAt, Expr::value(at));
    if close {
        q = q.col_expr(episode::Column::ClosedAt, Expr::value(at));
    }
    q.filter(episode::Column::Id.eq(ep.id)).exec(db).await?;
    Ok(Some(ep.id))
}

/// Releases the latch of an episode (its hazard was acknowledged, reset or closed), so the
/// next occurrence opens a new episode and hazard.
pub async fn release_episode<C: ConnectionTrait>(db: &C, episode_id: Uuid, at: DateTime<Utc>) -> Result<(), DbErr> {
    episode::Entity::update_many()
        .col_expr(episode::Column::ClosedAt, Expr::value(at))
        .filter(episode::Column::Id.eq(episode_id))
        .filter(episode::Column::ClosedAt.is_null())
        .exec(db)
        .await
        .map(|_| ())
}

/// Ids of open episodes of a subject (used when a device comes back online).
pub async fn open_episodes_of<C: ConnectionTrait>(
    db: &C,
    subject: Uuid,
    kind: &str,
) -> Result<Vec<episode::Model>, DbErr> {
    episode::Entity::find()
        .filter(Condition::all().add(episode::Column::SubjectId.eq(subject)).add(episode::Column::Kind.eq(kind)))
        .filter(episode::Column::ClosedAt.is_null())
        .all(db)
        .await
}

/// Open engine-raised alarm episodes of a detector whose condition has not cleared.
pub async fn active_conditions<C: ConnectionTrait>(db: &C, detector: Uuid) -> Result<Vec<episode::Model>, DbErr> {
    episode::Entity::find()
        .filter(episode::Column::SubjectId.eq(detector))
        .filter(episode::Column::ClosedAt.is_null())
        .filter(episode::Column::ClearedAt.is_null())
        .filter(episode::Column::Category.eq("ALARM"))
        .filter(episode::Column::Source.eq(EventSource::Engine.code()))
        .all(db)
        .await
}
