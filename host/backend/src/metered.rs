//! A [`Backend`] wrapper that counts calls, errors by kind and bytes fetched, for the
//! daemon's `/metrics` and `/status`.
//!
//! Why a wrapper: every store goes through the same trait, so one place counts for all of
//! them and no implementation has to remember to. Retries inside a call are not visible
//! here (a call is counted once, its error after the last retry).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::api::{AccessUpdate, PathAccess, RenameCond};
use crate::api::{
    AppendBase, Backend, Capabilities, ListPage, ObjectInfo, PartUpload, Precondition, PutMeta,
    PutOutcome, Result,
};
use crate::checksum::{ChecksumKind, StoredSum};
use crate::error::BackendError;

const CALLS: [&str; 19] = [
    "head",
    "get",
    "put",
    "put_file",
    "list",
    "delete",
    "copy",
    "set_metadata",
    "content_checksum",
    "start_upload",
    "put_part",
    "complete_upload",
    "abort_upload",
    "put_appended",
    "rename",
    "create_dir",
    "delete_dir",
    "get_access",
    "set_access",
];

const ERRORS: [&str; 16] = [
    "not_found",
    "already_exists",
    "precondition_failed",
    "permission_denied",
    "unauthenticated",
    "invalid_key",
    "not_supported",
    "unavailable",
    "config",
    "checksum_mismatch",
    "local_io",
    "other",
    "local_no_space",
    "too_large",
    "not_empty",
    "kind_mismatch",
];

fn error_kind(e: &BackendError) -> usize {
    match e {
        BackendError::NotFound { .. } => 0,
        BackendError::AlreadyExists { .. } => 1,
        BackendError::PreconditionFailed { .. } => 2,
        BackendError::PermissionDenied(_) => 3,
        BackendError::Unauthenticated(_) => 4,
        BackendError::InvalidKey { .. } => 5,
        BackendError::NotSupported(_) => 6,
        BackendError::Unavailable(_) => 7,
        BackendError::Config(_) => 8,
        BackendError::ChecksumMismatch { .. } => 9,
        BackendError::LocalIo(_) => 10,
        BackendError::Other(_) => 11,
        BackendError::LocalNoSpace(_) => 12,
        BackendError::TooLarge { .. } => 13,
        BackendError::NotEmpty { .. } => 14,
        BackendError::KindMismatch { .. } => 15,
    }
}

/// Counters of one store.
#[derive(Debug, Default)]
pub struct BackendStats {
    calls: [AtomicU64; CALLS.len()],
    errors: [AtomicU64; ERRORS.len()],
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
}

