//! `devices`: A monitoring unit or gateway.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "devices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub serial: String,
    pub name: String,
    pub model: Option<String>,
    pub device_type: Option<String>,
    pub transport: String,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub interval_s: i32,
    pub region: Option<String>,
    pub position: Option<String>,
    pub online: bool,
    pub last_seen_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
