//! `check_ins`: A visit to a checkpoint during a patrol task.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "check_ins")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub task_id: Uuid,
    pub checkpoint_id: Uuid,
    pub actor: String,
    pub user_id: Option<Uuid>,
    pub at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    pub answers: Json,
    pub note: Option<String>,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
