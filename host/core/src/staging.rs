//! Staged writes that survive a crash of the daemon, and what the next mount does with them.
//!
//! Why: a file being written lives in `<cache>/staging/` until its upload lands. If the
//! daemon is killed (SIGKILL, the OOM killer, a node drain without grace) the bytes are
//! still in that file, but without a record of which object they belong to they would be
//! garbage that nobody looks at: silent loss. So every staging file (`<id>.data`) has a small
//! manifest beside it (`<id>.json`: the key, the ETag the upload is conditional on, whether
//! the file holds changes the store does not have yet, the metadata to upload with). A
//! handle that is done removes both; whatever a crash leaves is found by the next mount with
//! the same cache directory, which uploads it with the recorded precondition (conflicts go to
//! `conflicts/`) or, with `write.recovery: keep`, moves it to `conflicts/` untouched, and
//! reports each file in the log and in the counters.
//!
//! A lock file (`<cache>/lock`, `flock`) keeps two daemons from sharing a cache directory:
//! recovery would take the other daemon's live files, and the file cache is emptied at start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use blobmount_backend::UserMetadata;
use serde::{Deserialize, Serialize};

use crate::error::{FsError, FsResult};
use crate::journal::{RenameOutcome, sync_dir_of};

/// What the next mount does with data a crash left staged (`write.recovery`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Upload it, conditional on the version it was based on; a conflict keeps it.
    #[default]
    Upload,
    /// Move it to `conflicts/` and report it; the store is not touched.
    Keep,
}

/// The record beside a staging file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub key: String,
    /// ETag the upload is conditional on (`None` with `exists_remote`: unconditional).
    pub base_etag: Option<String>,
    pub exists_remote: bool,
    /// The file holds changes the store does not have.
    pub dirty: bool,
    /// User metadata to upload with (mode, owner, mtime and the object's own metadata).
    pub metadata: UserMetadata,
    /// Bytes at the start of the file that were never downloaded (a hole in the data file):
    /// they are the object's at `base_etag`. Only with `append_from`.
    #[serde(default)]
    pub missing: u64,
    /// The object at `base_etag` holds the file's first this many bytes unchanged, so an
    /// upload may send only what follows (see `Backend::put_appended`).
    #[serde(default)]
    pub append_from: Option<u64>,
}

/// One staging file and its manifest; dropping it removes both, unless it was
/// [`Staged::preserve`]d because its bytes are nowhere else.
#[derive(Debug)]
pub(crate) struct Staged {
    file: File,
    data: PathBuf,
    manifest: PathBuf,
    /// Left in place when dropped: the next mount's recovery offers it again.
    preserved: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Staged {
    pub fn create(dir: &Path) -> std::io::Result<Staged> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!(
            "{}-{}.{:09}-{}",
            std::process::id(),
            now.as_secs(),
            now.subsec_nanos(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let data = dir.join(format!("{id}.data"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&data)?;
        Ok(Staged {
            file,
            manifest: dir.join(format!("{id}.json")),
            data,
            preserved: false,
        })
    }

    pub fn as_file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.data
    }

    /// Replace the manifest atomically (write a temporary file, rename it over). Not synced:
    /// until an upload has failed, the staged bytes are only what a program wrote and did not
    /// fsync yet, which a power loss may take on any file system (see [`Staged::preserve`]).
    pub fn record(&self, m: &Manifest) -> std::io::Result<()> {
        // A small file created and renamed: three metadata calls, off the async workers.
        crate::blocking::run(|| self.write_manifest(m, false))
    }

    fn write_manifest(&self, m: &Manifest, durable: bool) -> std::io::Result<()> {
        let tmp = self.manifest.with_extension("json.tmp");
        let body = serde_json::to_vec(m).map_err(std::io::Error::other)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, &self.manifest)?;
        if durable {
            sync_dir_of(&self.manifest)?;
        }
        Ok(())
    }

    /// The bytes could be put neither in the store nor in `conflicts/`: keep the staging file
    /// and its manifest `m` (which must say dirty) where they are, synced, past the end of
    /// this open file, so the next mount's recovery offers them again.
    pub fn preserve(&mut self, m: &Manifest) -> std::io::Result<()> {
        self.preserved = true;
        crate::blocking::run(|| {
            self.file.sync_all()?;
            self.write_manifest(m, true)
        })
    }

    pub fn is_preserved(&self) -> bool {
        self.preserved
    }

    /// The data must not be uploaded any more and no clean manifest could be written: drop
    /// the manifest (a crash then leaves the data as an orphan, kept, never uploaded).
    pub fn forget(&self) {
        let _ = std::fs::remove_file(&self.manifest);
    }

    /// The file this stages has no name any more (unlinked while open): nothing of it is to
    /// be recovered, so the staging file loses its names on disk too. The open descriptor
    /// keeps the bytes for the handles; a crash leaves nothing behind.
    pub fn unlink_on_disk(&self) {
        let _ = std::fs::remove_file(&self.manifest);
        let _ = std::fs::remove_file(&self.data);
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.preserved {
            return;
        }
        let _ = std::fs::remove_file(&self.manifest);
        let _ = std::fs::remove_file(&self.data);
    }
}

/// Exclusive use of a cache directory for the life of the core.
#[derive(Debug)]
pub(crate) struct CacheLock {
    _file: File,
}

impl CacheLock {
    pub fn take(cache_dir: &Path) -> FsResult<CacheLock> {
        let path = cache_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(FsError::CacheInUse {
                dir: cache_dir.display().to_string(),
                holder: holder.trim().to_string(),
            });
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(CacheLock { _file: file })
    }
}

/// What recovery did, for the log and the counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Files uploaded to the store.
    pub uploaded: Vec<String>,
    /// Files moved to `conflicts/` (by choice, on conflict or on error), with where.
    pub kept: Vec<(String, PathBuf)>,
    /// Staging files that held nothing the store lacks (removed).
    pub clean: usize,
    /// Directory renames that had been interrupted, and how each ended.
    pub renames: Vec<RenameOutcome>,
}

/// Bytes of the key kept in a `conflicts/` file name: with the time stamp in front and a
/// `.appended-at-<offset>` behind, the name stays under Linux's 255 bytes.
pub(crate) const KEPT_NAME_BYTES: usize = 180;

/// Copy `src` from offset `from` to its end into the new file `dst`, holes left as holes
/// (only the data regions are read, in bounded chunks). Written to a temporary name and
/// renamed into place when complete and synced; on error the temporary file is removed.
pub(crate) fn copy_tail(src: &Path, dst: &Path, from: u64) -> std::io::Result<()> {
    let tmp = {
        let mut t = dst.as_os_str().to_owned();
        t.push(".partial");
        PathBuf::from(t)
    };
    let result = (|| {
        let src = File::open(src)?;
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        blobmount_backend::localdir::copy_sparse(&src, from, &out, 0)?;
        out.sync_all()?;
        std::fs::rename(&tmp, dst)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Make a kept file and its name durable (the file's data, then its directory).
pub(crate) fn sync_kept(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    sync_dir_of(path)
}
