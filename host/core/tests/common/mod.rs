//! Test doubles shared by the core's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use blobmount_backend::checksum::{ChecksumKind, StoredSum};
use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, Precondition, PutMeta};
use blobmount_core::{Fs, FsConfig};
use bytes::Bytes;

/// A backend that counts the requests the core makes (and can slow GETs down).
#[derive(Debug, Default)]
pub struct Counting {
    pub inner: Arc<MemoryBackend>,
    pub heads: AtomicUsize,
    pub lists: AtomicUsize,
    pub gets: AtomicUsize,
    pub get_bytes: AtomicU64,
    /// Whole-object writes (`put`, `put_file`, `put_appended`, started part uploads).
    pub puts: AtomicUsize,
    pub copies: AtomicUsize,
    pub deletes: AtomicUsize,
    pub set_metas: AtomicUsize,
    /// HNS calls: native renames, directory creations/deletions, access reads/changes.
    pub renames: AtomicUsize,
    pub dirops: AtomicUsize,
    pub accesses: AtomicUsize,
    /// Milliseconds each GET waits before answering.
    pub get_delay_ms: AtomicU64,
    /// Milliseconds each HEAD waits before answering (a stalled store).
    pub head_delay_ms: AtomicU64,
    /// Report a wrong checksum (of the kind asked for) for every object (a corrupted
    /// download, as seen by the reader).
    pub bad_md5: AtomicBool,
    /// The kinds of checksum the core asked the store for, in order.
    pub sums_asked: std::sync::Mutex<Vec<ChecksumKind>>,
}

impl Counting {
    pub fn new(inner: Arc<MemoryBackend>) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            ..Default::default()
        })
    }

    /// `(HEADs, listings)` so far.
    pub fn calls(&self) -> (usize, usize) {
        (self.heads.load(SeqCst), self.lists.load(SeqCst))
    }

    /// Every request so far, by kind.
    pub fn kinds(&self) -> Kinds {
        Kinds {
            head: self.heads.load(SeqCst),
            list: self.lists.load(SeqCst),
            get: self.gets.load(SeqCst),
            put: self.puts.load(SeqCst),
            copy: self.copies.load(SeqCst),
            delete: self.deletes.load(SeqCst),
            set_meta: self.set_metas.load(SeqCst),
            rename: self.renames.load(SeqCst),
            dirop: self.dirops.load(SeqCst),
            access: self.accesses.load(SeqCst),
        }
    }

    /// `(GETs, bytes fetched)` so far.
    pub fn gets(&self) -> (usize, u64) {
        (self.gets.load(SeqCst), self.get_bytes.load(SeqCst))
    }
}

/// Requests by kind (see [`Counting::kinds`]); subtract two to get what happened between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinds {
    pub head: usize,
    pub list: usize,
    pub get: usize,
    pub put: usize,
    pub copy: usize,
    pub delete: usize,
    pub set_meta: usize,
    pub rename: usize,
    pub dirop: usize,
    pub access: usize,
}

impl Kinds {
    pub fn total(&self) -> usize {
        self.head
            + self.list
            + self.get
            + self.put
            + self.copy
            + self.delete
            + self.set_meta
            + self.rename
            + self.dirop
            + self.access
    }
}

impl std::ops::Sub for Kinds {
    type Output = Kinds;
    fn sub(self, o: Kinds) -> Kinds {
        Kinds {
            head: self.head - o.head,
            list: self.list - o.list,
            get: self.get - o.get,
            put: self.put - o.put,
            copy: self.copy - o.copy,
            delete: self.delete - o.delete,
            set_meta: self.set_meta - o.set_meta,
            rename: self.rename - o.rename,
            dirop: self.dirop - o.dirop,
            access: self.access - o.access,
        }
    }
}

