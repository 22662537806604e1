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

use std::sync::Mutex;

use crate::sync::lock;

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

impl GateState {
    fn moving_over(&self, lineage: &[u64]) -> bool {
        !self.moving.is_empty() && lineage.iter().any(|i| self.moving.contains(i))
    }
}

impl RenameGate {
    /// Wait until `f` gives a value: it is asked under the gate's state lock, now and again
    /// each time a move or a scope ends (the wake-up is armed before asking, so none is
    /// missed in between).
    async fn wait_until<T>(&self, mut f: impl FnMut(&mut GateState) -> Option<T>) -> T {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if let Some(v) = f(&mut lock(&self.state)) {
                return v;
            }
            done.await;
        }
    }

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
    gate: &'a RenameGate,
    ino: u64,
}

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        self.gate.ended(|g| {
            if let Some(i) = g.moving.iter().position(|&x| x == self.ino) {
                g.moving.swap_remove(i);
            }
        });
    }
}

/// An operation's scope in the gate: no rename moves these directories while it lasts.
pub(crate) struct Scope<'a> {
    gate: &'a RenameGate,
    id: u64,
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        self.gate
            .ended(|g| g.scopes.retain(|(id, _)| *id != self.id));
    }
}

impl RenameGate {
    /// Wait until no rename moves any inode of `scope` (directories with all their
    /// ancestors, sorted), then register it as the scope of an operation about to work there.
    pub(crate) async fn enter(&self, scope: Vec<u64>) -> Scope<'_> {
        let mut scope = Some(scope);
        let id = self
            .wait_until(|g| {
                let dirs =
                    scope.take_if(|s| !g.moving.iter().any(|m| s.binary_search(m).is_ok()))?;
                let id = g.next_scope;
                g.next_scope += 1;
                g.scopes.push((id, dirs));
                Some(id)
            })
            .await;
        Scope { gate: self, id }
    }

    /// Taken by a rename between two directories before it enters the gate.
    pub(crate) async fn cross_directory(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.cross.lock().await
    }

    /// The gate's epoch: pass it to [`RenameGate::wait_past`] after a move was refused.
    pub(crate) fn epoch(&self) -> u64 {
        lock(&self.state).epoch
    }

    /// Wait until a move or a scope ended after `epoch`.
    pub(crate) async fn wait_past(&self, epoch: u64) {
        self.wait_until(|g| (g.epoch != epoch).then_some(())).await
    }

    /// Register `ino` as being moved, unless another rename moves it or another operation's
    /// scope holds it (`own`, the rename's own scope, does not count). Call with the
    /// open-file map locked; make the registration's guard with [`RenameGate::moving`].
    pub(crate) fn try_move(&self, ino: u64, own: &Scope<'_>) -> bool {
        let mut g = lock(&self.state);
        let busy = g.moving.contains(&ino)
            || g.scopes
                .iter()
                .any(|(id, dirs)| *id != own.id && dirs.binary_search(&ino).is_ok());
        if !busy {
            g.moving.push(ino);
        }
        !busy
    }

    /// The guard of a registration made by [`RenameGate::try_move`].
    pub(crate) fn moving(&self, ino: u64) -> Moving<'_> {
        Moving { gate: self, ino }
    }

    /// Whether a rename is moving any of `lineage`. Call with `open_files` locked.
    pub(crate) fn moving_over(&self, lineage: &[u64]) -> bool {
        lock(&self.state).moving_over(lineage)
    }

    /// Wait until no rename moves an inode of `lineage` (an inode and its ancestors).
    pub(crate) async fn wait_for(&self, lineage: &[u64]) {
        self.wait_until(|g| (!g.moving_over(lineage)).then_some(()))
            .await
    }
}
