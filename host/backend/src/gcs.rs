//! Google Cloud Storage (`gs://BUCKET`): reads, HEAD and deletes through the shared data
//! plane ([`ObjectPlane`]); listings over the JSON API ([`JsonLister`], entries with their
//! user metadata); MD5s over the XML API ([`RawLister`], S3 dialect);
//! every write (uploads, copies, metadata patches, resumable uploads in parts) over the JSON
//! API ([`GcsJson`]), conditional on the object's generation.
//!
//! Why a type of its own: GCS's compare-and-swap is `ifGenerationMatch`, not an ETag, so each
//! conditional write first resolves the ETag the core gave to a generation and reports the
//! ETag of exactly the generation it wrote (module `generation`); and GCS can replace metadata in
//! place, which the other clouds cannot through `object_store`.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::gcp::{GcpCredential, GoogleCloudStorage, GoogleCloudStorageBuilder};

use crate::api::{
    Backend, Capabilities, ListPage, ObjectInfo, PartUpload, Precondition, PutMeta, PutOutcome,
    Result,
};
use crate::checksum::{self, ChecksumKind, StoredSum};
use crate::config::{StoreConfig, StoreUrl};
use crate::connect::{build_err, client_options, env, retry_config};
use crate::error::BackendError;
use crate::listing::{Dialect, RawLister};
use crate::objstore::ObjectPlane;
use crate::writes::small_file;

mod generation;
pub mod json;
mod list;
mod upload;

pub use crate::rest::encode_segment;
use generation::{outcome, precheck, resolve};
pub use json::{DEFAULT_ENDPOINT, GcsJson, GenCond, with_query};
use list::JsonLister;
use upload::GcsUpload;

/// GCS's limit on the size of one object.
const MAX_OBJECT: u64 = 5 << 40;

/// One GCS bucket.
pub struct GcsBackend {
    plane: ObjectPlane,
    lister: JsonLister,
    /// The XML API's HEAD, for `content_checksum`.
    xml: RawLister,
    json: Arc<GcsJson>,
    description: String,
}

impl std::fmt::Debug for GcsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsBackend")
            .field("store", &self.description)
            .finish()
    }
}

/// The `object_store` client of `bucket`.
fn client(bucket: &str, cfg: &StoreConfig, endpoint: Option<&str>) -> Result<GoogleCloudStorage> {
    let g = &cfg.gcs;
    let mut b = GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_retry(retry_config(cfg))
        .with_client_options(client_options(cfg, endpoint));
    if let Some(e) = endpoint {
        b = b.with_base_url(e.trim_end_matches('/'));
    }
    if g.anonymous {
        // object_store 0.14 skips signing on reads but still asks for a token on uploads
        // (gcp/client.rs `Request::send`), which would hit the metadata server; a static
        // placeholder token keeps anonymous mode anonymous.
        b = b.with_skip_signature(true).with_credentials(Arc::new(
            object_store::StaticCredentialProvider::new(GcpCredential {
                bearer: "anonymous".to_string(),
            }),
        ));
    } else {
        let file = g.service_account_file.as_deref();
        b = b.with_credentials(crate::gcscreds::find(file, &|k| env(&[k]))?);
    }
    b.build().map_err(build_err)
}

impl GcsBackend {
    /// The condition about `to` of a copy (a rewrite) conditional on `cond`. fake-gcs-server
    /// ignores `ifGenerationMatch=0` on a rewrite (GCS enforces it): for a copy that must
    /// create, one HEAD first, as before finalizing a resumable upload.
    async fn copy_cond(&self, to: &str, cond: &Precondition) -> Result<GenCond> {
        let gc = resolve(&self.plane, to, cond).await?;
        if gc == GenCond::Absent {
            precheck(&self.plane, to, &gc).await?;
        }
        Ok(gc)
    }

