//! Committing an open file's changes to the store: the upload (streamed commit or whole
//! file), its condition and id, its repeats when the store does not answer, recognising an
//! upload that landed although its reply was lost, and keeping the bytes when it cannot land.
//!
//! Why its own module: this is where a write becomes durable or is kept, the one place
//! that decides what `close`/`fsync` report (see docs/semantics.md, "What a successful close
//! or fsync guarantees"). Everything here runs with the open file's lock held.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use blobmount_backend::api::permissions_string;
use blobmount_backend::{AccessUpdate, BackendError, Precondition, PutMeta, PutOutcome};
use tracing::{error, info, warn};

use super::{Files, OpenEntry, OpenFile};
use crate::attr::{self, Kind};
use crate::error::{FsError, FsResult};
use crate::journal::Journal;
use crate::staging::{KEPT_NAME_BYTES, Manifest, Recovery, RecoveryReport, copy_tail, sync_kept};
use crate::sync::lock;

/// Times an upload is sent while the store does not answer (see `Fs::upload_attempts`).
const UPLOAD_ATTEMPTS: u32 = 3;

/// A new [`OpenFile::upload_id`].
pub(crate) fn new_upload_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The condition an upload of this open file carries: absence for a new file, else the
/// version it was read from.
pub(crate) fn upload_cond(st: &OpenFile) -> Precondition {
    match (&st.base_etag, st.exists_remote) {
        (_, false) => Precondition::IfNotExists,
        (Some(e), true) => Precondition::IfMatch(e.clone()),
        (None, true) => Precondition::None,
    }
}

impl Files {
    /// The metadata an upload of `ino` carries, marked with the upload's id.
    pub(crate) fn put_meta(&self, ino: u64, upload_id: &str) -> FsResult<PutMeta> {
        let t = lock(&self.ns.table);
        let node = t.get(ino).ok_or(FsError::NotFound)?;
        let mut metadata = attr::encode(
            &node.meta,
            Kind::File,
            node.perm,
            node.uid,
            node.gid,
            node.mtime,
        );
        attr::encode_times(&mut metadata, node.ctime, node.atime);
        metadata.insert(attr::META_UPLOAD.into(), upload_id.into());
        let content_type = crate::contenttype::upload_type(
            &self.cfg.content_types,
            &node.seg,
            node.content_type.as_deref(),
        );
        Ok(PutMeta {
            metadata,
            content_type: Some(content_type),
        })
    }

    /// Write the staging file's manifest (what a crash-recovery needs to finish the write).
    /// A file without a name has nothing to recover: its staging file (one made after the
    /// unlink, for a write through a handle) is taken off the disk instead, so a crash does
    /// not leave it for recovery to keep as data of an unknown key.
    pub(crate) fn record_staged(&self, ino: u64, st: &OpenFile, dirty: bool) -> FsResult<()> {
        let Some(staged) = &st.staged else {
            return Ok(());
        };
        if st.unlinked {
            staged.unlink_on_disk();
            return Ok(());
        }
        let m = self.manifest(&self.ns.key_of(ino)?, ino, st, dirty)?;
        Ok(staged.record(&m)?)
    }

    /// The manifest of `ino`'s staging file as things stand.
    pub(crate) fn manifest(
        &self,
        key: &str,
        ino: u64,
        st: &OpenFile,
        dirty: bool,
    ) -> FsResult<Manifest> {
        Ok(Manifest {
            key: key.to_string(),
            base_etag: st.base_etag.clone(),
            exists_remote: st.exists_remote,
            dirty,
            metadata: self.put_meta(ino, &st.upload_id)?.metadata,
            missing: st.missing,
            append_from: st.append_from,
        })
    }

    /// Put the staged bytes of an upload that cannot land where they outlive this open
    /// file: linked into `conflicts/`, or, when even that fails (a full disk, a name the
    /// cache's file system refuses), left in `staging/` with a dirty manifest, synced, for
    /// the next mount to offer again. Never loses them. Returns where they are.
    pub(crate) fn keep_failed(&self, ino: u64, key: &str, st: &mut OpenFile) -> PathBuf {
        let missing = st.missing;
        let manifest = self.manifest(key, ino, st, true);
        let Some(staged) = st.staged.as_mut() else {
            return PathBuf::new();
        };
        match self.keep_local(key, staged.path(), missing, false) {
            Ok(p) => p,
            Err(e) => {
                let kept = manifest.and_then(|m| Ok(staged.preserve(&m)?));
                match kept {
                    Ok(()) => {
                        error!(key, error = %e, staging = %staged.path().display(), "could not keep the data in conflicts/; it stays staged and the next mount offers it again")
                    }
                    Err(e2) => {
                        error!(key, error = %e, sync_error = %e2, staging = %staged.path().display(), "could not keep the data in conflicts/ nor record it for the next mount; the staging file is left in place")
                    }
                }
                staged.path().to_path_buf()
            }
        }
    }

