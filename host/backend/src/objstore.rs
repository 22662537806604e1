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
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
    RetryConfig, UpdateVersion, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use crate::azblocks::AzureBlocks;
use crate::config::{Secret, StoreConfig, StoreKind, StoreUrl};
use crate::error::{names_auth_failure, names_missing_container, redact};
use crate::gcs::{GcsJson, GenCond, encode_segment};
use crate::listing::{Dialect, RawLister};
use crate::localdir;
use crate::rest::{Rest, Signer, percent_decode};
use crate::{
    Backend, BackendError, Capabilities, ListPage, ObjectInfo, PartUpload, Precondition, PutMeta,
    PutOutcome, Result, UserMetadata,
};

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
    /// Azure only: block uploads whose commit carries the precondition.
    azure_blocks: Option<Arc<AzureBlocks>>,
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

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

fn secret_or_env(s: &Option<Secret>, names: &[&str]) -> Option<String> {
    s.as_ref()
        .map(|s| s.expose().to_string())
        .or_else(|| env(names))
}

/// Fields of an Azure connection string.
#[derive(Default)]
struct ConnString {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    blob_endpoint: Option<String>,
}

fn parse_conn_string(s: &str) -> Result<ConnString> {
    let mut c = ConnString::default();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            BackendError::Config("azure connection string: expected KEY=VALUE pairs".into())
        })?;
        match k {
            "AccountName" => c.account = Some(v.to_string()),
            "AccountKey" => c.key = Some(v.to_string()),
            "SharedAccessSignature" => c.sas = Some(v.to_string()),
            "BlobEndpoint" => c.blob_endpoint = Some(v.trim_end_matches('/').to_string()),
            _ => {}
        }
    }
    Ok(c)
}

fn client_options(cfg: &StoreConfig, endpoint: Option<&str>) -> ClientOptions {
    let r = &cfg.retry;
    let mut o = ClientOptions::new()
        .with_timeout(Duration::from_secs(r.request_timeout_secs.max(1)))
        .with_connect_timeout(Duration::from_secs(r.connect_timeout_secs.max(1)));
    if endpoint.map(|e| e.starts_with("http://")).unwrap_or(false) {
        o = o.with_allow_http(true);
    }
    o
}

fn retry_config(cfg: &StoreConfig) -> RetryConfig {
    let r = &cfg.retry;
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(r.initial_backoff_ms),
            max_backoff: Duration::from_millis(r.max_backoff_ms.max(r.initial_backoff_ms)),
            base: 2.0,
        },
        max_retries: r.max_retries,
        retry_timeout: Duration::from_secs(r.retry_timeout_secs),
    }
}

fn build_err(e: object_store::Error) -> BackendError {
    BackendError::Config(redact(&e.to_string()))
}

