//! `check_in_hazards`: A hazard reported within a patrol check-in.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "check_in_hazards")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub check_in_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub hazard_id: Uuid,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