    /// A file may not grow past what the store can hold (EFBIG at the write, not at close).
    pub(crate) fn check_size(&self, size: u64) -> FsResult<()> {
        match self.backend.capabilities().max_object_size {
            Some(max) if size > max => Err(FsError::TooLarge(max)),
            _ => Ok(()),
        }
    }

    /// A file created here is in the store for the first time: on a store with POSIX access
    /// its mode becomes the path's permissions, in one setAccessControl (the Blob API upload
    /// got the store's default permissions, not the mode of the open() or a chmod made
    /// before it). A failure is logged; the data is in the store.
    async fn first_permissions(&self, ino: u64, key: &str, st: &mut OpenFile, perm: u16) {
        if !self.backend.capabilities().posix_access {
            return;
        }
        let update = AccessUpdate {
            permissions: Some(permissions_string(perm & 0o7777)),
            ..Default::default()
        };
        match self.backend.set_access(key, &update).await {
            Ok(after) => self.own_new_version(ino, Some(st), after),
            Err(e) => {
                warn!(key, error = %e, "the file was uploaded but its permissions could not be set")
            }
        }
    }

    /// Upload if modified. Called with the open-file lock held.
    pub(crate) async fn upload_locked(
        &self,
        ino: u64,
        entry: &OpenEntry,
        st: &mut OpenFile,
    ) -> FsResult<()> {
        if !entry.dirty.load(Ordering::Acquire) || st.unlinked {
            return Ok(());
        }
        let key = self.ns.key_of(ino)?;
        let parent = lock(&self.ns.table)
            .get(ino)
            .map(|n| n.parent)
            .ok_or(FsError::NotFound)?;
        let pm = self.put_meta(ino, &st.upload_id)?;
        let cond = upload_cond(st);
        let path = match &st.staged {
            Some(t) => t.path().to_path_buf(),
            None => return Ok(()),
        };
        let (put, was_streamed) = self.upload_attempts(&key, st, &path, (&pm, &cond)).await;
        match put {
            Ok(out) => {
                let mut etag = match out.etag {
                    Some(e) => Some(e),
                    None => self.backend.head(&key).await.ok().and_then(|i| i.etag),
                };
                let mut attrs_failed = None;
                if was_streamed && st.attrs_changed {
                    // The upload's metadata was fixed when it started; mode, owner or
                    // times changed since follow it (on the version it just made).
                    match self.backend.set_metadata(&key, &pm, etag.as_deref()).await {
                        Ok(o) => etag = o.etag.or(etag),
                        Err(e) => attrs_failed = Some(e),
                    }
                }
                st.base_etag = etag.clone();
                st.read_etag = etag.clone();
                st.exists_remote = true;
                st.attrs_changed = false;
                // The upload carried the node's mode, owner and times.
                self.attrs.forget(ino);
                st.upload_id = new_upload_id();
                // The store holds exactly the staged bytes now: a later append sends only what
                // follows them.
                st.append_from = Some(st.size);
                entry.dirty.store(false, Ordering::Release);
                let first_perm = {
                    let mut t = lock(&self.ns.table);
                    let mut name = None;
                    // A file created here, in the store for the first time: on a store with
                    // POSIX access its mode becomes the path's permissions (next below).
                    let mut first_perm = None;
                    if let Some(n) = t.get_mut(ino) {
                        if n.local_only {
                            first_perm = Some(n.perm);
                        }
                        n.etag = etag;
                        n.content_type = pm.content_type.clone();
                        n.local_only = false;
                        n.size = st.size;
                        n.fetched = Some(Instant::now());
                        name = Some((n.name.clone(), n.kind));
                    }
                    if let Some((name, kind)) = name {
                        t.name_changed(parent, &name, Some(kind));
                    }
                    first_perm
                };
                if let Some(perm) = first_perm {
                    self.first_permissions(ino, &key, st, perm).await;
                }
                // The store has it now: a crash from here on leaves nothing to recover.
                if let Err(e) = self.record_staged(ino, st, false) {
                    warn!(key, error = %e, "could not mark the staging file clean");
                }
                if let Some(e) = attrs_failed {
                    warn!(key, error = %e, "the data was uploaded but its mode, owner or times could not be set");
                    return Err(e.into());
                }
                Ok(())
            }
            Err(BackendError::PreconditionFailed { .. })
            | Err(BackendError::AlreadyExists { .. }) => {
                self.stats.upload_conflicts.fetch_add(1, Ordering::Relaxed);
                let saved = self.keep_failed(ino, &key, st);
                warn!(key, saved_to = %saved.display(), "upload conflict: the object changed in the store since it was opened; local data kept");
                // The kept copy is the user's data now; stop trying to upload this version.
                entry.dirty.store(false, Ordering::Release);
                let preserved = st.staged.as_ref().is_some_and(|s| s.is_preserved());
                if !preserved && let Err(e) = self.record_staged(ino, st, false) {
                    warn!(key, error = %e, "could not mark the staging file clean");
                }
                Err(FsError::Conflict {
                    saved_to: saved.display().to_string(),
                })
            }
            Err(e) => {
                self.stats.upload_errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, BackendError::ChecksumMismatch { .. }) {
                    // Damaged bytes may have landed under this upload's id (a store that
                    // does not check what it is sent, if removing them failed): a new id, so
                    // they are never taken for this upload by `or_landed`.
                    st.upload_id = new_upload_id();
                }
                warn!(key, error = %e, "upload failed; data stays staged and is retried at the next flush/fsync/close");
                Err(e.into())
            }
        }
    }

    /// Upload the staged file (committing its streaming upload if one is going), up to
    /// [`UPLOAD_ATTEMPTS`] times while the store does not answer. The store clients do not
    /// repeat a conditional write that timed out (it might have landed); here it is safe to:
    /// a refusal of the repeat by its own first attempt is recognised by the upload id
    /// ([`Fs::or_landed`]), and a first attempt landing late is refused by the store, its
    /// condition being spent. Returns the outcome and whether it was a streamed commit.
    async fn upload_attempts(
        &self,
        key: &str,
        st: &mut OpenFile,
        path: &std::path::Path,
        (pm, cond): (&PutMeta, &Precondition),
    ) -> (Result<PutOutcome, BackendError>, bool) {
        let mut attempt = 1;
        loop {
            let streamed = match &st.staged {
                Some(t) if st.stream.is_active() => {
                    st.stream.commit(self, t.as_file(), st.size, cond).await
                }
                _ => None,
            };
            let was_streamed = streamed.is_some();
            let put = match streamed {
                Some(r) => r,
                None => self.upload_staged(key, st, path, pm, cond).await,
            };
            let put = self.or_landed(key, put, st.size, &st.upload_id).await;
            match put {
                Err(BackendError::Unavailable(e)) if attempt < UPLOAD_ATTEMPTS => {
                    warn!(key, attempt, error = %e, "upload got no answer; sending it again");
                    tokio::time::sleep(std::time::Duration::from_millis(250 << attempt)).await;
                    attempt += 1;
                }
                put => return (put, was_streamed),
            }
        }
    }

    /// After an upload was refused as a conflict: whether the object in the store is this
    /// very upload after all (it carries the upload's id and size), landed by an earlier
    /// attempt whose reply was lost. Then its ETag is the upload's outcome.
    /// `put` as the store answered it, unless it failed in a way that can hide a landed
    /// upload (refused by its own earlier attempt, or no reply) and the object at `key` is
    /// this upload after all: `size` bytes carrying upload id `id`. Then its ETag is the
    /// outcome. Used by open files and by recovery alike.
    pub(crate) async fn or_landed(
        &self,
        key: &str,
        put: Result<PutOutcome, BackendError>,
        size: u64,
        id: &str,
    ) -> Result<PutOutcome, BackendError> {
        let e = match put {
            Err(
                e @ (BackendError::PreconditionFailed { .. }
                | BackendError::AlreadyExists { .. }
                | BackendError::Unavailable(_)
                | BackendError::Other(_)),
            ) => e,
            other => return other,
        };
        let Ok(info) = self.backend.head(key).await else {
            return Err(e);
        };
        let ours = info.size == size
            && info
                .metadata
                .as_ref()
                .and_then(|m| m.get(attr::META_UPLOAD))
                .is_some_and(|got| got == id);
        if !ours {
            return Err(e);
        }
        warn!(key, error = %e, "an upload was refused or unanswered, but it is in the store (an earlier attempt landed): not a conflict");
        Ok(PutOutcome { etag: info.etag })
    }
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
            // The manifest keeps no type: a recovered write gets its name's.
            let meta = PutMeta {
                metadata: m.metadata.clone(),
                content_type: Some(self.cfg.content_types.for_name(&m.key).to_string()),
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
        let dst = self.conflict_path(key);
        // Links or copies, then fsyncs: off the async workers.
        crate::blocking::run(|| keep_at(dst, data, missing, mv))
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

/// The blocking part of `Files::keep_local`: put `data` at `dst` (or at
/// `dst.appended-at-<missing>`), synced.
fn keep_at(mut dst: PathBuf, data: &Path, missing: u64, mv: bool) -> std::io::Result<PathBuf> {
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
