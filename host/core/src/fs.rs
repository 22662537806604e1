//! The [`Fs`] object: shared state, name resolution, lookup/getattr/setattr/statfs.
//!
//! Directory operations live in `dirops.rs`, open files (staging, reads, uploads) in
//! `fileops.rs`; all three extend the same struct.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use blobmount_backend::api::permissions_string;
use blobmount_backend::{AccessUpdate, Backend, BackendError};
use blobmount_policy_api::Policy;
use tracing::debug;

use crate::attr::{Attr, Kind};
use crate::attrwrite::AttrWriter;
use crate::blockpool::BlockPool;
use crate::budget::MemoryBudget;
use crate::config::FsConfig;
use crate::error::{FsError, FsResult};
use crate::filecache::{FileCache, FileCacheConfig};
use crate::files::Files;
use crate::inode::find_entry;
use crate::inode::{Hidden, Node, ROOT_INO, Stamp, Table};
use crate::journal::Journal;
use crate::names::{self};
use crate::namespace::Namespace;
use crate::passthrough::Passthrough;
use crate::policy::{self as pol, NodePolicy};
use crate::readpath::ReadMode;
use crate::renamegate::RenameGate;
use crate::staging::CacheLock;
use crate::sync::lock;
pub use crate::types::{
    Caller, DirEntry, FsStats, LARGE_DIR_RETRY, LOOKUP_CONCURRENCY, OpenReply, SetAttr, StatFs,
};

pub struct Fs {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) cfg: Arc<FsConfig>,
    /// Names, inodes, caches and policy verdicts (`namespace/`).
    pub(crate) ns: Arc<Namespace>,
    /// Open files, handles and the write path (`files/`).
    pub(crate) files: Arc<Files>,
    pub(crate) dir_handles: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Mode, owner and times on their way to the store (`attrwrite.rs`).
    pub(crate) attrs: Arc<AttrWriter>,
    /// Plans of directory renames in progress (`journal.rs`).
    pub(crate) journal: Journal,
    /// Bytes of read-ahead blocks held or in flight, for all readers together.
    pub budget: Arc<MemoryBudget>,
    /// Read-ahead blocks shared between handles of the same object version.
    pub pool: Arc<BlockPool>,
    /// The disk cache of whole objects (`read.mode: file-cache`).
    pub file_cache: Option<Arc<FileCache>>,
    pub stats: Arc<FsStats>,
    /// Recently used inodes and what the last poll saw (`poller.rs`).
    pub(crate) poller: crate::poller::Poller,
    /// Held for the life of the core: one daemon per cache directory.
    _cache_lock: CacheLock,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("backend", &self.backend.describe())
            .finish()
    }
}

/// Whether an attribute change may be held and coalesced with the ones that follow
/// (chmod/chown/utimens, `attrwrite.rs`) or is written now (extended attributes: a program
/// that sets one reads it back through the store's API at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Persist {
    Coalesce,
    Now,
}

impl Fs {
    /// Create the core over a backend with the built-in policy equivalent to `cfg`
    /// ([`pol::builtin_for`]). Prepares the cache directory (0700).
    pub fn new(backend: Arc<dyn Backend>, cfg: FsConfig) -> FsResult<Fs> {
        let policy = Arc::new(pol::builtin_for(&cfg));
        Fs::with_policy(backend, cfg, policy)
    }

