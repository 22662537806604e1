//! The inode table: what the kernel has been told about, by inode number.
//!
//! Nodes store their parent and their own key *segment*, not a full key, so renaming a
//! directory is O(1) here and descendants follow automatically. The table is behind a plain
//! mutex held only for short, non-async sections.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use blobmount_backend::UserMetadata;

use crate::attr::{Attr, Kind};
use crate::policy::NodePolicy;

pub const ROOT_INO: u64 = 1;

/// How a directory is marked in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Implicit: exists only because objects live under its prefix.
    None,
    /// A zero-byte `dir/` object.
    Slash,
    /// A blob `dir` with `hdi_isfolder=true` (Azure flat namespace, BlobFuse2 compatible).
    Folder,
}

/// One entry of a directory listing, as shown to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub seg: String,
    pub kind: Kind,
    /// What the listing said about a file, when it carried user metadata too (Azure): then
    /// a lookup needs no HEAD.
    pub info: Option<blobmount_backend::ObjectInfo>,
    /// The filter's verdict on `info` when the listing asked it (kept with `info`), so a
    /// lookup from this listing does not ask the policy again.
    pub verdict: Option<blobmount_policy_api::Verdict>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub parent: u64,
    pub name: String,
    /// The key segment this node maps to (differs from `name` for conflicts and stand-ins).
    pub seg: String,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Set by a program (`utimensat`); otherwise reported as `mtime` (`noatime`).
    pub atime: Option<SystemTime>,
    /// No name refers to it any more (unlinked or replaced while open): `st_nlink` is 0.
    pub detached: bool,
    pub etag: Option<String>,
    pub marker: Marker,
    pub symlink: Option<String>,
    /// Metadata keys we do not own, preserved on rewrite.
    pub meta: UserMetadata,
    /// The content type the store holds for the object (`None`: not known, e.g. from an S3
    /// listing); a rewrite under the same name keeps a deliberate one (see `contenttype`).
    pub content_type: Option<String>,
    /// When the attributes were last confirmed by the store.
    pub fetched: Option<Instant>,
    /// Kernel lookup count.
    pub lookups: u64,
    /// Created here and not yet uploaded.
    pub local_only: bool,
    /// Directories: what is cached about their contents.
    pub dir: DirCache,
    /// The policy's decisions for this node (read-only verdict, TTLs).
    pub policy: crate::policy::NodePolicy,
}

/// Cached knowledge about a directory's contents. Any local change in the directory resets
/// it ([`DirCache::changed`]); otherwise it is trusted for the list / negative TTLs.
#[derive(Clone, Debug, Default)]
pub struct DirCache {
    /// Last listing (names -> key segments and kinds): the list cache and the type cache,
    /// and how stand-in names are resolved.
    pub listing: Option<Vec<Entry>>,
    /// When `listing` was read from the store (when its last page arrived).
    pub listed_at: Option<Instant>,
    /// How long reading `listing` took: a listing stays fresh for at least that long (see
    /// [`DirCache::fresh_listing`]).
    pub listing_took: std::time::Duration,
    /// Names recently found absent (negative cache): when, and whether the store does hold
    /// an object there that the filter hides (then the name is not free to create).
    pub negatives: HashMap<String, (Instant, Hidden)>,
    /// The cached listing left out objects the store holds (hidden by the filter, or names
    /// with no stand-in): a name missing from it may still be taken.
    pub listing_hides: bool,
    /// Bumped by every local change, so a listing that was in flight during one is not
    /// cached.
    pub generation: u64,
    /// A lookup is re-listing this directory (see `Fs::relist_small`): others probe meanwhile.
    pub relisting: bool,
    /// When a lookup last found that this directory does not fit in one listing page (so
    /// lookups probe names instead of listing it).
    pub large_at: Option<Instant>,
    /// Listings of this directory being read from the store now.
    pub in_flight: u32,
    /// What changed here locally since the oldest listing in flight started, in order (see
    /// [`DirCache::begin_listing`]); empty when none is in flight.
    pub flight_log: Vec<FlightChange>,
}

