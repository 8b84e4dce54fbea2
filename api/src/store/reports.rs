//! Hazards reported by people (on patrol or walking by): the row a report becomes.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter};
use sparkwatch_domain::hazard::HazardStatus;
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId, UserId};
use sparkwatch_domain::reading::EventKind;
use sparkwatch_entity::{checkpoint, hazard};
use uuid::Uuid;

use super::hazards::{Hazard, hazard_from};

/// The channel code of a reported hazard: a person saw it, no channel measured it.
pub const REPORTED_CHANNEL: &str = "detector:0";

/// A checked report, ready to store.
#[derive(Clone, Debug)]
pub struct NewReport {
    /// The new hazard's id (chosen by the caller so an idempotency claim can name it first).
    pub id: Uuid,
    /// Tenant.
    pub tenant: TenantId,
    /// Project.
    pub project: ProjectId,
    /// The detector it concerns, with its device.
    pub detector: Option<(DetectorId, DeviceId)>,
    /// The checkpoint it was found at.
    pub checkpoint: Option<Uuid>,
    /// What the person saw.
    pub description: String,
    /// Who reported it.
    pub reported_by: Option<UserId>,
    /// When it was seen (device time).
    pub seen_at: DateTime<Utc>,
    /// When the server received the report.
    pub now: DateTime<Utc>,
}

/// Stores a reported hazard (status `OPEN`, kind `FIELD_REPORT`, no episode).
pub async fn insert<C: ConnectionTrait>(db: &C, r: &NewReport) -> Result<Hazard, DbErr> {
    let kind = EventKind::FieldReport;
    let m = hazard::Model {
        id: r.id,
        tenant_id: r.tenant.as_uuid(),
        project_id: r.project.as_uuid(),
        device_id: r.detector.map(|(_, d)| d.as_uuid()),
        detector_id: r.detector.map(|(d, _)| d.as_uuid()),
        episode_id: None,
        kind: kind.code().to_owned(),
        category: kind.category().code().to_owned(),
        channel: REPORTED_CHANNEL.to_owned(),
        status: HazardStatus::Open.code().to_owned(),
        occurrences: 1,
        peak_value: None,
        last_value: None,
        setpoint: None,
        device_at: r.seen_at,
        ingested_at: r.now,
        opened_at: r.now,
        first_push_at: None,
        first_ack_at: None,
        updated_at: r.now,
        work_order_id: None,
        description: Some(r.description.clone()),
        reported_by: r.reported_by.map(|u| u.as_uuid()),
        checkpoint_id: r.checkpoint,
    };
    hazard::Entity::insert(m.clone().into_active_model()).exec_without_returning(db).await?;
    Ok(hazard_from(m))
}

/// The project of a checkpoint of the tenant.
pub async fn checkpoint_project<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    checkpoint: Uuid,
) -> Result<Option<ProjectId>, DbErr> {
    Ok(checkpoint::Entity::find_by_id(checkpoint)
        .filter(checkpoint::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(|c| c.project_id.into()))
}
