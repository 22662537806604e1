//! Cloud and local-directory backends on the `object_store` crate.
//!
//! Why: `object_store` is a well-kept, widely used data plane (Azure Blob, S3-compatible,
//! GCS) with signing, credential chains, retries with jittered backoff and timeouts. This
//! module adapts it to [`Backend`]: it converts keys to `object_store` paths without the
//! normalisation `Path::parse` applies (so `dir/` markers on S3/GCS and `a//b` keys stay
//! addressable), classifies errors into [`BackendError`], and adds what the crate lacks
//! (conditional checks around multipart uploads, metadata replacement by rewrite).
//!
//! Cloud listings bypass the crate (see [`crate::listing`]): its listing rejects whole pages
//! that hold a key `Path::parse` refuses (`a//b`, `.`/`..` segments) and drops Azure metadata.
//! Azure paths cannot end in `/`, so Azure directory markers use the BlobFuse2 convention
//! (a blob `dir` with metadata `hdi_isfolder=true`).
//!
//! Building the backend from configuration lives in `open`, uploads in parts in `uploads`.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::{Path, PathPart};
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, CopyMode, CopyOptions,
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig,
    UpdateVersion,
};

use crate::azblocks::AzureBlocks;
use crate::config::{Secret, StoreConfig, StoreKind, StoreUrl};
use crate::error::{names_auth_failure, names_missing_container, redact};
use crate::gcs::{GcsJson, GenCond, encode_segment};
use crate::listing::{Dialect, RawLister};
use crate::localdir;
use crate::rest::{Rest, Signer, percent_decode};
use crate::s3parts::S3Parts;
use crate::{
    AppendBase, Backend, BackendError, Capabilities, ListPage, ObjectInfo, PartUpload,
    Precondition, PutMeta, PutOutcome, Result, UserMetadata,
};

mod open;
mod uploads;
use uploads::{GcsUpload, upload_in_parts};

/// Objects at most this large are uploaded in one request; larger ones in parts.
const SINGLE_PUT_MAX: u64 = 32 * 1024 * 1024;
/// Part size of multipart / block uploads.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per upload.
const PARTS_IN_FLIGHT: usize = 4;

pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    kind: StoreKind,
    description: String,
    conditional_writes: bool,
    /// GCS only: writes over the JSON API.
    gcs: Option<Arc<GcsJson>>,
    /// Listings over the REST API (cloud stores), see [`crate::listing`].
    lister: Option<RawLister>,
    /// `file://` only: its root; directory markers are real directories there.
    local_root: Option<PathBuf>,
    /// `file://` only: the store, for where a key lives on disk (uploads copy files there).
    local_fs: Option<Arc<LocalFileSystem>>,
    /// Azure only: block uploads whose commit carries the precondition.
    azure_blocks: Option<Arc<AzureBlocks>>,
    /// S3 only: multipart uploads whose commit carries the precondition, with part copy.
    s3_parts: Option<Arc<S3Parts>>,
}

/// The local root if `key` is a directory marker on a `file://` store.
fn local_marker<'a>(root: &'a Option<PathBuf>, key: &str) -> Option<&'a FsPath> {
    root.as_deref().filter(|_| key.ends_with('/'))
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("store", &self.description)
            .finish()
    }
}

impl ObjectStoreBackend {
    /// HEAD returning the object's version too (the generation on GCS).
    async fn head_versioned(&self, key: &str) -> Result<(ObjectInfo, Option<String>)> {
        let path = key_to_path(key)?;
        let r = self
            .store
            .get_opts(
                &path,
                GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_err(key, e))?;
        let mut metadata = UserMetadata::new();
        let mut content_type = None;
        for (k, v) in r.attributes.iter() {
            match k {
                Attribute::Metadata(name) => {
                    metadata.insert(name.to_ascii_lowercase(), v.as_ref().to_string());
                }
                Attribute::ContentType => content_type = Some(v.as_ref().to_string()),
                _ => {}
            }
        }
        let info = ObjectInfo {
            key: key.to_string(),
            size: r.meta.size,
            etag: r.meta.e_tag.clone(),
            last_modified: to_system_time(
                r.meta.last_modified.timestamp(),
                r.meta.last_modified.timestamp_subsec_nanos(),
            ),
            metadata: Some(metadata),
            content_type,
        };
        Ok((info, r.meta.version))
    }

