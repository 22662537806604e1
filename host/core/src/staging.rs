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
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use blobmount_backend::{
    AppendBase, BackendError, Precondition, PutMeta, PutOutcome, UserMetadata,
};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::error::{FsError, FsResult};
use crate::files::Files;
use crate::fs::Fs;
use crate::journal::Journal;
use crate::journal::RenameOutcome;

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
        self.write_manifest(m, false)
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
        self.file.sync_all()?;
        self.write_manifest(m, true)
    }

    pub fn is_preserved(&self) -> bool {
        self.preserved
    }

    /// The data must not be uploaded any more and no clean manifest could be written: drop
    /// the manifest (a crash then leaves the data as an orphan, kept, never uploaded).
    pub fn forget(&self) {
        let _ = std::fs::remove_file(&self.manifest);
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

impl Files {
    /// Deal with what a previous daemon left unfinished: directory renames (rolled back or
    /// finished, see `journal.rs`), then writes in `staging/` (see the module doc). Call
    /// once, before serving. Never deletes data the store does not have.
    pub(crate) async fn recover(&self, journal: &Journal, mode: Recovery) -> RecoveryReport {
        let dir = self.cfg.cache_dir.join("staging");
        let mut report = RecoveryReport {
            renames: journal.recover().await,
            ..Default::default()
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return report;
        };
        let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in &names {
            let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
                self.keep_orphan(path, &mut report);
                continue;
            };
            match ext {
                "json" => {
                    let data = path.with_extension("data");
                    self.recover_one(path, &data, mode, &mut report).await;
                }
                "data" if !path.with_extension("json").exists() => {
                    self.keep_orphan(path, &mut report)
                }
                "data" => {} // handled with its manifest
                _ => self.keep_orphan(path, &mut report),
            }
        }
        let up = report.uploaded.len() as u64;
        let kept = report.kept.len() as u64;
        self.stats
            .recovered_uploaded
            .fetch_add(up, Ordering::Relaxed);
        self.stats.recovered_kept.fetch_add(kept, Ordering::Relaxed);
        if up + kept > 0 {
            warn!(
                uploaded = up,
                kept_in_conflicts = kept,
                "found writes a previous daemon had not finished (it did not shut down cleanly)"
            );
        }
        report
    }

    async fn recover_one(
        &self,
        manifest: &Path,
        data: &Path,
        mode: Recovery,
        report: &mut RecoveryReport,
    ) {
        let m: Option<Manifest> = std::fs::read(manifest)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(m) = m else {
            // Unreadable manifest (cut short by the crash): keep the data, key unknown.
            let _ = std::fs::remove_file(manifest);
            if data.exists() {
                self.keep_orphan(data, report);
            }
            return;
        };
        if !data.exists() {
            let _ = std::fs::remove_file(manifest);
            return;
        }
        if !m.dirty {
            report.clean += 1;
            let _ = std::fs::remove_file(data);
            let _ = std::fs::remove_file(manifest);
            return;
        }
        if mode == Recovery::Upload {
            let cond = match (&m.base_etag, m.exists_remote) {
                (_, false) => Precondition::IfNotExists,
                (Some(e), true) => Precondition::IfMatch(e.clone()),
                (None, true) => Precondition::None,
            };
            let meta = PutMeta {
                metadata: m.metadata.clone(),
                content_type: None,
            };
            let put = self.recover_upload(&m, data, &meta, &cond).await;
            // The dead daemon's own upload may have landed before the crash (or this one's
            // reply may be lost): recognised by the write's upload id and size.
            let put = match (
                m.metadata.get(crate::attr::META_UPLOAD),
                std::fs::metadata(data),
            ) {
                (Some(id), Ok(local)) => self.or_landed(&m.key, put, local.len(), id).await,
                _ => put,
            };
            match put {
                Ok(_) => {
                    info!(key = m.key, "recovered an unfinished write: uploaded");
                    let _ = std::fs::remove_file(data);
                    let _ = std::fs::remove_file(manifest);
                    report.uploaded.push(m.key);
                    return;
                }
                Err(
                    e @ (BackendError::PreconditionFailed { .. }
                    | BackendError::AlreadyExists { .. }),
                ) => {
                    warn!(key = m.key, error = %e, "recovered an unfinished write, but the object changed in the store since; keeping the local data");
                }
                Err(e) => {
                    error!(key = m.key, error = %e, "recovered an unfinished write but could not upload it; keeping the local data");
                }
            }
        }
        match self.keep_local(&m.key, data, m.missing, true) {
            Ok(p) => {
                warn!(key = m.key, saved_to = %p.display(), "unfinished write from a previous daemon kept in conflicts/");
                let _ = std::fs::remove_file(manifest);
                report.kept.push((m.key, p));
            }
            Err(e) => {
                error!(key = m.key, error = %e, staging = %data.display(), "could not move an unfinished write to conflicts/; it stays in staging/");
            }
        }
    }

    /// Upload a recovered staging file: only its new bytes when it was an append the store
    /// can take as one, else all of it (first downloading the bytes that were never staged).
    async fn recover_upload(
        &self,
        m: &Manifest,
        data: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome, BackendError> {
        let size = std::fs::metadata(data)?.len();
        let base = (m.append_from, m.base_etag.as_deref(), size);
        if let Some(out) = self.try_append(&m.key, data, base, meta, cond).await? {
            return Ok(out);
        }
        if m.missing > 0 {
            let f = OpenOptions::new().write(true).open(data)?;
            self.download_into(&f, &m.key, m.missing, m.base_etag.as_deref())
                .await?;
        }
        self.backend.put_file(&m.key, data, meta, cond).await
    }

    /// Upload the staged `data` of `key` as an append, sending only what follows its first
    /// `append_from` bytes (which the object at `base_etag` holds unchanged), when there is
    /// something appended, the upload replaces that version and the store can take it.
    /// `Ok(None)`: not so; nothing was sent and the caller uploads the whole content.
    pub(crate) async fn try_append(
        &self,
        key: &str,
        data: &Path,
        (append_from, base_etag, size): (Option<u64>, Option<&str>, u64),
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>, BackendError> {
        let (Some(len), Some(etag), Precondition::IfMatch(_)) = (append_from, base_etag, cond)
        else {
            return Ok(None);
        };
        if len == 0 || len >= size {
            return Ok(None);
        }
        let base = AppendBase {
            etag: etag.to_string(),
            len,
        };
        self.backend
            .put_appended(key, &base, data, meta, cond)
            .await
    }

    /// Download the first `len` bytes of `key` (only while it has `etag`, when given) into
    /// the same offsets of `file`.
    pub(crate) async fn download_into(
        &self,
        file: &File,
        key: &str,
        len: u64,
        etag: Option<&str>,
    ) -> Result<(), BackendError> {
        const CHUNK: u64 = 8 * 1024 * 1024;
        let mut off = 0;
        while off < len {
            let end = (off + CHUNK).min(len);
            let data = self.backend.get_range(key, off..end, etag).await?;
            if data.is_empty() {
                // The object is shorter than it was: it changed.
                return Err(BackendError::PreconditionFailed { key: key.into() });
            }
            file.write_all_at(&data, off)?;
            off += data.len() as u64;
        }
        Ok(())
    }

    /// Keep local data of `key` in `conflicts/`: moved there when `mv`, else linked (a second
    /// name for the same file: no copy, so neither a full disk nor a sparse file can leave a
    /// half-written copy that looks saved). When its first `missing` bytes were never
    /// downloaded, only the bytes after them are kept, in a file whose name ends
    /// `.appended-at-<missing>` (the rest is the store's); that copy is written under a
    /// temporary name and renamed into place only when complete. The kept file and the
    /// directory entry are synced before this returns: the caller may then drop the staging
    /// file. On error nothing is left in `conflicts/` and `data` is untouched.
    pub(crate) fn keep_local(
        &self,
        key: &str,
        data: &Path,
        missing: u64,
        mv: bool,
    ) -> std::io::Result<PathBuf> {
        let mut dst = self.conflict_path(key);
        if missing == 0 {
            if mv {
                std::fs::rename(data, &dst)?;
            } else if let Err(e) = std::fs::hard_link(data, &dst) {
                // A cache file system without links: copy, holes and all.
                warn!(error = %e, "could not link the kept data into conflicts/; copying it");
                copy_tail(data, &dst, 0)?;
            }
            sync_kept(&dst)?;
            return Ok(dst);
        }
        dst.as_mut_os_string()
            .push(format!(".appended-at-{missing}"));
        copy_tail(data, &dst, missing)?;
        sync_kept(&dst)?;
        if mv {
            std::fs::remove_file(data)?;
        }
        Ok(dst)
    }

    /// A staging file without a usable manifest: keep it (if it holds anything) under a name
    /// that says so.
    fn keep_orphan(&self, path: &Path, report: &mut RecoveryReport) {
        let empty = std::fs::metadata(path)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if empty || name.ends_with(".json.tmp") {
            let _ = std::fs::remove_file(path);
            return;
        }
        let label = format!("unknown-key-{name}");
        match self.keep_local(&label, path, 0, true) {
            Ok(p) => {
                warn!(staging = name, saved_to = %p.display(), "staged data without a record of its object kept in conflicts/");
                report.kept.push((label, p));
            }
            Err(e) => {
                error!(staging = name, error = %e, "could not move staged data to conflicts/")
            }
        }
    }

    /// Where a kept copy of `key` goes: `conflicts/<time>-<key with / as _>`, the key cut
    /// to [`KEPT_NAME_BYTES`] bytes (at a character boundary) so the name fits any Linux
    /// file system whatever the key's script.
    pub(crate) fn conflict_path(&self, key: &str) -> PathBuf {
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut safe = String::new();
        for c in key.chars() {
            let c = if c == '/' || c.is_control() { '_' } else { c };
            if safe.len() + c.len_utf8() > KEPT_NAME_BYTES {
                break;
            }
            safe.push(c);
        }
        self.cfg.cache_dir.join("conflicts").join(format!(
            "{}.{:09}-{}",
            stamp.as_secs(),
            stamp.subsec_nanos(),
            safe
        ))
    }
}

/// Bytes of the key kept in a `conflicts/` file name: with the time stamp in front and a
/// `.appended-at-<offset>` behind, the name stays under Linux's 255 bytes.
pub(crate) const KEPT_NAME_BYTES: usize = 180;

/// Copy `src` from offset `from` to its end into the new file `dst`, holes left as holes
/// (only the data regions are read, in bounded chunks). Written to a temporary name and
/// renamed into place when complete and synced; on error the temporary file is removed.
fn copy_tail(src: &Path, dst: &Path, from: u64) -> std::io::Result<()> {
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
fn sync_kept(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    sync_dir_of(path)
}

/// Sync the directory holding `path`, so a rename or creation in it survives a power loss.
pub(crate) fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

impl Fs {
    /// Tests only: go away like a killed daemon would, leaving staged files and manifests
    /// behind (the cache lock is released, as the kernel does for a dead process).
    #[doc(hidden)]
    pub fn abandon_like_a_crash(self) {
        let entries: Vec<_> = crate::fs::lock(&self.files.open_files).drain().collect();
        let handles: Vec<_> = crate::fs::lock(&self.files.handles).drain().collect();
        std::mem::forget(entries);
        std::mem::forget(handles);
    }
}
