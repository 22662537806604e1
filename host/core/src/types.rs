//! The plain data of the core's API: who is asking, what `open`/`readdir`/`setattr`/
//! `statfs` take and give, and the counters the metrics endpoint reads.
//!
//! Why a module of its own: every layer (namespace, open files, the façade, the FUSE
//! adapter) uses these; keeping them apart from [`crate::Fs`] keeps those layers from
//! importing the façade they sit under.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use crate::attr::Kind;

/// Who is asking (from the FUSE request).
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// A directory entry as returned by `readdir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: Kind,
}

/// Reply to `open`/`create`.
#[derive(Clone, Debug)]
pub struct OpenReply {
    pub fh: u64,
    /// The kernel may keep its page cache of the file: the object has the same ETag as at
    /// the previous open, so cached pages are still its bytes.
    pub keep_cache: bool,
    /// Answer with kernel passthrough to this cached copy (`passthrough.rs`).
    pub passthrough: Option<std::sync::Arc<crate::passthrough::PassFile>>,
}

/// Attribute changes requested by `setattr`.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
    pub fh: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// Lookups in flight for one readdirplus batch.
pub const LOOKUP_CONCURRENCY: usize = 16;

/// How long a directory found to need more than one listing page is not listed again by a
/// lookup (its names are probed one by one meanwhile).
pub const LARGE_DIR_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Counters for the metrics endpoint and tests.
#[derive(Debug, Default)]
pub struct FsStats {
    pub name_conflicts: AtomicU64,
    pub upload_conflicts: AtomicU64,
    pub upload_errors: AtomicU64,
    /// opendir served from a cached listing.
    pub list_cache_hits: AtomicU64,
    /// Lookups answered "absent" from the negative cache or a fresh listing.
    pub negative_hits: AtomicU64,
    /// Expired one-page listings fetched again by a lookup instead of probing the name.
    pub relists: AtomicU64,
    /// Lookups of listed files that needed one HEAD instead of a full probe (type cache).
    pub type_cache_hits: AtomicU64,
    /// Lookups answered from a listing that carried the attributes (no request at all).
    pub listing_attr_hits: AtomicU64,
    /// Cached listings dropped to stay under `list_cache_max_entries`.
    pub list_evictions: AtomicU64,
    /// Bytes written into open files (by `write`).
    pub bytes_written: AtomicU64,
    /// Parts sent by streaming uploads.
    pub parts_sent: AtomicU64,
    /// Of those, parts read back from the staging file (no memory was free to keep them as
    /// they were written).
    pub parts_read_back: AtomicU64,
    /// Files committed by a streaming upload (the rest are uploaded whole).
    pub streamed_uploads: AtomicU64,
    /// Uploads that sent only the bytes appended to an object (the store kept the rest).
    pub append_uploads: AtomicU64,
    /// Unfinished writes of a previous daemon uploaded at start.
    pub recovered_uploaded: AtomicU64,
    /// Unfinished writes of a previous daemon moved to `conflicts/` at start.
    pub recovered_kept: AtomicU64,
    /// Background poller rounds (`poller.rs`).
    pub poll_rounds: AtomicU64,
    /// Names the poller found changed by another client (and dropped).
    pub poll_changes: AtomicU64,
    /// Handles of the `direct` / `block-cache` paths read to the end in order whose bytes
    /// matched the store's MD5 (`verify.rs`).
    pub reads_verified: AtomicU64,
    /// Of those handles, the ones whose bytes did not match (the last read failed, EIO).
    pub read_checksum_failures: AtomicU64,
    /// Handles read to the end whose object has no MD5 in the store (not checked).
    pub reads_unchecked: AtomicU64,
    /// Requests made to learn the store's MD5 for those checks (at most one per handle).
    pub read_verify_requests: AtomicU64,
}
