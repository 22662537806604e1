//! The namespace: which names exist, what they are, and what the store holds for them.
//!
//! Why a layer of its own: names are resolved from listing, lookup, attribute, rename and
//! write paths alike, and must be resolved the same way everywhere: the inode table, the
//! lookup/negative/listing caches, stand-in names for keys a file name cannot show, and the
//! policy's verdicts (filter, name conflicts, consistency, ACL) all live behind this one
//! type, and one `resolve` asks the store what is at a name. [`crate::Fs`] is a façade over
//! it and over the open files. (Compare mountpoint-s3's `Superblock` under its `fs.rs`.)
//!
//! - `mod.rs`: the type, keys of inodes, nodes built from what the store returned;
//! - `resolve.rs`: asking the store what is at a name (probe, stand-ins, the listing cache);
//! - `verdicts.rs`: the policy's decisions for a node (filter, owner, access, TTLs).
//!
//! Locks (the order for the whole core; a lock may be taken while holding the ones above it,
//! never the other way round):
//! 1. the cross-directory rename lock and the rename gate's scopes (`renamegate.rs`): entered
//!    before any of the below is held;
//! 2. an open file's `state` (a `tokio` mutex, held across store requests);
//! 3. `table` (this type; a `std` mutex, never held across an `.await`);
//! 4. `Fs::open_files`, then the rename gate's state, `handles`, `dir_handles` and
//!    `opened_etags` (short `std` mutexes, never held across an `.await`).
//!
//! `table` guards every [`Node`]: names, kinds, attributes, ETags, kernel lookup counts, each
//! directory's cached listing and negative entries.

mod resolve;
mod verdicts;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use blobmount_backend::{Backend, ObjectInfo, UserMetadata};
use blobmount_policy_api::{Policy, Verdict};
use tracing::{info, warn};

use crate::attr::{self, Kind};
use crate::config::FsConfig;
use crate::error::{FsError, FsResult};
use crate::inode::{Marker, Node, Table};
use crate::names::FILE_SUFFIX;
use crate::sync::lock;
use crate::types::FsStats;

/// What the store says is at a name.
pub(crate) struct Probe {
    pub kind: Kind,
    pub seg: String,
    pub info: Option<ObjectInfo>,
    pub marker: Marker,
    /// The filter's verdict on `info`, when a listing already asked it.
    pub verdict: Option<Verdict>,
}

impl Probe {
    /// An object that is not a directory: a symlink if its metadata says so, else a file.
    pub(crate) fn file(seg: impl Into<String>, info: ObjectInfo) -> Probe {
        let m = attr::decode(info.metadata.as_ref().unwrap_or(&UserMetadata::new()));
        let kind = if m.kind == Some(Kind::Symlink) {
            Kind::Symlink
        } else {
            Kind::File
        };
        Probe {
            kind,
            seg: seg.into(),
            info: Some(info),
            marker: Marker::None,
            verdict: None,
        }
    }
}

/// The inode table and everything that decides what a name is (see the module doc).
pub(crate) struct Namespace {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) cfg: Arc<FsConfig>,
    /// Filter, name-conflict, consistency and ACL decisions (`verdicts.rs`).
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) table: Mutex<Table>,
    pub(crate) stats: Arc<FsStats>,
    /// When the core started: the time shown for directories without a marker.
    started: SystemTime,
}