/// A local change made while a listing was being read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlightChange {
    /// `name` is now of this kind (`None`: removed).
    Name(String, Option<Kind>),
    /// Something that cannot be replayed on a listing (everything known was dropped).
    All,
}

/// Most local changes logged while listings are in flight; beyond it the log gives up
/// (`FlightChange::All`) and the listings are not cached.
const FLIGHT_LOG_MAX: usize = 10_000;

/// Whether a name not shown is held by an object the filter hides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hidden {
    No,
    Yes,
}

/// The entry named `name` in a listing sorted by name.
pub fn find_entry<'a>(entries: &'a [Entry], name: &str) -> Option<&'a Entry> {
    entries
        .binary_search_by(|e| e.name.as_str().cmp(name))
        .ok()
        .map(|i| &entries[i])
}

/// Make listing `l` (sorted by name) show `name` as `now` (`None`: absent), as a local
/// change left it; the entry carries no attributes (a lookup of it asks the store). Returns
/// how many entries it grew by (-1, 0 or 1).
fn patch_listing(l: &mut Vec<Entry>, name: &str, now: Option<Kind>) -> isize {
    let entry = |kind| Entry {
        name: name.to_string(),
        seg: name.to_string(),
        kind,
        info: None,
        verdict: None,
    };
    match (l.binary_search_by(|e| e.name.as_str().cmp(name)), now) {
        (Ok(i), Some(kind)) => {
            l[i] = entry(kind);
            0
        }
        (Ok(i), None) => {
            l.remove(i);
            -1
        }
        (Err(i), Some(kind)) => {
            l.insert(i, entry(kind));
            1
        }
        (Err(_), None) => 0,
    }
}

/// Negative entries kept per directory; beyond this the oldest half is dropped.
pub const NEGATIVES_PER_DIR: usize = 4096;

impl DirCache {
    /// Something in the directory changed locally: forget what we knew.
    pub fn changed(&mut self) {
        self.listing = None;
        self.listed_at = None;
        self.negatives.clear();
        self.generation += 1;
        self.log_flight(FlightChange::All);
    }

    fn log_flight(&mut self, c: FlightChange) {
        if self.in_flight == 0 {
            return;
        }
        if self.flight_log.len() >= FLIGHT_LOG_MAX {
            if self.flight_log.last() != Some(&FlightChange::All) {
                self.flight_log.push(FlightChange::All);
            }
            return;
        }
        self.flight_log.push(c);
    }

    /// A listing of this directory starts: local changes are logged from now on, so that
    /// the listing (which may have been read before or after them) can be brought up to
    /// date when it arrives ([`DirCache::end_listing`]). Returns its place in the log.
    pub fn begin_listing(&mut self) -> usize {
        self.in_flight += 1;
        self.flight_log.len()
    }

    /// The listing begun at `start` has arrived (`entries`, sorted by name; `None`: it
    /// failed). Replays on it the local changes made meanwhile (a file created here while a
    /// writer filled the directory is in it whether or not the store listed it yet; one
    /// removed here is not) and returns whether it may be cached: not when something was
    /// changed that cannot be replayed. Without this, a directory that several writers keep
    /// filling never gets a listing cached (one is always in flight during a create), and
    /// every lookup of a new name there costs requests.
    pub fn end_listing(&mut self, start: usize, entries: Option<&mut Vec<Entry>>) -> bool {
        let mut ok = entries.is_some();
        if let Some(l) = entries {
            for c in self.flight_log.iter().skip(start) {
                match c {
                    FlightChange::Name(name, now) => {
                        patch_listing(l, name, *now);
                    }
                    FlightChange::All => {
                        ok = false;
                        break;
                    }
                }
            }
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.flight_log.clear();
        }
        ok
    }

