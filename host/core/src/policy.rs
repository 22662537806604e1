//! Where the core asks the policy (`blobmount_policy_api::Policy`): filter verdicts,
//! name-conflict resolutions, per-path consistency and ACL decisions.
//!
//! Why a module of its own: the questions are asked from listing, lookup, attribute and write
//! paths alike, and must be asked the same way everywhere (keys relative to the mount root,
//! the same object description, the same errors). The core sees only the plain-Rust trait;
//! whether a WASM plugin or the built-in defaults answer is the daemon's choice. Without
//! configuration the core runs with [`builtin_for`], which reproduces the behaviour the
//! global settings in [`FsConfig`] have always had.
//!
//! Error rules (docs/semantics.md, "Policy"): a read-only verdict makes modifications fail
//! with EROFS ([`FsError::ReadOnly`]); an access kind the ACL does not allow gives EACCES
//! ([`FsError::AccessDenied`]), as does creating over a name the filter hides.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobmount_backend::UserMetadata;
use blobmount_policy_api::{
    self as api, Access, AclConfig, Builtin, BuiltinConfig, ConflictEntry, ConflictKind,
    Consistency, ConsistencyConfig, Resolution, Ttl, Verdict,
};

use crate::attr::Kind;
use crate::config::FsConfig;
use crate::error::{FsError, FsResult};
use crate::fs::{Caller, Fs, lock};
use crate::inode::Node;

/// Longest time the kernel is told to trust an entry or attributes (a `forever` stat TTL).
pub const KERNEL_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// What the policy decided for one node when its attributes were fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePolicy {
    /// Filter verdict `visible-read-only`: modifications fail with EROFS.
    pub read_only: bool,
    /// How long the node's attributes are trusted (`Duration::MAX`: until changed here).
    pub stat_ttl: Duration,
    /// Directories: how long a listing is reused.
    pub list_ttl: Duration,
    /// Every open asks the store for the current version, whatever `stat_ttl` says.
    pub revalidate_on_open: bool,
    /// File data may be kept by the kernel page cache and the file cache.
    pub cacheable: bool,
}

impl NodePolicy {
    pub fn new(read_only: bool, c: Consistency) -> NodePolicy {
        NodePolicy {
            read_only,
            stat_ttl: ttl(c.stat_ttl),
            list_ttl: ttl(c.list_ttl),
            revalidate_on_open: c.revalidate_on_open,
            cacheable: c.cacheable,
        }
    }
}