impl Namespace {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        cfg: Arc<FsConfig>,
        policy: Arc<dyn Policy>,
        root: Node,
        stats: Arc<FsStats>,
        started: SystemTime,
    ) -> Namespace {
        Namespace {
            backend,
            cfg,
            policy,
            table: Mutex::new(Table::new(root)),
            stats,
            started,
        }
    }

    pub(crate) fn key_of(&self, ino: u64) -> FsResult<String> {
        lock(&self.table)
            .key_of(ino, &self.cfg.prefix)
            .ok_or(FsError::NotFound)
    }

    /// Listing prefix for a directory key (`""` for the bucket root).
    pub(crate) fn dir_prefix_of_key(&self, key: &str) -> String {
        if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        }
    }

    pub(crate) fn child_key(&self, parent_key: &str, seg: &str) -> String {
        if parent_key.is_empty() {
            seg.to_string()
        } else {
            format!("{parent_key}/{seg}")
        }
    }

    pub(crate) fn node_kind(&self, ino: u64) -> FsResult<Kind> {
        lock(&self.table)
            .get(ino)
            .map(|n| n.kind)
            .ok_or(FsError::NotFound)
    }

    pub(crate) fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    pub(crate) fn fresh(&self, n: &Node) -> bool {
        n.local_only
            || n.fetched
                .map(|t| t.elapsed() < n.policy.stat_ttl)
                .unwrap_or(false)
    }

    /// `name` is not shown in directory `parent` (absent, or hidden by the filter), as a
    /// negative entry or a fresh listing says: a lookup of it needs no request. Not known to
    /// the inode table (the caller checks that first).
    pub(crate) fn known_absent(&self, parent: u64, name: &str) -> bool {
        lock(&self.table).get(parent).is_some_and(|p| {
            p.dir.is_known_absent(name, self.cfg.negative_ttl)
                || p.dir
                    .fresh_listing(p.policy.list_ttl)
                    .is_some_and(|l| crate::inode::find_entry(l, name).is_none())
        })
    }

    /// Nothing in the store has `name` in `parent` (not even an object the filter hides),
    /// as a negative entry or a fresh listing that left nothing out says, and the inode
    /// table has no entry for it: creating it or renaming onto it needs no request first.
    pub(crate) fn known_free(&self, parent: u64, name: &str) -> bool {
        let t = lock(&self.table);
        t.child(parent, name).is_none()
            && t.get(parent).is_some_and(|p| {
                p.dir
                    .is_known_free(name, self.cfg.negative_ttl, p.policy.list_ttl)
            })
    }

    /// Build a node from what the store returned, with the policy's decisions for it
    /// (`None`: the filter hides it).
    pub(crate) fn node_from(&self, parent: u64, name: &str, p: &Probe) -> FsResult<Option<Node>> {
        let store_key = self.child_key(&self.key_of(parent)?, &p.seg);
        let described = self.describe_probe(&store_key, p);
        let Some(policy) = self.decide_node(&described, p.verdict) else {
            return Ok(None);
        };
        let (uid, gid, perm) = self.default_owner(&described);
        let now = SystemTime::now();
        let meta = p
            .info
            .as_ref()
            .and_then(|i| i.metadata.clone())
            .unwrap_or_default();
        let m = attr::decode(&meta);
        let (default_perm, default_mtime) = match p.kind {
            Kind::Dir => (
                perm,
                p.info
                    .as_ref()
                    .map(|i| i.last_modified)
                    .unwrap_or(self.started),
            ),
            Kind::File => (
                perm,
                p.info.as_ref().map(|i| i.last_modified).unwrap_or(now),
            ),
            Kind::Symlink => (
                0o777,
                p.info.as_ref().map(|i| i.last_modified).unwrap_or(now),
            ),
        };
        let mtime = m.mtime.unwrap_or(default_mtime);
        // A target in the metadata (gcsfuse) is the symlink's; its object is empty.
        let symlink = m.symlink_target.filter(|_| p.kind == Kind::Symlink);
        let size = match (&symlink, p.kind) {
            (_, Kind::Dir) => 0,
            (Some(t), _) => t.len() as u64,
            (None, _) => p.info.as_ref().map(|i| i.size).unwrap_or(0),
        };
        Ok(Some(Node {
            parent,
            name: name.to_string(),
            seg: p.seg.clone(),
            kind: p.kind,
            size,
            perm: m.perm.unwrap_or(default_perm),
            uid: m.uid.unwrap_or(uid),
            gid: m.gid.unwrap_or(gid),
            mtime,
            ctime: m.ctime.unwrap_or(mtime),
            atime: m.atime,
            detached: false,
            etag: p.info.as_ref().and_then(|i| i.etag.clone()),
            marker: p.marker,
            symlink,
            meta: strip_owned(meta),
            content_type: p.info.as_ref().and_then(|i| i.content_type.clone()),
            fetched: Some(Instant::now()),
            lookups: 0,
            local_only: false,
            dir: Default::default(),
            policy,
        }))
    }

    /// Count a name shown differently from its key (conflict or stand-in).
    pub(crate) fn count_name_conflict(&self) {
        self.stats.name_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_conflict(&self, key: &str) {
        self.count_name_conflict();
        info!(
            key,
            "name conflict: a file and a directory share this name; the directory keeps it, the file is shown as the name-conflict policy says (built in: suffix {FILE_SUFFIX})"
        );
    }

    pub(crate) fn warn_once(&self, what: &str, key: &str) {
        warn!(key, "{what}");
    }

    /// The inodes at and above `ino` (its ancestors), for the rename gate.
    pub(crate) fn lineage(&self, ino: u64) -> Vec<u64> {
        let t = lock(&self.table);
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

    /// The inodes at and above each of `dirs`, sorted, each once.
    pub(crate) fn lineages(&self, dirs: &[u64]) -> Vec<u64> {
        let mut out: Vec<u64> = dirs.iter().flat_map(|&d| self.lineage(d)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Remove the metadata keys we own, keeping foreign ones to write back unchanged.
/// Whether every segment of `key` is a plain name. Keys with empty, `.` or `..` segments are
/// listed, but stat and open go through the store (which reports them as unaddressable).
fn addressable(key: &str) -> bool {
    !key.split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
}

fn strip_owned(mut m: UserMetadata) -> UserMetadata {
    for k in [
        attr::META_MODE,
        attr::META_UID,
        attr::META_GID,
        attr::META_MTIME,
        attr::META_SYMLINK,
        attr::META_UPLOAD,
        attr::META_CTIME,
        attr::META_ATIME,
    ] {
        m.remove(k);
    }
    m
}