#[async_trait::async_trait]
impl Backend for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> blobmount_backend::Capabilities {
        self.inner.capabilities()
    }
    async fn head(&self, key: &str) -> blobmount_backend::Result<blobmount_backend::ObjectInfo> {
        self.heads.fetch_add(1, SeqCst);
        let delay = self.head_delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        self.inner.head(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        if_match: Option<&str>,
    ) -> blobmount_backend::Result<Bytes> {
        let delay = self.get_delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        self.gets.fetch_add(1, SeqCst);
        let r = self.inner.get_range(key, range, if_match).await;
        if let Ok(b) = &r {
            self.get_bytes.fetch_add(b.len() as u64, SeqCst);
        }
        r
    }
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> blobmount_backend::Result<blobmount_backend::PutOutcome> {
        self.puts.fetch_add(1, SeqCst);
        self.inner.put(key, data, meta, cond).await
    }
    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> blobmount_backend::Result<blobmount_backend::PutOutcome> {
        self.puts.fetch_add(1, SeqCst);
        self.inner.put_file(key, path, meta, cond).await
    }
    async fn put_appended(
        &self,
        key: &str,
        base: &blobmount_backend::AppendBase,
        path: &std::path::Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> blobmount_backend::Result<Option<blobmount_backend::PutOutcome>> {
        self.puts.fetch_add(1, SeqCst);
        self.inner.put_appended(key, base, path, meta, cond).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        max: usize,
    ) -> blobmount_backend::Result<blobmount_backend::ListPage> {
        self.lists.fetch_add(1, SeqCst);
        self.inner.list_page(prefix, token, max).await
    }
    async fn delete(&self, key: &str) -> blobmount_backend::Result<()> {
        self.deletes.fetch_add(1, SeqCst);
        self.inner.delete(key).await
    }
    async fn copy(
        &self,
        from: &str,
        to: &str,
        cond: &Precondition,
    ) -> blobmount_backend::Result<blobmount_backend::PutOutcome> {
        self.copies.fetch_add(1, SeqCst);
        self.inner.copy(from, to, cond).await
    }
    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        cond: &Precondition,
    ) -> blobmount_backend::Result<blobmount_backend::PutOutcome> {
        self.copies.fetch_add(1, SeqCst);
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
    ) -> blobmount_backend::Result<blobmount_backend::PutOutcome> {
        self.copies.fetch_add(1, SeqCst);
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
    ) -> blobmount_backend::Result<Option<StoredSum>> {
        self.sums_asked.lock().unwrap().push(kind);
        if self.bad_md5.load(SeqCst) {
            return Ok(Some(match kind {
                ChecksumKind::Md5 => StoredSum::Md5([0xee; 16]),
                ChecksumKind::Crc32c => StoredSum::Crc32c(0xeeee_eeee),
            }));
        }
        self.inner.content_checksum(key, etag, kind).await
    }
    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> blobmount_backend::Result<blobmount_backend::PutOutcome> {
        self.set_metas.fetch_add(1, SeqCst);
        self.inner.set_metadata(key, meta, if_match).await
    }
    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> blobmount_backend::Result<Option<Box<dyn blobmount_backend::PartUpload>>> {
        self.puts.fetch_add(1, SeqCst);
        self.inner.clone().start_upload(key, meta, cond).await
    }
    async fn rename(
        &self,
        from: &str,
        to: &str,
        cond: &blobmount_backend::RenameCond,
    ) -> blobmount_backend::Result<blobmount_backend::PutOutcome> {
        self.renames.fetch_add(1, SeqCst);
        self.inner.rename(from, to, cond).await
    }
    async fn create_dir(&self, key: &str, mode: Option<u16>) -> blobmount_backend::Result<()> {
        self.dirops.fetch_add(1, SeqCst);
        self.inner.create_dir(key, mode).await
    }
    async fn delete_dir(&self, key: &str, recursive: bool) -> blobmount_backend::Result<()> {
        self.dirops.fetch_add(1, SeqCst);
        self.inner.delete_dir(key, recursive).await
    }
    async fn get_access(
        &self,
        key: &str,
    ) -> blobmount_backend::Result<blobmount_backend::PathAccess> {
        self.accesses.fetch_add(1, SeqCst);
        self.inner.get_access(key).await
    }
    async fn set_access(
        &self,
        key: &str,
        update: &blobmount_backend::AccessUpdate,
    ) -> blobmount_backend::Result<Option<String>> {
        self.accesses.fetch_add(1, SeqCst);
        self.inner.set_access(key, update).await
    }
}

