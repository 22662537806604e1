//! The background poller: revalidate recently used directories and open files against the
//! store, and drop what another client changed (`cache.poll-secs`).
//!
//! Why: without it an outside change is seen when a TTL runs out, or when a user runs
//! `blobmount refresh`. Most mounts never need either; a mount shared with writers it
//! does not hear from (a job that publishes results, a second mount of the same bucket)
//! wants changes to show up on their own, within a bounded time, without short TTLs that
//! cost a request on every `stat`. The poller spends a bounded number of requests per
//! round instead: one listing per recently used directory (up to `poll-max-dirs`, each
//! at most `poll-max-entries` objects) and one HEAD per recently opened file whose
//! directory was not listed (up to `poll-max-files`).
//!
//! What counts as a change: a known file or symlink whose ETag (or, without one, size)
//! differs from what the mount holds, or that is gone; a known directory that is gone; a
//! name that appeared or disappeared in a directory (against the listing the mount holds,
//! or against the previous round's listing). A changed name is dropped exactly as
//! `blobmount refresh PATH` drops it ([`crate::refresh`]), so open files follow the same
//! rules: with local changes they are left alone, clean ones keep reading the version
//! they opened and the next open sees the new one.
//!
//! Races with local work: a directory changed locally while its listing was in flight
//! (its generation moved) is skipped this round, and so is a name whose node changed
//! meanwhile (its stamp moved) or that holds local changes; the next round looks again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::attr::Kind;
use crate::error::FsResult;
use crate::fs::Fs;
use crate::inode::{ROOT_INO, Stamp};
use crate::refresh::Invalidation;
use crate::sync::lock;

/// How the poller works; `interval` zero: off (nothing is tracked).
#[derive(Clone, Debug, PartialEq)]
pub struct PollConfig {
    pub interval: Duration,
    /// Directories and files used within this long are revalidated.
    pub recent: Duration,
    /// Most directories listed per round (most recently used first).
    pub max_dirs: usize,
    /// Most files asked about (HEAD) per round.
    pub max_files: usize,
    /// A directory with more objects than this is not polled (its listing would cost
    /// more than the change is worth); counted in [`PollReport::too_large`].
    pub max_entries: usize,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: Duration::ZERO,
            recent: Duration::from_secs(300),
            max_dirs: 32,
            max_files: 64,
            max_entries: 5000,
        }
    }
}

impl PollConfig {
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }
}

/// Most inodes remembered as recently used (older ones are forgotten first).
const MAX_TRACKED: usize = 8192;

/// What the poller remembers between rounds. Lock order: taken alone, or after nothing
/// (never while the inode table is locked).
#[derive(Default)]
pub(crate) struct Poller {
    /// Inodes used (looked up in, listed, opened) and when.
    used: Mutex<HashMap<u64, Instant>>,
    /// Per directory: the key segments of the objects and prefixes its last polled listing
    /// showed, with the object's ETag or size (prefixes: `None`).
    seen: Mutex<HashMap<u64, Seen>>,
}

impl Poller {
    /// `ino` was used now (only tracked when the poller is on).
    pub(crate) fn touch(&self, ino: u64) {
        let mut used = lock(&self.used);
        used.insert(ino, Instant::now());
        if used.len() > MAX_TRACKED {
            // Forget the older half at once, so this runs rarely.
            let mut times: Vec<Instant> = used.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() / 2];
            used.retain(|_, t| *t >= cut);
        }
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Directories listed.
    pub dirs: usize,
    /// Files asked about one by one.
    pub files: usize,
    /// Directories not polled: more than `max-entries` objects.
    pub too_large: usize,
    /// Directories or files skipped because they changed locally meanwhile.
    pub raced: usize,
    /// Mount-relative paths found changed by another client, and dropped.
    pub changed: Vec<String>,
    /// For the daemon to send to the kernel, in order.
    pub invalidations: Vec<Invalidation>,
}

