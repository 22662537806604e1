//! A [`Backend`] wrapper that bounds how long a metadata request may take, retries
//! included.
//!
//! Why: one request timeout (`store.retry.request-timeout-secs`, 120 s by default) must fit
//! the largest ranged GET or part upload, but a HEAD, a LIST page, a delete, a copy or a
//! metadata update that has not answered in seconds is stuck, not busy: on a struggling
//! store (Azurite at 100 % CPU) a stalled HEAD held a `lookup` for 120 s, and `ls` of the
//! mount root failed with EIO after the kernel gave up. Here each such call (HEAD, a LIST
//! page, delete, the MD5 check), with every retry the client makes inside it, gets
//! `store.retry.metadata-timeout-secs` (30 s by default); past it the call fails as
//! `Unavailable` (EIO to the caller, logged) and the mount answers the next request. Data
//! calls (GET, PUT, uploads) and those that may move an object's bytes (copies, metadata
//! updates: S3 copies the object to change it) keep the request timeout. The call that
//! timed out is not sent again from here: a deadline never adds requests to a struggling
//! store.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::api::{AccessUpdate, PathAccess, RenameCond};
use crate::api::{
    AppendBase, Backend, Capabilities, ListPage, ObjectInfo, PartUpload, Precondition, PutMeta,
    PutOutcome, Result,
};
use crate::checksum::{ChecksumKind, StoredSum};
use crate::error::BackendError;

/// `inner` with every metadata call bounded by `limit` (see the module doc).
#[derive(Debug)]
pub struct Deadlines {
    inner: Arc<dyn Backend>,
    limit: Duration,
}

impl Deadlines {
    /// Wrap `inner`; a zero `limit` means no bound (the calls pass through).
    pub fn wrap(inner: Arc<dyn Backend>, limit: Duration) -> Arc<dyn Backend> {
        if limit.is_zero() {
            return inner;
        }
        Arc::new(Deadlines { inner, limit })
    }

    async fn bounded<T>(
        &self,
        what: &str,
        key: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.limit, call).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    key,
                    what,
                    limit = ?self.limit,
                    "the store did not answer a metadata request in time (store.retry.metadata-timeout-secs)"
                );
                Err(BackendError::Unavailable(format!(
                    "{what} {key}: no answer within {:?} (store.retry.metadata-timeout-secs)",
                    self.limit
                )))
            }
        }
    }
}

#[async_trait]
impl Backend for Deadlines {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.bounded("HEAD", key, self.inner.head(key)).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        self.inner.get_range(key, range, if_match).await
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        self.inner.put(key, data, meta, cond).await
    }

    async fn put_file(
        &self,
        key: &str,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        self.inner.put_file(key, file, meta, cond).await
    }

    async fn list_page(&self, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage> {
        self.bounded("LIST", prefix, self.inner.list_page(prefix, token, max))
            .await
    }

    async fn list_under(&self, prefix: &str, max: usize) -> Result<ListPage> {
        self.bounded("LIST", prefix, self.inner.list_under(prefix, max))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.bounded("DELETE", key, self.inner.delete(key)).await
    }

    // Copies and metadata updates move or rewrite the object's bytes on some stores (an S3
    // CopyObject of a large object; a rewrite where no metadata-only update exists): they
    // keep the request timeout.
    async fn copy(&self, from: &str, to: &str, cond: &Precondition) -> Result<PutOutcome> {
        self.inner.copy(from, to, cond).await
    }

    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        self.inner.copy_typed(from, to, content_type, cond).await
    }

    async fn copy_as(
        &self,
        from: &str,
        to: &str,
        meta: &PutMeta,
        source_etag: Option<&str>,
        stored_type: Option<&str>,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        self.inner
            .copy_as(from, to, meta, source_etag, stored_type, cond)
            .await
    }

    fn checksum_kind(&self) -> ChecksumKind {
        self.inner.checksum_kind()
    }

    async fn content_checksum(
        &self,
        key: &str,
        etag: &str,
        kind: ChecksumKind,
    ) -> Result<Option<StoredSum>> {
        self.bounded("HEAD", key, self.inner.content_checksum(key, etag, kind))
            .await
    }

    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        self.inner.set_metadata(key, meta, if_match).await
    }

    async fn set_metadata_over(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
        stored_type: Option<&str>,
    ) -> Result<PutOutcome> {
        self.inner
            .set_metadata_over(key, meta, if_match, stored_type)
            .await
    }

    async fn put_appended(
        &self,
        key: &str,
        base: &AppendBase,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>> {
        self.inner.put_appended(key, base, file, meta, cond).await
    }

    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        self.inner.clone().start_upload(key, meta, cond).await
    }

    // A rename or a recursive delete of a large directory takes the store a while: they keep
    // the request timeout; reading access is a metadata request.
    async fn rename(&self, from: &str, to: &str, cond: &RenameCond) -> Result<PutOutcome> {
        self.inner.rename(from, to, cond).await
    }

    async fn create_dir(&self, key: &str, mode: Option<u16>) -> Result<()> {
        self.inner.create_dir(key, mode).await
    }

    async fn delete_dir(&self, key: &str, recursive: bool) -> Result<()> {
        self.inner.delete_dir(key, recursive).await
    }

    async fn get_access(&self, key: &str) -> Result<PathAccess> {
        self.bounded("HEAD", key, self.inner.get_access(key)).await
    }

    async fn set_access(&self, key: &str, update: &AccessUpdate) -> Result<Option<String>> {
        self.inner.set_access(key, update).await
    }
}
