//! `hazards`: The managed problem behind an episode.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "hazards")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub device_id: Option<Uuid>,
    pub detector_id: Option<Uuid>,
    pub episode_id: Option<Uuid>,
    pub kind: String,
    pub category: String,
    pub channel: String,
    pub status: String,
    pub occurrences: i32,
    pub peak_value: Option<f64>,
    pub last_value: Option<f64>,
    pub setpoint: Option<f64>,
    pub device_at: DateTimeUtc,
    pub ingested_at: DateTimeUtc,
    pub opened_at: DateTimeUtc,
    pub first_push_at: Option<DateTimeUtc>,
    pub first_ack_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    pub work_order_id: Option<Uuid>,
    pub description: Option<String>,
    pub reported_by: Option<Uuid>,
    pub checkpoint_id: Option<Uuid>,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