    /// Another client may have changed `name` (`Fs::refresh`): the listing is dropped (it
    /// may carry the name's old attributes, or lack a new name) and so is the name's
    /// negative entry; other names found absent stay so.
    pub fn forget_name(&mut self, name: &str) {
        self.negatives.remove(name);
        self.listing = None;
        self.listed_at = None;
        self.generation += 1;
        self.log_flight(FlightChange::All);
    }

    /// `name` changed locally (created, uploaded, removed, renamed): the listing is stale,
    /// and `name` is no longer known absent. Other names found absent stay absent: a local
    /// change of one name does not make another appear (so a directory being filled by
    /// several writers keeps its negative entries).
    ///
    /// `now` is what the name is after the change (`None`: removed). A cached listing is
    /// patched rather than dropped, so the directory's other names are still answered from
    /// it (a lookup of a new name in a directory being filled needs no request); the entry
    /// carries no attributes, so a lookup of `name` itself asks the store (one HEAD).
    /// Returns how many entries the listing grew by (-1, 0 or 1).
    pub fn name_changed(&mut self, name: &str, now: Option<Kind>) -> isize {
        self.negatives.remove(name);
        self.generation += 1;
        self.log_flight(FlightChange::Name(name.to_string(), now));
        match self.listing.as_mut() {
            Some(l) => patch_listing(l, name, now),
            None => 0,
        }
    }

    /// Cache a listing that took `took` to read; `entries` must be sorted by name (as
    /// `list_dir` returns them), so lookups can binary-search it.
    pub fn set_listing(&mut self, entries: Vec<Entry>, hides: bool, took: std::time::Duration) {
        debug_assert!(entries.windows(2).all(|w| w[0].name <= w[1].name));
        self.listing = Some(entries);
        self.listed_at = Some(Instant::now());
        self.listing_took = took;
        self.listing_hides = hides;
    }

    /// The listing, if it is younger than `ttl`, or than the time it took to read when that
    /// was longer: a directory whose listing takes 20 s (100,000 objects) would otherwise be
    /// listed again by every `ls -l` (its lookups outlast a 1 s TTL), and a listing is as
    /// old as its first page anyway. A zero `ttl` (caching off) stays zero.
    pub fn fresh_listing(&self, ttl: std::time::Duration) -> Option<&Vec<Entry>> {
        let ttl = match ttl.is_zero() {
            true => ttl,
            false => ttl.max(self.listing_took),
        };
        match (&self.listing, self.listed_at) {
            (Some(l), Some(at)) if at.elapsed() < ttl => Some(l),
            _ => None,
        }
    }

    /// The entry shown as `name` in the cached listing, however old.
    pub fn listed(&self, name: &str) -> Option<&Entry> {
        find_entry(self.listing.as_deref()?, name)
    }

    /// `name` is not shown (absent or hidden), as found within `ttl`.
    pub fn is_known_absent(&self, name: &str, ttl: std::time::Duration) -> bool {
        self.negatives
            .get(name)
            .is_some_and(|(at, _)| at.elapsed() < ttl)
    }

    /// Nothing in the store has `name`, as far as a negative entry younger than `neg_ttl`
    /// or a listing younger than `list_ttl` that left nothing out can tell: creating it
    /// needs no request first (the upload itself is conditional on absence).
    pub fn is_known_free(
        &self,
        name: &str,
        neg_ttl: std::time::Duration,
        list_ttl: std::time::Duration,
    ) -> bool {
        let negative = self
            .negatives
            .get(name)
            .is_some_and(|(at, h)| *h == Hidden::No && at.elapsed() < neg_ttl);
        negative
            || (!self.listing_hides
                && self
                    .fresh_listing(list_ttl)
                    .is_some_and(|l| find_entry(l, name).is_none()))
    }

