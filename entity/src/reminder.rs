//! `reminders`: something must happen to a subject by a time; fired once across instances.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "reminders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub purpose: String,
    pub subject_type: String,
    pub subject_id: Uuid,
    pub due_at: DateTimeUtc,
    pub every_s: i32,
    pub level: i32,
    pub lease_until: Option<DateTimeUtc>,
    pub done_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
