//! Asking the store what is at a name or in a directory. A name: a HEAD and a one-entry
//! listing of the prefix
//! (a directory wins the name over a file), names shown in place of keys they cannot show
//! (stand-ins, the file beside a directory), and answers taken from a fresh listing instead
//! of a request (the type cache, attributes carried by Azure listings). A directory: every
//! listing page through the filter, names for what the store holds (valid names first, then
//! stand-ins), cached unless the directory changed while the listing was in flight.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use blobmount_backend::{BackendError, ObjectInfo, UserMetadata};
use blobmount_policy_api::Verdict;
use tracing::info;

use super::{Namespace, Probe, addressable};
use crate::attr::{self, Kind};
use crate::error::{FsError, FsResult};
use crate::inode::{Entry, Marker};
use crate::names::{self, FILE_SUFFIX};
use crate::policy::Described;
use crate::sync::lock;

impl Namespace {
    /// Ask the store what `seg` under directory key `parent_key` is: HEAD of the object and a
    /// one-entry listing of the prefix, concurrently. A directory wins the name over a file
    /// (the file is reachable as `name` + FILE_SUFFIX).
    pub(crate) async fn probe(&self, parent_key: &str, seg: &str) -> FsResult<Option<Probe>> {
        let key = self.child_key(parent_key, seg);
        let prefix = format!("{key}/");
        let (head, list) =
            tokio::join!(self.backend.head(&key), self.backend.list_under(&prefix, 2));
        // A key the backend cannot address may still be a directory (its children can be
        // listed); if it is not, the caller gets the addressing error, not ENOENT.
        let mut unaddressable = None;
        let head = match head {
            Ok(i) => Some(i),
            Err(BackendError::NotFound { .. }) => None,
            Err(e @ BackendError::InvalidKey { .. }) => {
                unaddressable = Some(e);
                None
            }
            Err(e) => return Err(e.into()),
        };
        let list = list?;
        let slash_marker = list.objects.iter().any(|o| o.key == prefix);
        let has_children =
            !list.prefixes.is_empty() || list.objects.iter().any(|o| o.key != prefix);
        if let Some(h) = &head {
            let m = attr::decode(h.metadata.as_ref().unwrap_or(&UserMetadata::new()));
            if m.kind == Some(Kind::Dir) {
                return Ok(Some(Probe {
                    kind: Kind::Dir,
                    seg: seg.into(),
                    info: head,
                    marker: Marker::Folder,
                    verdict: None,
                }));
            }
        }
        if slash_marker || has_children {
            if head.is_some() {
                self.note_conflict(&key);
            }
            let info = if slash_marker {
                match self.backend.head(&prefix).await {
                    Ok(i) => Some(i),
                    Err(BackendError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                None
            };
            let marker = if slash_marker {
                Marker::Slash
            } else {
                Marker::None
            };
            return Ok(Some(Probe {
                kind: Kind::Dir,
                seg: seg.into(),
                info,
                marker,
                verdict: None,
            }));
        }
        if let Some(e) = unaddressable {
            return Err(e.into());
        }
        Ok(head.map(|h| Probe::file(seg, h)))
    }

    /// [`Namespace::probe`] of a name known to be a directory with a marker object (a
    /// directory revalidated once its attributes expire): one HEAD of the marker answers it,
    /// where a probe sends a HEAD and a LIST (the LIST costs most, and on Azurite more the
    /// bigger the container). A marker gone is probed in full.
    pub(crate) async fn probe_dir(
        &self,
        parent_key: &str,
        seg: &str,
        marker: Marker,
    ) -> FsResult<Option<Probe>> {
        let key = self.child_key(parent_key, seg);
        let marker_key = match marker {
            Marker::Folder => key,
            Marker::Slash => format!("{key}/"),
            Marker::None => return self.probe(parent_key, seg).await,
        };
        match self.backend.head(&marker_key).await {
            Ok(h) => {
                let m = attr::decode(h.metadata.as_ref().unwrap_or(&UserMetadata::new()));
                let is_dir = match marker {
                    Marker::Folder => m.kind == Some(Kind::Dir),
                    Marker::Slash | Marker::None => true,
                };
                if is_dir {
                    return Ok(Some(Probe {
                        kind: Kind::Dir,
                        seg: seg.into(),
                        info: Some(h),
                        marker,
                        verdict: None,
                    }));
                }
            }
            Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.probe(parent_key, seg).await
    }

    /// Resolve `name` in directory `parent` against the store; objects the filter hides are
    /// absent.
    pub(crate) async fn resolve(&self, parent: u64, name: &str) -> FsResult<Option<Probe>> {
        self.resolve_with(parent, name, false).await
    }

    /// [`Fs::resolve`]; with `listed`, the name comes from the listing the kernel is reading
    /// right now (readdirplus), so that listing is trusted however old it has become.
    pub(crate) async fn resolve_with(
        &self,
        parent: u64,
        name: &str,
        listed: bool,
    ) -> FsResult<Option<Probe>> {
        match self.resolve_unfiltered_with(parent, name, listed).await? {
            Some(p) if self.probe_verdict(parent, &p)? == Verdict::Hidden => Ok(None),
            found => Ok(found),
        }
    }

    /// What is at `name` in the store, hidden or not.
    pub(crate) async fn resolve_unfiltered(
        &self,
        parent: u64,
        name: &str,
    ) -> FsResult<Option<Probe>> {
        self.resolve_unfiltered_with(parent, name, false).await
    }

    pub(crate) async fn resolve_unfiltered_with(
        &self,
        parent: u64,
        name: &str,
        listed: bool,
    ) -> FsResult<Option<Probe>> {
        let parent_key = self.key_of(parent)?;
        // Names shown in place of invalid or colliding key segments come from the last listing.
        let (listed_seg, listing_fresh, listed_info, listed_verdict) = {
            let t = lock(&self.table);
            let dir = t.get(parent).map(|p| (&p.dir, p.policy.list_ttl));
            let entry = dir.and_then(|(d, _)| d.listed(name));
            let seg = entry.map(|e| (e.seg.clone(), e.kind));
            let fresh = listed || dir.is_some_and(|(d, ttl)| d.fresh_listing(ttl).is_some());
            (
                seg,
                fresh,
                entry.and_then(|e| e.info.clone()),
                entry.and_then(|e| e.verdict),
            )
        };
        if let (Some((seg, Kind::File)), true, Some(info)) =
            (listed_seg.clone(), listing_fresh, listed_info)
            && addressable(&info.key)
        {
            // The listing carried size, ETag and user metadata (Azure, GCS): nothing to ask.
            self.stats.listing_attr_hits.fetch_add(1, Ordering::Relaxed);
            // The listing asked the filter about this very description: not asked again.
            let mut p = Probe::file(seg, info);
            p.verdict = listed_verdict;
            return Ok(Some(p));
        }
        if let Some((seg, kind)) = listed_seg.clone() {
            if kind != Kind::Dir && (seg != name || listing_fresh) {
                // A file shown under a stand-in or conflict name, or a name a fresh listing
                // says is a file (type cache): one HEAD instead of a probe.
                if seg == name {
                    self.stats.type_cache_hits.fetch_add(1, Ordering::Relaxed);
                }
                let key = self.child_key(&parent_key, &seg);
                return match self.backend.head(&key).await {
                    Ok(h) => Ok(Some(Probe::file(seg, h))),
                    Err(BackendError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                };
            }
            if seg != name {
                return self.probe(&parent_key, &seg).await;
            }
        }
        if name.len() > names::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        // A directory this mount knows with a marker: one HEAD of the marker.
        let known_dir = {
            let t = lock(&self.table);
            t.child(parent, name)
                .and_then(|i| t.get(i))
                .filter(|n| n.kind == Kind::Dir && n.seg == name)
                .map(|n| n.marker)
        };
        let found = match known_dir {
            Some(m @ (Marker::Folder | Marker::Slash)) => {
                self.probe_dir(&parent_key, name, m).await?
            }
            Some(Marker::None) | None => self.probe(&parent_key, name).await?,
        };
        if found.is_none()
            && let Some(base) = name.strip_suffix(FILE_SUFFIX)
        {
            // `foo.~file`: the file hidden behind directory `foo`, when the name-conflict
            // policy names it so (the built-in rule does).
            if let Some(Probe {
                kind: Kind::Dir, ..
            }) = self.probe(&parent_key, base).await?
            {
                let key = self.child_key(&parent_key, base);
                if let Ok(h) = self.backend.head(&key).await {
                    let m = attr::decode(h.metadata.as_ref().unwrap_or(&UserMetadata::new()));
                    let shown = self.file_name_beside_dir(&parent_key, base, h.size);
                    if m.kind != Some(Kind::Dir) && shown.as_deref() == Some(name) {
                        return Ok(Some(Probe::file(base, h)));
                    }
                }
            }
        }
        Ok(found)
    }

    /// Read the whole listing of directory key `dir_key` and turn it into entries; the flag
    /// says whether objects of the store were left out (hidden by the filter, or with no
    /// name to show them under), so that a name missing from the entries may be taken.
    /// With `one_page`, a directory that needs more than one listing page gives `None`.
    pub(crate) async fn list_dir(
        &self,
        dir_key: &str,
        one_page: bool,
    ) -> FsResult<Option<(Vec<Entry>, bool)>> {
        let Some(pages) = self.list_pages(dir_key, one_page).await? else {
            return Ok(None);
        };
        let (entries, hides) = self.name_entries(dir_key, pages).await;
        Ok(Some((entries, hides)))
    }

    /// Every listing page of directory key `dir_key` through the filter: the directories
    /// and files shown, and whether any object was hidden. `None` with `one_page` when the
    /// directory needs more than one page.
    async fn list_pages(&self, dir_key: &str, one_page: bool) -> FsResult<Option<Listed>> {
        let prefix = self.dir_prefix_of_key(dir_key);
        let mut hides = false;
        let mut dirs: BTreeMap<String, ()> = BTreeMap::new();
        // (name, size, metadata when the listing carries it)
        let mut files: Vec<ListedFile> = Vec::new();
        let caps = self.backend.capabilities();
        let mut token = None;
        loop {
            let page = self
                .backend
                .list_page(&prefix, token, self.cfg.list_page_size)
                .await?;
            if one_page && page.next.is_some() {
                return Ok(None);
            }
            // (segment, is a directory, what the listing said) for the filter's batch call.
            let mut cands: Vec<(String, bool, Option<&ObjectInfo>)> = Vec::new();
            for p in &page.prefixes {
                if let Some(seg) = p.strip_prefix(&prefix).and_then(|s| s.strip_suffix('/')) {
                    cands.push((seg.to_string(), true, None));
                }
            }
            for o in &page.objects {
                if o.key == prefix {
                    continue; // this directory's own marker
                }
                let Some(seg) = o.key.strip_prefix(&prefix) else {
                    continue;
                };
                // An Azure folder marker blob (`dir` + hdi_isfolder) is a directory even
                // when nothing is under it yet.
                let folder = !caps.dir_markers
                    && o.size == 0
                    && o.metadata
                        .as_ref()
                        .is_some_and(|m| attr::is_true(m, attr::META_FOLDER));
                cands.push((seg.to_string(), folder, Some(o)));
            }
            let infos: Vec<_> = cands
                .iter()
                .map(|(seg, is_dir, o)| {
                    Described {
                        key: self.policy_key(&format!("{prefix}{seg}"), *is_dir),
                        is_dir: *is_dir,
                        size: o.map(|o| o.size).unwrap_or(0),
                        mtime: o.map(|o| o.last_modified).unwrap_or(UNIX_EPOCH),
                        content_type: o.and_then(|o| o.content_type.as_deref()),
                        meta: o.and_then(|o| o.metadata.as_ref()),
                    }
                    .info()
                })
                .collect();
            let shown = self.filter_page(&infos);
            for ((seg, is_dir, o), verdict) in cands.into_iter().zip(shown) {
                match (verdict != Verdict::Hidden, is_dir, o) {
                    (false, _, _) => hides = true,
                    (true, true, _) => {
                        dirs.insert(seg, ());
                    }
                    (true, false, Some(o)) => {
                        files.push((seg, o.size, o.metadata.clone(), o.clone(), verdict));
                    }
                    (true, false, None) => {}
                }
            }
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        Ok(Some(Listed { dirs, files, hides }))
    }

    /// Names for what a listing shows: valid names first (so a stand-in can never take a
    /// real name), then files beside a directory of the same name, then stand-ins for keys
    /// that are not valid file names. Returns the entries, sorted, and whether any object
    /// was left without a name.
    async fn name_entries(&self, dir_key: &str, listed: Listed) -> (Vec<Entry>, bool) {
        let Listed {
            dirs,
            files,
            mut hides,
        } = listed;
        let caps = self.backend.capabilities();
        let mut entries: Vec<Entry> = Vec::new();
        let mut taken: HashSet<String> = HashSet::new();
        let mut push = |name: String,
                        seg: String,
                        kind: Kind,
                        info: Option<(&ObjectInfo, Verdict)>,
                        entries: &mut Vec<Entry>| {
            if taken.insert(name.clone()) {
                let info = info.filter(|(i, _)| i.metadata.is_some());
                entries.push(Entry {
                    name,
                    seg,
                    kind,
                    info: info.map(|(i, _)| i.clone()),
                    verdict: info.map(|(_, v)| v),
                });
                true
            } else {
                false
            }
        };
        // Valid names first, so a stand-in can never take a real name.
        for seg in dirs.keys().filter(|s| names::is_valid(s)) {
            push(seg.clone(), seg.clone(), Kind::Dir, None, &mut entries);
        }
        for (seg, size, meta, info, verdict) in
            files.iter().filter(|(s, _, _, _, _)| names::is_valid(s))
        {
            if dirs.contains_key(seg) {
                // Azure folder marker blob next to its own prefix: the same directory.
                // Listings without metadata need a HEAD to tell.
                if !caps.dir_markers && *size == 0 && meta.is_none() {
                    let key = self.child_key(dir_key, seg);
                    if let Ok(h) = self.backend.head(&key).await
                        && attr::is_true(
                            h.metadata.as_ref().unwrap_or(&UserMetadata::new()),
                            attr::META_FOLDER,
                        )
                    {
                        continue;
                    }
                }
                self.note_conflict(&self.child_key(dir_key, seg));
                match self.file_name_beside_dir(dir_key, seg, *size) {
                    Some(name) => {
                        hides |= !push(
                            name,
                            seg.clone(),
                            Kind::File,
                            Some((info, *verdict)),
                            &mut entries,
                        )
                    }
                    None => hides = true,
                }
            } else {
                hides |= !push(
                    seg.clone(),
                    seg.clone(),
                    Kind::File,
                    Some((info, *verdict)),
                    &mut entries,
                );
            }
        }
        let invalid = dirs
            .keys()
            .filter(|s| !names::is_valid(s))
            .map(|s| (s.clone(), Kind::Dir))
            .chain(
                files
                    .iter()
                    .filter(|(s, _, _, _, _)| !names::is_valid(s))
                    .map(|(s, _, _, _, _)| (s.clone(), Kind::File)),
            );
        for (seg, kind) in invalid.collect::<Vec<_>>() {
            let key = self.child_key(dir_key, &seg);
            let Some(name) = self.stand_in_name(dir_key, &seg, kind == Kind::Dir) else {
                hides = true;
                self.count_name_conflict();
                info!(
                    key,
                    "object name is not a valid Linux file name; hidden by the name-conflict policy"
                );
                continue;
            };
            if push(name.clone(), seg.clone(), kind, None, &mut entries) {
                self.count_name_conflict();
                info!(
                    key,
                    shown_as = name,
                    "object name is not a valid Linux file name; shown under a stand-in"
                );
            } else {
                hides = true;
                self.warn_once("object hidden: its stand-in name is taken", &key);
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        (entries, hides)
    }

    /// List directory `ino` from the store and cache the listing, unless the directory
    /// changed locally while the listing was in flight (then it may already be outdated).
    pub(crate) async fn list_fresh(&self, ino: u64) -> FsResult<Vec<Entry>> {
        Ok(self.list_fresh_if(ino, false).await?.unwrap_or_default())
    }

    /// [`Namespace::list_fresh`]; with `one_page` only if the directory fits in one listing page
    /// (`None`, and nothing cached, when it does not).
    pub(crate) async fn list_fresh_if(
        &self,
        ino: u64,
        one_page: bool,
    ) -> FsResult<Option<Vec<Entry>>> {
        let key = self.key_of(ino)?;
        // Local changes made while the listing is read are replayed on it when it arrives
        // (`DirCache::end_listing`), so a directory being filled still gets it cached.
        let flight = InFlight::begin(self, ino);
        let started = std::time::Instant::now();
        let Some((mut listed, hides)) = self.list_dir(&key, one_page).await? else {
            return Ok(None);
        };
        let took = started.elapsed();
        let mut t = lock(&self.table);
        if flight.finish(&mut t, &mut listed) {
            let cap = self.cfg.list_cache_max_entries;
            let dropped = t.cache_listing(ino, listed.clone(), hides, cap, took);
            self.stats
                .list_evictions
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        Ok(Some(listed))
    }
}

/// A listing of directory `ino` being read (`DirCache::begin_listing`). It ends when the
/// listing arrives ([`InFlight::finish`]) or, if it does not (an error, or the future
/// dropped), when this is dropped: the directory never stays marked as being listed.
struct InFlight<'a> {
    ns: &'a Namespace,
    ino: u64,
    start: Option<usize>,
}

impl<'a> InFlight<'a> {
    fn begin(ns: &'a Namespace, ino: u64) -> Self {
        let start = lock(&ns.table).get_mut(ino).map(|n| n.dir.begin_listing());
        InFlight { ns, ino, start }
    }

    /// The listing arrived: bring it up to date with the local changes made meanwhile;
    /// whether it may be cached.
    fn finish(mut self, t: &mut crate::inode::Table, listed: &mut Vec<Entry>) -> bool {
        match (self.start.take(), t.get_mut(self.ino)) {
            (Some(start), Some(n)) => n.dir.end_listing(start, Some(listed)),
            _ => false,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(start) = self.start.take()
            && let Some(n) = lock(&self.ns.table).get_mut(self.ino)
        {
            n.dir.end_listing(start, None);
        }
    }
}

/// What the listing pages of a directory showed (see `Namespace::list_pages`).
/// A file a listing shows: key segment, size, metadata when the listing carries it, the
/// listing entry, and the filter's verdict on it.
type ListedFile = (String, u64, Option<UserMetadata>, ObjectInfo, Verdict);

struct Listed {
    /// Directories by key segment.
    dirs: BTreeMap<String, ()>,
    /// Files: (key segment, size, metadata when the listing carries it, the listing entry).
    files: Vec<ListedFile>,
    /// Objects the filter hid.
    hides: bool,
}
