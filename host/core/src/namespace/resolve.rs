//! Asking the store what is at a name: a HEAD and a one-entry listing of the prefix
//! (a directory wins the name over a file), names shown in place of keys they cannot show
//! (stand-ins, the file beside a directory), and answers taken from a fresh listing instead
//! of a request (the type cache, attributes carried by Azure listings).

use std::sync::atomic::Ordering;

use blobmount_backend::{BackendError, UserMetadata};
use blobmount_policy_api::Verdict;

use super::{Namespace, Probe, addressable};
use crate::attr::{self, Kind};
use crate::error::{FsError, FsResult};
use crate::fs::lock;
use crate::inode::Marker;
use crate::names::{self, FILE_SUFFIX};

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
            }));
        }
        if let Some(e) = unaddressable {
            return Err(e.into());
        }
        Ok(head.map(|h| {
            let m = attr::decode(h.metadata.as_ref().unwrap_or(&UserMetadata::new()));
            let kind = if m.kind == Some(Kind::Symlink) {
                Kind::Symlink
            } else {
                Kind::File
            };
            Probe {
                kind,
                seg: seg.into(),
                info: Some(h),
                marker: Marker::None,
            }
        }))
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
        let (listed_seg, listing_fresh, listed_info) = {
            let t = lock(&self.table);
            let dir = t.get(parent).map(|p| (&p.dir, p.policy.list_ttl));
            let entry = dir.and_then(|(d, _)| d.listed(name));
            let seg = entry.map(|e| (e.seg.clone(), e.kind));
            let fresh = listed || dir.is_some_and(|(d, ttl)| d.fresh_listing(ttl).is_some());
            (seg, fresh, entry.and_then(|e| e.info.clone()))
        };
        if let (Some((seg, Kind::File)), true, Some(info)) =
            (listed_seg.clone(), listing_fresh, listed_info)
            && addressable(&info.key)
        {
            // The listing carried size, ETag and user metadata (Azure): nothing to ask.
            self.stats.listing_attr_hits.fetch_add(1, Ordering::Relaxed);
            let m = attr::decode(info.metadata.as_ref().unwrap_or(&UserMetadata::new()));
            let kind = if m.kind == Some(Kind::Symlink) {
                Kind::Symlink
            } else {
                Kind::File
            };
            return Ok(Some(Probe {
                kind,
                seg,
                info: Some(info),
                marker: Marker::None,
            }));
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
                    Ok(h) => {
                        let m = attr::decode(h.metadata.as_ref().unwrap_or(&UserMetadata::new()));
                        let kind = if m.kind == Some(Kind::Symlink) {
                            Kind::Symlink
                        } else {
                            Kind::File
                        };
                        Ok(Some(Probe {
                            kind,
                            seg,
                            info: Some(h),
                            marker: Marker::None,
                        }))
                    }
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
        let found = self.probe(&parent_key, name).await?;
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
                        let kind = if m.kind == Some(Kind::Symlink) {
                            Kind::Symlink
                        } else {
                            Kind::File
                        };
                        return Ok(Some(Probe {
                            kind,
                            seg: base.into(),
                            info: Some(h),
                            marker: Marker::None,
                        }));
                    }
                }
            }
        }
        Ok(found)
    }
}