    /// Connect to the bucket `url` names (nothing is sent until the first call).
    pub fn open(url: &StoreUrl, cfg: &StoreConfig) -> Result<Self> {
        let endpoint = cfg.endpoint.clone().or_else(|| {
            env(&["STORAGE_EMULATOR_HOST"]).map(|h| {
                if h.contains("://") {
                    h
                } else {
                    format!("http://{h}")
                }
            })
        });
        let store = Arc::new(client(&url.bucket, cfg, endpoint.as_deref())?);
        let creds = (!cfg.gcs.anonymous).then(|| store.credentials().clone());
        let json = GcsJson::new(
            endpoint.as_deref(),
            &url.bucket,
            creds,
            cfg.retry.clone(),
            cfg.parts.or_default().size,
        )?;
        let json = if cfg.unchecked_uploads {
            json.without_checksums()
        } else {
            json
        };
        // Listings over the JSON API (entries carry user metadata), MD5s over the XML API's
        // HEAD (whose ETag is the one the core holds), both with the JSON client's
        // credentials and pool.
        let lister = JsonLister::new(json.rest().clone(), json.objects_url());
        let xml = RawLister::new(json.rest().clone(), &json.xml_bucket_url(), Dialect::S3);
        Ok(GcsBackend {
            plane: ObjectPlane::new(store),
            lister,
            xml,
            json: Arc::new(json),
            description: format!("gs://{}", url.bucket),
        })
    }
}

