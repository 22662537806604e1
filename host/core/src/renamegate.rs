//! The rename gate: a rename waits for, and holds still, every open file it moves.
//!
//! Why: an object store renames by copy and delete. An open file below a directory being
//! renamed (or the file itself) could otherwise upload to its old key between the copy and
//! the delete — `write` and `close` succeed, then the delete takes the new bytes away — or
//! fail with ENOENT once the old key is gone. So a rename, before its first request:
//! 1. registers the inode it moves in [`RenameGate`]; from then on no new handle attaches to
//!    an inode at or below it until the rename is over ([`Fs::wait_for_renames`]);
//! 2. takes the lock of every open file at or below it (in inode order, so two renames
//!    cannot deadlock), and uploads their changes under those locks;
//! 3. copies and deletes, moves the inodes in the table, re-pins each open file to its
//!    object under the new key, and only then lets the files go.
//!
//! A write, flush or close on a moved file meanwhile waits for its lock and then goes to the
//! new key: an open file follows its inode.
//!
//! Other namespace operations are kept out of the way too. The kernel serialises operations
//! in one directory, but not a rename of a directory against operations below it (`mv d0 d1`
//! locks the root, `mv d0/a d0/b` or `mkdir d0/x` lock `d0`). An object store has no
//! directories to move atomically, so such an operation would work on keys the rename is
//! copying or has deleted: a file renamed inside a moving directory failed with ENOENT, or
//! landed under the old prefix after the directory's copy. So every rename, mkdir, rmdir,
//! unlink, symlink and metadata update first **enters** the gate for the directories it
//! works in ([`Fs::enter_gate`]): it waits while a rename moves one of them (or a directory
//! above) and registers them as its scope. A rename may start moving an inode only while no
//! other operation's scope contains it ([`Fs::begin_move`] refuses, and the rename resolves
//! its names again once the gate changed). Renames of unrelated trees run side by side;
//! renames between two directories run one at a time (as in the kernel), which keeps two
//! renames from each waiting for the other.
//!
//! Lock order: the cross-directory rename lock, then entering the gate; the gate's state may
//! be taken while holding `open_files` (never the other way round), and never together with `table`; an open file's `state` is taken with none of
//! those held. Entering the gate and registering a move happen before any open file's lock
//! is taken.

use std::sync::{Arc, Mutex};

use tokio::sync::MutexGuard;

use crate::error::FsResult;
use crate::files::Files;
use crate::files::{OpenEntry, OpenFile};
use crate::fs::lock;

/// Inodes being renamed, the scopes of operations in progress, and a wake-up for those
/// waiting on either.
#[derive(Debug, Default)]
pub(crate) struct RenameGate {
    /// Guarded by its own lock; see the lock order in the module doc.
    state: Mutex<GateState>,
    done: tokio::sync::Notify,
    /// Held by a rename between two directories for its whole run, as the kernel's
    /// `s_vfs_rename_mutex` is: two such renames could each work inside what the other
    /// moves, and wait for each other for ever.
    cross: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Inodes being moved by a rename.
    moving: Vec<u64>,
    /// Operations in progress: an id and the directories (with all their ancestors) they
    /// work in.
    scopes: Vec<(u64, Vec<u64>)>,
    next_scope: u64,
    /// Bumped whenever a move or a scope ends.
    epoch: u64,
}

impl RenameGate {
    fn ended(&self, f: impl FnOnce(&mut GateState)) {
        let mut g = lock(&self.state);
        f(&mut g);
        g.epoch += 1;
        drop(g);
        self.done.notify_waiters();
    }
}

/// A registration in the gate; dropping it lets waiting handles attach again.
pub(crate) struct Moving<'a> {
    files: &'a Files,
    ino: u64,
}

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        self.files.gate.ended(|g| {
            if let Some(i) = g.moving.iter().position(|&x| x == self.ino) {
                g.moving.swap_remove(i);
            }
        });
    }
}

/// An operation's scope in the gate: no rename moves these directories while it lasts.
pub(crate) struct Scope<'a> {
    files: &'a Files,
    id: u64,
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        self.files
            .gate
            .ended(|g| g.scopes.retain(|(id, _)| *id != self.id));
    }
}

/// Open files by inode.
pub(crate) type OpenFiles = Vec<(u64, Arc<OpenEntry>)>;

/// The open files a rename holds still: each one's inode, entry and locked state.
pub(crate) type Held<'a> = Vec<(u64, &'a OpenEntry, MutexGuard<'a, OpenFile>)>;

impl Files {
    /// Wait until no rename moves any of `dirs` (or a directory above them), then register
    /// them, with their ancestors, as the scope of an operation about to work in them.
    pub(crate) async fn enter_gate(&self, dirs: &[u64]) -> Scope<'_> {
        let mut scope: Vec<u64> = dirs.iter().flat_map(|&d| self.lineage(d)).collect();
        scope.sort_unstable();
        scope.dedup();
        loop {
            let done = self.gate.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let mut g = lock(&self.gate.state);
                if !g.moving.iter().any(|m| scope.binary_search(m).is_ok()) {
                    let id = g.next_scope;
                    g.next_scope += 1;
                    g.scopes.push((id, scope));
                    return Scope { files: self, id };
                }
            }
            done.await;
        }
    }

    /// Taken by a rename between two directories before it enters the gate.
    pub(crate) async fn cross_directory_rename(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.cross.lock().await
    }

    /// The gate's epoch: pass it to [`Fs::wait_gate_past`] after [`Fs::begin_move`] refused.
    pub(crate) fn gate_epoch(&self) -> u64 {
        lock(&self.gate.state).epoch
    }

    /// Wait until a move or a scope ended after `epoch`.
    pub(crate) async fn wait_gate_past(&self, epoch: u64) {
        loop {
            let done = self.gate.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if lock(&self.gate.state).epoch != epoch {
                return;
            }
            done.await;
        }
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
            if let Some(i) = ino {
                let mut g = lock(&self.gate.state);
                let busy = g.moving.contains(&i)
                    || g.scopes
                        .iter()
                        .any(|(id, dirs)| *id != own.id && dirs.binary_search(&i).is_ok());
                if busy {
                    return None;
                }
                g.moving.push(i);
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
        Some((ino.map(|ino| Moving { files: self, ino }), inside))
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
    ) -> FsResult<()> {
        for (ino, entry, st) in held.iter_mut() {
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

    /// The inodes at and above `ino` (its ancestors), for [`Fs::moving_over`].
    pub(crate) fn lineage(&self, ino: u64) -> Vec<u64> {
        let t = lock(&self.ns.table);
        let mut out = vec![ino];
        let mut cur = ino;
        while let Some(n) = t.get(cur) {
            if n.parent == cur || out.len() > 4096 {
                break;
            }
            cur = n.parent;
            out.push(cur);
        }
        out
    }

    /// Whether a rename is moving any of `lineage`. Call with `open_files` locked.
    pub(crate) fn moving_over(&self, lineage: &[u64]) -> bool {
        let g = lock(&self.gate.state);
        !g.moving.is_empty() && lineage.iter().any(|i| g.moving.contains(i))
    }

    /// Wait until no rename moves `ino` or a directory above it.
    pub(crate) async fn wait_for_renames(&self, lineage: &[u64]) {
        loop {
            let done = self.gate.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.moving_over(lineage) {
                return;
            }
            done.await;
        }
    }
}
