//! The `file-cache` read path: whole objects downloaded to the local cache directory on
//! first open, then read from local disk; LRU eviction by a size cap and a free-disk floor.
//!
//! Why: training jobs read the same files every epoch and random-access formats (zip,
//! parquet footers, HDF5) jump around; both want local-disk latency after the first pass.
//! Downloads run in the background in parallel chunks, pinned to the ETag seen at open
//! (If-Match), so a version is either cached whole or not at all; a reader waits only for
//! the chunks it needs (they jump the queue). An entry is reused only for the same ETag,
//! so the normal attribute revalidation at open decides whether the copy is current.
//! Objects that do not fit (bigger than the cap, or every cached file in use) are read
//! through the block cache instead. The directory is private (0700) and emptied at start:
//! a cached copy is only trusted while this process knows which version it holds.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use blobmount_backend::checksum::{ChecksumKind, RunningSum, StoredSum};
use blobmount_backend::{Backend, BackendError};
use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, error, warn};

use crate::blockpool::Source;
use crate::readahead::Stream;
use crate::readpath::ReadPath;

/// Settings of the file cache.
#[derive(Clone, Debug)]
pub struct FileCacheConfig {
    /// Where cached objects live (emptied at start, mode 0700).
    pub dir: PathBuf,
    /// Most bytes of cached objects kept on disk.
    pub max_bytes: u64,
    /// Cached objects are evicted (or new ones not admitted) to keep this much disk free.
    pub min_free_bytes: u64,
    /// Size of one ranged GET of a download.
    pub chunk: u64,
    /// Ranged GETs in flight per object being downloaded.
    pub parallel: usize,
    /// A handle whose first read is not at offset 0 (a range read: a footer, an index, a
    /// sample) starts the whole download too; when false it reads just its ranges through
    /// the block cache and only a read from the start downloads.
    pub range_reads: bool,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct FileCacheStats {
    /// Opens that found the object (same ETag) cached or being downloaded.
    pub hits: AtomicU64,
    /// Opens that started a download.
    pub misses: AtomicU64,
    /// Opens of objects that could not be admitted (read through the block cache).
    pub bypassed: AtomicU64,
    /// Handles that read ranges of an uncached object without downloading it
    /// (`range_reads: false` and a first read not at offset 0).
    pub range_reads: AtomicU64,
    pub evictions: AtomicU64,
    pub downloaded_bytes: AtomicU64,
    /// Downloads whose bytes matched the MD5 the store reports.
    pub verified: AtomicU64,
    /// Downloads whose bytes did not match the checksum the store reported.
    pub checksum_failures: AtomicU64,
    /// Opens answered with kernel passthrough to the cached copy (`passthrough.rs`).
    pub passthrough_opens: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Missing,
    InFlight,
    Done,
}

#[derive(Debug)]
struct Progress {
    chunks: Vec<Chunk>,
    /// Chunks a reader is waiting for (fetched before the rest).
    wanted: VecDeque<usize>,
    /// Lowest chunk that may still be missing.
    cursor: usize,
    done: usize,
    /// The checksum check after the last chunk has run (or there was nothing to check).
    checked: bool,
    failed: Option<BackendError>,
}

/// One object version in the cache.
#[derive(Debug)]
pub struct Cached {
    key: String,
    etag: String,
    size: u64,
    path: PathBuf,
    file: std::fs::File,
    chunk: u64,
    state: Mutex<Progress>,
    tx: watch::Sender<u64>,
    last_used: AtomicU64,
    downloaded: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cached {
    fn range(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * self.chunk;
        (start, (start + self.chunk).min(self.size))
    }

    /// The next chunk to fetch (marked in flight), readers' wishes first.
    fn next_chunk(&self) -> Option<usize> {
        let mut p = lock(&self.state);
        if p.failed.is_some() {
            return None;
        }
        while let Some(i) = p.wanted.pop_front() {
            if p.chunks[i] == Chunk::Missing {
                p.chunks[i] = Chunk::InFlight;
                return Some(i);
            }
        }
        while p.cursor < p.chunks.len() {
            let i = p.cursor;
            p.cursor += 1;
            if p.chunks[i] == Chunk::Missing {
                p.chunks[i] = Chunk::InFlight;
                return Some(i);
            }
        }
        None
    }

    /// Mark chunk `i` fetched; true when it was the last one.
    fn finish(&self, i: usize, bytes: u64) -> bool {
        let last = {
            let mut p = lock(&self.state);
            p.chunks[i] = Chunk::Done;
            p.done += 1;
            p.done == p.chunks.len()
        };
        self.downloaded.fetch_add(bytes, Ordering::Relaxed);
        self.tx.send_modify(|v| *v += 1);
        last
    }

    fn fail(&self, e: BackendError) {
        lock(&self.state).failed.get_or_insert(e);
        self.tx.send_modify(|v| *v += 1);
    }

    fn failed(&self) -> bool {
        lock(&self.state).failed.is_some()
    }

    /// True once every byte is on local disk and verified where the store gave a checksum.
    pub fn complete(&self) -> bool {
        let p = lock(&self.state);
        p.failed.is_none() && p.checked
    }

    fn set_checked(&self) {
        lock(&self.state).checked = true;
        self.tx.send_modify(|v| *v += 1);
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The local copy (kernel passthrough reads it directly once it is complete).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Bytes on local disk so far.
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Wait until chunk `i` is on disk.
    async fn wait_chunk(&self, i: usize) -> Result<(), BackendError> {
        let mut rx = self.tx.subscribe();
        loop {
            {
                let mut p = lock(&self.state);
                if let Some(e) = &p.failed {
                    return Err(e.clone());
                }
                match p.chunks[i] {
                    Chunk::Done => return Ok(()),
                    Chunk::Missing if !p.wanted.contains(&i) => p.wanted.push_back(i),
                    Chunk::Missing | Chunk::InFlight => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(BackendError::Other("file cache download stopped".into()));
            }
        }
    }

    /// Wait until the whole object is on disk (or its download failed).
    pub async fn wait_complete(&self) -> Result<(), BackendError> {
        self.wait_complete_with(|_| {}).await
    }

    /// Like [`Cached::wait_complete`], telling `progress` the bytes downloaded as they grow.
    pub async fn wait_complete_with(
        &self,
        mut progress: impl FnMut(u64),
    ) -> Result<(), BackendError> {
        let mut rx = self.tx.subscribe();
        loop {
            progress(self.downloaded());
            {
                let p = lock(&self.state);
                if let Some(e) = &p.failed {
                    return Err(e.clone());
                }
                if p.checked {
                    return Ok(());
                }
            }
            if rx.changed().await.is_err() {
                return Err(BackendError::Other("file cache download stopped".into()));
            }
        }
    }

    async fn read(&self, offset: u64, len: u64) -> Result<Bytes, BackendError> {
        let end = (offset + len).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        for i in (offset / self.chunk) as usize..=((end - 1) / self.chunk) as usize {
            self.wait_chunk(i).await?;
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            BackendError::LocalIo(format!("file cache {}: {e}", self.path.display()))
        })?;
        Ok(Bytes::from(buf))
    }
}

#[derive(Debug, Default)]
struct Index {
    objects: HashMap<String, Arc<Cached>>,
    used: u64,
    clock: u64,
}

/// The disk cache of whole objects, shared by all handles.
#[derive(Debug)]
pub struct FileCache {
    cfg: FileCacheConfig,
    index: Mutex<Index>,
    seq: AtomicU64,
    pub stats: FileCacheStats,
}

impl FileCache {
    /// Prepare the cache directory: emptied (copies from an earlier run are not trusted)
    /// and private.
    pub fn new(cfg: FileCacheConfig) -> std::io::Result<Arc<Self>> {
        match std::fs::remove_dir_all(&cfg.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&cfg.dir)?;
        std::fs::set_permissions(
            &cfg.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        Ok(Arc::new(FileCache {
            cfg,
            index: Mutex::new(Index::default()),
            seq: AtomicU64::new(0),
            stats: FileCacheStats::default(),
        }))
    }

    pub fn config(&self) -> &FileCacheConfig {
        &self.cfg
    }

    /// Bytes of objects admitted to the cache (on disk or being downloaded).
    pub fn used_bytes(&self) -> u64 {
        lock(&self.index).used
    }

    /// Objects in the cache.
    pub fn len(&self) -> usize {
        lock(&self.index).objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached (or downloading) copy of this version of the object, if there is one.
    pub fn cached(&self, key: &str, etag: Option<&str>) -> Option<Arc<Cached>> {
        self.hit(&mut lock(&self.index), key, etag?)
    }

    /// Advance the LRU clock; the entry of `key` if it holds version `etag` (marked used
    /// now and counted as a hit).
    fn hit(&self, ix: &mut Index, key: &str, etag: &str) -> Option<Arc<Cached>> {
        ix.clock += 1;
        let c = ix.objects.get(key)?;
        if c.etag != etag || c.failed() {
            return None;
        }
        c.last_used.store(ix.clock, Ordering::Relaxed);
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(c.clone())
    }

    /// The cached copy of this version of the object, starting its download if it is not
    /// cached yet; `None` if it cannot be cached (no ETag to validate it by, too big, or no
    /// room that eviction can make).
    pub fn get(
        self: &Arc<Self>,
        backend: &Arc<dyn Backend>,
        key: &str,
        etag: Option<&str>,
        size: u64,
    ) -> Option<Arc<Cached>> {
        let etag = etag?;
        let mut ix = lock(&self.index);
        if let Some(c) = self.hit(&mut ix, key, etag) {
            return Some(c);
        }
        let now = ix.clock;
        if ix.objects.contains_key(key) {
            // Another version (or a failed download): its copy is useless now.
            self.remove(&mut ix, key);
        }
        if size > self.cfg.max_bytes || !self.make_room(&mut ix, size) {
            self.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            debug!(
                key,
                size, "file cache full: reading through the block cache"
            );
            return None;
        }
        let path = self
            .cfg
            .dir
            .join(format!("{:016x}", self.seq.fetch_add(1, Ordering::Relaxed)));
        let file = match std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|f| f.set_len(size).map(|()| f))
        {
            Ok(f) => f,
            Err(e) => {
                warn!(key, path = %path.display(), error = %e, "cannot create a file-cache file; reading through the block cache");
                self.stats.bypassed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let chunk = self.cfg.chunk.max(64 * 1024);
        let n = size.div_ceil(chunk) as usize;
        let c = Arc::new(Cached {
            key: key.to_string(),
            etag: etag.to_string(),
            size,
            path,
            file,
            chunk,
            state: Mutex::new(Progress {
                chunks: vec![Chunk::Missing; n],
                wanted: VecDeque::new(),
                cursor: 0,
                done: 0,
                checked: false,
                failed: None,
            }),
            tx: watch::channel(0).0,
            last_used: AtomicU64::new(now),
            downloaded: AtomicU64::new(0),
        });
        ix.objects.insert(key.to_string(), c.clone());
        ix.used += size;
        drop(ix);
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            // Nothing to download or check.
            c.set_checked();
        }
        for _ in 0..self.cfg.parallel.clamp(1, n.max(1)) {
            let (cache, backend, c) = (self.clone(), backend.clone(), c.clone());
            tokio::spawn(async move { cache.download(backend, c).await });
        }
        Some(c)
    }

    /// One download worker: fetches chunks until none is left.
    async fn download(&self, backend: Arc<dyn Backend>, c: Arc<Cached>) {
        while let Some(i) = c.next_chunk() {
            let (start, end) = c.range(i);
            match backend.get_range(&c.key, start..end, Some(&c.etag)).await {
                Ok(data) if data.len() as u64 == end - start => {
                    let written = crate::blocking::run(|| c.file.write_all_at(&data, start));
                    if let Err(e) = written {
                        warn!(key = c.key, error = %e, "file cache write failed");
                        c.fail(BackendError::LocalIo(format!("file cache: {e}")));
                        return;
                    }
                    self.stats
                        .downloaded_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if c.finish(i, data.len() as u64) {
                        self.verify(&backend, &c).await;
                    }
                }
                Ok(_) => {
                    // Shorter than the size seen at open: the object changed.
                    c.fail(BackendError::PreconditionFailed { key: c.key.clone() });
                    return;
                }
                Err(e) => {
                    debug!(key = c.key, error = %e, "file cache download failed");
                    c.fail(e);
                    return;
                }
            }
        }
    }

    /// After the last chunk: compare the checksum of the local copy with the one the store
    /// reports, if it reports one, of the kind it prefers (CRC32C on GCS, MD5 elsewhere). A
    /// mismatch fails the entry (readers get EIO, the next open downloads again) and is
    /// logged and counted.
    async fn verify(&self, backend: &Arc<dyn Backend>, c: &Arc<Cached>) {
        let kind = backend.checksum_kind();
        let want = match backend.content_checksum(&c.key, &c.etag, kind).await {
            Ok(w) => w,
            Err(e @ BackendError::PreconditionFailed { .. }) => {
                c.fail(e);
                return;
            }
            Err(e) => {
                debug!(key = c.key, error = %e, "file cache: no checksum to verify against");
                None
            }
        };
        // Only a checksum of the kind asked for can be compared.
        let want = want.filter(|w| w.kind() == kind);
        if want.is_none() {
            debug!(
                key = c.key,
                kind = kind.name(),
                "file cache: the store reports no checksum of this kind; copy not verified"
            );
        }
        if let Some(want) = want {
            let f = c.clone();
            let got = tokio::task::spawn_blocking(move || sum_of(&f.file, f.size, kind)).await;
            match got {
                Ok(Ok(got)) if got == want => {
                    self.stats.verified.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        key = c.key,
                        kind = kind.name(),
                        "file cache: copy matches the store's checksum"
                    );
                }
                Ok(Ok(got)) => {
                    self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                    error!(
                        key = c.key,
                        stored = %want,
                        read = %got,
                        "file cache: downloaded bytes do not match the {} the store reports; copy discarded",
                        kind.name()
                    );
                    c.fail(BackendError::ChecksumMismatch { key: c.key.clone() });
                    return;
                }
                Ok(Err(e)) => {
                    c.fail(BackendError::LocalIo(format!("file cache: {e}")));
                    return;
                }
                Err(e) => {
                    c.fail(BackendError::Other(format!(
                        "file cache checksum task: {e}"
                    )));
                    return;
                }
            }
        }
        c.set_checked();
    }

    /// Evict least recently used objects nobody is reading until `size` more bytes fit
    /// under the cap and above the free-disk floor. False if that is not possible.
    fn make_room(&self, ix: &mut Index, size: u64) -> bool {
        loop {
            let pending: u64 = ix
                .objects
                .values()
                .map(|c| c.size - c.downloaded().min(c.size))
                .sum();
            let free = free_disk(&self.cfg.dir).unwrap_or(u64::MAX);
            let disk_ok =
                free.saturating_sub(pending) >= self.cfg.min_free_bytes.saturating_add(size);
            if ix.used + size <= self.cfg.max_bytes && disk_ok {
                return true;
            }
            let victim = ix
                .objects
                .iter()
                .filter(|(_, c)| Arc::strong_count(c) == 1)
                .min_by_key(|(_, c)| c.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    self.remove(ix, &k);
                    self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => return false,
            }
        }
    }

    /// Drop the copy of `key`, whatever its version (`Fs::refresh`: another client changed
    /// it). Readers holding it keep reading through their open descriptor.
    pub fn forget(&self, key: &str) {
        self.remove(&mut lock(&self.index), key);
    }

    fn remove(&self, ix: &mut Index, key: &str) {
        if let Some(c) = ix.objects.remove(key) {
            ix.used = ix.used.saturating_sub(c.size);
            // Readers still holding it keep reading through their open descriptor.
            if let Err(e) = std::fs::remove_file(&c.path) {
                debug!(path = %c.path.display(), error = %e, "file cache: remove failed");
            }
        }
    }
}

/// The checksum of kind `kind` of the first `size` bytes of `f`.
fn sum_of(f: &std::fs::File, size: u64, kind: ChecksumKind) -> std::io::Result<StoredSum> {
    let mut h = RunningSum::new(kind);
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = f.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finish())
}

/// Free bytes on the file system holding `dir`.
fn free_disk(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Per-handle state of the file-cache path.
pub(crate) struct FileCacheReader {
    cache: Arc<FileCache>,
    entry: Option<Arc<Cached>>,
    /// Set once admission was refused for this version (reads stream instead).
    bypass: Option<String>,
    fallback: Stream,
}

impl FileCacheReader {
    pub(crate) fn new(cache: Arc<FileCache>, fallback: Stream) -> Self {
        FileCacheReader {
            cache,
            entry: None,
            bypass: None,
            fallback,
        }
    }

    /// Find or start the cached copy of the version `src` reads. `first_read` is the offset
    /// of the read asking (`None` at open): with `range_reads` off, an uncached object is
    /// downloaded only for a read from the start, and a handle that starts elsewhere reads
    /// its ranges through the block cache.
    fn attach(&mut self, src: &Source<'_>, first_read: Option<u64>) {
        let current = match (&self.entry, src.etag) {
            (Some(c), Some(e)) => c.etag == e,
            _ => false,
        };
        if current || (src.etag.is_some() && self.bypass.as_deref() == src.etag) {
            return;
        }
        if !self.cache.cfg.range_reads {
            if let Some(c) = self.cache.cached(src.key, src.etag) {
                self.entry = Some(c);
                self.bypass = None;
                return;
            }
            match first_read {
                None => return,
                Some(0) => {}
                Some(_) => {
                    self.entry = None;
                    self.bypass = src.etag.map(str::to_string);
                    self.cache.stats.range_reads.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        self.entry = self.cache.get(src.backend, src.key, src.etag, src.size);
        self.bypass = match self.entry {
            Some(_) => None,
            None => src.etag.map(str::to_string),
        };
    }
}

#[async_trait]
impl ReadPath for FileCacheReader {
    async fn opened(&mut self, src: &Source<'_>) {
        self.attach(src, None);
    }

    fn complete_copy(&self) -> Option<Arc<Cached>> {
        self.entry.clone().filter(|c| c.complete())
    }

    async fn read(
        &mut self,
        src: &Source<'_>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, BackendError> {
        self.attach(src, Some(offset));
        match &self.entry {
            Some(c) => {
                let r = c.read(offset, len).await;
                if r.is_err() {
                    // A failed download is dropped from the cache at the next open.
                    self.entry = None;
                }
                r
            }
            None => self.fallback.read_at(src, offset, len).await,
        }
    }
}
