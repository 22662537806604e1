//! Committing an open file's changes to the store: the upload (streamed commit or whole
//! file), its condition and id, its repeats when the store does not answer, recognising an
//! upload that landed although its reply was lost, and keeping the bytes when it cannot land.
//!
//! Why its own module: this is where a write becomes durable or is kept, the one place
//! that decides what `close`/`fsync` report (see docs/semantics.md, "What a successful close
//! or fsync guarantees"). Everything here runs with the open file's lock held.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use blobmount_backend::{BackendError, Precondition, PutMeta, PutOutcome};
use tracing::{error, warn};

use super::{Files, OpenEntry, OpenFile};
use crate::attr::{self, Kind};
use crate::error::{FsError, FsResult};
use crate::fs::lock;
use crate::staging::Manifest;

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
        Ok(PutMeta {
            metadata,
            content_type: None,
        })
    }

    /// Write the staging file's manifest (what a crash-recovery needs to finish the write).
    pub(crate) fn record_staged(&self, ino: u64, st: &OpenFile, dirty: bool) -> FsResult<()> {
        let Some(staged) = &st.staged else {
            return Ok(());
        };
        if st.unlinked {
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
                st.upload_id = new_upload_id();
                // The store holds exactly the staged bytes now: a later append sends only what
                // follows them.
                st.append_from = Some(st.size);
                entry.dirty.store(false, Ordering::Release);
                let mut t = lock(&self.ns.table);
                let mut name = None;
                if let Some(n) = t.get_mut(ino) {
                    n.etag = etag;
                    n.local_only = false;
                    n.size = st.size;
                    n.fetched = Some(Instant::now());
                    name = Some((n.name.clone(), n.kind));
                }
                if let Some((name, kind)) = name {
                    t.name_changed(parent, &name, Some(kind));
                }
                drop(t);
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
                    self.stream_commit(&mut st.stream, t.as_file(), st.size, cond)
                        .await
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