    /// Resolve a precondition to a GCS generation condition (one HEAD for `IfMatch`).
    async fn gcs_cond(&self, key: &str, cond: &Precondition) -> Result<GenCond> {
        match cond {
            Precondition::None => Ok(GenCond::None),
            Precondition::IfNotExists => Ok(GenCond::Absent),
            Precondition::IfMatch(e) => {
                let stale = || BackendError::PreconditionFailed { key: key.into() };
                let (info, generation) = match self.head_versioned(key).await {
                    Ok(x) => x,
                    Err(BackendError::NotFound { .. }) => return Err(stale()),
                    Err(err) => return Err(err),
                };
                if info.etag.as_deref() != Some(e.as_str()) {
                    return Err(stale());
                }
                generation.map(GenCond::Generation).ok_or_else(|| {
                    BackendError::Other(format!("GCS {key}: HEAD returned no generation"))
                })
            }
        }
    }

    /// The ETag of what we just wrote as `generation`. If another writer replaced it
    /// already, a token that matches nothing is returned, so our next conditional write or
    /// pinned read reports the conflict instead of trusting someone else's object.
    async fn gcs_outcome(&self, key: &str, generation: &str) -> Result<PutOutcome> {
        match self.head_versioned(key).await {
            Ok((info, Some(g))) if g == generation => Ok(PutOutcome { etag: info.etag }),
            Ok(_) | Err(BackendError::NotFound { .. }) => Ok(PutOutcome {
                etag: Some(format!("superseded-generation-{generation}")),
            }),
            Err(e) => Err(e),
        }
    }

    fn put_mode(&self, cond: &Precondition) -> PutMode {
        match cond {
            _ if !self.conditional_writes => PutMode::Overwrite,
            Precondition::None => PutMode::Overwrite,
            Precondition::IfNotExists => PutMode::Create,
            Precondition::IfMatch(e) => PutMode::Update(UpdateVersion {
                e_tag: Some(e.clone()),
                version: None,
            }),
        }
    }

    /// Check a precondition with a HEAD (for operations the store cannot make conditional).
    async fn check_precondition(&self, key: &str, cond: &Precondition) -> Result<()> {
        match cond {
            Precondition::None => Ok(()),
            Precondition::IfNotExists => match self.head(key).await {
                Ok(_) => Err(BackendError::AlreadyExists { key: key.into() }),
                Err(BackendError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            Precondition::IfMatch(e) => {
                let info = self.head(key).await?;
                if info.etag.as_deref() == Some(e.as_str()) {
                    Ok(())
                } else {
                    Err(BackendError::PreconditionFailed { key: key.into() })
                }
            }
        }
    }
}

/// The well-known Azurite development account key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Convert a key to an `object_store` path without normalising it: segments are validated
/// one by one and joined, so empty segments and a trailing `/` survive.
pub fn key_to_path(key: &str) -> Result<Path> {
    if key.starts_with('/') {
        return Err(BackendError::InvalidKey {
            key: key.into(),
            reason: "leading '/'".into(),
        });
    }
    let mut path = Path::ROOT;
    let mut first = true;
    for seg in key.split('/') {
        let part = PathPart::parse(seg).map_err(|e| BackendError::InvalidKey {
            key: key.into(),
            reason: e.to_string(),
        })?;
        if first {
            path = Path::ROOT.join(part);
            first = false;
        } else {
            path = path.join(part);
        }
    }
    Ok(path)
}

fn map_err(key: &str, e: object_store::Error) -> BackendError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => BackendError::NotFound { key: key.into() },
        E::AlreadyExists { .. } => BackendError::AlreadyExists { key: key.into() },
        E::Precondition { .. } | E::NotModified { .. } => {
            BackendError::PreconditionFailed { key: key.into() }
        }
        E::PermissionDenied { .. } => BackendError::PermissionDenied(redact(&e.to_string())),
        E::Unauthenticated { .. } => BackendError::Unauthenticated(redact(&e.to_string())),
        E::InvalidPath { .. } => BackendError::InvalidKey {
            key: key.into(),
            reason: e.to_string(),
        },
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            BackendError::NotSupported(e.to_string())
        }
        E::UnknownConfigurationKey { .. } => BackendError::Config(e.to_string()),
        // `object_store::Error` is non-exhaustive: classify the rest by message.
        other => classify_generic(redact(&other.to_string())),
    }
}

