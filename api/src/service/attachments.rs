//! Photos and other attachments: uploading, reading back, and linking uploads to what they
//! document.
//!
//! An upload (`POST /attachments`, people with `fieldwork` or `hazard.manage`) is visible to
//! its uploader only until it is linked; linking gives it the project of the hazard, work
//! order or check-in it documents, and from then on everyone with that project in scope
//! (and `hazard.read` or `site.read`) may read it. Anyone else — another user, another
//! tenant — gets `NOT_FOUND`, as if it did not exist. An upload can be linked once;
//! linking it again to the same object is a no-op (a retried operation), to anything else a
//! `VALIDATION` error on `attachmentIds`.
//!
//! The bytes go to the object store ([`crate::objects`]) under `{tenant}/{yyyy}/{mm}/{id}`
//! before the row is written; an upload that is never linked stays (there is no clean-up
//! job yet: such orphans cost storage only, and are visible to nobody but their uploader).

use object_store::{GetResult, PutPayload};
use sea_orm::DatabaseTransaction;
use sha2::{Digest, Sha256};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::ids::ProjectId;
use uuid::Uuid;

use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::objects::Objects;
use crate::store::attachments::{self as st, Attachment};
use crate::store::new_id;
use crate::store::oplog::Entry;

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

    /// Where attachments are stored, and the upload limit.
    pub fn objects(&self) -> &Objects {
        &self.inner.objects
    }

    /// Fails with `FORBIDDEN` unless the caller may upload: a person (not an API key) with
    /// `fieldwork` or `hazard.manage`.
    pub fn may_upload(&self, who: &Principal) -> AppResult<()> {
        who.tenant()?;
        if !(who.access.can(Permission::FieldWork) || who.access.can(Permission::HazardManage)) {
            return Err(AppError::Forbidden("uploading photos needs `fieldwork` or `hazard.manage`".into()));
        }
        if who.user_id().is_none() {
            return Err(AppError::Forbidden("photos are uploaded by people signed in, not by API keys".into()));
        }
        Ok(())
    }

    /// Stores an upload whose type was decided from its bytes (`content_type`) and records it,
    /// unlinked, for the caller.
    pub async fn upload_attachment(
        &self,
        who: &Principal,
        content_type: &str,
        payload: PutPayload,
    ) -> AppResult<Attachment> {
        self.may_upload(who)?;
        let (tenant, user) = (who.tenant()?, who.user_id().ok_or(AppError::NotFound("user"))?);
        let now = self.now();
        let id = new_id();
        let mut sha = Sha256::new();
        payload.iter().for_each(|chunk| sha.update(chunk));
        let attachment = Attachment {
            id,
            tenant_id: tenant,
            uploaded_by: user,
            content_type: content_type.to_owned(),
            size: i64::try_from(payload.content_length()).unwrap_or(i64::MAX),
            storage_key: format!("{tenant}/{}/{id}", now.format("%Y/%m")),
            sha256: sha.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            project_id: None,
            subject_type: None,
            subject_id: None,
            created_at: now,
        };
        let objects = &self.inner.objects;
        objects.put(&attachment.storage_key, payload).await.map_err(|e| {
            AppError::Unavailable(format!("storing attachment {id} in {}: {e}", attachment.storage_key))
        })?;
        if let Err(e) = self.record_upload(who, &attachment).await {
            // Without its row nobody could ever read it: do not leave it behind.
            if let Err(gone) = objects.delete(&attachment.storage_key).await {
                tracing::warn!(key = %attachment.storage_key, error = %gone, "orphaned attachment bytes");
            }
            return Err(e);
        }
        tracing::info!(attachment = %id, size = attachment.size, content_type, "attachment uploaded");
        Ok(attachment)
    }

    async fn record_upload(&self, who: &Principal, a: &Attachment) -> AppResult<()> {
        let tx = self.begin().await?;
        st::insert(&tx, a).await?;
        let entry = Entry::new(Some(a.tenant_id), "attachment.upload", "attachment", Some(a.id.to_string()));
        self.log(&tx, who, entry.after(snapshot(a))).await?;
        Ok(tx.commit().await?)
    }

    /// An attachment the caller may read (see the module docs); `NOT_FOUND` otherwise.
    pub async fn attachment(&self, who: &Principal, id: Uuid) -> AppResult<Attachment> {
        let absent = AppError::NotFound("attachment");
        let Ok(tenant) = who.tenant() else { return Err(absent) };
        let a = st::by_id(self.inner.store.db(), tenant, id).await?.ok_or(AppError::NotFound("attachment"))?;
        let visible = match a.project_id {
            Some(project) => {
                who.sees_project(project)
                    && (who.access.can(Permission::HazardRead) || who.access.can(Permission::SiteRead))
            }
            None => who.user_id() == Some(a.uploaded_by),
        };
        if visible { Ok(a) } else { Err(absent) }
    }

    /// An attachment the caller may read, with its bytes to stream.
    pub async fn attachment_bytes(&self, who: &Principal, id: Uuid) -> AppResult<(Attachment, GetResult)> {
        let a = self.attachment(who, id).await?;
        match self.inner.objects.get(&a.storage_key).await {
            Ok(bytes) => Ok((a, bytes)),
            Err(object_store::Error::NotFound { .. }) => {
                tracing::error!(attachment = %a.id, key = %a.storage_key, "attachment bytes are missing from the store");
                Err(AppError::NotFound("attachment"))
            }
            Err(e) => Err(AppError::Unavailable(format!("reading attachment {id}: {e}"))),
        }
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
