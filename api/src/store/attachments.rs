//! Attachments (photos): rows that point at bytes in the object store, and linking them to
//! the hazard, work order or check-in they document.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use sparkwatch_domain::ids::{ProjectId, TenantId, UserId};
use sparkwatch_entity::attachment;
use uuid::Uuid;

/// An attachment as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Who uploaded it.
    pub uploaded_by: UserId,
    /// `image/jpeg`, `image/png` or `image/heic` (from the file's bytes).
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Key in the object store.
    pub storage_key: String,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// The project of what it is linked to; `None` while unlinked.
    pub project_id: Option<ProjectId>,
    /// What it is linked to: `hazard`, `work_order`, `check_in`.
    pub subject_type: Option<String>,
    /// The linked object.
    pub subject_id: Option<Uuid>,
    /// Upload time.
    pub created_at: DateTime<Utc>,
}

/// The row as an [`Attachment`].
pub fn attachment_from(m: attachment::Model) -> Attachment {
    Attachment {
        id: m.id,
        tenant_id: m.tenant_id.into(),
        uploaded_by: m.uploaded_by.into(),
        content_type: m.content_type,
        size: m.size,
        storage_key: m.storage_key,
        sha256: m.sha256,
        project_id: m.project_id.map(Into::into),
        subject_type: m.subject_type,
        subject_id: m.subject_id,
        created_at: m.created_at,
    }
}

/// Stores a new (unlinked) attachment row.
pub async fn insert<C: ConnectionTrait>(db: &C, a: &Attachment) -> Result<(), DbErr> {
    let row = attachment::ActiveModel {
        id: Set(a.id),
        tenant_id: Set(a.tenant_id.as_uuid()),
        uploaded_by: Set(a.uploaded_by.as_uuid()),
        content_type: Set(a.content_type.clone()),
        size: Set(a.size),
        storage_key: Set(a.storage_key.clone()),
        sha256: Set(a.sha256.clone()),
        project_id: Set(a.project_id.map(|p| p.as_uuid())),
        subject_type: Set(a.subject_type.clone()),
        subject_id: Set(a.subject_id),
        created_at: Set(a.created_at),
    };
    attachment::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// An attachment of the tenant, whatever its link.
pub async fn by_id<C: ConnectionTrait>(db: &C, tenant: TenantId, id: Uuid) -> Result<Option<Attachment>, DbErr> {
    Ok(attachment::Entity::find_by_id(id)
        .filter(attachment::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(attachment_from))
}

/// Attachments of the tenant among `ids`.
pub async fn by_ids<C: ConnectionTrait>(db: &C, tenant: TenantId, ids: &[Uuid]) -> Result<Vec<Attachment>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(attachment::Entity::find()
        .filter(attachment::Column::TenantId.eq(tenant.as_uuid()))
        .filter(attachment::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(attachment_from)
        .collect())
}

/// The attachments linked to each of `subjects` of one type, in upload order (one query
/// for a whole list of objects).
pub async fn of_subjects<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    subject_type: &str,
    subjects: &[Uuid],
) -> Result<Vec<Attachment>, DbErr> {
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    Ok(attachment::Entity::find()
        .filter(attachment::Column::TenantId.eq(tenant.as_uuid()))
        .filter(attachment::Column::SubjectType.eq(subject_type))
        .filter(attachment::Column::SubjectId.is_in(subjects.iter().copied()))
        .order_by_asc(attachment::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(attachment_from)
        .collect())
}

/// Links `ids` to a subject in `project`.
pub async fn link<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
    project: ProjectId,
    subject_type: &str,
    subject: Uuid,
) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    attachment::Entity::update_many()
        .col_expr(attachment::Column::ProjectId, Expr::value(project.as_uuid()))
        .col_expr(attachment::Column::SubjectType, Expr::value(subject_type))
        .col_expr(attachment::Column::SubjectId, Expr::value(subject))
        .filter(attachment::Column::Id.is_in(ids.iter().copied()))
        .exec(db)
        .await
        .map(|_| ())
}