    pub fn note_absent(&mut self, name: &str, ttl: std::time::Duration, hidden: Hidden) {
        if self.negatives.len() >= NEGATIVES_PER_DIR {
            self.negatives.retain(|_, (at, _)| at.elapsed() < ttl);
            if self.negatives.len() >= NEGATIVES_PER_DIR {
                let mut ages: Vec<Instant> = self.negatives.values().map(|(at, _)| *at).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                self.negatives.retain(|_, (at, _)| *at > cut);
            }
        }
        self.negatives
            .insert(name.to_string(), (Instant::now(), hidden));
    }
}

/// Where a node is and the attributes a local change moves (a rename, a write, a
/// truncate, chmod/chown/utimens, an upload). Taken before a request to the store and compared when its answer arrives: an
/// answer that left before a local change must not overwrite it (see `Fs::local_is_newer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    parent: u64,
    seg: String,
    etag: Option<String>,
    size: u64,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Node {
    pub fn stamp(&self) -> Stamp {
        Stamp {
            parent: self.parent,
            seg: self.seg.clone(),
            etag: self.etag.clone(),
            size: self.size,
            perm: self.perm,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            ctime: self.ctime,
        }
    }

    /// A node the store holds nothing for yet (no size, ETag, metadata or cached contents),
    /// owned by root with no permissions and not referenced by the kernel.
    pub fn blank(parent: u64, name: &str, kind: Kind, now: SystemTime, policy: NodePolicy) -> Node {
        Node {
            parent,
            name: name.into(),
            seg: name.into(),
            kind,
            size: 0,
            perm: 0,
            uid: 0,
            gid: 0,
            mtime: now,
            ctime: now,
            atime: None,
            detached: false,
            etag: None,
            marker: Marker::None,
            symlink: None,
            meta: UserMetadata::new(),
            content_type: None,
            fetched: None,
            lookups: 0,
            local_only: false,
            dir: DirCache::default(),
            policy,
        }
    }

    /// The mount's root directory, referenced once by the kernel from the start.
    pub fn root(perm: u16, uid: u32, gid: u32, now: SystemTime, policy: NodePolicy) -> Node {
        Node {
            perm,
            uid,
            gid,
            lookups: 1,
            ..Node::blank(ROOT_INO, "", Kind::Dir, now, policy)
        }
    }

    /// A directory re-read from the store keeps the times its entries' changes here gave
    /// it (they are not written to the store), when they are newer than the stored ones.
    pub fn keep_local_dir_times(&mut self, old: &Node) {
        if self.kind == Kind::Dir && old.kind == Kind::Dir && old.mtime > self.mtime {
            self.mtime = old.mtime;
            self.ctime = self.ctime.max(old.ctime);
        }
    }

    pub fn attr(&self, ino: u64) -> Attr {
        Attr {
            ino,
            kind: self.kind,
            size: if self.kind == Kind::Dir { 0 } else { self.size },
            perm: self.perm,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            ctime: self.ctime,
            atime: self.atime.unwrap_or(self.mtime),
            nlink: match (self.kind, self.detached) {
                (_, true) => 0,
                // `.`, the entry in the parent, and each subdirectory's `..`, counted from
                // the cached listing when there is one (a directory never listed says 2).
                (Kind::Dir, false) => {
                    let subdirs = self
                        .dir
                        .listing
                        .as_ref()
                        .map_or(0, |l| l.iter().filter(|e| e.kind == Kind::Dir).count());
                    2 + subdirs.min(u32::MAX as usize - 2) as u32
                }
                (Kind::File | Kind::Symlink, false) => 1,
            },
        }
    }
}

#[derive(Debug)]
pub struct Table {
    nodes: HashMap<u64, Node>,
    children: HashMap<(u64, String), u64>,
    /// Number of entries in `children` per parent (so `forget` need not scan).
    fanout: HashMap<u64, usize>,
    next: u64,
    /// Upper bound of the entries in all cached listings (exact after a trim; listings
    /// dropped by `DirCache::changed` are only subtracted at the next trim).
    listed_bound: usize,
}

