//! The hierarchical-namespace mode of the in-memory store: what an ADLS Gen2 account with
//! HNS does through its DFS API (atomic rename of a file or a whole directory, real
//! directories, POSIX owner, group, permissions and ACL), so the core's HNS paths run in
//! tests without an endpoint.
//!
//! Why a module of its own: the flat store's semantics stay readable in `memory.rs`; this file
//! is only what HNS adds. Directories are stored as an ADLS account shows them through the
//! Blob API: a zero-length object with metadata `hdi_isfolder=true`, and every prefix of a
//! stored key is a directory too. Each operation holds the object map's lock from its checks
//! to its last change, so it is atomic as the DFS API's are.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;

use super::{MemoryBackend, Obj};
use crate::api::{
    ACCESS_GROUP, ACCESS_OWNER, ACCESS_PERMISSIONS, AccessUpdate, PathAccess, PutMeta, PutOutcome,
    RenameCond, Result, UserMetadata, permissions_string,
};
use crate::checksum;
use crate::error::BackendError;

/// Owner and group of paths nobody changed (what ADLS shows for paths created with a key).
pub const SUPERUSER: &str = "$superuser";

fn is_folder(o: &Obj) -> bool {
    o.meta
        .metadata
        .get("hdi_isfolder")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn has_children(map: &BTreeMap<String, Obj>, key: &str) -> bool {
    let prefix = format!("{key}/");
    map.range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

/// `Some(true)`: a directory (marker or implicit), `Some(false)`: a file, `None`: nothing.
fn kind(map: &BTreeMap<String, Obj>, key: &str) -> Option<bool> {
    if key.is_empty() {
        return Some(true);
    }
    match map.get(key) {
        Some(o) => Some(is_folder(o) || has_children(map, key)),
        None => has_children(map, key).then_some(true),
    }
}

fn parent(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Keys of `key` and everything under it.
fn subtree(map: &BTreeMap<String, Obj>, key: &str) -> Vec<String> {
    let prefix = format!("{key}/");
    let mut keys: Vec<String> = map
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    if map.contains_key(key) {
        keys.push(key.to_string());
    }
    keys
}

fn moved(k: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &k[from.len()..])
}

impl MemoryBackend {
    /// A store in HNS mode (see the module doc).
    pub fn new_hns() -> Self {
        let b = Self::default();
        b.hns.store(true, Ordering::SeqCst);
        // Directories are `hdi_isfolder` blobs, known by their metadata: listings carry
        // it, as Azure's do.
        b.listing_metadata.store(true, Ordering::SeqCst);
        b
    }

    pub(super) fn is_hns(&self) -> bool {
        self.hns.load(Ordering::SeqCst)
    }

    fn access_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PathAccess>> {
        self.access.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn access_of(&self, key: &str, dir: bool) -> PathAccess {
        self.access_map()
            .get(key)
            .cloned()
            .unwrap_or_else(|| default_access(dir))
    }

    /// What a head reports of a path's access, as metadata pseudo-keys.
    pub(super) fn add_access(&self, key: &str, o: &Obj, meta: &mut UserMetadata) {
        let a = self.access_of(key, is_folder(o));
        meta.insert(ACCESS_OWNER.into(), a.owner);
        meta.insert(ACCESS_GROUP.into(), a.group);
        meta.insert(ACCESS_PERMISSIONS.into(), a.permissions);
    }

    /// A blob deleted through the Blob API takes its access entry with it.
    pub(super) fn forget_access(&self, key: &str) {
        self.access_map().remove(key);
    }

    pub(super) fn hns_rename(&self, from: &str, to: &str, cond: &RenameCond) -> Result<PutOutcome> {
        self.counters.rename.fetch_add(1, Ordering::Relaxed);
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("injected write failure".into()));
        }
        let mut map = self.lock();
        let src_dir =
            kind(&map, from).ok_or_else(|| BackendError::NotFound { key: from.into() })?;
        if let Some(e) = &cond.source_etag
            && map.get(from).map(|o| &o.etag) != Some(e)
        {
            return Err(BackendError::PreconditionFailed { key: from.into() });
        }
        if to == from || to.starts_with(&format!("{from}/")) {
            return Err(BackendError::InvalidKey {
                key: to.into(),
                reason: "a path cannot move into itself".into(),
            });
        }
        if kind(&map, parent(to)) != Some(true) {
            // RenameDestinationParentPathNotFound
            return Err(BackendError::NotFound { key: to.into() });
        }
        if let Some(dst_dir) = kind(&map, to) {
            if cond.no_replace {
                return Err(BackendError::AlreadyExists { key: to.into() });
            }
            if dst_dir != src_dir {
                return Err(BackendError::KindMismatch { key: to.into() });
            }
            if dst_dir && has_children(&map, to) {
                return Err(BackendError::NotEmpty { key: to.into() });
            }
            map.remove(to);
            self.access_map().remove(to);
        }
        let keys = subtree(&map, from);
        let mut access = self.access_map();
        for k in &keys {
            if let Some(o) = map.remove(k) {
                map.insert(moved(k, from, to), o);
            }
        }
        let acc: Vec<String> = access
            .keys()
            .filter(|k| *k == from || k.starts_with(&format!("{from}/")))
            .cloned()
            .collect();
        for k in acc {
            if let Some(a) = access.remove(&k) {
                access.insert(moved(&k, from, to), a);
            }
        }
        // A rename keeps the object: its ETag and modification time stay.
        Ok(PutOutcome {
            etag: map.get(to).map(|o| o.etag.clone()),
        })
    }

    pub(super) fn hns_create_dir(&self, key: &str, mode: Option<u16>) -> Result<()> {
        self.counters.dirop.fetch_add(1, Ordering::Relaxed);
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("injected write failure".into()));
        }
        let mut map = self.lock();
        if kind(&map, key).is_some() {
            return Err(BackendError::AlreadyExists { key: key.into() });
        }
        if kind(&map, parent(key)) == Some(false) {
            return Err(BackendError::KindMismatch {
                key: parent(key).into(),
            });
        }
        let mut metadata = UserMetadata::new();
        metadata.insert("hdi_isfolder".into(), "true".into());
        let data = Bytes::new();
        map.insert(
            key.to_string(),
            Obj {
                md5: checksum::md5(&data),
                crc32c: checksum::crc32c(&data),
                data,
                meta: PutMeta {
                    metadata,
                    content_type: None,
                },
                etag: self.etag(),
                modified: SystemTime::now(),
            },
        );
        let mut a = default_access(true);
        if let Some(m) = mode {
            a.permissions = permissions_string(m);
        }
        self.access_map().insert(key.to_string(), a);
        Ok(())
    }

    pub(super) fn hns_delete_dir(&self, key: &str, recursive: bool) -> Result<()> {
        self.counters.dirop.fetch_add(1, Ordering::Relaxed);
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("injected write failure".into()));
        }
        let mut map = self.lock();
        match kind(&map, key) {
            None => return Err(BackendError::NotFound { key: key.into() }),
            Some(false) => return Err(BackendError::KindMismatch { key: key.into() }),
            Some(true) if !recursive && has_children(&map, key) => {
                return Err(BackendError::NotEmpty { key: key.into() });
            }
            Some(true) => {}
        }
        let mut access = self.access_map();
        for k in subtree(&map, key) {
            map.remove(&k);
            access.remove(&k);
        }
        access.remove(key);
        Ok(())
    }

    pub(super) fn hns_get_access(&self, key: &str) -> Result<PathAccess> {
        self.counters.access.fetch_add(1, Ordering::Relaxed);
        let dir =
            kind(&self.lock(), key).ok_or_else(|| BackendError::NotFound { key: key.into() })?;
        Ok(self.access_of(key, dir))
    }

    pub(super) fn hns_set_access(&self, key: &str, u: &AccessUpdate) -> Result<Option<String>> {
        self.counters.access.fetch_add(1, Ordering::Relaxed);
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("injected write failure".into()));
        }
        if u.permissions.is_some() && u.acl.is_some() {
            return Err(BackendError::InvalidKey {
                key: key.into(),
                reason: "x-ms-permissions and x-ms-acl exclude each other".into(),
            });
        }
        let map = self.lock();
        let dir = kind(&map, key).ok_or_else(|| BackendError::NotFound { key: key.into() })?;
        let mut access = self.access_map();
        let a = access
            .entry(key.to_string())
            .or_insert_with(|| default_access(dir));
        if let Some(o) = &u.owner {
            a.owner = o.clone();
        }
        if let Some(g) = &u.group {
            a.group = g.clone();
        }
        if let Some(p) = &u.permissions {
            let mode =
                crate::api::parse_permissions(p).ok_or_else(|| BackendError::InvalidKey {
                    key: key.into(),
                    reason: format!("bad permissions {p:?}"),
                })?;
            a.permissions = permissions_string(mode);
            a.acl = acl_of(&a.permissions, &a.acl);
        }
        if let Some(acl) = &u.acl {
            a.acl = acl.clone();
            a.permissions = permissions_of(acl, &a.permissions);
        }
        // Access lives beside the object here: its version does not change.
        Ok(None)
    }
}