#[async_trait]
impl Backend for GcsBackend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dir_markers: true,
            native_metadata_update: true,
            conditional_writes: true,
            append_uploads: false,
            native_rename: false,
            real_dirs: false,
            posix_access: false,
            max_object_size: Some(MAX_OBJECT),
            metadata: crate::api::MetadataRules {
                kept: true,
                names: crate::api::MetaNames::Any,
                ascii_values: false,
                max_total: 8 * 1024,
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
        let gc = resolve(&self.plane, key, cond).await?;
        if !self.json.checked() {
            let (generation, _) = self.json.upload_bytes(key, data, meta, (&gc, None)).await?;
            return outcome(&self.plane, key, &generation).await;
        }
        let sum = checksum::md5_async(&data).await?;
        let what = "GCS upload";
        // GCS refuses bytes that do not match the MD5 sent with them (400); a store that
        // does not check reports the MD5 of what it stored, compared here. Either way the
        // bytes go once more; after a stored mismatch, replacing exactly what was stored.
        let mut again = gc.clone();
        let mut tries = 0;
        let generation = loop {
            tries += 1;
            let r = match self
                .json
                .upload_bytes(key, data.clone(), meta, (&again, Some(&sum)))
                .await
            {
                Ok((generation, stored)) => {
                    match checksum::compare(key, what, &sum, stored.as_ref()) {
                        Ok(()) => Ok(generation),
                        Err(e) => {
                            again = GenCond::Generation(generation);
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(e),
            };
            match checksum::note(key, what, r) {
                Err(BackendError::ChecksumMismatch { .. }) if tries < 2 => {
                    tracing::warn!(
                        key,
                        "the store refused the upload's bytes as damaged; sending them once more"
                    );
                }
                Err(e @ BackendError::ChecksumMismatch { .. }) => {
                    tracing::error!(
                        key,
                        "the store refused the upload's bytes twice as damaged; the write fails"
                    );
                    if again != gc
                        && let GenCond::Generation(g) = &again
                    {
                        self.json.remove_damaged(key, g).await;
                    }
                    return Err(e);
                }
                r => break r?,
            }
        };
        outcome(&self.plane, key, &generation).await
    }

    async fn put_file(
        &self,
        key: &str,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        if let Some(data) = small_file(file).await? {
            return self.put(key, data, meta, cond).await;
        }
        let gc = resolve(&self.plane, key, cond).await?;
        let generation = self.json.upload_file(key, file, meta, &gc).await?;
        outcome(&self.plane, key, &generation).await
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
        let gc = self.copy_cond(to, cond).await?;
        let generation = self.json.rewrite(from, to, &gc).await?;
        outcome(&self.plane, to, &generation).await
    }

    /// A rewrite whose body names a type replaces all the copy's metadata, so the copy
    /// keeps the source's and a PATCH (which merges) then sets the type, conditional on the
    /// generation the rewrite made.
    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let gc = self.copy_cond(to, cond).await?;
        let copied = self.json.rewrite(from, to, &gc).await?;
        // The copy is made: a type that could not be set leaves the source's, not a
        // failed rename with both names in the store.
        let generation = match self.json.set_content_type(to, content_type, &copied).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(key = to, error = %e, "could not set the content type of a copy; it keeps the source's");
                copied
            }
        };
        outcome(&self.plane, to, &generation).await
    }

    /// One rewrite whose body is the copy's resource: the given metadata and the type
    /// (the one asked for, else the one the caller knows the source has, else the
    /// source's as its HEAD reports it: a body without a type would not keep the
    /// source's). The ETag the core knows cannot be turned into a generation without
    /// reading the source, so with `source_etag` one HEAD of the source first: its ETag
    /// must still be `source_etag`, and the rewrite is conditional on the generation
    /// that HEAD saw (`ifSourceGenerationMatch`; fake-gcs-server ignores that condition,
    /// the HEAD's comparison is what holds there). Requests: HEAD of the source, the
    /// rewrite, the HEAD that reads the copy's ETag (as for [`Backend::copy`]), and the
    /// HEAD of `to` a `cond` needs as for `copy`; the source is never written.
    async fn copy_as(
        &self,
        from: &str,
        to: &str,
        meta: &PutMeta,
        source_etag: Option<&str>,
        stored_type: Option<&str>,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let known_type = meta.content_type.as_deref().or(stored_type);
        let (source_generation, content_type) = if source_etag.is_some() || known_type.is_none() {
            let (info, generation) = self.plane.head_versioned(from).await?;
            if let Some(e) = source_etag {
                if info.etag.as_deref() != Some(e) {
                    return Err(BackendError::PreconditionFailed { key: from.into() });
                }
                if generation.is_none() {
                    return Err(BackendError::Other(format!(
                        "GCS {from}: HEAD returned no generation"
                    )));
                }
            }
            let ct = known_type.map(str::to_string).or(info.content_type);
            (generation.filter(|_| source_etag.is_some()), ct)
        } else {
            (None, known_type.map(str::to_string))
        };
        let gc = self.copy_cond(to, cond).await?;
        let resource = PutMeta {
            metadata: meta.metadata.clone(),
            content_type,
        };
        let generation = self
            .json
            .rewrite_as(from, to, Some(&resource), source_generation.as_deref(), &gc)
            .await?;
        outcome(&self.plane, to, &generation).await
    }

    /// GCS keeps a CRC32C for every object (composite ones too, which have no MD5).
    fn checksum_kind(&self) -> ChecksumKind {
        ChecksumKind::Crc32c
    }

    async fn content_checksum(
        &self,
        key: &str,
        etag: &str,
        kind: ChecksumKind,
    ) -> Result<Option<StoredSum>> {
        self.xml.content_checksum(key, etag, kind).await
    }

    /// Patched in place (no rewrite of the data), conditional on the generation read.
    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        let (info, generation) = self.plane.head_versioned(key).await?;
        if if_match.is_some() && info.etag.as_deref() != if_match {
            return Err(BackendError::PreconditionFailed { key: key.into() });
        }
        let gc = generation.map(GenCond::Generation).unwrap_or(GenCond::None);
        let old = info.metadata.unwrap_or_default();
        let generation = self.json.patch_metadata(key, &old, meta, &gc).await?;
        outcome(&self.plane, key, &generation).await
    }

    // No `put_appended` (the trait's default, `Ok(None)`): appends to a GCS object upload
    // its whole content.

    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        // A resumable session: the JSON API fixes the condition when it opens.
        let gcond = resolve(&self.plane, key, cond).await?;
        let session = self.json.start_session(key, meta, &gcond, None).await?;
        Ok(Some(Box::new(GcsUpload::new(
            self.plane.clone(),
            self.json.clone(),
            key,
            session,
            (cond, gcond),
        ))))
    }
}