impl ObjectStoreBackend {
    pub fn new(url: &StoreUrl, cfg: &StoreConfig) -> Result<Self> {
        let endpoint = cfg.endpoint.clone();
        let retry = retry_config(cfg);
        let mut gcs = None;
        let mut lister = None;
        let mut local_root = None;
        let mut azure_blocks = None;
        let (store, description): (Arc<dyn ObjectStore>, String) = match url.kind {
            StoreKind::Azure => {
                let az = &cfg.azure;
                let conn = match secret_or_env(
                    &az.connection_string,
                    &["AZURE_STORAGE_CONNECTION_STRING"],
                ) {
                    Some(s) => parse_conn_string(&s)?,
                    None => ConnString::default(),
                };
                let key_from_file = match &az.account_key_file {
                    Some(p) => Some(
                        std::fs::read_to_string(p)
                            .map_err(|e| {
                                BackendError::Config(format!(
                                    "store.azure.account-key-file {}: {e}",
                                    p.display()
                                ))
                            })?
                            .trim()
                            .to_string(),
                    ),
                    None => None,
                };
                let key = secret_or_env(
                    &az.account_key,
                    &["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"],
                )
                .or(key_from_file)
                .or(conn.key);
                let sas = secret_or_env(&az.sas_token, &["AZURE_STORAGE_SAS_TOKEN"]).or(conn.sas);
                let endpoint = endpoint.or(conn.blob_endpoint);
                let account = conn.account.unwrap_or_else(|| url.account.clone());
                let account_url = match &endpoint {
                    Some(e) => e.trim_end_matches('/').to_string(),
                    None if az.use_emulator => format!(
                        "{}/{account}",
                        env(&["AZURITE_BLOB_STORAGE_URL"])
                            .unwrap_or_else(|| "http://127.0.0.1:10000".into())
                            .trim_end_matches('/')
                    ),
                    None => format!("https://{account}.blob.core.windows.net"),
                };
                let mut b = MicrosoftAzureBuilder::new()
                    .with_account(&account)
                    .with_container_name(&url.bucket)
                    .with_retry(retry)
                    .with_client_options(client_options(cfg, endpoint.as_deref()));
                if az.use_emulator && endpoint.is_none() {
                    b = b.with_use_emulator(true);
                }
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(k) = key {
                    b = b.with_access_key(k);
                } else if let Some(s) = sas {
                    let pairs = s
                        .trim_start_matches('?')
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), percent_decode(v, false)))
                        .collect::<Vec<_>>();
                    b = b.with_sas_authorization(pairs);
                } else if az.use_emulator {
                    b = b.with_access_key(AZURITE_KEY);
                }
                let s = Arc::new(b.build().map_err(build_err)?);
                let signer = Signer::Azure {
                    creds: s.credentials().clone(),
                    account: account.clone(),
                };
                let container_url = format!("{account_url}/{}", encode_segment(&url.bucket));
                azure_blocks = Some(AzureBlocks::new(
                    Rest::new(
                        cfg.retry.clone(),
                        Signer::Azure {
                            creds: s.credentials().clone(),
                            account: account.clone(),
                        },
                    )?,
                    &container_url,
                ));
                lister = Some(RawLister::new(
                    Rest::new(cfg.retry.clone(), signer)?,
                    &container_url,
                    Dialect::Azure,
                ));
                let d = format!("az://{account}/{}", url.bucket);
                (s, d)
            }
            StoreKind::S3 => {
                let s3 = &cfg.s3;
                let endpoint =
                    endpoint.or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
                let region = s3
                    .region
                    .clone()
                    .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
                    .unwrap_or_else(|| "us-east-1".into());
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&url.bucket)
                    .with_region(region.clone())
                    .with_virtual_hosted_style_request(s3.virtual_hosted_style)
                    .with_retry(retry)
                    .with_client_options(client_options(cfg, endpoint.as_deref()));
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(k) = s3
                    .access_key_id
                    .clone()
                    .or_else(|| env(&["AWS_ACCESS_KEY_ID"]))
                {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = secret_or_env(&s3.secret_access_key, &["AWS_SECRET_ACCESS_KEY"]) {
                    b = b.with_secret_access_key(k);
                }
                if let Some(t) = secret_or_env(&s3.session_token, &["AWS_SESSION_TOKEN"]) {
                    b = b.with_token(t);
                }
                let s = Arc::new(b.build().map_err(build_err)?);
                let bucket = &url.bucket;
                let bucket_url = match (&endpoint, s3.virtual_hosted_style) {
                    (Some(e), true) => e.trim_end_matches('/').to_string(),
                    (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
                    (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
                    (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
                };
                let signer = Signer::Aws {
                    creds: s.credentials().clone(),
                    region,
                };
                lister = Some(RawLister::new(
                    Rest::new(cfg.retry.clone(), signer)?,
                    &bucket_url,
                    Dialect::S3,
                ));
                let d = format!("s3://{}", url.bucket);
                (s, d)
            }
            StoreKind::Gcs => {
                let g = &cfg.gcs;
                let endpoint = endpoint.or_else(|| {
                    env(&["STORAGE_EMULATOR_HOST"]).map(|h| {
                        if h.contains("://") {
                            h
                        } else {
                            format!("http://{h}")
                        }
                    })
                });
                let mut b = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&url.bucket)
                    .with_retry(retry)
                    .with_client_options(client_options(cfg, endpoint.as_deref()));
                if let Some(e) = &endpoint {
                    b = b.with_base_url(e.trim_end_matches('/'));
                }
                let sa = g
                    .service_account_file
                    .clone()
                    .map(|p| p.display().to_string())
                    .or_else(|| env(&["GOOGLE_APPLICATION_CREDENTIALS"]));
                if g.anonymous {
                    // object_store 0.14 skips signing on reads but still asks for a token on
                    // uploads (gcp/client.rs `Request::send`), which would hit the metadata
                    // server; a static placeholder token keeps anonymous mode anonymous.
                    b = b.with_skip_signature(true).with_credentials(Arc::new(
                        object_store::StaticCredentialProvider::new(
                            object_store::gcp::GcpCredential {
                                bearer: "anonymous".to_string(),
                            },
                        ),
                    ));
                } else if let Some(p) = sa {
                    b = b.with_service_account_path(p);
                }
                let s = Arc::new(b.build().map_err(build_err)?);
                let creds = (!g.anonymous).then(|| s.credentials().clone());
                let json = GcsJson::new(
                    endpoint.as_deref(),
                    &url.bucket,
                    creds.clone(),
                    cfg.retry.clone(),
                    PART_SIZE,
                )?;
                let signer = match creds {
                    Some(c) => Signer::Gcp(c),
                    None => Signer::Anonymous,
                };
                lister = Some(RawLister::new(
                    Rest::new(cfg.retry.clone(), signer)?,
                    &json.xml_bucket_url(),
                    Dialect::S3,
                ));
                gcs = Some(Arc::new(json));
                let d = format!("gs://{}", url.bucket);
                (s, d)
            }
            StoreKind::File => {
                let root = std::path::PathBuf::from(&url.bucket);
                std::fs::create_dir_all(&root).map_err(|e| {
                    BackendError::Config(format!("file store {}: {e}", root.display()))
                })?;
                let s = LocalFileSystem::new_with_prefix(&root).map_err(build_err)?;
                local_root = Some(root);
                (Arc::new(s), format!("file://{}", url.bucket))
            }
            StoreKind::Memory => {
                return Err(BackendError::Config(
                    "mem:// is served by MemoryBackend".into(),
                ));
            }
        };
        let conditional_writes = match url.kind {
            StoreKind::S3 => cfg.s3.conditional_writes,
            _ => true,
        };
        Ok(ObjectStoreBackend {
            store,
            kind: url.kind,
            description,
            conditional_writes,
            gcs,
            lister,
            local_root,
            azure_blocks,
        })
    }

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
    /// Start a multipart (S3) / block (Azure) upload carrying `meta`.
    async fn multipart(
        &self,
        key: &str,
        meta: &PutMeta,
    ) -> Result<Box<dyn object_store::MultipartUpload>> {
        let path = key_to_path(key)?;
        self.store
            .put_multipart_opts(
                &path,
                PutMultipartOptions {
                    attributes: attributes(meta),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_err(key, e))
    }

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

/// An S3 multipart upload or an Azure block upload through `object_store`.
struct ObjUpload {
    backend: Arc<ObjectStoreBackend>,
    key: String,
    inner: Box<dyn object_store::MultipartUpload>,
}

impl std::fmt::Debug for ObjUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjUpload").field("key", &self.key).finish()
    }
}