/// Access of a path nobody changed: `rw-r-----` files, `rwxr-x---` directories (ADLS's
/// defaults under umask 027).
pub fn default_access(dir: bool) -> PathAccess {
    let permissions = if dir { "rwxr-x---" } else { "rw-r-----" }.to_string();
    PathAccess {
        owner: SUPERUSER.into(),
        group: SUPERUSER.into(),
        acl: acl_of(&permissions, ""),
        permissions,
    }
}

/// The ACL after a permissions change: the three base entries follow the permissions, named
/// entries stay (with the mask, which the group bits set when there is one, as POSIX does).
fn acl_of(perms: &str, old: &str) -> String {
    let p = perms.trim_end_matches('+');
    let (u, g, o) = (&p[0..3], &p[3..6], &p[6..9]);
    let named: Vec<&str> = old
        .split(',')
        .filter(|e| {
            !e.is_empty()
                && !e.starts_with("user::")
                && !e.starts_with("group::")
                && !e.starts_with("other::")
                && !e.starts_with("mask::")
        })
        .collect();
    let mut out = vec![format!("user::{u}")];
    out.extend(
        named
            .iter()
            .filter(|e| e.starts_with("user:"))
            .map(|e| e.to_string()),
    );
    out.push(format!("group::{g}"));
    out.extend(
        named
            .iter()
            .filter(|e| e.starts_with("group:"))
            .map(|e| e.to_string()),
    );
    if !named.is_empty() {
        out.push(format!("mask::{g}"));
    }
    out.push(format!("other::{o}"));
    out.join(",")
}

