//! Open files: the state an open inode shares between its handles, the handles, and the
//! write path that takes changes from the first `write` to a durable object.
//!
//! Why a type of its own ([`Files`]): staging, the holes of an append, streaming parts, the
//! upload's condition and id, the commit and its repeats, keeping data that cannot land,
//! and recovery after a crash are one piece of logic with one set of rules (docs/semantics
//! .md, "What a successful close or fsync guarantees"); the live path and crash recovery
//! use the same methods. [`crate::Fs`] calls it for the FUSE operations on files.
//!
//! - `mod.rs`: the open-file registry (state per inode, handles, attaching a handle);
//! - `stage.rs`: the staging file: what it holds of the old object, reads and writes of it;
//! - `commit.rs`: uploads, their conditions and repeats, keeping data in `conflicts/`.
//!
//! The last release of a file (uploading at once, or a moment later with write-behind) is
//! here, next to attaching a handle: see "Closing" below.
//!
//! Locks: an open file's `state` (a `tokio` mutex held across store requests) comes before
//! the namespace's `table`; `open_files` and `handles` are short `std` mutexes taken after
//! both (see `crate::namespace` for the whole order).

mod commit;
mod stage;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use blobmount_backend::{Backend, PutMeta};
use tracing::{error, warn};

use crate::budget::MemoryBudget;
use crate::config::FsConfig;
use crate::direct::Direct;
use crate::error::{FsError, FsResult};
use crate::filecache::{FileCache, FileCacheReader};
use crate::namespace::Namespace;
use crate::passthrough::Passthrough;
use crate::readahead::Stream;
use crate::readpath::{ReadMode, ReadPath};
use crate::renamegate::{Moving, RenameGate, Scope};
use crate::staging::Staged;
use crate::sync::lock;
use crate::types::FsStats;
use crate::verify::Verified;
use crate::writestream::{StreamHost, StreamWrite};

pub(crate) use commit::{new_upload_id, upload_cond};

pub(crate) struct OpenFile {
    pub(crate) handles: usize,
    pub(crate) staged: Option<Staged>,
    /// ETag the next upload must match; `None` with `exists_remote` means unconditional.
    pub(crate) base_etag: Option<String>,
    pub(crate) exists_remote: bool,
    /// ETag reads are pinned to.
    pub(crate) read_etag: Option<String>,
    pub(crate) size: u64,
    /// The staging file's first `missing` bytes were never downloaded (a hole): they are the
    /// object's at `base_etag`. Only while `append_from` is set. An append to an existing
    /// object stages nothing of the old content.
    pub(crate) missing: u64,
    /// The object at `base_etag` holds this file's first this many bytes unchanged: an upload
    /// may send only the rest (`Backend::put_appended`).
    pub(crate) append_from: Option<u64>,
    pub(crate) unlinked: bool,
    /// Upload in parts while a new file is written in order (see `writestream.rs`).
    pub(crate) stream: StreamWrite,
    /// Mode, owner or times were changed while the file had changes not uploaded yet: a
    /// streaming upload (whose metadata was fixed when it started) is followed by a
    /// metadata update.
    pub(crate) attrs_changed: bool,
    /// Carried in the metadata of every upload of the current changes (see
    /// [`attr::META_UPLOAD`]), so an upload that landed although its reply was lost (a
    /// commit retried after a timeout, a crash before the clean manifest) is recognised as
    /// ours and not taken for a conflict. A new one after each upload.
    pub(crate) upload_id: String,
}

pub(crate) struct OpenEntry {
    pub(crate) state: tokio::sync::Mutex<OpenFile>,
    pub(crate) dirty: AtomicBool,
    /// Set (under `state`) by the last release once it is done with the entry; an open that
    /// raced with that release must not attach to it and creates a fresh one instead.
    pub(crate) retired: AtomicBool,
}