    /// [`Fs::new`] with the given policy deciding visibility, names, TTLs and access.
    pub fn with_policy(
        backend: Arc<dyn Backend>,
        cfg: FsConfig,
        policy: Arc<dyn Policy>,
    ) -> FsResult<Fs> {
        for sub in ["staging", "conflicts"] {
            std::fs::create_dir_all(cfg.cache_dir.join(sub))?;
        }
        set_private(&cfg.cache_dir)?;
        let cache_lock = CacheLock::take(&cfg.cache_dir)?;
        let now = SystemTime::now();
        let root_policy = NodePolicy::new(false, policy.consistency("", true));
        let root = Node::root(cfg.dir_mode, cfg.uid, cfg.gid, now, root_policy);
        let budget = MemoryBudget::new(cfg.read_memory as u64);
        let file_cache = match cfg.read_mode {
            ReadMode::FileCache => Some(FileCache::new(FileCacheConfig {
                dir: cfg.cache_dir.join("files"),
                max_bytes: cfg.file_cache_max,
                min_free_bytes: cfg.file_cache_min_free,
                chunk: cfg.read_block as u64,
                parallel: (cfg.read_ahead_max / cfg.read_block.max(1)).clamp(2, 16),
                range_reads: cfg.file_cache_range_reads,
            })?),
            ReadMode::Direct | ReadMode::BlockCache => None,
        };
        let cfg = Arc::new(cfg);
        let journal = Journal::new(&cfg.cache_dir, backend.clone());
        let stats = Arc::new(FsStats::default());
        let ns = Arc::new(Namespace::new(
            backend.clone(),
            cfg.clone(),
            policy,
            root,
            stats.clone(),
            now,
        ));
        let pool = BlockPool::new(budget.clone());
        let open_files = Arc::new(Mutex::new(HashMap::new()));
        let attrs = {
            let open = open_files.clone();
            AttrWriter::new(
                ns.clone(),
                backend.clone(),
                cfg.attr_write_delay,
                Box::new(move |ino| lock(&open).contains_key(&ino)),
            )
        };
        let files = Files {
            backend: backend.clone(),
            cfg: cfg.clone(),
            stats: stats.clone(),
            ns: ns.clone(),
            budget: budget.clone(),
            file_cache: file_cache.clone(),
            open_files,
            attrs: attrs.clone(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            opened_etags: Mutex::new(HashMap::new()),
            gate: RenameGate::default(),
            pass: Passthrough::new(cfg.passthrough, file_cache.clone()),
            halted: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(Fs {
            backend,
            cfg,
            ns,
            files: Arc::new(files),
            dir_handles: Mutex::new(HashMap::new()),
            attrs,
            journal,
            budget,
            pool,
            file_cache,
            stats,
            poller: crate::poller::Poller::default(),
            _cache_lock: cache_lock,
        })
    }

    /// Tests only: go away like a killed daemon would, leaving staged files and manifests
    /// behind (the cache lock is released, as the kernel does for a dead process).
    #[doc(hidden)]
    pub fn abandon_like_a_crash(self) {
        self.files
            .halted
            .store(true, std::sync::atomic::Ordering::Release);
        let entries: Vec<_> = lock(&self.files.open_files).drain().collect();
        let handles: Vec<_> = lock(&self.files.handles).drain().collect();
        std::mem::forget(entries);
        std::mem::forget(handles);
    }

    /// Open files with changes the store does not have yet.
    pub fn pending_uploads(&self) -> usize {
        self.files.pending_uploads()
    }

    /// Changes of mode, owner or times held for a moment and not in the store yet
    /// (`attrwrite.rs`; written within `write.attr-delay-ms`, at fsync and at unmount).
    pub fn pending_attr_writes(&self) -> usize {
        self.attrs.pending_count()
    }

    /// Deal with what a previous daemon left unfinished: directory renames (rolled back or
    /// finished, see `journal.rs`), then writes in `staging/`. Call once, before serving.
    /// Never deletes data the store does not have.
    pub async fn recover(&self, mode: crate::Recovery) -> crate::RecoveryReport {
        self.files.recover(&self.journal, mode).await
    }

    /// How long the kernel may trust `ino`'s entry and attributes (its policy's stat TTL).
    pub fn kernel_ttl(&self, ino: u64) -> std::time::Duration {
        self.ns.kernel_ttl(ino)
    }

    /// Whether `caller` may access `ino` as `want` (mode bits, owner, the ACL policy).
    pub fn check_access(
        &self,
        ino: u64,
        caller: Caller,
        want: blobmount_policy_api::Access,
    ) -> FsResult<()> {
        self.ns.check_access(ino, caller, want)
    }

    /// The operations as `c` asks for them, each checked against the ACL policy
    /// (`checked.rs`): what the FUSE adapter calls.
    pub fn as_caller(&self, c: Caller) -> crate::AsCaller<'_> {
        crate::AsCaller::new(self, c)
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Check that the store answers with the configured credentials (used at mount time so a
    /// bad URL or key fails fast with a clear message).
    pub async fn check_store(&self) -> Result<(), BackendError> {
        let prefix = self.ns.dir_prefix_of_key(&self.cfg.prefix);
        self.backend.list_under(&prefix, 1).await.map(|_| ())
    }

    /// FUSE lookup: find `name` in `parent`, counting a kernel reference.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.touch(parent);
        self.lookup_with(parent, name, false).await
    }

    async fn lookup_with(&self, parent: u64, name: &str, listed: bool) -> FsResult<Attr> {
        if self.ns.node_kind(parent)? != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if name.len() > names::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        self.relist_small(parent, name).await;
        let (generation, known) = {
            let mut t = lock(&self.ns.table);
            let known = t
                .child(parent, name)
                .and_then(|ino| Some((ino, t.get(ino)?.stamp())));
            if let Some(ino) = t.child(parent, name) {
                let fresh = t
                    .get(ino)
                    .map(|n| self.ns.fresh(n) || self.files.holds_news(ino))
                    .unwrap_or(false);
                if fresh && let Some(n) = t.get_mut(ino) {
                    n.lookups += 1;
                    return Ok(n.attr(ino));
                }
            } else if let Some(p) = t.get(parent) {
                // Negative cache, and a fresh listing without the name: absent, no request.
                let absent = p.dir.is_known_absent(name, self.cfg.negative_ttl)
                    || p.dir
                        .fresh_listing(p.policy.list_ttl)
                        .is_some_and(|l| find_entry(l, name).is_none());
                if absent {
                    self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
                    return Err(FsError::NotFound);
                }
            }
            (t.get(parent).map(|p| p.dir.generation), known)
        };
        let (found, hidden) = match self
            .ns
            .resolve_unfiltered_with(parent, name, listed)
            .await?
        {
            // `node_from` gives nothing for what the filter hides.
            Some(p) => match self.ns.node_from(parent, name, &p)? {
                Some(n) => (Some(n), Hidden::No),
                None => (None, Hidden::Yes),
            },
            None => (None, Hidden::No),
        };
        let settled: Option<FsResult<Attr>> = 'settle: {
            let mut t = lock(&self.ns.table);
            // A file written, changed or created here while the store was asked: ours is newer.
            if let Some(ino) = t.child(parent, name) {
                let before = known.as_ref().filter(|(i, _)| *i == ino).map(|(_, s)| s);
                let newer = match before {
                    Some(s) => self.local_is_newer(&t, ino, Some(s)),
                    // Not known before the request: it came to be here meanwhile.
                    None => t.get(ino).is_some(),
                };
                if newer && let Some(n) = t.get_mut(ino) {
                    n.lookups += 1;
                    return Ok(n.attr(ino));
                }
            }
            let Some(node) = found else {
                if let Some(p) = t.get_mut(parent)
                    && Some(p.dir.generation) == generation
                    && !self.cfg.negative_ttl.is_zero()
                {
                    p.dir.note_absent(name, self.cfg.negative_ttl, hidden);
                }
                return Err(FsError::NotFound);
            };
            // The directory changed while the store was asked and the name is not here now (a
            // rename moved it away, an unlink removed it): the answer may be older than that
            // change, and must not bring the old name back as a new inode. Ask again.
            let changed = t.get(parent).map(|p| p.dir.generation) != generation;
            if changed && t.child(parent, name).is_none() {
                break 'settle None;
            }
            let ino = t.upsert(node);
            let n = t.get_mut(ino).ok_or(FsError::NotFound)?;
            n.lookups += 1;
            Some(Ok(n.attr(ino)))
        };
        match settled {
            Some(r) => r,
            None => Box::pin(self.lookup_with(parent, name, listed)).await,
        }
    }

    /// A lookup of a name we know nothing about, in a directory whose cached listing has
    /// expired but fit in one page, or that was never listed: list the directory (one
    /// request) rather than probe the name (a HEAD and a LIST), so the next names looked up
    /// there (a directory being filled: tar x; a training job opening its files by name) are
    /// answered from the listing. A directory that turns out to need more than one page is
    /// not cached and is not tried again for a while ([`LARGE_DIR_RETRY`]): its names are
    /// probed. One lookup per directory does this at a time; the others probe meanwhile.
    async fn relist_small(&self, parent: u64, name: &str) {
        let go = {
            let mut t = lock(&self.ns.table);
            let known = t.child(parent, name).is_some();
            let page = self.cfg.list_page_size;
            let negative_ttl = self.cfg.negative_ttl;
            match t.get_mut(parent) {
                Some(p) if !known && !p.policy.list_ttl.is_zero() => {
                    let d = &mut p.dir;
                    let worth = match &d.listing {
                        Some(l) => l.len() <= page && d.fresh_listing(p.policy.list_ttl).is_none(),
                        None => d.large_at.is_none_or(|at| at.elapsed() >= LARGE_DIR_RETRY),
                    };
                    if worth && !d.is_known_absent(name, negative_ttl) && !d.relisting {
                        d.relisting = true;
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            }
        };
        if !go {
            return;
        }
        let r = self.ns.list_fresh_if(parent, true).await;
        if let Some(p) = lock(&self.ns.table).get_mut(parent) {
            p.dir.relisting = false;
            if matches!(r, Ok(None)) {
                p.dir.large_at = Some(Instant::now());
            }
        }
        match r {
            Ok(Some(_)) => {
                self.stats.relists.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => debug!(
                parent,
                "directory needs more than one listing page: probing names"
            ),
            // The probe that follows reports what is wrong, if anything still is.
            Err(e) => debug!(parent, error = %e, "re-listing a small directory failed"),
        }
    }

    /// Look up several names of one directory concurrently (readdirplus), in order. Each
    /// success counts a kernel reference like [`Fs::lookup`].
    pub async fn lookup_many(&self, parent: u64, names: &[String]) -> Vec<FsResult<Attr>> {
        use futures::StreamExt;
        // Boxed with an explicit type: a closure-produced future here trips the compiler's
        // "FnOnce is not general enough" when the caller spawns it.
        type Lookup<'a> =
            std::pin::Pin<Box<dyn std::future::Future<Output = FsResult<Attr>> + Send + 'a>>;
        let futs: Vec<Lookup<'_>> = names
            .iter()
            .map(|n| Box::pin(self.lookup_with(parent, n, true)) as Lookup<'_>)
            .collect();
        futures::stream::iter(futs)
            .buffered(LOOKUP_CONCURRENCY)
            .collect()
            .await
    }

    pub fn forget(&self, ino: u64, n: u64) {
        // The node may have to outlive the kernel's reference: while its upload is still to
        // come after the last close (written behind, `files/mod.rs` "Closing": the upload
        // needs its key, mode and times), and while attributes are held for it
        // (`attrwrite.rs`: they are written from the node). Then it is forgotten after them.
        let upload_pending = self.files.writes_behind() && self.files.entry(ino).is_some();
        if (upload_pending || self.attrs.is_pending(ino))
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (files, ns) = (self.files.clone(), self.ns.clone());
            rt.spawn(async move {
                while files.writes_behind() && files.entry(ino).is_some() {
                    tokio::time::sleep(files.cfg.close_delay.max(Duration::from_millis(20))).await;
                }
                if files.attrs.is_pending(ino)
                    && let Err(e) = files.attrs.flush(ino).await
                {
                    tracing::warn!(ino, error = %e, "could not write the mode, owner or times of a forgotten file");
                }
                lock(&ns.table).forget(ino, n);
            });
            return;
        }
        let gone = {
            let mut t = lock(&self.ns.table);
            t.forget(ino, n);
            t.get(ino).is_none()
        };
        if gone {
            lock(&self.files.opened_etags).remove(&ino);
        }
    }

    /// FUSE getattr; revalidates against the store when the cached attributes are stale.
    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let (parent, name, fresh, stamp) = {
            let t = lock(&self.ns.table);
            let n = t.get(ino).ok_or(FsError::NotFound)?;
            (
                n.parent,
                n.name.clone(),
                // A node without a name (unlinked while open) has nothing to revalidate.
                ino == ROOT_INO || n.detached || self.ns.fresh(n) || self.files.holds_news(ino),
                n.stamp(),
            )
        };
        if !fresh {
            let found = match self.ns.resolve(parent, &name).await? {
                Some(p) => self.ns.node_from(parent, &name, &p)?,
                None => None,
            };
            let mut t = lock(&self.ns.table);
            if self.local_is_newer(&t, ino, Some(&stamp)) {
                // Changed here while the store was asked: what we hold is newer.
            } else {
                match found {
                    Some(node) => {
                        if let Some(n) = t.get_mut(ino)
                            && n.kind == node.kind
                        {
                            let (lookups, dir, symlink) =
                                (n.lookups, std::mem::take(&mut n.dir), n.symlink.take());
                            let same_version = n.etag == node.etag;
                            let mut node = node;
                            node.keep_local_dir_times(n);
                            *n = node;
                            n.lookups = lookups;
                            n.dir = dir;
                            if same_version && n.symlink.is_none() {
                                n.symlink = symlink;
                            }
                        }
                    }
                    None => return Err(FsError::NotFound),
                }
            }
            return t.get(ino).map(|n| n.attr(ino)).ok_or(FsError::NotFound);
        }
        let t = lock(&self.ns.table);
        t.get(ino).map(|n| n.attr(ino)).ok_or(FsError::NotFound)
    }

    /// Whether node `ino` holds news that a store answer asked for when it had `before`
    /// lacks: an open file with changes the store does not have yet, or a change made here
    /// (write, truncate, chmod, upload) while the answer was on its way. Such an answer
    /// must not overwrite the node (a chmod during a `stat`'s HEAD would be undone, and go
    /// up with the file's next upload undone).
    pub(crate) fn local_is_newer(&self, t: &Table, ino: u64, before: Option<&Stamp>) -> bool {
        let Some(n) = t.get(ino) else {
            return false;
        };
        self.files.holds_news(ino) || before.is_some_and(|s| *s != n.stamp())
    }

    /// FUSE setattr: truncate, chmod, chown, utimens. Persisted in object metadata.
    pub async fn setattr(&self, ino: u64, req: SetAttr) -> FsResult<Attr> {
        if ino == ROOT_INO {
            // The mount root has no object of its own; accept and ignore (like `mkdir -p`).
            return self.getattr(ino).await;
        }
        self.ns.check_node_writable(ino)?;
        if let Some(size) = req.size {
            if self.ns.node_kind(ino)? == Kind::Dir {
                return Err(FsError::IsDir);
            }
            self.truncate(ino, size).await?;
        }
        let access = req.perm.is_some() || req.uid.is_some() || req.gid.is_some();
        if access && self.backend.capabilities().posix_access {
            self.set_path_access(ino, &req).await?;
        } else if access {
            self.change_attrs(ino, Persist::Coalesce, |n| {
                set_mode_owner(n, &req);
                Ok(())
            })
            .await?;
        }
        let changes_meta = req.mtime.is_some() || req.atime.is_some();
        if changes_meta {
            self.change_attrs(ino, Persist::Coalesce, |n| {
                if let Some(m) = req.mtime {
                    n.mtime = m;
                }
                if let Some(a) = req.atime {
                    n.atime = Some(a);
                }
                Ok(())
            })
            .await?;
        }
        self.getattr(ino).await
    }

    /// chmod / chown / chgrp on a store with POSIX access (ADLS Gen2 HNS): one Path - Update
    /// `setAccessControl` with the permissions (`rwxr-x---`) and the owner and group as
    /// numeric ids, instead of our metadata keys. A file not uploaded yet has no path: its
    /// attributes go up with it, as on a flat store.
    async fn set_path_access(&self, ino: u64, req: &SetAttr) -> FsResult<()> {
        let scope = self.files.enter_gate(&[ino]).await;
        // Under the open file's lock, so an upload (whose first commit sets the path's
        // permissions, `files/commit.rs`) is not overtaken by this change or overtakes it.
        let open = self.files.entry(ino);
        let st = match &open {
            Some(e) => Some(e.state.lock().await),
            None => None,
        };
        let local_only = lock(&self.ns.table)
            .get(ino)
            .ok_or(FsError::NotFound)?
            .local_only;
        if local_only {
            drop(st);
            drop(scope);
            // Not in the store yet (staged or streaming): the mode joins its upload.
            return self
                .change_attrs(ino, Persist::Coalesce, |n| {
                    set_mode_owner(n, req);
                    Ok(())
                })
                .await;
        }
        let edit = |n: &mut Node| {
            set_mode_owner(n, req);
            n.ctime = SystemTime::now();
        };
        let update = AccessUpdate {
            owner: req.uid.map(|u| u.to_string()),
            group: req.gid.map(|g| g.to_string()),
            permissions: req.perm.map(|p| permissions_string(p & 0o7777)),
            acl: None,
        };
        let key = self.ns.key_of(ino)?;
        let after = self.backend.set_access(&key, &update).await?;
        let mut st = st;
        self.files.own_new_version(ino, st.as_deref_mut(), after);
        if let Some(n) = lock(&self.ns.table).get_mut(ino) {
            edit(n);
        }
        drop(st);
        drop(scope);
        Ok(())
    }

    /// Apply `edit` to node `ino`'s attributes (and set its ctime), then persist them: with
    /// the open file's pending upload when it has changes the store lacks (nothing is sent
    /// now), else as one metadata update ([`Fs::persist_attrs`]), held briefly and coalesced
    /// with the changes that follow when `how` allows it (`attrwrite.rs`). The one place attribute
    /// changes are written: setattr and the extended attributes (`xattr.rs`) share it. An
    /// error from `edit` changes nothing.
    pub(crate) async fn change_attrs(
        &self,
        ino: u64,
        how: Persist,
        edit: impl FnOnce(&mut Node) -> FsResult<()> + Send,
    ) -> FsResult<()> {
        // No rename moves the file meanwhile (the metadata update goes to its key).
        let _scope = self.files.enter_gate(&[ino]).await;
        // Under the open file's lock (when open), so an upload cannot start or end
        // between deciding where the change goes and making it.
        let open = self.files.entry(ino);
        let mut st = match &open {
            Some(e) => Some(e.state.lock().await),
            None => None,
        };
        let dirty = open
            .as_ref()
            .is_some_and(|e| e.dirty.load(std::sync::atomic::Ordering::Acquire));
        let kind = {
            let mut t = lock(&self.ns.table);
            let n = t.get_mut(ino).ok_or(FsError::NotFound)?;
            edit(n)?;
            n.ctime = SystemTime::now();
            n.kind
        };
        if dirty {
            // Open and modified: the metadata goes up with the data at flush.
            if let Some(g) = st.as_mut() {
                g.attrs_changed = true;
                // A crash before the upload recovers the new attributes too.
                self.files.record_staged(ino, g, true)?;
            }
        } else if how == Persist::Coalesce && self.attrs.can_defer(kind) {
            // Held briefly so that the changes that follow (rsync's chmod, then utimensat,
            // then rename) go up as one request. The kernel sends a close's release after
            // close returns, so the file may still look open here: then the change waits
            // for its last release (or is carried by its next upload; `attrwrite.rs`), and
            // never changes the version an open file's upload is conditional on meanwhile.
            self.attrs.defer(ino);
        } else {
            let before = lock(&self.ns.table).get(ino).and_then(|n| n.etag.clone());
            self.persist_attrs(ino).await?;
            // The store's version changed by our metadata update only: an open (clean)
            // file based on the version it updated must make its next upload
            // conditional on the new one. (One based on an older version, replaced by
            // another client since, stays conflicting.)
            if let Some(g) = st.as_mut()
                && g.exists_remote
                && g.base_etag.is_some()
                && g.base_etag == before
            {
                let etag = lock(&self.ns.table).get(ino).and_then(|n| n.etag.clone());
                g.base_etag = etag.clone();
                g.read_etag = etag;
            }
        }
        drop(st);
        Ok(())
    }

    /// Write the node's attributes to the store (now; a held change of it goes with them).
    pub(crate) async fn persist_attrs(&self, ino: u64) -> FsResult<()> {
        self.attrs.write_now(ino).await
    }

    pub async fn readlink(&self, ino: u64) -> FsResult<String> {
        let (kind, cached, size, etag) = {
            let t = lock(&self.ns.table);
            let n = t.get(ino).ok_or(FsError::NotFound)?;
            // A target in the metadata (gcsfuse) stands when the cached one was dropped.
            let cached = n
                .symlink
                .clone()
                .or_else(|| n.meta.get(crate::attr::META_GCSFUSE_SYMLINK).cloned());
            (n.kind, cached, n.size, n.etag.clone())
        };
        if kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        if let Some(t) = cached {
            return Ok(t);
        }
        let key = self.ns.key_of(ino)?;
        let data = self
            .backend
            .get_range(&key, 0..size, etag.as_deref())
            .await
            .map_err(|e| match e {
                BackendError::PreconditionFailed { .. } => FsError::Stale,
                e => e.into(),
            })?;
        let target = String::from_utf8_lossy(&data).into_owned();
        if let Some(n) = lock(&self.ns.table).get_mut(ino) {
            n.symlink = Some(target.clone());
        }
        Ok(target)
    }

    /// FUSE getxattr (`xattr.rs`): the value of `name` on `ino`.
    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        crate::xattr::getxattr(self, ino, name).await
    }

    /// FUSE listxattr (`xattr.rs`): the `user.*` names of `ino`, each followed by a NUL.
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        crate::xattr::listxattr(self, ino).await
    }

    /// FUSE setxattr (`xattr.rs`): user metadata key `name` set to `value`.
    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> FsResult<()> {
        crate::xattr::setxattr(self, ino, name, value, flags).await
    }

    /// FUSE removexattr (`xattr.rs`): user metadata key `name` removed.
    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        crate::xattr::removexattr(self, ino, name).await
    }