#[async_trait]
impl PartUpload for ObjUpload {
    fn put_part(&mut self, data: Bytes) -> futures::future::BoxFuture<'static, Result<()>> {
        let key = self.key.clone();
        let part = self.inner.put_part(data.into());
        Box::pin(async move { part.await.map_err(|e| map_err(&key, e)) })
    }

    async fn complete(mut self: Box<Self>, cond: &Precondition) -> Result<PutOutcome> {
        // object_store cannot send If-Match / If-None-Match with the commit: check first
        // (a race inside that window remains; see docs/semantics.md).
        if self.backend.conditional_writes
            && let Err(e) = self.backend.check_precondition(&self.key, cond).await
        {
            let _ = self.inner.abort().await;
            return Err(e);
        }
        let r = self
            .inner
            .complete()
            .await
            .map_err(|e| map_err(&self.key, e))?;
        Ok(PutOutcome { etag: r.e_tag })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.inner.abort().await.map_err(|e| map_err(&self.key, e))
    }
}

/// Where a GCS session's parts have got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// Every byte before this offset is in the session.
    Upto(u64),
    /// A part failed; later parts are not sent.
    Failed,
}

/// A GCS resumable upload fed part by part. A session takes its bytes strictly in order, so
/// each part waits for the one before it to land (parts may be started concurrently); the
/// object appears only when the session is finalized, with the condition it was opened with.
struct GcsUpload {
    backend: Arc<ObjectStoreBackend>,
    gcs: Arc<GcsJson>,
    key: String,
    session: String,
    cond: Precondition,
    gcond: GenCond,
    /// Offset of the next part.
    next: u64,
    state: Arc<tokio::sync::watch::Sender<Sent>>,
    /// The generation, once a short (hence last) part finalized the session.
    generation: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for GcsUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsUpload")
            .field("key", &self.key)
            .field("next", &self.next)
            .finish()
    }
}