/// A core over an in-memory store seen through a request counter, with its cache in a
/// temporary directory: the one setup of the core's tests.
pub struct TestFs {
    pub mem: Arc<MemoryBackend>,
    /// The requests the core made.
    pub c: Arc<Counting>,
    pub fs: Arc<Fs>,
    pub dir: tempfile::TempDir,
}

/// A [`TestFs`] over a new, empty store; `tweak` adjusts the test configuration.
pub fn test_fs(tweak: impl FnOnce(&mut FsConfig)) -> TestFs {
    test_fs_on(new_store(), tweak)
}

/// Whether this run's stores have a hierarchical namespace (see [`new_store`]).
pub fn hns_mode() -> bool {
    std::env::var("BLOBMOUNT_TEST_HNS").as_deref() == Ok("1")
}

/// The key of directory `dir`'s marker: `dir/` on a flat store, `dir` (an `hdi_isfolder`
/// blob) on an HNS one.
pub fn dir_marker(dir: &str) -> String {
    match hns_mode() {
        true => dir.to_string(),
        false => format!("{dir}/"),
    }
}

/// The keys of files among `keys`: without `dir/` markers, and without the keys that have
/// others below them (HNS directories).
pub fn file_keys(keys: Vec<String>) -> Vec<String> {
    keys.iter()
        .filter(|k| !k.ends_with('/'))
        .filter(|k| !keys.iter().any(|o| o.starts_with(&format!("{k}/"))))
        .cloned()
        .collect()
}

/// A new, empty in-memory store: flat, or with a hierarchical namespace (ADLS Gen2 HNS)
/// when `BLOBMOUNT_TEST_HNS=1`, to run a test body in both modes.
pub fn new_store() -> Arc<MemoryBackend> {
    match hns_mode() {
        true => Arc::new(MemoryBackend::new_hns()),
        false => Arc::new(MemoryBackend::new()),
    }
}

/// A [`TestFs`] over `mem` (another mount of the same store, or one filled beforehand).
pub fn test_fs_on(mem: Arc<MemoryBackend>, tweak: impl FnOnce(&mut FsConfig)) -> TestFs {
    let c = Counting::new(mem.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::for_tests(dir.path().to_path_buf());
    tweak(&mut cfg);
    let fs = Arc::new(Fs::new(c.clone(), cfg).unwrap());
    TestFs { mem, c, fs, dir }
}

/// Another client writes `data` at `key` (no metadata, unconditionally).
pub async fn put(b: &MemoryBackend, key: &str, data: &[u8]) {
    b.put(
        key,
        Bytes::copy_from_slice(data),
        &PutMeta::default(),
        &Precondition::None,
    )
    .await
    .unwrap();
}

/// Read a whole file in order in `chunk`-byte reads through one handle (released at the
/// end, also after an error).
pub async fn read_seq(fs: &Fs, ino: u64, chunk: u32) -> Result<Vec<u8>, blobmount_core::FsError> {
    let h = fs.open(ino, libc::O_RDONLY).await?;
    let mut out = Vec::new();
    let r = loop {
        match fs.read(h.fh, out.len() as u64, chunk).await {
            Ok(b) if b.is_empty() => break Ok(out),
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => break Err(e),
        }
    };
    fs.release(h.fh).await?;
    r
}

/// What the store holds at `key`, if anything.
pub async fn stored(b: &dyn Backend, key: &str) -> Option<Vec<u8>> {
    b.get_range(key, 0..u64::MAX, None)
        .await
        .ok()
        .map(|b| b.to_vec())
}

pub mod hooked;
pub mod sched;

/// The names an `ls` of directory `ino` shows (without `.` and `..`), through one opendir.
pub async fn names(fs: &Fs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino).await.unwrap();
    let v = fs
        .readdir(fh, 0)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.name)
        .filter(|n| n != "." && n != "..")
        .collect();
    fs.releasedir(fh);
    v
}
