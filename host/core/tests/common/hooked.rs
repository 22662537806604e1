//! A memory store with hooks for the reliability tests: a DELETE that waits to be let go (to
//! act inside a rename's copy-then-delete window; on an HNS store the native rename waits) and uploads whose reply is lost after they
//! landed (a commit retried after a timeout).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;

use blobmount_backend::checksum::{ChecksumKind, StoredSum};
use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{
    AppendBase, Backend, BackendError, Capabilities, ListPage, ObjectInfo, PartUpload,
    Precondition, PutMeta, PutOutcome, Result,
};
use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};

/// What a lost reply looks like to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The retry was refused by its own condition (412 / 409).
    Conflict,
    /// No reply at all (a timeout).
    Timeout,
}

#[derive(Debug)]
pub struct Hooked {
    pub inner: Arc<MemoryBackend>,
    /// DELETEs of keys containing this wait for a permit of `release` (after `entered`).
    pause_delete: std::sync::Mutex<Option<String>>,
    /// The next HEADs of keys containing this (as many as the count) wait likewise.
    pause_head: std::sync::Mutex<Option<(String, usize)>>,
    /// The answers of the next listings of prefixes containing this (as many as the
    /// count) wait likewise, after the store answered: a listing read before what follows.
    pause_list: std::sync::Mutex<Option<(String, usize)>>,
    /// The answers of the next uploads of files (`put_file`) to keys containing this wait
    /// likewise, after the store took them.
    pause_put: std::sync::Mutex<Option<(String, usize)>>,
    /// Listing calls made.
    pub lists: AtomicUsize,
    pub entered: Notify,
    pub release: Semaphore,
    /// The next this many uploads of files (`put_file`) land, then report `lost`.
    lose_replies: AtomicUsize,
    lost: std::sync::Mutex<Lost>,
}

impl Hooked {
    pub fn new(inner: Arc<MemoryBackend>) -> Arc<Self> {
        Arc::new(Hooked {
            inner,
            pause_delete: Default::default(),
            pause_head: Default::default(),
            pause_list: Default::default(),
            pause_put: Default::default(),
            lists: AtomicUsize::new(0),
            entered: Notify::new(),
            release: Semaphore::new(0),
            lose_replies: AtomicUsize::new(0),
            lost: std::sync::Mutex::new(Lost::Conflict),
        })
    }

    /// Make DELETEs of keys containing `pat` wait for [`Hooked::release`] permits.
    pub fn pause_deletes_of(&self, pat: &str) {
        *self.pause_delete.lock().unwrap() = Some(pat.to_string());
    }

    /// Make the answers to the next `n` HEADs of keys containing `pat` wait for
    /// [`Hooked::release`] permits (after `entered`): a `stat` whose answer arrives late.
    pub fn pause_heads_of(&self, pat: &str, n: usize) {
        *self.pause_head.lock().unwrap() = Some((pat.to_string(), n));
    }

    /// Make the answers to the next `n` listings of prefixes containing `pat` wait for
    /// [`Hooked::release`] permits (after `entered`), once the store has answered.
    pub fn pause_lists_of(&self, pat: &str, n: usize) {
        *self.pause_list.lock().unwrap() = Some((pat.to_string(), n));
    }

    /// Make the answers to the next `n` file uploads to keys containing `pat` wait for
    /// [`Hooked::release`] permits (after `entered`), once the store has the object.
    pub fn pause_puts_of(&self, pat: &str, n: usize) {
        *self.pause_put.lock().unwrap() = Some((pat.to_string(), n));
    }

    /// Whether a call on `key` is one of those `slot` pauses (and one fewer are left).
    fn take_pause(slot: &std::sync::Mutex<Option<(String, usize)>>, key: &str) -> bool {
        let mut p = slot.lock().unwrap();
        match p.as_mut() {
            Some((pat, n)) if *n > 0 && key.contains(pat.as_str()) => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    async fn wait_if_paused(&self) {
        self.entered.notify_one();
        let permit = self.release.acquire().await.expect("semaphore");
        permit.forget();
    }

    /// The next `n` uploads land but their reply is lost as `how`.
    pub fn lose_replies(&self, n: usize, how: Lost) {
        *self.lost.lock().unwrap() = how;
        self.lose_replies.store(n, SeqCst);
    }

    fn reply(&self, key: &str, r: Result<PutOutcome>) -> Result<PutOutcome> {
        if r.is_ok()
            && self
                .lose_replies
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(match *self.lost.lock().unwrap() {
                Lost::Conflict => BackendError::PreconditionFailed { key: key.into() },
                Lost::Timeout => BackendError::Unavailable("reply lost (test)".into()),
            });
        }
        r
    }
}

#[async_trait::async_trait]
impl Backend for Hooked {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let pause = Self::take_pause(&self.pause_head, key);
        // The store answers at once; the answer arrives late.
        let answer = self.inner.head(key).await;
        if pause {
            self.wait_if_paused().await;
        }
        answer
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
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
        // Only uploads of files lose replies (a marker's or symlink's PUT does not).
        self.inner.put(key, data, meta, cond).await
    }
    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let pause = Self::take_pause(&self.pause_put, key);
        let r = self.inner.put_file(key, path, meta, cond).await;
        if pause {
            self.wait_if_paused().await;
        }
        self.reply(key, r)
    }
    async fn put_appended(
        &self,
        key: &str,
        base: &AppendBase,
        path: &std::path::Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>> {
        self.inner.put_appended(key, base, path, meta, cond).await
    }
    async fn list_page(&self, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage> {
        self.lists.fetch_add(1, SeqCst);
        let r = self.inner.list_page(prefix, token, max).await;
        if Self::take_pause(&self.pause_list, prefix) {
            self.wait_if_paused().await;
        }
        r
    }
    async fn delete(&self, key: &str) -> Result<()> {
        let pause = self
            .pause_delete
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|p| key.contains(p.as_str()));
        if pause {
            self.wait_if_paused().await;
        }
        self.inner.delete(key).await
    }
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
        self.inner.content_checksum(key, etag, kind).await
    }
    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        self.inner.set_metadata(key, meta, if_match).await
    }
    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        self.inner.clone().start_upload(key, meta, cond).await
    }
    async fn rename(
        &self,
        from: &str,
        to: &str,
        cond: &blobmount_backend::RenameCond,
    ) -> Result<PutOutcome> {
        // A native rename (HNS) stands for the copy-then-delete window: it waits like the
        // DELETEs of what it moves.
        let pause = self
            .pause_delete
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|p| format!("{from}/").contains(p.as_str()));
        if pause {
            self.wait_if_paused().await;
        }
        self.inner.rename(from, to, cond).await
    }
    async fn create_dir(&self, key: &str, mode: Option<u16>) -> Result<()> {
        self.inner.create_dir(key, mode).await
    }
    async fn delete_dir(&self, key: &str, recursive: bool) -> Result<()> {
        self.inner.delete_dir(key, recursive).await
    }
    async fn get_access(&self, key: &str) -> Result<blobmount_backend::PathAccess> {
        self.inner.get_access(key).await
    }
    async fn set_access(
        &self,
        key: &str,
        u: &blobmount_backend::AccessUpdate,
    ) -> Result<Option<String>> {
        self.inner.set_access(key, u).await
    }
}