pub(crate) struct Handle {
    pub(crate) ino: u64,
    /// The open state this handle counts in (kept here so a handle never looks it up again
    /// and cannot miss it while another handle of the inode is being released).
    pub(crate) entry: Arc<OpenEntry>,
    pub(crate) writable: bool,
    /// Read state of the configured read path (see [`crate::readpath`]).
    pub(crate) read: tokio::sync::Mutex<Box<dyn ReadPath>>,
    /// An open the kernel sees, counted in [`Files::pass`] (not the handle a truncate
    /// without an open file makes for itself).
    pub(crate) counted: AtomicBool,
}

/// Open files by inode.
pub(crate) type OpenFiles = Vec<(u64, Arc<OpenEntry>)>;

/// The open files a rename holds still: each one's inode, entry and locked state.
pub(crate) type Held<'a> = Vec<(u64, &'a OpenEntry, tokio::sync::MutexGuard<'a, OpenFile>)>;

/// Every open file and handle, and what the write path needs from the rest of the core.
pub(crate) struct Files {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) cfg: Arc<FsConfig>,
    pub(crate) stats: Arc<FsStats>,
    /// Keys of inodes, and their nodes to update after an upload.
    pub(crate) ns: Arc<Namespace>,
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) file_cache: Option<Arc<FileCache>>,
    /// The open state of each open inode. Its own short lock, taken after `ns.table` and
    /// before the gate's state; an entry's `state` (tokio mutex) is taken with this lock
    /// released, and guards everything in [`OpenFile`].
    pub(crate) open_files: Arc<Mutex<HashMap<u64, Arc<OpenEntry>>>>,
    /// Mode, owner and times held for a short while (`attrwrite.rs`).
    pub(crate) attrs: Arc<crate::attrwrite::AttrWriter>,
    /// Handles by number. Its own short lock, never held with another.
    pub(crate) handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// File and directory handle numbers.
    pub(crate) next_fh: AtomicU64,
    /// ETag each inode had when it was last opened (decides the kernel's `keep_cache`).
    /// Its own short lock, never held with another.
    pub(crate) opened_etags: Mutex<HashMap<u64, String>>,
    /// What renames are moving; new handles below it wait (`renamegate.rs`).
    pub(crate) gate: RenameGate,
    /// Opens by I/O mode, for kernel passthrough of cached files (`passthrough.rs`).
    pub(crate) pass: Passthrough,
    /// Set when the core is abandoned like a crashed daemon (tests): uploads written
    /// behind do not happen after it, as they would not after a real crash.
    pub(crate) halted: AtomicBool,
}

impl Files {
    pub(crate) fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_open_dirty(&self, ino: u64) -> bool {
        lock(&self.open_files)
            .get(&ino)
            .map(|e| e.dirty.load(Ordering::Acquire))
            .unwrap_or(false)
    }

    /// Whether what the node of `ino` says is newer than the store: an open file with
    /// changes not uploaded yet, or attributes held for a moment (`attrwrite.rs`).
    pub(crate) fn holds_news(&self, ino: u64) -> bool {
        self.is_open_dirty(ino) || self.attrs.is_pending(ino)
    }

    /// The store gave `ino` the new version `after` for a change of our own that left its
    /// bytes alone (its access on a hierarchical namespace): the node, and an open file
    /// based on the version before, follow it, so their next conditional request holds.
    pub(crate) fn own_new_version(
        &self,
        ino: u64,
        st: Option<&mut OpenFile>,
        after: Option<String>,
    ) {
        let Some(after) = after else { return };
        let before = lock(&self.ns.table)
            .get_mut(ino)
            .and_then(|n| n.etag.replace(after.clone()));
        if let Some(g) = st
            && g.exists_remote
            && g.base_etag.is_some()
            && g.base_etag == before
        {
            g.base_etag = Some(after.clone());
            g.read_etag = Some(after);
        }
    }

