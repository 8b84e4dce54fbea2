//! `detectors`: An electrical-fire detector on a device's bus.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "detectors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub device_id: Uuid,
    pub address: i32,
    pub name: Option<String>,
    pub region: Option<String>,
    pub position: Option<String>,
    pub leak_channels: i32,
    pub temp_channels: i32,
    pub has_voltage: bool,
    pub has_current: bool,
    pub created_at: DateTimeUtc,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
