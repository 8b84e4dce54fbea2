//! `serial_claims`: the claim-code pool (a digest per serial, never the code).

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "serial_claims")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub serial: String,
    pub digest: String,
    pub loaded_at: DateTimeUtc,
}

/// No declared relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