    /// Inodes of the files open now.
    pub(crate) fn open_inodes(&self) -> Vec<u64> {
        lock(&self.open_files)
            .iter()
            .filter(|(_, e)| !e.retired.load(Ordering::Acquire))
            .map(|(i, _)| *i)
            .collect()
    }

    /// Open files with changes the store does not have yet.
    pub(crate) fn pending_uploads(&self) -> usize {
        lock(&self.open_files)
            .values()
            .filter(|e| e.dirty.load(Ordering::Acquire))
            .count()
    }

    pub(crate) fn entry(&self, ino: u64) -> Option<Arc<OpenEntry>> {
        lock(&self.open_files)
            .get(&ino)
            .filter(|e| !e.retired.load(Ordering::Acquire))
            .cloned()
    }

    pub(crate) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// Register a handle on `ino`, creating the shared open state from the node if needed,
    /// and count it in that state.
    pub(crate) async fn attach_handle(
        &self,
        ino: u64,
        writable: bool,
        new_file: bool,
    ) -> FsResult<(u64, Arc<OpenEntry>)> {
        let lineage = self.ns.lineage(ino);
        let (entry, node) = loop {
            // A rename moving this file waits for no handle that arrives after it started:
            // this one attaches once the file is at its new key (see `renamegate.rs`).
            self.gate.wait_for(&lineage).await;
            let node = lock(&self.ns.table)
                .get(ino)
                .cloned()
                .ok_or(FsError::NotFound)?;
            let entry = {
                let mut of = lock(&self.open_files);
                if self.gate.moving_over(&lineage) {
                    continue;
                }
                of.entry(ino)
                    .or_insert_with(|| {
                        Arc::new(OpenEntry {
                            state: tokio::sync::Mutex::new(OpenFile {
                                handles: 0,
                                staged: None,
                                base_etag: node.etag.clone(),
                                exists_remote: !new_file,
                                read_etag: node.etag.clone(),
                                size: node.size,
                                missing: 0,
                                append_from: None,
                                unlinked: false,
                                stream: StreamWrite::default(),
                                attrs_changed: false,
                                upload_id: new_upload_id(),
                            }),
                            dirty: AtomicBool::new(false),
                            retired: AtomicBool::new(false),
                        })
                    })
                    .clone()
            };
            let mut st = entry.state.lock().await;
            if entry.retired.load(Ordering::Acquire) {
                // The last release of the previous opening is removing it; wait for that
                // and start from a fresh state.
                drop(st);
                self.forget_entry(ino, &entry);
                continue;
            }
            st.handles += 1;
            drop(st);
            break (entry, node);
        };
        let fh = self.new_fh();
        let h = Handle {
            ino,
            entry: entry.clone(),
            writable,
            read: tokio::sync::Mutex::new(self.new_read_path(node.policy.cacheable)),
            counted: AtomicBool::new(false),
        };
        lock(&self.handles).insert(fh, Arc::new(h));
        Ok((fh, entry))
    }

    /// The read path for a new handle; data the policy marks not cacheable bypasses the
    /// file cache.
    pub(crate) fn new_read_path(&self, cacheable: bool) -> Box<dyn ReadPath> {
        let stream = || {
            Stream::new(
                self.cfg.read_block as u64,
                self.cfg.read_ahead_max / self.cfg.read_block.max(1),
            )
        };
        // The file cache checks its downloads itself; the other paths are checked as
        // their bytes pass (`verify.rs`).
        let verified = |p: Box<dyn ReadPath>| -> Box<dyn ReadPath> {
            Box::new(Verified::new(
                p,
                self.stats.clone(),
                self.cfg.verify_reads_min,
            ))
        };
        match (self.cfg.read_mode, &self.file_cache) {
            (ReadMode::Direct, _) => {
                verified(Box::new(Direct::new(self.cfg.read_ahead_max as u64)))
            }
            (ReadMode::FileCache, Some(fc)) if cacheable => {
                Box::new(FileCacheReader::new(fc.clone(), stream()))
            }
            (ReadMode::BlockCache | ReadMode::FileCache, _) => verified(Box::new(stream())),
        }
    }

