//! `work_order_transitions`: One action on a work order.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "work_order_transitions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub work_order_id: Uuid,
    pub action: String,
    pub from_status: String,
    pub to_status: String,
    pub actor: String,
    pub actor_user_id: Option<Uuid>,
    pub note: Option<String>,
    pub at: DateTimeUtc,
    pub device_at: Option<DateTimeUtc>,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
