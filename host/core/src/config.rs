//! Settings of the file-system core (filled in by the daemon from its config file).

use std::path::PathBuf;
use std::time::Duration;

use crate::readpath::ReadMode;

#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Key prefix the mount is limited to (no leading/trailing `/`; may be empty).
    pub prefix: String,
    pub read_only: bool,
    /// Owner and modes of objects that carry no such metadata.
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// How long attributes and entries are trusted before the store is asked again
    /// (also the kernel's entry/attr timeout).
    pub attr_ttl: Duration,
    /// How long a directory listing is reused (by opendir, and by lookups as a type cache:
    /// a listed file needs one HEAD, a name absent from the listing none).
    pub list_ttl: Duration,
    /// How long a name found absent stays absent without asking the store again.
    pub negative_ttl: Duration,
    /// Most entries all cached directory listings hold together; the oldest listings are
    /// dropped beyond it.
    pub list_cache_max_entries: usize,
    /// Local cache directory (staging area, `conflicts/`).
    pub cache_dir: PathBuf,
    /// Largest directory (in objects) renamed by copy+delete; larger ones get EXDEV.
    pub rename_dir_limit: usize,
    /// Objects asked for per listing request.
    pub list_page_size: usize,
    /// Most bytes a sequential reader has prefetched ahead of it.
    pub read_ahead_max: usize,
    /// Size of a read-ahead block (one ranged GET).
    pub read_block: usize,
    /// Bytes all readers together may hold in read-ahead blocks.
    pub read_memory: usize,
    /// Which read path handles use.
    pub read_mode: ReadMode,
    /// Smallest object whose in-order reads are checked against the store's MD5
    /// (`verify.rs`); smaller ones cost no extra request.
    pub verify_reads_min: u64,
    /// Most bytes the file cache keeps on disk (`file-cache` mode).
    pub file_cache_max: u64,
    /// Free disk the file cache leaves (`file-cache` mode).
    pub file_cache_min_free: u64,
    /// Whether a handle whose first read is not at offset 0 downloads the whole object
    /// into the file cache (in the background) or reads just its ranges.
    pub file_cache_range_reads: bool,
    /// Answer read-only opens of files whose current version is complete in the file cache
    /// with kernel passthrough to the cached copy (`passthrough.rs`).
    pub passthrough: bool,
    /// Upload new files written in order while they are written (see `writestream.rs`).
    pub write_streaming: bool,
    /// Size of one part of a streaming upload (S3 needs at least 5 MiB).
    pub write_part_size: usize,
    /// Parts of one file in flight at once.
    pub write_parts_in_flight: usize,
    /// Write-behind: a modified file is uploaded this long after its last close instead of
    /// at it (`files/mod.rs`, "Closing"); zero uploads at close.
    pub close_delay: Duration,
    /// How long a change of mode, owner or times of a closed file is held so that changes
    /// following each other go up as one request (zero: written at once).
    pub attr_write_delay: Duration,
    /// The content type each upload carries, by file name.
    pub content_types: crate::contenttype::ContentTypes,
    /// The background poller (`poller.rs`); off unless its interval is set.
    pub poll: crate::poller::PollConfig,
}

impl FsConfig {
    pub fn for_tests(cache_dir: PathBuf) -> Self {
        FsConfig {
            prefix: String::new(),
            read_only: false,
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
            attr_ttl: Duration::from_secs(1),
            list_ttl: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(1),
            list_cache_max_entries: 100_000,
            cache_dir,
            rename_dir_limit: 1000,
            list_page_size: 5000,
            read_ahead_max: 8 * 1024 * 1024,
            read_block: 1024 * 1024,
            read_memory: 64 * 1024 * 1024,
            read_mode: ReadMode::BlockCache,
            verify_reads_min: 0,
            file_cache_max: 1024 * 1024 * 1024,
            file_cache_min_free: 0,
            file_cache_range_reads: true,
            passthrough: false,
            write_streaming: true,
            write_part_size: 64 * 1024,
            write_parts_in_flight: 4,
            close_delay: Duration::ZERO,
            attr_write_delay: Duration::from_millis(200),
            content_types: Default::default(),
            poll: Default::default(),
        }
    }
}
