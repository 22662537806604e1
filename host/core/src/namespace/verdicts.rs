//! The policy's decisions for a node, asked the same way from every path: keys relative to
//! the mount root, one object description, one set of errors (see `crate::policy` for the
//! rules and the built-in defaults).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobmount_policy_api::{self as api, Access, ConflictEntry, ConflictKind, Resolution, Verdict};

use super::{Namespace, Probe};
use crate::attr::Kind;
use crate::error::{FsError, FsResult};
use crate::inode::Node;
use crate::policy::{Described, KERNEL_TTL_MAX, NodePolicy, WRITE, now_secs};
use crate::sync::lock;
use crate::types::Caller;

impl Namespace {
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
    /// `None` when the filter hides it. `known`: the verdict a listing already got for the
    /// same description (not asked again).
    pub(crate) fn decide_node(
        &self,
        d: &Described<'_>,
        known: Option<Verdict>,
    ) -> Option<NodePolicy> {
        let verdict = known.unwrap_or_else(|| self.policy.filter(&d.info(), now_secs()));
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
        if self.known_free(parent, name) {
            // Nothing in the store has the name, as a fresh listing or negative entry says.
            return Ok(());
        }
        match self.resolve_unfiltered(parent, name).await? {
            Some(p) if self.probe_verdict(parent, &p)? == Verdict::Hidden => Err(
                FsError::AccessDenied("the name is taken by an object the filter hides"),
            ),
            Some(_) | None => Ok(()),
        }
    }

    /// The filter verdict for a probed child of `parent`.
    pub(crate) fn probe_verdict(&self, parent: u64, p: &Probe) -> FsResult<Verdict> {
        if let Some(v) = p.verdict {
            return Ok(v);
        }
        let pk = self.key_of(parent)?;
        let d = self.describe_probe(&self.child_key(&pk, &p.seg), p);
        Ok(self.policy.filter(&d.info(), now_secs()))
    }

    pub(crate) fn describe_probe<'a>(&self, store_key: &str, p: &'a Probe) -> Described<'a> {
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

    /// Filter one LIST page: the verdict per candidate.
    pub(crate) fn filter_page(&self, items: &[api::ObjectInfo]) -> Vec<Verdict> {
        if items.is_empty() {
            return Vec::new();
        }
        let v = self.policy.filter_batch(items, now_secs());
        // A policy answering with the wrong length is already handled by the WASM host;
        // anything still missing counts as hidden.
        (0..items.len())
            .map(|i| v.get(i).copied().unwrap_or(Verdict::Hidden))
            .collect()
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

impl Namespace {
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
