//! Where attachments' bytes live: an [`object_store`] — a directory under the data dir by
//! default, or an S3-compatible bucket (`--attachments-url s3://bucket/prefix`, with the
//! endpoint, region and credentials from the standard `AWS_*` environment variables:
//! `AWS_ENDPOINT`, `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint such as a local MinIO).
//!
//! Also the one place that decides what a file is from its first bytes ([`sniff`]).

use std::path::Path;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use object_store::{GetResult, ObjectStore, ObjectStoreExt, PutPayload};

/// Attachments' storage and its upload limit. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Largest file accepted, in bytes.
    pub max_bytes: u64,
}

impl Objects {
    /// Opens the store named by `url` (`s3://bucket[/prefix]` or `file:///dir`), or the
    /// directory `<data_dir>/attachments` when there is none.
    pub fn open(data_dir: &Path, url: Option<&str>, max_bytes: u64) -> anyhow::Result<Objects> {
        let store: Arc<dyn ObjectStore> = match url {
            None => local(&data_dir.join("attachments"))?,
            Some(url) => match url.split_once("://") {
                Some(("file", dir)) => local(Path::new(dir))?,
                Some(("s3", rest)) => {
                    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                    let s3 = AmazonS3Builder::from_env().with_bucket_name(bucket).build()?;
                    let prefix = prefix.trim_matches('/');
                    if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) }
                }
                _ => anyhow::bail!("--attachments-url must be s3://bucket/prefix or file:///directory"),
            },
        };
        tracing::info!(%store, "attachment store opened");
        Ok(Objects { store, max_bytes })
    }

    /// Stores `payload` under `key` (atomically: all of it or nothing).
    pub async fn put(&self, key: &str, payload: PutPayload) -> object_store::Result<()> {
        self.store.put(&Key::from(key), payload).await.map(|_| ())
    }

    /// The object under `key`, to stream.
    pub async fn get(&self, key: &str) -> object_store::Result<GetResult> {
        self.store.get(&Key::from(key)).await
    }

    /// Removes the object under `key` (an upload whose row could not be written).
    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        self.store.delete(&Key::from(key)).await
    }
}

fn local(dir: &Path) -> anyhow::Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
}

/// Bytes [`sniff`] needs to decide (the HEIC brand ends at byte 12).
pub const SNIFF_BYTES: usize = 12;

/// HEIF major brands of HEIC photos (single images and sequences).
const HEIC_BRANDS: [&[u8; 4]; 6] = [b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"];

/// The content type of a photo from its first bytes — JPEG, PNG or HEIC (an ISO BMFF `ftyp`
/// box with a HEIC brand) — whatever the client claims; `None` for anything else.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.len() >= SNIFF_BYTES && &head[4..8] == b"ftyp" && HEIC_BRANDS.iter().any(|b| &head[8..12] == *b) {
        Some("image/heic")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn photos_are_recognised_by_their_bytes() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"), Some("image/heic"));
        assert_eq!(sniff(b"\0\0\0\x18ftypmif1\0\0\0\0"), Some("image/heic"));
        assert_eq!(sniff(b"\0\0\0\x1cftypavif\0\0\0\0"), None, "AVIF is not HEIC");
        assert_eq!(sniff(b"%PDF-1.7\n"), None);
        assert_eq!(sniff(b"\x89PNG"), None, "truncated");
        assert_eq!(sniff(b""), None);
    }
}