    /// Note that `ino` was used (looked up in, listed, opened), for the poller.
    pub(crate) fn touch(&self, ino: u64) {
        if self.cfg.poll.enabled() {
            self.poller.touch(ino);
        }
    }

    /// One round of the background poller (`poller.rs`): revalidate what was used lately,
    /// drop what another client changed, and say what the kernel must forget.
    pub async fn poll(&self) -> crate::poller::PollReport {
        crate::poller::poll(self).await
    }

    /// Forget what is cached for the mount-relative `path` and say what the kernel must
    /// forget (`refresh.rs`). Asks the store nothing: the next access does.
    pub fn refresh(&self, path: &str, recursive: bool) -> FsResult<crate::refresh::Refresh> {
        crate::refresh::refresh(self, path, recursive)
    }

    /// The policy now answers differently (its plugins were reloaded): cached attributes,
    /// listings and negative entries are asked again, so verdicts and TTLs from the old
    /// policy are not served. Open files and their pending uploads are untouched.
    pub fn policy_changed(&self) {
        lock(&self.ns.table).mark_all_stale();
    }

    pub fn statfs(&self) -> StatFs {
        // Object stores have no fixed capacity: report a large, constant size so tools that
        // check free space (cp, package managers) proceed.
        let blocks = 1u64 << 40; // 4 PiB in 4 KiB blocks
        StatFs {
            blocks,
            bfree: blocks,
            files: 1 << 32,
            ffree: 1 << 32,
            bsize: 4096,
            namelen: names::NAME_MAX as u32,
        }
    }

    /// Number of inodes currently known (for metrics and tests).
    pub fn inode_count(&self) -> usize {
        lock(&self.ns.table).len()
    }
}

fn set_private(dir: &std::path::Path) -> FsResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// The mode, owner and group a `setattr` asks for, into the node (ctime is the caller's).
fn set_mode_owner(n: &mut Node, req: &SetAttr) {
    if let Some(p) = req.perm {
        n.perm = p & 0o7777;
    }
    if let Some(u) = req.uid {
        n.uid = u;
    }
    if let Some(g) = req.gid {
        n.gid = g;
    }
}