    /// Remove `entry` from the open-file map if it is still the one registered for `ino`.
    pub(crate) fn forget_entry(&self, ino: u64, entry: &Arc<OpenEntry>) {
        let mut of = lock(&self.open_files);
        if of.get(&ino).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            of.remove(&ino);
        }
    }

    /// Whether the kernel may keep the file's page cache at this open: only when the object
    /// has the same ETag as at its previous open and has no local changes.
    pub(crate) fn keep_cache(&self, ino: u64, etag: Option<&str>, staged: bool) -> bool {
        let mut m = lock(&self.opened_etags);
        match etag {
            Some(e) if !staged => {
                let same = m.get(&ino).is_some_and(|p| p == e);
                if !same {
                    m.insert(ino, e.to_string());
                }
                same
            }
            _ => {
                m.remove(&ino);
                false
            }
        }
    }

    /// Wait until no rename moves any of `dirs` (or a directory above them), then register
    /// them, with their ancestors, as the scope of an operation about to work in them
    /// (see `renamegate.rs`).
    pub(crate) async fn enter_gate(&self, dirs: &[u64]) -> Scope<'_> {
        self.gate.enter(self.ns.lineages(dirs)).await
    }

    /// Register `ino` as being renamed and return the open files at or below it (sorted by
    /// inode). Registration and collection happen under the open-file map's lock, the same
    /// lock a new handle registers under, so every handle is either returned here or waits.
    /// `replaced` is the inode a rename replaces, if any: its open file is held too, so that
    /// it can be unlinked (`unlink_held`) before any of its handles uploads over the target.
    /// `ino` is `None` when the moved entry has no inode here (never looked up: nothing of
    /// it can be open).
    ///
    /// `None`: another operation works inside `ino` (its scope holds it) or another rename
    /// moves it; nothing was registered. `own` is the rename's own scope, which does not count.
    pub(crate) fn begin_move(
        &self,
        ino: Option<u64>,
        replaced: Option<u64>,
        own: &Scope<'_>,
    ) -> Option<(Option<Moving<'_>>, OpenFiles)> {
        let open: Vec<(u64, Arc<OpenEntry>)> = {
            let of = lock(&self.open_files);
            if let Some(i) = ino
                && !self.gate.try_move(i, own)
            {
                return None;
            }
            of.iter().map(|(i, e)| (*i, e.clone())).collect()
        };
        let mut inside: Vec<(u64, Arc<OpenEntry>)> = {
            let t = lock(&self.ns.table);
            open.into_iter()
                .filter(|(i, _)| {
                    Some(*i) == replaced
                        || ino.is_some_and(|moved| *i == moved || t.is_under(*i, moved))
                })
                .collect()
        };
        inside.sort_by_key(|(i, _)| *i);
        Some((ino.map(|ino| self.gate.moving(ino)), inside))
    }

    /// Lock every open file `begin_move` returned, in its (inode) order.
    pub(crate) async fn hold<'a>(&self, open: &'a [(u64, Arc<OpenEntry>)]) -> Held<'a> {
        let mut held = Vec::with_capacity(open.len());
        for (ino, e) in open {
            held.push((*ino, &**e, e.state.lock().await));
        }
        held
    }

    /// Upload the changes of every held file (before its object is copied). The file the
    /// rename replaces (`replaced`) is staged whole instead, for its handles: its object is
    /// about to be overwritten, and its changes go with its name.
    pub(crate) async fn flush_held(
        &self,
        held: &mut Held<'_>,
        replaced: Option<u64>,
        unsent: Option<u64>,
    ) -> FsResult<()> {
        for (ino, entry, st) in held.iter_mut() {
            if Some(*ino) == unsent {
                // Moved here only; its upload goes to the new name ("Closing" in `files/mod.rs`).
                continue;
            }
            if Some(*ino) == replaced {
                self.keep_for_handles(*ino, st).await;
            } else {
                self.upload_locked(*ino, entry, st).await?;
            }
        }
        Ok(())
    }

    /// The rename replaced `ino`: its handles keep reading it, and nothing of it is
    /// uploaded again (its key belongs to the file moved there).
    pub(crate) fn unlink_held(&self, held: &mut Held<'_>, ino: u64) {
        for (i, entry, st) in held.iter_mut() {
            if *i == ino {
                self.mark_unlinked_locked(ino, entry, st);
            }
        }
    }

    /// After the move: pin each held file to its object under the new key (the copy holds
    /// the same, flushed bytes), so its next upload and the old bytes it still reads from the
    /// store refer to it.
    pub(crate) async fn repin_held(&self, held: &mut Held<'_>) -> FsResult<()> {
        for (ino, _, st) in held.iter_mut() {
            if !st.exists_remote || st.unlinked {
                continue;
            }
            let key = self.ns.key_of(*ino)?;
            let etag = self.backend.head(&key).await?.etag;
            st.base_etag = etag.clone();
            st.read_etag = etag.clone();
            if let Some(n) = lock(&self.ns.table).get_mut(*ino) {
                n.etag = etag;
            }
        }
        Ok(())
    }
}

