//! `episodes`: An alarm or fault episode per (detector, channel, kind).

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "episodes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub device_id: Uuid,
    pub detector_id: Option<Uuid>,
    pub subject_id: Uuid,
    pub channel: String,
    pub kind: String,
    pub category: String,
    pub source: String,
    pub opened_at: DateTimeUtc,
    pub ingested_at: DateTimeUtc,
    pub last_at: DateTimeUtc,
    pub cleared_at: Option<DateTimeUtc>,
    pub closed_at: Option<DateTimeUtc>,
    pub occurrences: i32,
    pub peak_value: Option<f64>,
    pub last_value: Option<f64>,
    pub setpoint: Option<f64>,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
