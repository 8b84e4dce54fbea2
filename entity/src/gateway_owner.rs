//! `gateway_owners`: the tenant a Modbus gateway address (`host:port`) belongs to.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "gateway_owners")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub endpoint: String,
    pub tenant_id: Uuid,
    pub claimed_at: DateTimeUtc,
    pub released_at: Option<DateTimeUtc>,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
