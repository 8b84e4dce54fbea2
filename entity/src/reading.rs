//! `readings`: Raw readings, one row per detector per message, keyed by detector and device
//! time (a redelivered message is stored once).

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "readings")]
pub struct Model {
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub detector_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    #[sea_orm(column_type = "Text")]
    pub values: String,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
