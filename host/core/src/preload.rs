//! Preload: walk a directory of the mount and download its files into the file cache
//! (`file-cache` mode) or load its metadata into the caches (other modes), in parallel,
//! while the mount keeps serving.
//!
//! Why: the first epoch of a training job should not pay the store's latency file by
//! file. Progress is kept in atomic counters ([`PreloadProgress`]) so the daemon can draw
//! a progress bar, log it, or export it as metrics without the walk knowing which.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use tracing::{debug, warn};

use crate::attr::Kind;
use crate::error::{FsError, FsResult};
use crate::fs::{Fs, lock};
use crate::inode::ROOT_INO;

/// Counters of a running (or finished) preload.
#[derive(Debug, Default)]
pub struct PreloadProgress {
    pub dirs: AtomicU64,
    /// Files found so far (grows while directories are being listed).
    pub files_found: AtomicU64,
    pub bytes_found: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    /// Files not cached: bigger than the cache, or no room that eviction could make.
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
    /// Every directory has been listed (the totals are final); set by the caller.
    pub listed: AtomicBool,
    /// Set by the caller once every preload it started has returned.
    pub finished: AtomicBool,
}

impl PreloadProgress {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// `(files_done, files_found, bytes_done, bytes_found)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.files_done.load(Ordering::Relaxed),
            self.files_found.load(Ordering::Relaxed),
            self.bytes_done.load(Ordering::Relaxed),
            self.bytes_found.load(Ordering::Relaxed),
        )
    }
}

/// Preload directory `dir` (relative to the mount root; empty or `/` for all of it)
/// with `jobs` files in flight. Errors on single files are counted, not returned; an
/// error means `dir` itself could not be found or listed.
pub(crate) async fn preload(fs: &Fs, dir: &str, jobs: usize, p: &PreloadProgress) -> FsResult<()> {
    let mut ino = ROOT_INO;
    for seg in dir.split('/').filter(|s| !s.is_empty() && *s != ".") {
        let a = fs.lookup(ino, seg).await?;
        if a.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        ino = a.ino;
    }
    let files = {
        let mut files = Vec::new();
        let mut dirs = vec![ino];
        while let Some(d) = dirs.pop() {
            let fh = fs.opendir(d).await?;
            let entries = fs.readdir(fh, 0);
            fs.releasedir(fh);
            PreloadProgress::add(&p.dirs, 1);
            for (_, entry) in entries? {
                if entry.name == "." || entry.name == ".." {
                    continue;
                }
                match fs.lookup(d, &entry.name).await {
                    Ok(a) if a.kind == Kind::Dir => dirs.push(a.ino),
                    Ok(a) if a.kind == Kind::File => {
                        PreloadProgress::add(&p.files_found, 1);
                        PreloadProgress::add(&p.bytes_found, a.size);
                        files.push(a.ino);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(name = entry.name, error = %e, "preload: lookup failed");
                        PreloadProgress::add(&p.failed, 1);
                    }
                }
            }
        }
        files
    };
    let Some(fc) = fs.file_cache.clone() else {
        // Metadata only: the lookups above filled the stat and list caches.
        for ino in &files {
            let size = lock(&fs.ns.table).get(*ino).map(|n| n.size).unwrap_or(0);
            PreloadProgress::add(&p.files_done, 1);
            PreloadProgress::add(&p.bytes_done, size);
        }
        return Ok(());
    };
    futures::stream::iter(files)
        .for_each_concurrent(jobs.max(1), |ino| {
            let fc = fc.clone();
            async move {
                let found = {
                    let t = lock(&fs.ns.table);
                    t.get(ino).map(|n| (n.etag.clone(), n.size))
                };
                let (Some((etag, size)), Ok(key)) = (found, fs.ns.key_of(ino)) else {
                    PreloadProgress::add(&p.failed, 1);
                    return;
                };
                match fc.get(&fs.backend, &key, etag.as_deref(), size) {
                    None => PreloadProgress::add(&p.skipped, 1),
                    Some(c) => {
                        let mut seen = c.downloaded();
                        PreloadProgress::add(&p.bytes_done, seen);
                        let r = c
                            .wait_complete_with(|now| {
                                PreloadProgress::add(&p.bytes_done, now - seen);
                                seen = now;
                            })
                            .await;
                        match r {
                            Ok(()) => PreloadProgress::add(&p.files_done, 1),
                            Err(e) => {
                                warn!(key, error = %e, "preload: download failed");
                                PreloadProgress::add(&p.failed, 1);
                            }
                        }
                    }
                }
                // The walk's own reference; the kernel keeps its own.
                fs.forget(ino, 1);
            }
        })
        .await;
    Ok(())
}
