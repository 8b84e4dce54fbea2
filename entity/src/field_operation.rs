//! `field_operations`: The first answer to an offline operation, by (user, client id).

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "field_operations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub client_id: Uuid,
    pub kind: String,
    pub entity_id: Option<Uuid>,
    pub device_at: Option<DateTimeUtc>,
    pub recorded_at: DateTimeUtc,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
