//! `events`: Anything that happened on a detector or device.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub device_id: Uuid,
    pub detector_id: Option<Uuid>,
    pub episode_id: Option<Uuid>,
    pub kind: String,
    pub category: String,
    pub source: String,
    pub channel: String,
    pub at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    pub value: Option<f64>,
    pub setpoint: Option<f64>,
    pub remarks: Option<String>,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
