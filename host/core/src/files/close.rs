//! The end of an opening: what the last release of a file does, at once or, with
//! `write.close-delay-ms`, a moment later (write-behind).
//!
//! Why a delay at all: programs that write a file under a temporary name, close it and rename
//! it (rsync, editors, `git`, package managers) cost three store requests per file when close
//! uploads (a PUT of the temporary name, a copy to the final one, a delete), and on a store
//! where a delete is slow that is most of their time. With a delay the closed file stays an
//! open file without handles for that long: a rename in that time moves it here only (it is
//! not in the store yet) and its one upload goes to the final name, carrying the mode and
//! times set meanwhile; a new open attaches to it as to any open file. The price is the
//! promise of close: it returns before the data is stored, so an upload that fails then
//! cannot be reported to the program; it is logged, counted, and the data kept in
//! `conflicts/` as for any failed release. `fsync` still uploads before it returns, unmount
//! uploads everything pending, and a crash leaves the staging file and its manifest for the
//! next mount's recovery, as for a file that was open. Zero (the default) uploads at close.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{error, warn};

use super::{Files, OpenEntry, OpenFile};
use crate::error::FsResult;
use crate::sync::lock;

impl Files {
    /// Whether closing a modified file leaves its upload for later (`close.rs`).
    pub(crate) fn writes_behind(&self) -> bool {
        !self.cfg.close_delay.is_zero()
    }

    /// The last handle of `ino` was released (`st` is its state, locked, with no handle
    /// left): upload its changes now, or, writing behind, in `write.close-delay-ms`.
    pub(crate) async fn last_release(
        self: &Arc<Self>,
        ino: u64,
        entry: &Arc<OpenEntry>,
        st: tokio::sync::MutexGuard<'_, OpenFile>,
    ) -> FsResult<()> {
        if self.writes_behind() && entry.dirty.load(Ordering::Acquire) && !st.unlinked {
            drop(st);
            let (files, entry) = (self.clone(), entry.clone());
            tokio::spawn(async move {
                tokio::time::sleep(files.cfg.close_delay).await;
                let st = entry.state.lock().await;
                // Opened again meanwhile (its last release starts the wait again), or done
                // with by shutdown.
                if st.handles > 0 || entry.retired.load(Ordering::Acquire) {
                    return;
                }
                if let Err(e) = files.finish_close(ino, &entry, st).await {
                    let key = files.ns.key_of(ino).unwrap_or_default();
                    error!(key, error = %e, "upload after close (write-behind) failed; see the lines above for where the data is kept");
                }
            });
            return Ok(());
        }
        self.finish_close(ino, &entry.clone(), st).await
    }

    /// Upload what the closed file still holds, then retire its open state. Data that cannot
    /// be uploaded is kept in `conflicts/` (never dropped silently).
    pub(crate) async fn finish_close(
        &self,
        ino: u64,
        entry: &Arc<OpenEntry>,
        mut st: tokio::sync::MutexGuard<'_, OpenFile>,
    ) -> FsResult<()> {
        let mut result = Ok(());
        if entry.dirty.load(Ordering::Acquire)
            && !st.unlinked
            && let Err(e) = self.upload_locked(ino, entry, &mut st).await
        {
            // Still dirty: the upload failed and nothing kept the data yet (a conflict keeps
            // it; a failed metadata update follows a landed upload).
            if entry.dirty.load(Ordering::Acquire) {
                let key = self.ns.key_of(ino).unwrap_or_default();
                let p = self.keep_failed(ino, &key, &mut st);
                entry.dirty.store(false, Ordering::Release);
                error!(key, saved_to = %p.display(), error = %e, "upload failed at close; local data kept");
            }
            result = Err(e);
        }
        entry.retired.store(true, Ordering::Release);
        drop(st);
        self.forget_entry(ino, entry);
        // A change of mode or times made while it was open (often just after close, before
        // this release arrived) is held for the delay from now, so the changes that follow
        // (rsync's utimensat after its chmod) still go up with it (`attrwrite.rs`).
        self.attrs.closed(ino);
        // A file created here whose upload failed is not in the store: drop its entry.
        let mut t = lock(&self.ns.table);
        if let Some(n) = t.get_mut(ino)
            && n.local_only
        {
            n.local_only = false;
            let (p, name) = (n.parent, n.name.clone());
            // Only if the name is still this file's (a rename may have given it to another).
            if t.child(p, &name) == Some(ino) {
                t.unlink(p, &name);
            }
        }
        result
    }

    /// Writing behind, a rename of a closed file that is not in the store yet moves it here
    /// only: its upload (later) goes to the new name. Whether the moved file `ino`, held in
    /// `held`, is such a file (created here, never uploaded, not being streamed).
    pub(crate) fn moves_unsent(&self, held: &super::Held<'_>, ino: Option<u64>) -> bool {
        let Some(ino) = ino else { return false };
        if !self.writes_behind() {
            return false;
        }
        let local_only = lock(&self.ns.table).get(ino).is_some_and(|n| n.local_only);
        local_only
            && held.iter().any(|(i, _, st)| {
                *i == ino && !st.exists_remote && !st.unlinked && !st.stream.is_active()
            })
    }

    /// After such a move: the upload replaces what the new name held in the store, if
    /// anything (`over`: its ETag, `None` when unknown), instead of requiring absence; the
    /// staging manifest names the new key, so a crash recovers the file under it.
    pub(crate) fn settle_unsent_move(
        &self,
        held: &mut super::Held<'_>,
        ino: u64,
        over: Option<Option<String>>,
    ) {
        for (i, _, st) in held.iter_mut() {
            if *i != ino {
                continue;
            }
            if let Some(etag) = over.clone() {
                st.exists_remote = true;
                st.base_etag = etag;
            }
            if let Err(e) = self.record_staged(ino, st, true) {
                let key = self.ns.key_of(ino).unwrap_or_default();
                warn!(key, error = %e, "could not record the moved file's new name for recovery");
            }
        }
    }
}