/// The permissions an ACL sets (the group bits are the mask where there is one, and a `+`
/// marks named entries), or `old` when the ACL lacks a base entry.
fn permissions_of(acl: &str, old: &str) -> String {
    let entry = |tag: &str| {
        acl.split(',')
            .find_map(|e| e.strip_prefix(tag))
            .filter(|v| v.len() == 3)
            .map(str::to_string)
    };
    let (Some(u), Some(g), Some(o)) = (entry("user::"), entry("group::"), entry("other::")) else {
        return old.to_string();
    };
    let g = entry("mask::").unwrap_or(g);
    let extended = acl.split(',').any(|e| {
        (e.starts_with("user:") && !e.starts_with("user::"))
            || (e.starts_with("group:") && !e.starts_with("group::"))
    });
    format!("{u}{g}{o}{}", if extended { "+" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Backend, Precondition};

    async fn put(b: &MemoryBackend, k: &str) -> String {
        b.put(
            k,
            Bytes::from_static(b"x"),
            &PutMeta::default(),
            &Precondition::None,
        )
        .await
        .unwrap()
        .etag
        .unwrap()
    }

    #[tokio::test]
    async fn a_directory_rename_moves_everything_at_once() {
        let b = MemoryBackend::new_hns();
        b.create_dir("d", Some(0o750)).await.unwrap();
        put(&b, "d/a").await;
        put(&b, "d/s/b").await;
        b.create_dir("e", None).await.unwrap();
        b.rename("d", "e/d2", &RenameCond::default()).await.unwrap();
        assert_eq!(b.keys(), vec!["e", "e/d2", "e/d2/a", "e/d2/s/b"]);
        assert_eq!(b.get_access("e/d2").await.unwrap().permissions, "rwxr-x---");
        // The destination's parent must exist; the source must.
        let missing = b.rename("e/d2", "nope/x", &RenameCond::default()).await;
        assert!(
            matches!(missing, Err(BackendError::NotFound { .. })),
            "{missing:?}"
        );
        let gone = b.rename("d", "x", &RenameCond::default()).await;
        assert!(
            matches!(gone, Err(BackendError::NotFound { .. })),
            "{gone:?}"
        );
    }

    #[tokio::test]
    async fn rename_conditions_and_replacement() {
        let b = MemoryBackend::new_hns();
        let etag = put(&b, "a").await;
        put(&b, "b").await;
        let no_replace = RenameCond {
            no_replace: true,
            ..Default::default()
        };
        let r = b.rename("a", "b", &no_replace).await;
        assert!(
            matches!(r, Err(BackendError::AlreadyExists { .. })),
            "{r:?}"
        );
        let stale = RenameCond {
            source_etag: Some("\"other\"".into()),
            no_replace: false,
        };
        let r = b.rename("a", "c", &stale).await;
        assert!(
            matches!(r, Err(BackendError::PreconditionFailed { .. })),
            "{r:?}"
        );
        let pinned = RenameCond {
            source_etag: Some(etag.clone()),
            no_replace: false,
        };
        let out = b.rename("a", "b", &pinned).await.unwrap();
        assert_eq!(out.etag, Some(etag));
        assert_eq!(b.keys(), vec!["b"]);
        b.create_dir("d", None).await.unwrap();
        put(&b, "d/x").await;
        b.create_dir("e", None).await.unwrap();
        put(&b, "e/y").await;
        let r = b.rename("d", "e", &RenameCond::default()).await;
        assert!(matches!(r, Err(BackendError::NotEmpty { .. })), "{r:?}");
        let r = b.rename("d", "b", &RenameCond::default()).await;
        assert!(matches!(r, Err(BackendError::KindMismatch { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn directories_are_created_once_and_deleted_only_empty() {
        let b = MemoryBackend::new_hns();
        b.create_dir("d", None).await.unwrap();
        let again = b.create_dir("d", None).await;
        assert!(matches!(again, Err(BackendError::AlreadyExists { .. })));
        put(&b, "d/f").await;
        let r = b.delete_dir("d", false).await;
        assert!(matches!(r, Err(BackendError::NotEmpty { .. })), "{r:?}");
        let r = b.delete_dir("d/f", false).await;
        assert!(matches!(r, Err(BackendError::KindMismatch { .. })), "{r:?}");
        b.delete_dir("d", true).await.unwrap();
        assert!(b.keys().is_empty());
        let r = b.delete_dir("d", false).await;
        assert!(matches!(r, Err(BackendError::NotFound { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn access_is_kept_per_path_and_shown_by_head() {
        let b = MemoryBackend::new_hns();
        put(&b, "f").await;
        let a = b.get_access("f").await.unwrap();
        assert_eq!(
            (a.owner.as_str(), a.permissions.as_str()),
            (SUPERUSER, "rw-r-----")
        );
        let u = AccessUpdate {
            owner: Some("1000".into()),
            group: Some("100".into()),
            permissions: Some("rwxr-xr-x".into()),
            acl: None,
        };
        b.set_access("f", &u).await.unwrap();
        let h = b.head("f").await.unwrap().metadata.unwrap();
        assert_eq!(h.get(ACCESS_OWNER).map(String::as_str), Some("1000"));
        assert_eq!(
            h.get(ACCESS_PERMISSIONS).map(String::as_str),
            Some("rwxr-xr-x")
        );
        let acl = AccessUpdate {
            acl: Some("user::rw-,user:7:r--,group::r--,mask::r--,other::---".into()),
            ..Default::default()
        };
        b.set_access("f", &acl).await.unwrap();
        assert_eq!(b.get_access("f").await.unwrap().permissions, "rw-r-----+");
        let both = AccessUpdate {
            permissions: Some("rwx------".into()),
            acl: Some("user::rwx".into()),
            ..Default::default()
        };
        assert!(b.set_access("f", &both).await.is_err());
    }
}
