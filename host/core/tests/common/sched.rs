//! A seeded scheduler for concurrency tests of the core: on a current-thread tokio runtime
//! (one thread, a FIFO run queue, no timers in play) the order in which tasks run is decided
//! only by where they yield. This store wrapper yields a seeded number of times before and
//! after every request, and the test tasks draw their own pauses from the same generator, so
//! one seed is one interleaving: different seeds explore different orders of requests, and
//! the same seed replays the same order exactly (checked through the request trace).
//!
//! Why not the multi-thread runtime alone: it finds races only by luck and cannot replay the
//! one it found. Everything on the request path must stay on the runtime's thread for this
//! to hold, so uploads of files read them with `std::fs` here (the memory store's own
//! `put_file` uses `tokio::fs`, whose blocking pool would reorder wake-ups).

use std::sync::{Arc, Mutex};

use blobmount_backend::checksum::{ChecksumKind, StoredSum};
use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{
    AppendBase, Backend, Capabilities, ListPage, ObjectInfo, PartUpload, Precondition, PutMeta,
    PutOutcome, Result,
};
use bytes::Bytes;
use futures::future::BoxFuture;

#[derive(Debug)]
struct State {
    rng: u64,
    trace: Vec<String>,
}

#[derive(Debug)]
pub struct Sched {
    pub inner: Arc<MemoryBackend>,
    state: Mutex<State>,
    /// At most this many yields at each scheduling point.
    max_yields: u64,
}

impl Sched {
    pub fn new(inner: Arc<MemoryBackend>, seed: u64, max_yields: u64) -> Arc<Self> {
        Arc::new(Sched {
            inner,
            state: Mutex::new(State {
                rng: seed ^ 0x9e37_79b9_7f4a_7c15,
                trace: Vec::new(),
            }),
            max_yields,
        })
    }

    /// The next number from the seeded generator (splitmix64), below `bound`.
    pub fn draw(&self, bound: u64) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.rng = s.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound.max(1)
    }

    /// A scheduling point: yield to the other tasks a seeded number of times.
    pub async fn jitter(&self) {
        for _ in 0..self.draw(self.max_yields + 1) {
            tokio::task::yield_now().await;
        }
    }

    /// Record an event in the trace (requests are recorded by the wrapper itself).
    pub fn note(&self, what: impl Into<String>) {
        self.state.lock().unwrap().trace.push(what.into());
    }

    pub fn trace(&self) -> Vec<String> {
        self.state.lock().unwrap().trace.clone()
    }

    /// Run one request between two scheduling points and record it with its outcome.
    async fn around<T, F>(&self, what: String, f: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.jitter().await;
        let r = f.await;
        self.note(match &r {
            Ok(_) => format!("{what} ok"),
            Err(e) => format!("{what} err {e}"),
        });
        self.jitter().await;
        r
    }
}

#[async_trait::async_trait]
impl Backend for Sched {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.around(format!("head {key}"), self.inner.head(key))
            .await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        let what = format!("get {key} {range:?}");
        self.around(what, self.inner.get_range(key, range, if_match))
            .await
    }
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let what = format!("put {key} {}", data.len());
        self.around(what, self.inner.put(key, data, meta, cond))
            .await
    }
    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        // std::fs, not the memory store's tokio::fs (see the module doc).
        let data = Bytes::from(std::fs::read(path)?);
        let what = format!("put_file {key} {}", data.len());
        self.around(what, self.inner.put(key, data, meta, cond))
            .await
    }
    async fn put_appended(
        &self,
        key: &str,
        base: &AppendBase,
        path: &std::path::Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>> {
        let what = format!("append {key} from {}", base.len);
        self.around(what, self.inner.put_appended(key, base, path, meta, cond))
            .await
    }
    async fn list_page(&self, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage> {
        let what = format!("list {prefix}");
        self.around(what, self.inner.list_page(prefix, token, max))
            .await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.around(format!("delete {key}"), self.inner.delete(key))
            .await
    }
    async fn copy(&self, from: &str, to: &str, cond: &Precondition) -> Result<PutOutcome> {
        let what = format!("copy {from} {to}");
        self.around(what, self.inner.copy(from, to, cond)).await
    }
    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let what = format!("copy {from} {to}");
        self.around(what, self.inner.copy_typed(from, to, content_type, cond))
            .await
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
        let what = format!("copy {from} {to}");
        let inner = self
            .inner
            .copy_as(from, to, meta, source_etag, stored_type, cond);
        self.around(what, inner).await
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
        let inner = self.inner.content_checksum(key, etag, kind);
        self.around(format!("md5 {key}"), inner).await
    }
    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        let what = format!("set_metadata {key}");
        self.around(what, self.inner.set_metadata(key, meta, if_match))
            .await
    }
    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        let what = format!("start_upload {key}");
        let up = self
            .around(what, self.inner.clone().start_upload(key, meta, cond))
            .await?;
        Ok(up.map(|inner| {
            Box::new(SchedUpload {
                sched: self.clone(),
                key: key.to_string(),
                inner,
            }) as Box<dyn PartUpload>
        }))
    }
    async fn rename(
        &self,
        from: &str,
        to: &str,
        cond: &blobmount_backend::RenameCond,
    ) -> Result<PutOutcome> {
        self.around(
            format!("rename {from} {to}"),
            self.inner.rename(from, to, cond),
        )
        .await
    }
    async fn create_dir(&self, key: &str, mode: Option<u16>) -> Result<()> {
        self.around(
            format!("create_dir {key}"),
            self.inner.create_dir(key, mode),
        )
        .await
    }
    async fn delete_dir(&self, key: &str, recursive: bool) -> Result<()> {
        self.around(
            format!("delete_dir {key}"),
            self.inner.delete_dir(key, recursive),
        )
        .await
    }
    async fn get_access(&self, key: &str) -> Result<blobmount_backend::PathAccess> {
        self.around(format!("get_access {key}"), self.inner.get_access(key))
            .await
    }
    async fn set_access(
        &self,
        key: &str,
        u: &blobmount_backend::AccessUpdate,
    ) -> Result<Option<String>> {
        self.around(format!("set_access {key}"), self.inner.set_access(key, u))
            .await
    }
}

/// A multipart upload whose parts and commit are scheduling points too.
#[derive(Debug)]
struct SchedUpload {
    sched: Arc<Sched>,
    key: String,
    inner: Box<dyn PartUpload>,
}

#[async_trait::async_trait]
impl PartUpload for SchedUpload {
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'static, Result<()>> {
        let what = format!("part {} {}", self.key, data.len());
        let part = self.inner.put_part(data);
        let sched = self.sched.clone();
        Box::pin(async move { sched.around(what, part).await })
    }
    async fn complete(self: Box<Self>, cond: &Precondition) -> Result<PutOutcome> {
        let what = format!("complete {}", self.key);
        let SchedUpload { sched, inner, .. } = *self;
        sched.around(what, inner.complete(cond)).await
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        let what = format!("abort {}", self.key);
        let SchedUpload { sched, inner, .. } = *self;
        sched.around(what, inner.abort()).await
    }
}