/// A policy TTL as a duration: `none` is zero, `forever` is `Duration::MAX`.
pub fn ttl(t: Ttl) -> Duration {
    t.as_duration().unwrap_or(Duration::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The built-in policy equivalent to the global settings of `cfg`: owner and modes for
/// objects without metadata, the attribute and listing TTLs, everything visible, the
/// directory keeps a conflicting name.
pub fn builtin_config_for(cfg: &FsConfig) -> BuiltinConfig {
    BuiltinConfig {
        acl: AclConfig {
            uid: cfg.uid,
            gid: cfg.gid,
            file_mode: u32::from(cfg.file_mode & 0o7777),
            dir_mode: u32::from(cfg.dir_mode & 0o7777),
        },
        consistency: ConsistencyConfig {
            stat_ttl_ms: ms(cfg.attr_ttl),
            list_ttl_ms: ms(cfg.list_ttl),
            data_ttl_ms: ms(cfg.attr_ttl),
            // Open revalidates once the attributes are older than the stat TTL (see
            // `Fs::open`); `true` would ask the store at every open.
            revalidate_on_open: false,
            cacheable: true,
        },
        ..BuiltinConfig::default()
    }
}

/// [`builtin_config_for`], compiled.
pub fn builtin_for(cfg: &FsConfig) -> Builtin {
    // Cannot fail: no globs, and the modes are masked to permission bits.
    Builtin::new(builtin_config_for(cfg)).unwrap_or_default()
}

fn secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn now_secs() -> i64 {
    secs(SystemTime::now())
}

/// What the store says about one object, as the policy sees it.
pub(crate) struct Described<'a> {
    /// Key relative to the mount root; directories end with `/`.
    pub key: String,
    pub is_dir: bool,
    pub size: u64,
    pub mtime: SystemTime,
    pub content_type: Option<&'a str>,
    pub meta: Option<&'a UserMetadata>,
}

impl Described<'_> {
    pub(crate) fn info(&self) -> api::ObjectInfo {
        api::ObjectInfo {
            key: self.key.clone(),
            size: if self.is_dir { 0 } else { self.size },
            mtime_secs: secs(self.mtime),
            is_dir: self.is_dir,
            content_type: self.content_type.map(str::to_string),
            metadata: self
                .meta
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl Fs {
    /// `store_key` relative to the mount root, with a trailing `/` for directories.
    pub(crate) fn policy_key(&self, store_key: &str, is_dir: bool) -> String {
        let p = &self.cfg.prefix;
        let rel = if p.is_empty() {
            store_key
        } else {
            store_key
                .strip_prefix(p.as_str())
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(store_key)
        };
        if is_dir && !rel.is_empty() {
            format!("{rel}/")
        } else {
            rel.to_string()
        }
    }

    /// Filter verdict and consistency for a node being built from what the store said.
    /// `None` when the filter hides it.
    pub(crate) fn decide_node(&self, d: &Described<'_>) -> Option<NodePolicy> {
        let verdict = self.policy.filter(&d.info(), now_secs());
        if verdict == Verdict::Hidden {
            return None;
        }
        let c = self.policy.consistency(&d.key, d.is_dir);
        Some(NodePolicy::new(verdict == Verdict::VisibleReadOnly, c))
    }

    /// Consistency of a node the mount creates itself (always visible and writable).
    pub(crate) fn new_node_policy(&self, parent: u64, name: &str, kind: Kind) -> NodePolicy {
        let is_dir = kind == Kind::Dir;
        let key = self
            .key_of(parent)
            .map(|pk| self.policy_key(&self.child_key(&pk, name), is_dir))
            .unwrap_or_default();
        NodePolicy::new(false, self.policy.consistency(&key, is_dir))
    }

    /// Owner and mode for an object without its own `uid`/`gid`/`mode` metadata. Asked
    /// with caller 0:0: the kernel keeps one set of attributes per inode for every process.
    pub(crate) fn default_owner(&self, d: &Described<'_>) -> (u32, u32, u16) {
        let a = self.policy.acl(&d.info(), api::Caller::default());
        (a.uid, a.gid, (a.mode & 0o7777) as u16)
    }

    /// How long the kernel may trust the entry and attributes of `ino`.
    pub fn kernel_ttl(&self, ino: u64) -> Duration {
        lock(&self.table)
            .get(ino)
            .map(|n| n.policy.stat_ttl)
            .unwrap_or(self.cfg.attr_ttl)
            .min(KERNEL_TTL_MAX)
    }

    /// EROFS when the mount or the node (read-only verdict) refuses modifications.
    pub(crate) fn check_node_writable(&self, ino: u64) -> FsResult<()> {
        self.check_writable()?;
        match lock(&self.table).get(ino) {
            Some(n) if n.policy.read_only => Err(FsError::ReadOnly),
            Some(_) => Ok(()),
            None => Err(FsError::NotFound),
        }
    }

    /// The ACL check: EACCES unless the policy allows `caller` every kind in `want` on
    /// `ino`. Called by the FUSE adapter before lookup (execute on the directory), open,
    /// opendir, setattr, unlink, rmdir and rename, and by create/mkdir/symlink here; the
    /// kernel has already checked the mode bits (`default_permissions`).
    pub fn check_access(&self, ino: u64, caller: Caller, want: Access) -> FsResult<()> {
        let info = {
            let t = lock(&self.table);
            let n = t.get(ino).ok_or(FsError::NotFound)?;
            let key = t.key_of(ino, &self.cfg.prefix).ok_or(FsError::NotFound)?;
            node_info(self.policy_key(&key, n.kind == Kind::Dir), n)
        };
        let got = self
            .policy
            .acl(
                &info,
                api::Caller {
                    uid: caller.uid,
                    gid: caller.gid,
                },
            )
            .allow;
        let missing = (want.read && !got.read)
            || (want.write && !got.write)
            || (want.execute && !got.execute);
        if missing {
            Err(FsError::AccessDenied("denied by the ACL policy"))
        } else {
            Ok(())
        }
    }

    /// Checks before creating `name` in `parent`: the mount and the directory accept
    /// changes, the caller may write the directory, and the new entry would not be
    /// read-only (EROFS). A new name the filter would hide may be created (a size or age
    /// rule would otherwise refuse every new, empty file); it is hidden once listed.
    pub(crate) fn check_create(
        &self,
        parent: u64,
        name: &str,
        kind: Kind,
        c: Caller,
    ) -> FsResult<()> {
        self.check_node_writable(parent)?;
        self.check_access(parent, c, WRITE)?;
        self.check_new_name(parent, name, kind)
    }

    /// EROFS if a new entry `name` in `parent` would be read-only by the filter.
    pub(crate) fn check_new_name(&self, parent: u64, name: &str, kind: Kind) -> FsResult<()> {
        let is_dir = kind == Kind::Dir;
        let d = Described {
            key: self.policy_key(&self.child_key(&self.key_of(parent)?, name), is_dir),
            is_dir,
            size: 0,
            mtime: SystemTime::now(),
            content_type: None,
            meta: None,
        };
        match self.policy.filter(&d.info(), now_secs()) {
            Verdict::VisibleReadOnly => Err(FsError::ReadOnly),
            Verdict::Visible | Verdict::Hidden => Ok(()),
        }
    }

    /// EACCES if `name` in `parent` is an object the filter hides (it looks absent, but must
    /// not be created or renamed over).
    pub(crate) async fn check_not_hidden(&self, parent: u64, name: &str) -> FsResult<()> {
        match self.resolve_unfiltered(parent, name).await? {
            Some(p) if self.probe_verdict(parent, &p)? == Verdict::Hidden => Err(
                FsError::AccessDenied("the name is taken by an object the filter hides"),
            ),
            Some(_) | None => Ok(()),
        }
    }

    /// The filter verdict for a probed child of `parent`.
    pub(crate) fn probe_verdict(&self, parent: u64, p: &crate::fs::Probe) -> FsResult<Verdict> {
        let pk = self.key_of(parent)?;
        let d = self.describe_probe(&self.child_key(&pk, &p.seg), p);
        Ok(self.policy.filter(&d.info(), now_secs()))
    }

    pub(crate) fn describe_probe<'a>(
        &self,
        store_key: &str,
        p: &'a crate::fs::Probe,
    ) -> Described<'a> {
        let is_dir = p.kind == Kind::Dir;
        Described {
            key: self.policy_key(store_key, is_dir),
            is_dir,
            size: p.info.as_ref().map(|i| i.size).unwrap_or(0),
            mtime: p
                .info
                .as_ref()
                .map(|i| i.last_modified)
                .unwrap_or(UNIX_EPOCH),
            content_type: p.info.as_ref().and_then(|i| i.content_type.as_deref()),
            meta: p.info.as_ref().and_then(|i| i.metadata.as_ref()),
        }
    }

    /// Name a file that shares its name with a directory in `dir_key` gets (`None`: hidden).
    /// The directory always keeps the name; a policy answer renaming or hiding it is
    /// ignored (logged), since lookups must find directories by their store names.
    pub(crate) fn file_name_beside_dir(
        &self,
        dir_key: &str,
        seg: &str,
        size: u64,
    ) -> Option<String> {
        let parent = self.policy_key(dir_key, true);
        let key = format!("{parent}{seg}");
        let entries = [
            ConflictEntry {
                name: seg.to_string(),
                key: key.clone(),
                is_dir: false,
                size,
            },
            ConflictEntry {
                name: seg.to_string(),
                key: format!("{key}/"),
                is_dir: true,
                size: 0,
            },
        ];
        let r = self
            .policy
            .resolve_conflict(&parent, ConflictKind::FileAndDirectory, &entries);
        if r.get(1).is_some_and(|d| *d != Resolution::Keep) {
            self.warn_once(
                "name-conflict policy renamed or hid a directory; the directory keeps its name",
                &key,
            );
        }
        match r.first() {
            Some(Resolution::Rename(n)) if n != seg && api::is_valid_name(n) => Some(n.clone()),
            Some(Resolution::Rename(_))
            | Some(Resolution::Keep)
            | Some(Resolution::Hide)
            | None => None,
        }
    }

    /// Name shown for a store name Linux cannot show (`None`: hidden).
    pub(crate) fn stand_in_name(&self, dir_key: &str, seg: &str, is_dir: bool) -> Option<String> {
        let parent = self.policy_key(dir_key, true);
        let suffix = if is_dir { "/" } else { "" };
        let entry = ConflictEntry {
            name: seg.to_string(),
            key: format!("{parent}{seg}{suffix}"),
            is_dir,
            size: 0,
        };
        match self
            .policy
            .resolve_conflict(&parent, ConflictKind::InvalidName, &[entry])
            .first()
        {
            Some(Resolution::Rename(n)) if api::is_valid_name(n) => Some(n.clone()),
            Some(Resolution::Rename(_))
            | Some(Resolution::Keep)
            | Some(Resolution::Hide)
            | None => None,
        }
    }

    /// Filter one LIST page: `(is_dir, store key, info)` per candidate; returns which to keep.
    pub(crate) fn filter_page(&self, items: &[api::ObjectInfo]) -> Vec<bool> {
        if items.is_empty() {
            return Vec::new();
        }
        let v = self.policy.filter_batch(items, now_secs());
        // A policy answering with the wrong length is already handled by the WASM host;
        // anything still missing counts as hidden.
        (0..items.len())
            .map(|i| v.get(i).is_some_and(|v| *v != Verdict::Hidden))
            .collect()
    }
}

/// Read a file, or list a directory.
pub const READ: Access = Access {
    read: true,
    write: false,
    execute: false,
};
/// Modify a file, or create/delete/rename entries in a directory.
pub const WRITE: Access = Access {
    read: false,
    write: true,
    execute: false,
};
/// Traverse a directory (lookups in it).
pub const EXECUTE: Access = Access {
    read: false,
    write: false,
    execute: true,
};

/// Access kinds an open with `flags` needs.
pub fn open_access(flags: i32) -> Access {
    let acc = flags & libc::O_ACCMODE;
    Access {
        read: acc == libc::O_RDONLY || acc == libc::O_RDWR,
        write: acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0,
        execute: false,
    }
}

fn node_info(key: String, n: &Node) -> api::ObjectInfo {
    Described {
        key,
        is_dir: n.kind == Kind::Dir,
        size: n.size,
        mtime: n.mtime,
        content_type: None,
        meta: Some(&n.meta),
    }
    .info()
}

impl Fs {
    /// With `revalidate-on-open`, forget when the attributes were fetched so the open asks
    /// the store for the current version whatever the stat TTL says.
    pub(crate) fn revalidate_if_policy_says(&self, ino: u64) {
        let mut t = lock(&self.table);
        if let Some(n) = t.get_mut(ino)
            && n.policy.revalidate_on_open
            && !n.local_only
        {
            n.fetched = None;
        }
    }

    /// Whether the policy lets the kernel keep the file's pages.
    pub(crate) fn cacheable(&self, ino: u64) -> bool {
        lock(&self.table)
            .get(ino)
            .is_some_and(|n| n.policy.cacheable)
    }
}