/// What the mount knew about one child of a polled directory before the listing.
struct Known {
    ino: u64,
    seg: String,
    kind: Kind,
    /// ETag (quotes trimmed) or, without one, the size as text.
    version: Option<String>,
    stamp: Stamp,
}

/// What a polled directory listing showed: key segment -> object version (ETag, or size
/// without one), `None` for a prefix.
type Seen = BTreeMap<String, Option<String>>;

/// What the mount held about a directory before its listing.
struct Before {
    generation: u64,
    known: Vec<Known>,
    listing: Option<HashSet<String>>,
}

/// An ETag as stores print it in HEAD answers and listings alike (`"x"`, `W/"x"`, `x`).
fn bare(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

fn version_of(etag: Option<&str>, size: u64) -> String {
    match etag {
        Some(e) => bare(e).to_string(),
        None => format!("size:{size}"),
    }
}

/// [`Fs::poll`]: one round (see the module doc).
pub(crate) async fn poll(fs: &Fs) -> PollReport {
    Round { fs }.run().await
}

/// One poller round over a core.
struct Round<'a> {
    fs: &'a Fs,
}

impl Round<'_> {
    /// List recently used directories and ask about recently opened files, drop what
    /// changed, and say what the kernel must forget.
    async fn run(&self) -> PollReport {
        let pc = self.fs.cfg.poll.clone();
        let mut report = PollReport::default();
        let (dirs, files) = self.recently_used(&pc);
        let mut polled = HashSet::new();
        for ino in dirs.into_iter().take(pc.max_dirs) {
            match self.poll_dir(ino, &pc, &mut report).await {
                Ok(true) => {
                    polled.insert(ino);
                    report.dirs += 1;
                }
                Ok(false) => {}
                Err(e) => debug!(ino, error = %e, "poller: directory not listed"),
            }
        }
        let files: Vec<u64> = {
            let t = lock(&self.fs.ns.table);
            files
                .into_iter()
                .filter(|f| t.get(*f).is_some_and(|n| !polled.contains(&n.parent)))
                .take(pc.max_files)
                .collect()
        };
        for ino in files {
            match self.poll_file(ino, &mut report).await {
                Ok(()) => report.files += 1,
                Err(e) => debug!(ino, error = %e, "poller: file not asked about"),
            }
        }
        self.fs.stats.poll_rounds.fetch_add(1, Ordering::Relaxed);
        self.fs
            .stats
            .poll_changes
            .fetch_add(report.changed.len() as u64, Ordering::Relaxed);
        if !report.changed.is_empty() {
            info!(changed = ?report.changed, "poller: changed by another client; dropped");
        }
        report
    }

    /// Directories and files used within `recent`, most recent first; forgets the rest and
    /// inodes that no longer exist.
    fn recently_used(&self, pc: &PollConfig) -> (Vec<u64>, Vec<u64>) {
        let now = Instant::now();
        let mut used: Vec<(u64, Instant)> = {
            let mut u = lock(&self.fs.poller.used);
            u.retain(|_, t| now.duration_since(*t) <= pc.recent);
            u.iter().map(|(i, t)| (*i, *t)).collect()
        };
        used.sort_by_key(|u| std::cmp::Reverse(u.1));
        let t = lock(&self.fs.ns.table);
        let (mut dirs, mut files) = (Vec::new(), Vec::new());
        let mut gone = Vec::new();
        for (ino, _) in used {
            match t.get(ino) {
                Some(n) if n.kind == Kind::Dir => dirs.push(ino),
                Some(n) if !n.detached => files.push(ino),
                _ => gone.push(ino),
            }
        }
        // Open files are revalidated while open, whenever they were opened.
        for ino in self.fs.files.open_inodes() {
            if !files.contains(&ino) && t.get(ino).is_some_and(|n| n.kind != Kind::Dir) {
                files.push(ino);
            }
        }
        drop(t);
        if !gone.is_empty() {
            let mut u = lock(&self.fs.poller.used);
            let mut s = lock(&self.fs.poller.seen);
            for ino in gone {
                u.remove(&ino);
                s.remove(&ino);
            }
        }
        (dirs, files)
    }

    /// List directory `ino` and drop what changed. `Ok(false)`: not polled this round
    /// (too large, or changed locally meanwhile).
    async fn poll_dir(&self, ino: u64, pc: &PollConfig, report: &mut PollReport) -> FsResult<bool> {
        let key = self.fs.ns.key_of(ino)?;
        let prefix = self.fs.ns.dir_prefix_of_key(&key);
        let Some(before) = self.snapshot(ino) else {
            return Ok(false);
        };
        let Some(store) = self.list_store(&prefix, pc.max_entries).await? else {
            report.too_large += 1;
            debug!(
                key,
                "poller: directory larger than poll-max-entries; not polled"
            );
            return Ok(false);
        };
        let previous = lock(&self.fs.poller.seen).insert(ino, store.clone());
        let Some((changed_children, names_changed)) =
            self.compare(ino, &before, &store, previous.as_ref())
        else {
            report.raced += 1;
            return Ok(false);
        };
        if !names_changed.is_empty() {
            self.names_changed(ino, &names_changed, report);
        }
        for c in changed_children {
            self.drop_changed(c, report)?;
        }
        Ok(true)
    }

    /// What the mount holds about directory `ino` before its listing.
    fn snapshot(&self, ino: u64) -> Option<Before> {
        let t = lock(&self.fs.ns.table);
        let d = t.get(ino)?;
        let known = t
            .children_of(ino)
            .into_iter()
            .filter_map(|(_, c)| {
                let n = t.get(c)?;
                Some(Known {
                    ino: c,
                    seg: n.seg.clone(),
                    kind: n.kind,
                    version: n.etag.as_deref().map(|e| bare(e).to_string()),
                    stamp: n.stamp(),
                })
            })
            .collect();
        // Segments the cached listing shows, when it left nothing out.
        let listing = d
            .dir
            .listing
            .as_ref()
            .filter(|_| !d.dir.listing_hides)
            .map(|l| l.iter().map(|e| e.seg.clone()).collect());
        Some(Before {
            generation: d.dir.generation,
            known,
            listing,
        })
    }

    /// The store's view of the directory at `prefix`: segment -> version (objects) or
    /// `None` (prefixes). `None` when it holds more than `max` names.
    async fn list_store(&self, prefix: &str, max: usize) -> FsResult<Option<Seen>> {
        let mut store = Seen::new();
        let mut token = None;
        loop {
            let page = self
                .fs
                .backend
                .list_page(prefix, token, self.fs.cfg.list_page_size)
                .await?;
            for p in &page.prefixes {
                if let Some(seg) = p.strip_prefix(prefix).and_then(|s| s.strip_suffix('/')) {
                    store.entry(seg.to_string()).or_insert(None);
                }
            }
            for o in &page.objects {
                if let Some(seg) = o.key.strip_prefix(prefix).filter(|s| !s.is_empty()) {
                    let v = version_of(o.etag.as_deref(), o.size);
                    store.insert(seg.to_string(), Some(v));
                }
            }
            if store.len() > max {
                return Ok(None);
            }
            token = page.next;
            if token.is_none() {
                return Ok(Some(store));
            }
        }
    }

    /// Known children of `ino` another client changed or removed, and names that appeared
    /// or went away (against the previous round when there was one, else against the cached
    /// listing). `None`: the directory changed locally while it was listed.
    fn compare(
        &self,
        ino: u64,
        before: &Before,
        store: &Seen,
        previous: Option<&Seen>,
    ) -> Option<(Vec<u64>, Vec<String>)> {
        let t = lock(&self.fs.ns.table);
        if t.get(ino).map(|n| n.dir.generation) != Some(before.generation) {
            return None;
        }
        let mut changed = Vec::new();
        for k in &before.known {
            let now = t.get(k.ino);
            let untouched = now.is_some_and(|n| n.stamp() == k.stamp && !n.local_only);
            if !untouched || self.fs.files.holds_news(k.ino) {
                continue;
            }
            let differs = match (k.kind, store.get(&k.seg)) {
                (Kind::Dir, Some(_)) => false,
                (Kind::Dir, None) => true,
                (_, Some(Some(v))) => match &k.version {
                    Some(mine) => mine != v,
                    None => now.is_some_and(|n| version_of(None, n.size) != *v),
                },
                (_, Some(None) | None) => true,
            };
            if differs {
                changed.push(k.ino);
            }
        }
        let known: HashSet<&str> = before.known.iter().map(|k| k.seg.as_str()).collect();
        let in_store = |seg: &String| store.contains_key(seg);
        let mut names: Vec<String> = match (previous, &before.listing) {
            (Some(prev), _) => prev
                .keys()
                .chain(store.keys())
                .filter(|seg| prev.contains_key(*seg) != in_store(seg))
                .cloned()
                .collect(),
            (None, Some(listed)) => store
                .keys()
                .filter(|seg| !listed.contains(*seg))
                .chain(listed.iter().filter(|seg| !in_store(seg)))
                .cloned()
                .collect(),
            (None, None) => Vec::new(),
        };
        names.retain(|seg| !known.contains(seg.as_str()));
        names.sort();
        names.dedup();
        Some((changed, names))
    }

    /// Names appeared in or left directory `ino`: its listing and their negative entries
    /// go, and the kernel forgets the names and the directory's cached contents.
    fn names_changed(&self, ino: u64, segs: &[String], report: &mut PollReport) {
        let mut t = lock(&self.fs.ns.table);
        let Some(d) = t.get_mut(ino) else { return };
        for seg in segs {
            d.dir.forget_name(seg);
        }
        let shown = if ino == ROOT_INO {
            String::new()
        } else {
            t.path_of(ino).unwrap_or_default()
        };
        for seg in segs {
            report.changed.push(if shown.is_empty() {
                seg.clone()
            } else {
                format!("{shown}/{seg}")
            });
            report.invalidations.push(Invalidation::Entry {
                parent: ino,
                name: seg.clone(),
            });
        }
        report
            .invalidations
            .push(Invalidation::Inode { ino, data: false });
    }

    /// Drop what the mount holds for `ino`, changed by another client, as `refresh` does.
    fn drop_changed(&self, ino: u64, report: &mut PollReport) -> FsResult<()> {
        let Some(path) = lock(&self.fs.ns.table).path_of(ino) else {
            return Ok(());
        };
        let r = self.fs.refresh(&path, false)?;
        if r.skipped.is_empty() {
            report.changed.push(path);
        }
        report.invalidations.extend(r.invalidations);
        Ok(())
    }

    /// Ask the store about file `ino` (one HEAD) and drop it when another client changed it.
    async fn poll_file(&self, ino: u64, report: &mut PollReport) -> FsResult<()> {
        let (key, before, mine) = {
            let t = lock(&self.fs.ns.table);
            let Some(n) = t.get(ino) else { return Ok(()) };
            if n.local_only || n.detached {
                return Ok(());
            }
            let Some(key) = t.key_of(ino, &self.fs.cfg.prefix) else {
                return Ok(());
            };
            let mine = version_of(n.etag.as_deref(), n.size);
            (key, n.stamp(), mine)
        };
        if self.fs.files.holds_news(ino) {
            return Ok(());
        }
        let differs = match self.fs.backend.head(&key).await {
            Ok(info) => version_of(info.etag.as_deref(), info.size) != mine,
            Err(e) if e.is_not_found() => true,
            Err(e) => return Err(e.into()),
        };
        let untouched = lock(&self.fs.ns.table)
            .get(ino)
            .is_some_and(|n| n.stamp() == before);
        if !untouched || self.fs.files.holds_news(ino) {
            report.raced += 1;
            return Ok(());
        }
        if differs {
            self.drop_changed(ino, report)?;
        }
        Ok(())
    }
}
