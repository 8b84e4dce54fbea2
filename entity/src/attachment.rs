//! `attachments`: An uploaded file (photo); bytes in the object store.

use sea_orm::entity::prelude::*;

/// A row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "attachments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub uploaded_by: Uuid,
    pub content_type: String,
    pub size: i64,
    pub storage_key: String,
    pub sha256: String,
    pub project_id: Option<Uuid>,
    pub subject_type: Option<String>,
    pub subject_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

/// No declared relations: queries join explicitly by id.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