impl Table {
    pub fn new(root: Node) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT_INO, root);
        Table {
            nodes,
            children: HashMap::new(),
            fanout: HashMap::new(),
            next: ROOT_INO + 1,
            listed_bound: 0,
        }
    }

    /// Cache the listing of directory `ino`, then drop the oldest listings of other
    /// directories while all cached listings together hold more than `cap` entries.
    /// Returns how many listings were dropped.
    pub fn cache_listing(
        &mut self,
        ino: u64,
        entries: Vec<Entry>,
        hides: bool,
        cap: usize,
        took: std::time::Duration,
    ) -> usize {
        let n = entries.len();
        let Some(node) = self.nodes.get_mut(&ino) else {
            return 0;
        };
        node.dir.set_listing(entries, hides, took);
        self.listed_bound += n;
        if self.listed_bound <= cap {
            return 0;
        }
        let mut held: Vec<(Instant, u64, usize)> = self
            .nodes
            .iter()
            .filter_map(|(i, n)| Some((n.dir.listed_at?, *i, n.dir.listing.as_ref()?.len())))
            .collect();
        let mut total: usize = held.iter().map(|h| h.2).sum();
        held.sort();
        let mut dropped = 0;
        for (_, i, len) in held {
            if total <= cap {
                break;
            }
            if i == ino {
                continue;
            }
            if let Some(n) = self.nodes.get_mut(&i) {
                n.dir.listing = None;
                n.dir.listed_at = None;
                total -= len;
                dropped += 1;
            }
        }
        self.listed_bound = total;
        dropped
    }

    /// `name` in directory `parent` changed locally; see [`DirCache::name_changed`].
    pub fn name_changed(&mut self, parent: u64, name: &str, now: Option<Kind>) {
        if let Some(p) = self.nodes.get_mut(&parent) {
            let grew = p.dir.name_changed(name, now);
            self.listed_bound = self.listed_bound.saturating_add_signed(grew);
        }
    }

    /// An entry of directory `parent` was created, removed or renamed here: its mtime and
    /// ctime are now (kept in memory: a directory's own object is not rewritten for it).
    pub fn entries_changed(&mut self, parent: u64) {
        if let Some(p) = self.nodes.get_mut(&parent) {
            let now = SystemTime::now();
            p.mtime = now;
            p.ctime = now;
        }
    }

    fn attach(&mut self, parent: u64, name: String, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.detached = false;
        }
        if self.children.insert((parent, name), ino).is_none() {
            *self.fanout.entry(parent).or_default() += 1;
        }
    }

    fn detach(&mut self, parent: u64, name: &str) -> Option<u64> {
        let r = self.children.remove(&(parent, name.to_string()));
        if let Some(n) = r.and_then(|ino| self.nodes.get_mut(&ino)) {
            n.detached = true;
        }
        if r.is_some()
            && let Some(c) = self.fanout.get_mut(&parent)
        {
            *c -= 1;
            if *c == 0 {
                self.fanout.remove(&parent);
            }
        }
        r
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.children.get(&(parent, name.to_string())).copied()
    }

    /// Full key (or key prefix for directories, without trailing `/`) of a node.
    pub fn key_of(&self, ino: u64, root_prefix: &str) -> Option<String> {
        let mut segs = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let n = self.nodes.get(&cur)?;
            segs.push(n.seg.as_str());
            cur = n.parent;
        }
        let mut key = root_prefix.to_string();
        for s in segs.iter().rev() {
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(s);
        }
        Some(key)
    }

    /// Insert or refresh the node for `(parent, name)`; returns its inode number.
    /// A node whose kind changed is replaced by a new inode.
    pub fn upsert(&mut self, node: Node) -> u64 {
        let k = (node.parent, node.name.clone());
        if let Some(&ino) = self.children.get(&k) {
            if let Some(old) = self.nodes.get_mut(&ino)
                && old.kind == node.kind
            {
                let lookups = old.lookups;
                let dir = std::mem::take(&mut old.dir);
                let mut node = node;
                node.keep_local_dir_times(old);
                // A listing that reports no type (S3) does not forget the one a HEAD of
                // the same version found.
                if node.content_type.is_none() && node.etag == old.etag {
                    node.content_type = old.content_type.take();
                }
                *old = node;
                old.lookups = lookups;
                old.dir = dir;
                return ino;
            }
            self.detach(k.0, &k.1);
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        self.attach(k.0, k.1, ino);
        ino
    }

    /// Detach `(parent, name)` from the namespace (the node lives on until forgotten).
    pub fn unlink(&mut self, parent: u64, name: &str) -> Option<u64> {
        self.detach(parent, name)
    }

    /// Whether `ino` lies strictly below directory `dir`.
    pub fn is_under(&self, ino: u64, dir: u64) -> bool {
        let mut cur = ino;
        while cur != ROOT_INO {
            match self.nodes.get(&cur) {
                Some(n) if n.parent == dir => return true,
                Some(n) => cur = n.parent,
                None => return false,
            }
        }
        false
    }

    /// Force revalidation of every known node below `dir` (their keys changed, and with
    /// them their ETags).
    pub fn mark_stale_under(&mut self, dir: u64) {
        let inos: Vec<u64> = self
            .nodes
            .keys()
            .copied()
            .filter(|&i| self.is_under(i, dir))
            .collect();
        for i in inos {
            if let Some(n) = self.nodes.get_mut(&i) {
                n.fetched = None;
                n.dir.changed();
            }
        }
    }

    /// The known children of directory `parent`: names and inodes.
    pub fn children_of(&self, parent: u64) -> Vec<(String, u64)> {
        if !self.fanout.contains_key(&parent) {
            return Vec::new();
        }
        self.children
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .map(|((_, name), ino)| (name.clone(), *ino))
            .collect()
    }

    /// Every known node strictly below directory `dir`.
    pub fn descendants(&self, dir: u64) -> Vec<u64> {
        self.nodes
            .keys()
            .copied()
            .filter(|&i| i != dir && self.is_under(i, dir))
            .collect()
    }

    /// The mount-relative path shown for `ino` (names, not key segments).
    pub fn path_of(&self, ino: u64) -> Option<String> {
        let mut names = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let n = self.nodes.get(&cur)?;
            names.push(n.name.as_str());
            cur = n.parent;
        }
        names.reverse();
        Some(names.join("/"))
    }

    /// Force revalidation of every known node and a new listing of every directory, the
    /// root's included (the policy changed: its verdicts and TTLs must be asked again).
    pub fn mark_all_stale(&mut self) {
        for (&ino, n) in self.nodes.iter_mut() {
            if ino != ROOT_INO {
                n.fetched = None;
            }
            n.dir.changed();
        }
    }

    /// Move a node to a new parent and name.
    pub fn rename(&mut self, ino: u64, new_parent: u64, new_name: &str) {
        let Some((p, name)) = self.nodes.get(&ino).map(|n| (n.parent, n.name.clone())) else {
            return;
        };
        if self.children.get(&(p, name.clone())) == Some(&ino) {
            self.detach(p, &name);
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = new_parent;
            n.name = new_name.to_string();
            n.seg = new_name.to_string();
        }
        self.detach(new_parent, new_name);
        self.attach(new_parent, new_name.to_string(), ino);
    }

    /// Drop `n` kernel references; forget the node when none remain and it is detached or
    /// was only looked up.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let remove = match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0 && !node.local_only
            }
            None => false,
        };
        if remove {
            // Keep directories that still have known children: their keys depend on them.
            if self.fanout.contains_key(&ino) {
                return;
            }
            if let Some(node) = self.nodes.remove(&ino)
                && self.children.get(&(node.parent, node.name.clone())) == Some(&ino)
            {
                self.detach(node.parent, &node.name);
            }
        }
    }

    /// Children known to the table that were created locally and not uploaded yet.
    pub fn local_children(&self, parent: u64) -> Vec<(String, Kind)> {
        self.children
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .filter_map(|((_, name), ino)| {
                self.nodes
                    .get(ino)
                    .filter(|n| n.local_only)
                    .map(|n| (name.clone(), n.kind))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn listed(names: &[(&str, Kind)]) -> Vec<Entry> {
        names
            .iter()
            .map(|(n, k)| Entry {
                name: n.to_string(),
                seg: n.to_string(),
                kind: *k,
                info: None,
                verdict: None,
            })
            .collect()
    }

    #[test]
    fn a_local_change_patches_the_cached_listing() {
        let policy = crate::policy::NodePolicy {
            read_only: false,
            stat_ttl: Duration::from_secs(60),
            list_ttl: Duration::from_secs(60),
            revalidate_on_open: false,
            cacheable: true,
        };
        let root = Node::root(0o755, 0, 0, SystemTime::UNIX_EPOCH, policy);
        let mut t = Table::new(root);
        let ino = ROOT_INO;
        t.cache_listing(
            ino,
            listed(&[("b", Kind::File), ("d", Kind::Dir)]),
            false,
            100,
            Duration::ZERO,
        );
        let names = |t: &Table| -> Vec<(String, Kind)> {
            let l = t
                .get(ino)
                .and_then(|n| n.dir.listing.clone())
                .unwrap_or_default();
            l.into_iter().map(|e| (e.name, e.kind)).collect()
        };
        t.name_changed(ino, "c", Some(Kind::File));
        t.name_changed(ino, "a", Some(Kind::Dir));
        t.name_changed(ino, "b", None);
        t.name_changed(ino, "zz", None);
        assert_eq!(
            names(&t),
            [
                ("a".to_string(), Kind::Dir),
                ("c".to_string(), Kind::File),
                ("d".to_string(), Kind::Dir)
            ]
        );
        // Still fresh: other names are answered from it, and it stays sorted for lookups.
        let dir = &t.get(ino).map(|n| &n.dir).expect("root");
        let l = dir.fresh_listing(Duration::from_secs(60)).expect("fresh");
        assert!(find_entry(l, "c").is_some() && find_entry(l, "b").is_none());
        assert_eq!(t.listed_bound, 3);
    }

    #[test]
    fn a_change_forgets_that_the_name_was_absent_only() {
        let mut d = DirCache::default();
        let ttl = Duration::from_secs(60);
        d.note_absent("x", ttl, Hidden::No);
        d.note_absent("y", ttl, Hidden::Yes);
        let g = d.generation;
        assert_eq!(
            d.name_changed("x", Some(Kind::File)),
            0,
            "no listing to patch"
        );
        assert!(!d.is_known_absent("x", ttl) && d.is_known_absent("y", ttl));
        assert!(!d.is_known_free("y", ttl, ttl), "hidden: taken");
        d.note_absent("x", ttl, Hidden::No);
        assert!(d.is_known_free("x", ttl, ttl));
        d.set_listing(Vec::new(), true, Duration::ZERO);
        assert!(
            !d.is_known_free("z", ttl, ttl),
            "the listing left something out"
        );
        d.set_listing(Vec::new(), false, Duration::ZERO);
        assert!(d.is_known_free("z", ttl, ttl));
        assert!(d.generation > g);
    }

    #[test]
    fn a_slow_listing_stays_fresh_as_long_as_it_took() {
        let mut d = DirCache::default();
        let short = Duration::from_millis(20);
        d.set_listing(Vec::new(), false, Duration::ZERO);
        std::thread::sleep(short * 2);
        assert!(d.fresh_listing(short).is_none(), "a quick listing expires");
        d.set_listing(Vec::new(), false, Duration::from_secs(30));
        std::thread::sleep(short * 2);
        assert!(
            d.fresh_listing(short).is_some(),
            "took 30 s: fresh for 30 s"
        );
        assert!(
            d.fresh_listing(Duration::ZERO).is_none(),
            "a zero TTL (caching off) stays off"
        );
    }
}