fn classify_generic(msg: String) -> BackendError {
    let m = msg.to_ascii_lowercase();
    if m.contains("403") || names_auth_failure(&m) {
        BackendError::Unauthenticated(msg)
    } else if m.contains("error sending request")
        || m.contains("timed out")
        || m.contains("timeout")
        || m.contains("connect")
        || m.contains("connection")
        || m.contains("dns")
    {
        BackendError::Unavailable(msg)
    } else if names_missing_container(&m) {
        BackendError::Config(format!("container/bucket does not exist: {msg}"))
    } else {
        BackendError::Other(msg)
    }
}

fn to_system_time(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH
    }
}

fn attributes(meta: &PutMeta) -> Attributes {
    let mut a = Attributes::new();
    for (k, v) in &meta.metadata {
        a.insert(
            Attribute::Metadata(k.clone().into()),
            AttributeValue::from(v.clone()),
        );
    }
    if let Some(ct) = &meta.content_type {
        a.insert(Attribute::ContentType, AttributeValue::from(ct.clone()));
    }
    a
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dir_markers: matches!(self.kind, StoreKind::S3 | StoreKind::Gcs | StoreKind::File),
            native_metadata_update: self.gcs.is_some(),
            conditional_writes: self.conditional_writes && self.kind != StoreKind::File,
            append_uploads: self.azure_blocks.is_some() || self.s3_parts.is_some(),
            max_object_size: match self.kind {
                // What our uploads in parts reach: 50,000 blocks, 10,000 parts; GCS's limit.
                StoreKind::Azure => Some(50_000 * PART_SIZE as u64),
                StoreKind::S3 => Some(10_000 * PART_SIZE as u64),
                StoreKind::Gcs => Some(5 << 40),
                StoreKind::File | StoreKind::Memory => None,
            },
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        if let Some(root) = local_marker(&self.local_root, key) {
            return localdir::head(root, key);
        }
        Ok(self.head_versioned(key).await?.0)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        if range.end <= range.start {
            return Ok(Bytes::new());
        }
        if let Some(root) = local_marker(&self.local_root, key) {
            localdir::head(root, key)?;
            return Ok(Bytes::new());
        }
        let path = key_to_path(key)?;
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            if_match: if_match.map(str::to_string),
            ..Default::default()
        };
        let r = self
            .store
            .get_opts(&path, opts)
            .await
            .map_err(|e| map_err(key, e))?;
        // Some stores (fake-gcs-server among them) ignore If-Match on GET; the ETag of what
        // came back decides, so a replaced object is never served as the pinned version.
        if let (Some(want), Some(got)) = (if_match, r.meta.e_tag.as_deref())
            && want != got
        {
            return Err(BackendError::PreconditionFailed { key: key.into() });
        }
        r.bytes().await.map_err(|e| map_err(key, e))
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        if let Some(root) = local_marker(&self.local_root, key) {
            if *cond == Precondition::IfNotExists && localdir::exists(root, key) {
                return Err(BackendError::AlreadyExists { key: key.into() });
            }
            return localdir::create(root, key);
        }
        if let Some(g) = &self.gcs {
            let gc = self.gcs_cond(key, cond).await?;
            let generation = g.upload_bytes(key, data, meta, &gc).await?;
            return self.gcs_outcome(key, &generation).await;
        }
        let path = key_to_path(key)?;
        if self.kind == StoreKind::File {
            self.check_precondition(key, cond).await?;
        }
        let opts = PutOptions {
            mode: if self.kind == StoreKind::File {
                PutMode::Overwrite
            } else {
                self.put_mode(cond)
            },
            attributes: if self.kind == StoreKind::File {
                Attributes::new()
            } else {
                attributes(meta)
            },
            ..Default::default()
        };
        let r = self
            .store
            .put_opts(&path, data.into(), opts)
            .await
            .map_err(|e| map_err(key, e))?;
        Ok(PutOutcome { etag: r.e_tag })
    }

    async fn put_file(
        &self,
        key: &str,
        file: &FsPath,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let len = tokio::fs::metadata(file).await?.len();
        if let Some(local) = &self.local_fs {
            // A local directory: copy the file there (holes stay holes, memory stays small).
            self.check_precondition(key, cond).await?;
            let dst = local
                .path_to_filesystem(&key_to_path(key)?)
                .map_err(|e| map_err(key, e))?;
            let src = file.to_path_buf();
            tokio::task::spawn_blocking(move || localdir::install_copy(&src, &dst))
                .await
                .map_err(|e| BackendError::Other(format!("local copy task: {e}")))??;
            return Ok(PutOutcome { etag: None });
        }
        if len <= SINGLE_PUT_MAX {
            let data = tokio::fs::read(file).await?;
            let r = self.put(key, Bytes::from(data), meta, cond).await;
            return match (&self.azure_blocks, r) {
                // Azure: a blob nobody can read but that holds uncommitted blocks (a
                // streaming upload of it was abandoned) refuses a Put Blob on absence; a
                // block list commit on absence is accepted.
                (
                    Some(az),
                    Err(
                        e @ (BackendError::AlreadyExists { .. }
                        | BackendError::PreconditionFailed { .. }),
                    ),
                ) if *cond == Precondition::IfNotExists => match self.head(key).await {
                    Err(BackendError::NotFound { .. }) => {
                        upload_in_parts(az.start(key, meta), key, file, cond).await
                    }
                    _ => Err(e),
                },
                (_, r) => r,
            };
        }
        if let Some(g) = &self.gcs {
            let gc = self.gcs_cond(key, cond).await?;
            let generation = g.upload_file(key, file, meta, &gc).await?;
            return self.gcs_outcome(key, &generation).await;
        }
        if let Some(az) = &self.azure_blocks {
            return upload_in_parts(az.start(key, meta), key, file, cond).await;
        }
        match &self.s3_parts {
            Some(s3) => upload_in_parts(s3.start(key, meta).await?, key, file, cond).await,
            None => Err(BackendError::NotSupported(format!(
                "uploads in parts to {}",
                self.description
            ))),
        }
    }

    async fn list_under(&self, prefix: &str, max: usize) -> Result<ListPage> {
        match &self.lister {
            Some(l) => l.list_under(prefix, max).await,
            // A local directory: one `readdir`, no faster way needed.
            None => Ok(crate::prefixes_as_objects(
                self.list_page(prefix, None, max).await?,
            )),
        }
    }

    async fn list_page(&self, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage> {
        if let Some(l) = &self.lister {
            return l.list_page(prefix, token, max).await;
        }
        // A local directory is listed in one page.
        let path = if prefix.is_empty() {
            None
        } else {
            Some(key_to_path(prefix.trim_end_matches('/'))?)
        };
        let lr = self
            .store
            .list_with_delimiter(path.as_ref())
            .await
            .map_err(|e| map_err(prefix, e))?;
        let mut page = ListPage::default();
        let marker = prefix.trim_end_matches('/');
        for o in lr.objects {
            let raw: String = o.location.into();
            // `object_store` strips a trailing `/`: an object equal to the prefix is the
            // directory's own marker.
            let key = if !prefix.is_empty() && raw == marker {
                prefix.to_string()
            } else {
                raw
            };
            page.objects.push(ObjectInfo {
                key,
                size: o.size,
                etag: o.e_tag,
                last_modified: to_system_time(
                    o.last_modified.timestamp(),
                    o.last_modified.timestamp_subsec_nanos(),
                ),
                metadata: None,
                content_type: None,
            });
        }
        for p in lr.common_prefixes {
            let mut s: String = p.into();
            s.push('/');
            page.prefixes.push(s);
        }
        if let Some(root) = local_marker(&self.local_root, prefix)
            && localdir::exists(root, prefix)
        {
            page.objects.insert(0, localdir::head(root, prefix)?);
        }
        Ok(page)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if let Some(root) = local_marker(&self.local_root, key) {
            return localdir::delete(root, key);
        }
        let path = key_to_path(key)?;
        self.store.delete(&path).await.map_err(|e| map_err(key, e))
    }

    async fn copy(&self, from: &str, to: &str, cond: &Precondition) -> Result<PutOutcome> {
        if let Some(root) = local_marker(&self.local_root, from) {
            localdir::head(root, from)?;
            return localdir::create(root, to);
        }
        if let Some(g) = &self.gcs {
            let gc = self.gcs_cond(to, cond).await?;
            let generation = g.rewrite(from, to, &gc).await?;
            return self.gcs_outcome(to, &generation).await;
        }
        let (src, dst) = (key_to_path(from)?, key_to_path(to)?);
        let mode = match cond {
            Precondition::IfNotExists => CopyMode::Create,
            Precondition::None => CopyMode::Overwrite,
            Precondition::IfMatch(_) => {
                self.check_precondition(to, cond).await?;
                CopyMode::Overwrite
            }
        };
        self.store
            .copy_opts(
                &src,
                &dst,
                CopyOptions {
                    mode,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_err(from, e))?;
        Ok(PutOutcome { etag: None })
    }

    async fn content_md5(&self, key: &str, etag: &str) -> Result<Option<[u8; 16]>> {
        match &self.lister {
            Some(l) => l.content_md5(key, etag).await,
            // A local directory keeps no checksum.
            None => Ok(None),
        }
    }

    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        if let Some(root) = local_marker(&self.local_root, key) {
            // A local directory keeps no user metadata (like files on this store).
            localdir::head(root, key)?;
            return Ok(PutOutcome { etag: None });
        }
        if let Some(g) = &self.gcs {
            let (info, generation) = self.head_versioned(key).await?;
            if if_match.is_some() && info.etag.as_deref() != if_match {
                return Err(BackendError::PreconditionFailed { key: key.into() });
            }
            let gc = generation.map(GenCond::Generation).unwrap_or(GenCond::None);
            let old = info.metadata.unwrap_or_default();
            let generation = g.patch_metadata(key, &old, meta, &gc).await?;
            return self.gcs_outcome(key, &generation).await;
        }
        // The crate has no metadata-only update: rewrite the object, conditional on its ETag.
        let info = self.head(key).await?;
        let etag = if_match.map(str::to_string).or(info.etag.clone());
        let data = self.get_range(key, 0..info.size, etag.as_deref()).await?;
        let cond = match etag {
            Some(e) => Precondition::IfMatch(e),
            None => Precondition::None,
        };
        self.put(key, data, meta, &cond).await
    }

    async fn put_appended(
        &self,
        key: &str,
        base: &AppendBase,
        file: &FsPath,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>> {
        let sizes = (PART_SIZE, PARTS_IN_FLIGHT);
        if let Some(az) = &self.azure_blocks {
            let read_old = |range| self.get_range(key, range, Some(&base.etag));
            return az
                .append(key, base, file, meta, cond, sizes, read_old)
                .await;
        }
        match &self.s3_parts {
            Some(s3) => s3.append(key, base, file, meta, cond, sizes).await,
            None => Ok(None),
        }
    }

    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        // A local directory gains nothing from parts.
        if self.kind == StoreKind::File {
            return Ok(None);
        }
        if let Some(g) = self.gcs.clone() {
            // A resumable session: the JSON API fixes the condition when it opens.
            let gcond = self.gcs_cond(key, cond).await?;
            let session = g.start_session(key, meta, &gcond, None).await?;
            return Ok(Some(Box::new(GcsUpload::new(
                self.clone(),
                g,
                key,
                session,
                (cond, gcond),
            ))));
        }
        if let Some(az) = &self.azure_blocks {
            return Ok(Some(az.start(key, meta)));
        }
        match &self.s3_parts {
            Some(s3) => Ok(Some(s3.start(key, meta).await?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_shape() {
        for k in ["a", "a/b", "dir/", "a//b", "x y/ü.txt", "we#ird%?"] {
            assert_eq!(key_to_path(k).unwrap().as_ref(), k);
        }
        for k in ["/abs", "a/./b", "a/../b", "bad\ncontrol"] {
            assert!(key_to_path(k).is_err(), "{k}");
        }
    }

    #[test]
    fn sas_values_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%3D", false), "a/b=");
        assert_eq!(percent_decode("plain", false), "plain");
    }
}
