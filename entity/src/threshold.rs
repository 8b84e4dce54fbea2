//! `thresholds`: Set-point overrides at one level (tenant, project or detector).

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "thresholds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scope: String,
    pub scope_id: Uuid,
    pub leak_ma: Option<f64>,
    pub leak_delay_s: Option<f64>,
    pub temp_c: Option<f64>,
    pub temp_delay_s: Option<f64>,
    pub overvoltage_v: Option<f64>,
    pub undervoltage_v: Option<f64>,
    pub overcurrent_a: Option<f64>,
    pub prealarm_percent: Option<f64>,
    pub hysteresis_percent: Option<f64>,
    pub updated_at: DateTimeUtc,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
