//! Attachments (photos): the `Attachment` type shared by hazards, work orders and check-ins,
//! and the `attachment` query. Uploading is `POST /attachments` (see `crate::http`).

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::Result;
use super::guard::{SignedIn, caller};
use super::input::parse_id;
use crate::error::AppError;
use crate::store::attachments::Attachment;

/// An uploaded photo (JPEG, PNG or HEIC). Read its bytes with `GET url` and the same bearer
/// token; only people with its project in scope can (its uploader only, until it is linked).
pub struct AttachmentObj(pub Attachment);

#[Object(name = "Attachment")]
impl AttachmentObj {
    /// Id (goes into `attachmentIds`).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// `image/jpeg`, `image/png` or `image/heic`, decided from the file's bytes.
    async fn content_type(&self) -> &str {
        &self.0.content_type
    }
    /// Size in bytes.
    async fn size(&self) -> i64 {
        self.0.size
    }
    /// Where to GET the bytes (relative to the server; send the bearer token).
    async fn url(&self) -> String {
        format!("/attachments/{}", self.0.id)
    }
    /// SHA-256 of the bytes, hex.
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    /// Upload time.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// Read operations on attachments.
#[derive(Default)]
pub struct AttachmentQuery;

#[Object]
impl AttachmentQuery {
    /// An attachment: its uploader's while unlinked, then readable by everyone with its
    /// project in scope; `null` for anyone else.
    #[graphql(guard = "SignedIn")]
    async fn attachment(&self, ctx: &Context<'_>, id: ID) -> Result<Option<AttachmentObj>> {
        let (s, who) = caller(ctx)?;
        match s.attachment(who, parse_id("id", &id)?).await {
            Ok(a) => Ok(Some(AttachmentObj(a))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
