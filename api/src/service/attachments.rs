//! Photos and other attachments: linking uploads to what they document.
//!
//! An upload (`POST /attachments`) is visible to its uploader only until it is linked;
//! linking gives it the project of the hazard, work order or check-in it documents, and from
//! then on everyone with that project in scope may read it. An upload can be linked once;
//! linking it again to the same object is a no-op (a retried operation), to anything else a
//! `VALIDATION` error on `attachmentIds`.

use sea_orm::DatabaseTransaction;
use sparkwatch_domain::ids::ProjectId;
use uuid::Uuid;

use super::Services;
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::attachments::{self as st, Attachment};

/// Most attachments one operation may link.
pub const MAX_LINKED: usize = 20;

impl Services {
    /// The attachments linked to `subject` (of `subject_type`) the caller may see: those of
    /// projects in its scope.
    pub async fn attachments_of(
        &self,
        who: &Principal,
        subject_type: &str,
        subject: Uuid,
    ) -> AppResult<Vec<Attachment>> {
        let all = st::of_subjects(self.inner.store.db(), who.tenant()?, subject_type, &[subject]).await?;
        Ok(all.into_iter().filter(|a| a.project_id.is_some_and(|p| who.sees_project(p))).collect())
    }

    /// Links the caller's uploads `ids` to `subject` (of `subject_type`) in `project`,
    /// inside `tx` (see the module docs).
    pub(crate) async fn link_attachments(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        ids: &[Uuid],
        project: ProjectId,
        subject_type: &str,
        subject: Uuid,
    ) -> AppResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        if ids.len() > MAX_LINKED {
            return Err(AppError::invalid("attachmentIds", format!("at most {MAX_LINKED} attachments per operation")));
        }
        let mut unique: Vec<Uuid> = Vec::with_capacity(ids.len());
        for id in ids {
            if !unique.contains(id) {
                unique.push(*id);
            }
        }
        let found = st::by_ids(tx, who.tenant()?, &unique).await?;
        let mut to_link = Vec::with_capacity(unique.len());
        for id in &unique {
            let a = found.iter().find(|a| a.id == *id).ok_or_else(|| {
                AppError::invalid("attachmentIds", format!("attachment {id} does not exist; upload it first"))
            })?;
            match (a.subject_type.as_deref(), a.subject_id) {
                (Some(t), Some(s)) if t == subject_type && s == subject => {}
                (Some(_), _) => {
                    return Err(AppError::invalid(
                        "attachmentIds",
                        format!("attachment {id} is already attached to something else"),
                    ));
                }
                (None, _) if Some(a.uploaded_by) != who.user_id() => {
                    // Someone else's unlinked upload looks absent, as other people's data does.
                    return Err(AppError::invalid(
                        "attachmentIds",
                        format!("attachment {id} does not exist; upload it first"),
                    ));
                }
                (None, _) => to_link.push(*id),
            }
        }
        Ok(st::link(tx, &to_link, project, subject_type, subject).await?)
    }
}
