//! `commands`: the remote-command ledger (one row per command, status moved by conditional updates).

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "commands")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub device_id: Uuid,
    pub detector_id: Uuid,
    pub op: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub params: Option<Json>,
    pub status: String,
    pub reason: Option<String>,
    pub actor: String,
    pub actor_user_id: Option<Uuid>,
    pub actor_api_key_id: Option<Uuid>,
    pub transport: String,
    pub created_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub expires_at: DateTimeUtc,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub result: Option<Json>,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
