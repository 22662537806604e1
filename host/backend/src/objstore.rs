//! The data plane every cloud and local-directory backend shares: object reads, writes,
//! deletes, copies and (local) listings through the `object_store` crate.
//!
//! Why: `object_store` is a well-kept, widely used data plane (Azure Blob, S3-compatible,
//! GCS, local files) with signing, credential chains, retries with jittered backoff and
//! timeouts. [`ObjectPlane`] adapts it once for all stores: it converts keys to
//! `object_store` paths without the normalisation `Path::parse` applies (so `dir/` markers on
//! S3/GCS and `a//b` keys stay addressable), classifies errors into [`BackendError`], reads
//! user metadata from HEAD attributes, and double-checks a pinned ETag on ranged GETs. What a
//! store does on top (conditions it cannot express here, uploads in parts, listings that
//! accept every key) lives in that store's module.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::{Path, PathPart};
use object_store::{
    Attribute, AttributeValue, Attributes, CopyMode, CopyOptions, GetOptions, GetRange,
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion,
};

use crate::api::{ListPage, ObjectInfo, Precondition, PutMeta, PutOutcome, Result, UserMetadata};
use crate::error::{BackendError, names_auth_failure, names_missing_container, redact};

/// One bucket or container (or local directory) through `object_store`. A clone shares the
/// client, its connection pool and its credential cache.
#[derive(Clone, Debug)]
pub struct ObjectPlane {
    store: Arc<dyn ObjectStore>,
}

impl ObjectPlane {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectPlane { store }
    }

    /// HEAD with user metadata, returning the object's version too (the generation on GCS).
    pub async fn head_versioned(&self, key: &str) -> Result<(ObjectInfo, Option<String>)> {
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

    /// HEAD with user metadata.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo> {
        Ok(self.head_versioned(key).await?.0)
    }

    /// Bytes `range` of `key`, pinned to `if_match` when given (see
    /// [`crate::Backend::get_range`]).
    pub async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        if range.end <= range.start {
            return Ok(Bytes::new());
        }
        let path = key_to_path(key)?;
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            if_match: if_match.map(str::to_string),
            ..Default::default()
        };
        let r = match self.store.get_opts(&path, opts).await {
            Ok(r) => r,
            Err(e) => {
                return self
                    .refused_range(key, range.start, if_match, map_err(key, e))
                    .await;
            }
        };
        // Some stores (fake-gcs-server among them) ignore If-Match on GET; the ETag of what
        // came back decides, so a replaced object is never served as the pinned version.
        if let (Some(want), Some(got)) = (if_match, r.meta.e_tag.as_deref())
            && want != got
        {
            return Err(BackendError::PreconditionFailed { key: key.into() });
        }
        r.bytes().await.map_err(|e| map_err(key, e))
    }

    /// A ranged GET of `key` from `start` failed with `e`. When the range starts at or after
    /// the end of the object, the answer is no bytes, as [`crate::Backend::get_range`]
    /// promises: the stores refuse such a range (416 Range Not Satisfiable; `object_store`
    /// says "Wanted range starting at …" or "Requested range was invalid") with an error
    /// nothing else classifies. A HEAD decides, so any other failure keeps its error.
    async fn refused_range(
        &self,
        key: &str,
        start: u64,
        if_match: Option<&str>,
        e: BackendError,
    ) -> Result<Bytes> {
        if !matches!(e, BackendError::Other(_)) {
            return Err(e);
        }
        let info = self.head(key).await?;
        if if_match.is_some_and(|m| info.etag.as_deref() != Some(m)) {
            return Err(BackendError::PreconditionFailed { key: key.into() });
        }
        if info.size <= start {
            Ok(Bytes::new())
        } else {
            Err(e)
        }
    }

    /// Write a whole object in one request with `mode` and `attributes`.
    pub async fn put(
        &self,
        key: &str,
        data: Bytes,
        mode: PutMode,
        attributes: Attributes,
    ) -> Result<PutOutcome> {
        let path = key_to_path(key)?;
        let opts = PutOptions {
            mode,
            attributes,
            ..Default::default()
        };
        let r = self
            .store
            .put_opts(&path, data.into(), opts)
            .await
            .map_err(|e| map_err(key, e))?;
        Ok(PutOutcome { etag: r.e_tag })
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = key_to_path(key)?;
        self.store.delete(&path).await.map_err(|e| map_err(key, e))
    }

    /// Server-side copy with `mode`; the store reports no ETag for the copy.
    pub async fn copy(&self, from: &str, to: &str, mode: CopyMode) -> Result<PutOutcome> {
        let (src, dst) = (key_to_path(from)?, key_to_path(to)?);
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

    /// The whole delimiter listing of `prefix` in one page, through `object_store` (right
    /// for local directories; cloud listings go through [`crate::listing`] instead). An
    /// object equal to the prefix without its `/` (the crate strips it) is the directory's
    /// own marker and is reported under the prefix.
    pub async fn list_delimited(&self, prefix: &str) -> Result<ListPage> {
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
        Ok(page)
    }
}

/// The put mode that carries `cond` to a store that checks it atomically.
pub fn put_mode(cond: &Precondition) -> PutMode {
    match cond {
        Precondition::None => PutMode::Overwrite,
        Precondition::IfNotExists => PutMode::Create,
        Precondition::IfMatch(e) => PutMode::Update(UpdateVersion {
            e_tag: Some(e.clone()),
            version: None,
        }),
    }
}

/// User metadata and content type as `object_store` attributes.
pub fn attributes(meta: &PutMeta) -> Attributes {
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

/// Classify an `object_store` error about `key`.
pub fn map_err(key: &str, e: object_store::Error) -> BackendError {
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
    // The status as `object_store` words it ("status code: 403 Forbidden"): a bare "403"
    // also turns up in ports, request ids and host ids of unrelated errors.
    if m.contains("status code: 403") || m.contains("403 forbidden") || names_auth_failure(&m) {
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
    fn conditions_become_put_modes() {
        assert!(matches!(put_mode(&Precondition::None), PutMode::Overwrite));
        assert!(matches!(
            put_mode(&Precondition::IfNotExists),
            PutMode::Create
        ));
        assert!(matches!(
            put_mode(&Precondition::IfMatch("\"e\"".into())),
            PutMode::Update(UpdateVersion { e_tag: Some(e), version: None }) if e == "\"e\""
        ));
    }
}
