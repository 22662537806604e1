//! S3 and S3-compatible stores (`s3://BUCKET`: AWS, B2, MinIO, moto, …): reads,
//! single-request writes, copies and deletes through the shared data plane
//! ([`ObjectPlane`]); listings and MD5s over REST ([`RawLister`], S3 dialect); uploads in
//! parts, large files and appends as multipart uploads with conditional commits and part
//! copy ([`S3Parts`]).
//!
//! Why a type of its own: S3 keeps `dir/` markers as objects, appends by copying the old
//! bytes inside the store, and some S3-compatible stores reject conditional headers
//! (`store.s3.conditional-writes: false`), in which case every write is unconditional.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;

use crate::api::{
    AppendBase, Backend, Capabilities, ListPage, ObjectInfo, PartUpload, Precondition, PutMeta,
    PutOutcome, Result,
};
use crate::checksum::{ChecksumKind, StoredSum};
use crate::config::PartSizes;
use crate::config::{StoreConfig, StoreUrl};
use crate::connect::{build_err, client_options, env, retry_config};
use crate::error::BackendError;
use crate::listing::{Dialect, RawLister};
use crate::objstore::ObjectPlane;
use crate::rest::{Rest, Signer};
use crate::s3parts::S3Parts;
use crate::upload::upload_in_parts;
use crate::writes::{check_precondition, copy_in_store, rewrite_metadata, small_file};

/// The largest object one CopyObject copies (AWS: 5 GiB).
const COPY_OBJECT_MAX: u64 = 5 * 1024 * 1024 * 1024;

/// S3's limit of parts per upload, times our part size: what our uploads reach.
/// Parts in one multipart upload, and the largest object S3 stores.
const MAX_PARTS: u64 = 10_000;
const MAX_OBJECT: u64 = 5 << 40;

/// One S3 bucket.
pub struct S3Backend {
    plane: ObjectPlane,
    lister: RawLister,
    parts: Arc<S3Parts>,
    /// Part size and parts in flight of uploads in parts.
    sizes: PartSizes,
    /// `store.s3.conditional-writes`.
    conditional_writes: bool,
    description: String,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("store", &self.description)
            .finish()
    }
}