impl BackendStats {
    /// `(call kind, count)` for every kind.
    pub fn calls(&self) -> Vec<(&'static str, u64)> {
        CALLS
            .iter()
            .zip(&self.calls)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// `(error kind, count)` for every kind that happened.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        ERRORS
            .iter()
            .zip(&self.errors)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn bytes_read(&self) -> u64 {
        self.read_bytes.load(Ordering::Relaxed)
    }

    /// Bytes the store accepted (whole objects and parts).
    pub fn bytes_written(&self) -> u64 {
        self.written_bytes.load(Ordering::Relaxed)
    }

    fn wrote(&self, n: u64) {
        self.written_bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn count<T>(&self, call: usize, r: Result<T>) -> Result<T> {
        self.calls[call].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &r {
            // A missing object is an answer, not a failure of the store.
            if !e.is_not_found() {
                self.errors[error_kind(e)].fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}

/// The counting wrapper.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn Backend>,
    stats: Arc<BackendStats>,
}

impl Metered {
    /// Wrap `inner`; returns the wrapped backend and its counters.
    pub fn wrap(inner: Arc<dyn Backend>) -> (Arc<dyn Backend>, Arc<BackendStats>) {
        let stats = Arc::new(BackendStats::default());
        (
            Arc::new(Metered {
                inner,
                stats: stats.clone(),
            }),
            stats,
        )
    }
}

#[async_trait]
impl Backend for Metered {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.stats.count(0, self.inner.head(key).await)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        let r = self.inner.get_range(key, range, if_match).await;
        if let Ok(b) = &r {
            self.stats
                .read_bytes
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        self.stats.count(1, r)
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let n = data.len() as u64;
        let r = self
            .stats
            .count(2, self.inner.put(key, data, meta, cond).await);
        if r.is_ok() {
            self.stats.wrote(n);
        }
        r
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let r = self
            .stats
            .count(3, self.inner.put_file(key, path, meta, cond).await);
        if r.is_ok()
            && let Ok(m) = std::fs::metadata(path)
        {
            self.stats.wrote(m.len());
        }
        r
    }

    async fn list_page(&self, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage> {
        self.stats
            .count(4, self.inner.list_page(prefix, token, max).await)
    }

    async fn list_under(&self, prefix: &str, max: usize) -> Result<ListPage> {
        self.stats
            .count(4, self.inner.list_under(prefix, max).await)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.stats.count(5, self.inner.delete(key).await)
    }

    async fn copy(&self, from: &str, to: &str, cond: &Precondition) -> Result<PutOutcome> {
        self.stats.count(6, self.inner.copy(from, to, cond).await)
    }

    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let r = self.inner.copy_typed(from, to, content_type, cond).await;
        self.stats.count(6, r)
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
        let r = self
            .inner
            .copy_as(from, to, meta, source_etag, stored_type, cond)
            .await;
        self.stats.count(6, r)
    }

    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        self.stats
            .count(7, self.inner.set_metadata(key, meta, if_match).await)
    }

    async fn set_metadata_over(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
        stored_type: Option<&str>,
    ) -> Result<PutOutcome> {
        let r = self
            .inner
            .set_metadata_over(key, meta, if_match, stored_type)
            .await;
        self.stats.count(7, r)
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
        let r = self.inner.content_checksum(key, etag, kind).await;
        self.stats.count(8, r)
    }

    async fn put_appended(
        &self,
        key: &str,
        base: &AppendBase,
        path: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>> {
        let r = self.stats.count(
            13,
            self.inner.put_appended(key, base, path, meta, cond).await,
        );
        if let Ok(Some(_)) = &r
            && let Ok(m) = std::fs::metadata(path)
        {
            self.stats.wrote(m.len().saturating_sub(base.len));
        }
        r
    }

    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        let r = self.inner.clone().start_upload(key, meta, cond).await;
        let stats = self.stats.clone();
        Ok(stats
            .count(9, r)?
            .map(|inner| Box::new(MeteredUpload { inner, stats }) as Box<dyn PartUpload>))
    }

    async fn rename(&self, from: &str, to: &str, cond: &RenameCond) -> Result<PutOutcome> {
        self.stats
            .count(14, self.inner.rename(from, to, cond).await)
    }

    async fn create_dir(&self, key: &str, mode: Option<u16>) -> Result<()> {
        self.stats.count(15, self.inner.create_dir(key, mode).await)
    }

    async fn delete_dir(&self, key: &str, recursive: bool) -> Result<()> {
        self.stats
            .count(16, self.inner.delete_dir(key, recursive).await)
    }

    async fn get_access(&self, key: &str) -> Result<PathAccess> {
        self.stats.count(17, self.inner.get_access(key).await)
    }

    async fn set_access(&self, key: &str, update: &AccessUpdate) -> Result<Option<String>> {
        self.stats
            .count(18, self.inner.set_access(key, update).await)
    }
}

/// Counts the parts, bytes and outcome of an upload in parts.
#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn PartUpload>,
    stats: Arc<BackendStats>,
}

#[async_trait]
impl PartUpload for MeteredUpload {
    fn put_part(&mut self, data: Bytes) -> futures::future::BoxFuture<'static, Result<()>> {
        let n = data.len() as u64;
        let part = self.inner.put_part(data);
        let stats = self.stats.clone();
        Box::pin(async move {
            let r = stats.count(10, part.await);
            if r.is_ok() {
                stats.wrote(n);
            }
            r
        })
    }

    async fn complete(self: Box<Self>, cond: &Precondition) -> Result<PutOutcome> {
        let stats = self.stats.clone();
        stats.count(11, self.inner.complete(cond).await)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let stats = self.stats.clone();
        stats.count(12, self.inner.abort().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;

    #[tokio::test]
    async fn counts_calls_errors_and_bytes() {
        let (b, stats) = Metered::wrap(Arc::new(MemoryBackend::new()));
        b.put(
            "k",
            Bytes::from_static(b"hello"),
            &PutMeta::default(),
            &Precondition::None,
        )
        .await
        .unwrap();
        b.get_range("k", 0..5, None).await.unwrap();
        assert!(b.head("missing").await.is_err());
        assert!(
            b.put(
                "k",
                Bytes::new(),
                &PutMeta::default(),
                &Precondition::IfNotExists
            )
            .await
            .is_err()
        );
        let calls: std::collections::HashMap<_, _> = stats.calls().into_iter().collect();
        assert_eq!((calls["put"], calls["get"], calls["head"]), (2, 1, 1));
        assert_eq!(stats.errors(), vec![("already_exists", 1)]);
        assert_eq!(stats.bytes_read(), 5);
    }
}
