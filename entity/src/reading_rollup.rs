//! `reading_rollups`: Per-channel aggregates per time bucket.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "reading_rollups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub detector_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub bucket: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub bucket_start: DateTimeUtc,
    #[sea_orm(primary_key, auto_increment = false)]
    pub channel: String,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: i64,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