/// GCS resumable chunks other than the last are multiples of this.
const GCS_QUANTUM: u64 = 256 * 1024;

impl GcsUpload {
    /// Check the session's condition against the object as it is now, just before the
    /// request that finalizes the object. GCS itself enforces the condition given when the
    /// session opened; fake-gcs-server ignores it, and one HEAD per upload is cheap insurance
    /// against overwriting another client's write.
    async fn precheck(backend: &ObjectStoreBackend, key: &str, gcond: &GenCond) -> Result<()> {
        let now = match backend.head_versioned(key).await {
            Ok((_, g)) => Some(g),
            Err(BackendError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        match (gcond, now) {
            (GenCond::None, _) | (GenCond::Absent, None) => Ok(()),
            (GenCond::Absent, Some(_)) => Err(BackendError::AlreadyExists { key: key.into() }),
            (GenCond::Generation(want), Some(Some(g))) if *want == g => Ok(()),
            (GenCond::Generation(_), _) => {
                Err(BackendError::PreconditionFailed { key: key.into() })
            }
        }
    }

    /// Wait until every part before `offset` is in the session.
    async fn wait_for(state: &tokio::sync::watch::Sender<Sent>, offset: u64) -> Result<()> {
        let mut rx = state.subscribe();
        let r = rx
            .wait_for(|s| match s {
                Sent::Upto(n) => *n >= offset,
                Sent::Failed => true,
            })
            .await
            .map(|s| *s);
        match r {
            Ok(Sent::Upto(_)) => Ok(()),
            Ok(Sent::Failed) | Err(_) => Err(BackendError::Other(
                "an earlier part of this upload failed".into(),
            )),
        }
    }
}

#[async_trait]
impl PartUpload for GcsUpload {
    fn put_part(&mut self, data: Bytes) -> futures::future::BoxFuture<'static, Result<()>> {
        let offset = self.next;
        let len = data.len() as u64;
        self.next += len;
        // Parts other than the last are whole multiples of the part size; a short one is
        // the last and finalizes the object.
        let total = (!len.is_multiple_of(GCS_QUANTUM)).then_some(self.next);
        let (gcs, key, session, gcond) = (
            self.gcs.clone(),
            self.key.clone(),
            self.session.clone(),
            self.gcond.clone(),
        );
        let (state, generation) = (self.state.clone(), self.generation.clone());
        let backend = self.backend.clone();
        Box::pin(async move {
            Self::wait_for(&state, offset).await?;
            let checked = match total {
                Some(_) => Self::precheck(&backend, &key, &gcond).await,
                None => Ok(()),
            };
            if let Err(e) = checked {
                state.send_replace(Sent::Failed);
                return Err(e);
            }
            match gcs
                .send_chunk(&key, &session, &gcond, offset, data, total)
                .await
            {
                Ok(g) => {
                    if let Some(g) = g {
                        *generation.lock().unwrap_or_else(|p| p.into_inner()) = Some(g);
                    }
                    state.send_replace(Sent::Upto(offset + len));
                    Ok(())
                }
                Err(e) => {
                    state.send_replace(Sent::Failed);
                    Err(e)
                }
            }
        })
    }

    async fn complete(self: Box<Self>, cond: &Precondition) -> Result<PutOutcome> {
        if *cond != self.cond {
            self.gcs.cancel_session(&self.key, &self.session).await;
            return Err(BackendError::Other(format!(
                "GCS {}: the upload was opened under another condition",
                self.key
            )));
        }
        Self::wait_for(&self.state, self.next).await?;
        let done = self
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let generation = match done {
            Some(g) => g,
            None => {
                Self::precheck(&self.backend, &self.key, &self.gcond).await?;
                self.gcs
                    .send_chunk(
                        &self.key,
                        &self.session,
                        &self.gcond,
                        self.next,
                        Bytes::new(),
                        Some(self.next),
                    )
                    .await?
                    .ok_or_else(|| {
                        BackendError::Other(format!("GCS {}: session not finalized", self.key))
                    })?
            }
        };
        self.backend.gcs_outcome(&self.key, &generation).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.gcs.cancel_session(&self.key, &self.session).await;
        Ok(())
    }
}

/// Upload `file` through `up` in `PART_SIZE` parts, `PARTS_IN_FLIGHT` at a time, and commit
/// it conditional on `cond`; a failed part discards the upload.
async fn upload_in_parts(
    mut up: Box<dyn PartUpload>,
    key: &str,
    file: &FsPath,
    cond: &Precondition,
) -> Result<PutOutcome> {
    use futures::StreamExt;
    let mut f = tokio::fs::File::open(file).await?;
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut failed = None;
    loop {
        let mut buf = vec![0u8; PART_SIZE];
        let mut filled = 0;
        while filled < PART_SIZE {
            let n = f.read(&mut buf[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        while inflight.len() >= PARTS_IN_FLIGHT && failed.is_none() {
            if let Some(Err(e)) = inflight.next().await {
                failed = Some(e);
            }
        }
        if failed.is_some() {
            break;
        }
        inflight.push(up.put_part(Bytes::from(buf)));
        if filled < PART_SIZE {
            break;
        }
    }
    while let Some(r) = inflight.next().await {
        if let (Err(e), None) = (r, &failed) {
            failed = Some(e);
        }
    }
    if let Some(e) = failed {
        if let Err(a) = up.abort().await {
            tracing::warn!(key, error = %a, "could not discard a failed upload's parts");
        }
        return Err(e);
    }
    up.complete(cond).await
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
        if len <= SINGLE_PUT_MAX || self.kind == StoreKind::File {
            let data = tokio::fs::read(file).await?;
            return self.put(key, Bytes::from(data), meta, cond).await;
        }
        if let Some(g) = &self.gcs {
            let gc = self.gcs_cond(key, cond).await?;
            let generation = g.upload_file(key, file, meta, &gc).await?;
            return self.gcs_outcome(key, &generation).await;
        }
        if let Some(az) = &self.azure_blocks {
            return upload_in_parts(az.start(key, meta), key, file, cond).await;
        }
        // Multipart uploads cannot carry If-Match / If-None-Match through this crate: check
        // first, upload, and only then commit (a race inside the upload window remains; the
        // write engine narrows it).
        if self.conditional_writes {
            self.check_precondition(key, cond).await?;
        }
        let upload = self.multipart(key, meta).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut f = tokio::fs::File::open(file).await?;
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                return Err(map_err(key, e));
            }
            w.write(&buf[..n]);
        }
        let r = w.finish().await.map_err(|e| map_err(key, e))?;
        Ok(PutOutcome { etag: r.e_tag })
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
            let (state, _) = tokio::sync::watch::channel(Sent::Upto(0));
            return Ok(Some(Box::new(GcsUpload {
                backend: self.clone(),
                gcs: g,
                key: key.to_string(),
                session,
                cond: cond.clone(),
                gcond,
                next: 0,
                state: Arc::new(state),
                generation: Arc::default(),
            })));
        }
        if let Some(az) = &self.azure_blocks {
            return Ok(Some(az.start(key, meta)));
        }
        let inner = self.multipart(key, meta).await?;
        Ok(Some(Box::new(ObjUpload {
            backend: self,
            key: key.to_string(),
            inner,
        })))
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
    fn conn_string() {
        let c = parse_conn_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=abc==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;",
        )
        .unwrap();
        assert_eq!(c.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(c.key.as_deref(), Some("abc=="));
        assert_eq!(
            c.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
    }

    #[test]
    fn sas_values_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%3D", false), "a/b=");
        assert_eq!(percent_decode("plain", false), "plain");
    }
}
