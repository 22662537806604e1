//! Preload: walk a directory of the mount and download its files into the file cache
//! (`file-cache` mode) or load its metadata into the caches (other modes), in parallel,
//! while the mount keeps serving.
//!
//! Why: the first epoch of a training job should not pay the store's latency file by
//! file. Progress is kept in atomic counters ([`PreloadProgress`]) so the daemon can draw
//! a progress bar, log it, or export it as metrics without the walk knowing which.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    pub(crate) fn add(c: &AtomicU64, n: u64) {
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