impl S3Backend {
    /// Connect to the bucket `url` names (nothing is sent until the first call).
    pub fn open(url: &StoreUrl, cfg: &StoreConfig) -> Result<Self> {
        let s3 = &cfg.s3;
        let endpoint = cfg
            .endpoint
            .clone()
            .or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
        let known_region = s3
            .region
            .clone()
            .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]));
        let creds = crate::awscreds::find(s3, known_region.as_deref(), &|k| env(&[k]))?;
        let region = creds.region.clone().unwrap_or_else(|| "us-east-1".into());
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(region.clone())
            .with_virtual_hosted_style_request(s3.virtual_hosted_style)
            .with_retry(retry_config(cfg))
            .with_client_options(client_options(cfg, endpoint.as_deref()))
            .with_credentials(creds.provider);
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e.clone());
        }
        let store = Arc::new(b.build().map_err(build_err)?);
        let bucket = &url.bucket;
        let bucket_url = match (&endpoint, s3.virtual_hosted_style) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let signer = Signer::Aws {
            creds: store.credentials().clone(),
            region,
        };
        let rest = Rest::new(cfg.retry.clone(), signer)?;
        Ok(S3Backend {
            plane: ObjectPlane::new(store),
            parts: S3Parts::new(
                rest.clone(),
                &bucket_url,
                bucket,
                (s3.conditional_writes, !cfg.unchecked_uploads),
            ),
            lister: RawLister::new(rest, &bucket_url, Dialect::S3),
            conditional_writes: s3.conditional_writes,
            sizes: cfg.parts.or_default(),
            description: format!("s3://{bucket}"),
        })
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dir_markers: true,
            native_metadata_update: false,
            conditional_writes: self.conditional_writes,
            append_uploads: true,
            native_rename: false,
            real_dirs: false,
            posix_access: false,
            max_object_size: Some(MAX_OBJECT.min(MAX_PARTS * self.sizes.size as u64)),
            metadata: crate::api::MetadataRules {
                kept: true,
                names: crate::api::MetaNames::HeaderToken,
                ascii_values: true,
                max_total: 2 * 1024,
            },
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.plane.head(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        self.plane.get_range(key, range, if_match).await
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        self.parts.put_object(key, data, meta, cond).await
    }

    async fn put_file(
        &self,
        key: &str,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        match small_file(file).await? {
            Some(data) => self.put(key, data, meta, cond).await,
            None => {
                upload_in_parts(
                    self.parts.start(key, meta).await?,
                    key,
                    file,
                    self.sizes,
                    cond,
                )
                .await
            }
        }
    }

    async fn list_page(&self, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage> {
        self.lister.list_page(prefix, token, max).await
    }

    async fn list_under(&self, prefix: &str, max: usize) -> Result<ListPage> {
        self.lister.list_under(prefix, max).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.plane.delete(key).await
    }

    async fn copy(&self, from: &str, to: &str, cond: &Precondition) -> Result<PutOutcome> {
        copy_in_store(self, &self.plane, from, to, cond).await
    }

    /// CopyObject keeps the source's metadata unless told to replace all of it: the source's
    /// user metadata is read first and sent again with the new type, conditional on the
    /// version read (so data and metadata belong together).
    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        check_precondition(self, to, cond).await?;
        let src = self.head(from).await?;
        let etag = src.etag.ok_or_else(|| {
            BackendError::Other(format!("HEAD {from}: no ETag to copy a version by"))
        })?;
        let meta = PutMeta {
            metadata: src.metadata.unwrap_or_default(),
            content_type: Some(content_type.to_string()),
        };
        self.parts.copy_replacing(from, &etag, to, &meta).await
    }

    /// CopyObject with `REPLACE` and the new metadata: a HEAD of the source and one copy
    /// (was HEAD + CopyObject onto itself + CopyObject). The HEAD checks the version because
    /// some S3-compatible servers ignore `x-amz-copy-source-if-match` (moto does), and gives
    /// the size (CopyObject copies at most 5 GiB) and the type to keep.
    async fn copy_as(
        &self,
        from: &str,
        to: &str,
        meta: &PutMeta,
        source_etag: Option<&str>,
        stored_type: Option<&str>,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let info = self.head(from).await?;
        if source_etag.is_some() && info.etag.as_deref() != source_etag {
            return Err(BackendError::PreconditionFailed { key: from.into() });
        }
        let Some(etag) = info.etag.filter(|_| info.size <= COPY_OBJECT_MAX) else {
            let kept = PutMeta {
                metadata: meta.metadata.clone(),
                content_type: stored_type.map(str::to_string).or(info.content_type),
            };
            self.set_metadata(from, &kept, source_etag).await?;
            return match &meta.content_type {
                Some(ct) => self.copy_typed(from, to, ct, cond).await,
                None => self.copy(from, to, cond).await,
            };
        };
        check_precondition(self, to, cond).await?;
        let meta = PutMeta {
            metadata: meta.metadata.clone(),
            content_type: meta.content_type.clone().or(info.content_type),
        };
        self.parts.copy_replacing(from, &etag, to, &meta).await
    }

    fn checksum_kind(&self) -> ChecksumKind {
        ChecksumKind::Md5
    }

    async fn content_checksum(
        &self,
        key: &str,
        etag: &str,
        kind: ChecksumKind,
    ) -> Result<Option<StoredSum>> {
        self.lister.content_checksum(key, etag, kind).await
    }

    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        // In place: CopyObject onto itself with the new metadata (`REPLACE`), conditional
        // on the version (`x-amz-copy-source-if-match`): no data through us. A HEAD first
        // checks the version too, because some S3-compatible servers ignore that header
        // (moto does: the copy would replace another client's metadata), and gives the
        // content type to keep when none is given.
        let info = self.head(key).await?;
        if if_match.is_some() && info.etag.as_deref() != if_match {
            return Err(BackendError::PreconditionFailed { key: key.into() });
        }
        let etag = info.etag.ok_or_else(|| {
            BackendError::Other(format!("HEAD {key}: no ETag to hold the update to"))
        })?;
        let meta = PutMeta {
            metadata: meta.metadata.clone(),
            content_type: meta.content_type.clone().or(info.content_type),
        };
        // CopyObject copies at most 5 GiB: a larger object is rewritten (as before).
        if info.size > COPY_OBJECT_MAX {
            return rewrite_metadata(self, key, &meta, Some(&etag)).await;
        }
        self.parts.copy_replacing(key, &etag, key, &meta).await
    }

    async fn put_appended(
        &self,
        key: &str,
        base: &AppendBase,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>> {
        let sizes = (self.sizes.size, self.sizes.in_flight);
        self.parts.append(key, base, file, meta, cond, sizes).await
    }

    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        _cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        // The condition travels with the commit (CompleteMultipartUpload).
        Ok(Some(self.parts.start(key, meta).await?))
    }
}