// Closing. The end of an opening: what the last release of a file does, at once or, with
// `write.close-delay-ms`, a moment later (write-behind).
//
// Why a delay at all: programs that write a file under a temporary name, close it and rename
// it (rsync, editors, `git`, package managers) cost three store requests per file when close
// uploads (a PUT of the temporary name, a copy to the final one, a delete), and on a store
// where a delete is slow that is most of their time. With a delay the closed file stays an
// open file without handles for that long: a rename in that time moves it here only (it is
// not in the store yet) and its one upload goes to the final name, carrying the mode and
// times set meanwhile; a new open attaches to it as to any open file. The price is the
// promise of close: it returns before the data is stored, so an upload that fails then
// cannot be reported to the program; it is logged, counted, and the data kept in
// `conflicts/` as for any failed release. `fsync` still uploads before it returns, unmount
// uploads everything pending, and a crash leaves the staging file and its manifest for the
// next mount's recovery, as for a file that was open. Zero (the default) uploads at close.
impl Files {
    /// Whether closing a modified file leaves its upload for later (write-behind).
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
                if files.halted.load(Ordering::Acquire) {
                    return;
                }
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
        self.finish_close(ino, entry, st).await
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
    pub(crate) fn moves_unsent(&self, held: &Held<'_>, ino: Option<u64>) -> bool {
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
        held: &mut Held<'_>,
        ino: u64,
        over: Option<Option<String>>,
    ) {
        for (i, _, st) in held.iter_mut() {
            if *i != ino {
                continue;
            }
            if let Some(etag) = over.clone() {
                st.exists_remote = true;
                st.base_etag = etag.clone();
                // The store has an object at this name now (the one the upload replaces): an
                // unlink or another rename must deal with it, as for any stored file.
                if let Some(n) = lock(&self.ns.table).get_mut(ino) {
                    n.local_only = false;
                    n.etag = etag;
                }
            }
            if let Err(e) = self.record_staged(ino, st, true) {
                let key = self.ns.key_of(ino).unwrap_or_default();
                warn!(key, error = %e, "could not record the moved file's new name for recovery");
            }
        }
    }
}

impl StreamHost for Files {
    fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    fn cfg(&self) -> &FsConfig {
        &self.cfg
    }
    fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }
    fn stats(&self) -> &FsStats {
        &self.stats
    }
    fn upload_target(&self, ino: u64, upload_id: &str) -> FsResult<(String, PutMeta)> {
        Ok((self.ns.key_of(ino)?, self.put_meta(ino, upload_id)?))
    }
}
