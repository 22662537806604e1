//! Directory operations: listing, mkdir/rmdir, unlink, symlink (rename: `rename.rs`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use blobmount_backend::{BackendError, Precondition, PutMeta, UserMetadata};
use bytes::Bytes;

use crate::attr::{self, Attr, Kind};
use crate::error::{FsError, FsResult, ignore_missing};
use crate::fs::Fs;
use crate::inode::{Entry, Marker, Node, ROOT_INO};
use crate::names;
use crate::namespace::Probe;
use crate::sync::lock;
use crate::types::{Caller, DirEntry};
use blobmount_policy_api::Verdict;
use std::sync::atomic::Ordering;

impl Fs {
    /// FUSE opendir: snapshot the listing so readdir offsets are stable. A listing younger
    /// than the list TTL is reused (list cache).
    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        if self.ns.node_kind(ino)? != Kind::Dir {
            return Err(FsError::NotDir);
        }
        self.touch(ino);
        let cached = lock(&self.ns.table)
            .get(ino)
            .and_then(|n| n.dir.fresh_listing(n.policy.list_ttl).cloned());
        let mut listed = match cached {
            Some(l) => {
                self.stats.list_cache_hits.fetch_add(1, Ordering::Relaxed);
                l
            }
            None => self.ns.list_fresh(ino).await?,
        };
        // Files created here and not uploaded yet are not in any listing.
        let local = lock(&self.ns.table).local_children(ino);
        for (name, kind) in local {
            if !listed.iter().any(|e| e.name == name) {
                listed.push(Entry {
                    seg: name.clone(),
                    name,
                    kind,
                    info: None,
                    verdict: None,
                });
            }
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        let entries: Vec<DirEntry> = {
            let t = lock(&self.ns.table);
            let parent = t.get(ino).map(|n| n.parent).unwrap_or(ROOT_INO);
            std::iter::once(DirEntry {
                ino,
                name: ".".into(),
                kind: Kind::Dir,
            })
            .chain(std::iter::once(DirEntry {
                ino: parent,
                name: "..".into(),
                kind: Kind::Dir,
            }))
            .chain(listed.iter().map(|e| {
                DirEntry {
                    // Entries not looked up yet get a stable pseudo number; the kernel uses
                    // the one from lookup.
                    ino: t
                        .child(ino, &e.name)
                        .unwrap_or_else(|| names::fnv1a(e.name.as_bytes()) | (1 << 63)),
                    name: e.name.clone(),
                    kind: e.kind,
                }
            }))
            .collect()
        };
        let fh = self.files.new_fh();
        lock(&self.dir_handles).insert(fh, Arc::new(entries));
        Ok(fh)
    }

    /// FUSE readdir: entries from `offset` on (offset = index of the next entry).
    pub fn readdir(&self, fh: u64, offset: u64) -> FsResult<Vec<(u64, DirEntry)>> {
        let entries = lock(&self.dir_handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        Ok(entries
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect())
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.dir_handles).remove(&fh);
    }

    fn insert_new(&self, parent: u64, name: &str, node: Node) -> Attr {
        let mut t = lock(&self.ns.table);
        let kind = node.kind;
        let ino = t.upsert(node);
        t.name_changed(parent, name, Some(kind));
        t.entries_changed(parent);
        if kind == Kind::Dir {
            // Just made, after finding nothing under its prefix: it is empty, so the files
            // about to be created in it need no probe each (within the list TTL, like any
            // listing).
            t.cache_listing(
                ino,
                Vec::new(),
                false,
                self.cfg.list_cache_max_entries,
                std::time::Duration::ZERO,
            );
        }
        let n = t.get_mut(ino).map(|n| {
            n.lookups += 1;
            n.attr(ino)
        });
        n.unwrap_or_else(|| panic_free_attr(ino, name))
    }

    pub(crate) fn new_node(
        &self,
        parent: u64,
        name: &str,
        kind: Kind,
        perm: u16,
        c: Caller,
    ) -> Node {
        let policy = self.ns.new_node_policy(parent, name, kind);
        Node {
            perm,
            uid: c.uid,
            gid: c.gid,
            fetched: Some(Instant::now()),
            ..Node::blank(parent, name, kind, SystemTime::now(), policy)
        }
    }

    /// Fail with EEXIST if `name` exists in `parent` (locally or in the store).
    pub(crate) async fn ensure_absent(&self, parent: u64, name: &str) -> FsResult<()> {
        let local = {
            let t = lock(&self.ns.table);
            t.child(parent, name)
                .and_then(|ino| t.get(ino))
                .map(|n| n.local_only)
                .unwrap_or(false)
        };
        if local {
            return Err(FsError::Exists);
        }
        if self.ns.known_free(parent, name) {
            // Found absent moments ago (the kernel looks a name up before creating it), or
            // missing from a fresh listing that left nothing out. The upload or marker is
            // conditional on absence anyway, so a creation racing another client's is
            // caught there (ESTALE at close, data kept in conflicts/).
            self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match self.ns.resolve_unfiltered(parent, name).await? {
            Some(p) if self.ns.probe_verdict(parent, &p)? == Verdict::Hidden => Err(
                FsError::AccessDenied("the name is taken by an object the filter hides"),
            ),
            Some(_) => Err(FsError::Exists),
            None => Ok(()),
        }
    }

    pub async fn mkdir(&self, parent: u64, name: &str, perm: u16, c: Caller) -> FsResult<Attr> {
        self.ns.check_writable()?;
        names::check_new(name)?;
        if self.ns.node_kind(parent)? != Kind::Dir {
            return Err(FsError::NotDir);
        }
        self.ns.check_create(parent, name, Kind::Dir, c)?;
        let _scope = self.files.enter_gate(&[parent]).await;
        self.ensure_absent(parent, name).await?;
        let key = self.ns.child_key(&self.ns.key_of(parent)?, name);
        let mut node = self.new_node(parent, name, Kind::Dir, perm & 0o7777, c);
        let mut meta = attr::encode(
            &UserMetadata::new(),
            Kind::Dir,
            node.perm,
            c.uid,
            c.gid,
            node.mtime,
        );
        if self.backend.capabilities().real_dirs {
            // A real directory (ADLS Gen2 HNS): one Path - Create, its mode as the path's
            // permissions; owner and group are the store's (see docs/semantics.md).
            self.backend
                .create_dir(&key, Some(node.perm))
                .await
                .map_err(|e| match e {
                    BackendError::AlreadyExists { .. } => FsError::Exists,
                    e => e.into(),
                })?;
            node.marker = Marker::Folder;
            return Ok(self.insert_new(parent, name, node));
        }
        let (marker_key, marker) = if self.backend.capabilities().dir_markers {
            (format!("{key}/"), Marker::Slash)
        } else {
            meta.insert(attr::META_FOLDER.into(), "true".into());
            (key.clone(), Marker::Folder)
        };
        let pm = PutMeta {
            metadata: meta,
            content_type: None,
        };
        self.backend
            .put(&marker_key, Bytes::new(), &pm, &Precondition::IfNotExists)
            .await
            .map_err(|e| match e {
                BackendError::AlreadyExists { .. } => FsError::Exists,
                e => e.into(),
            })?;
        node.marker = marker;
        Ok(self.insert_new(parent, name, node))
    }

    /// Look a child up (through the table or the store) without counting a kernel reference.
    pub(crate) async fn child_node(
        &self,
        parent: u64,
        name: &str,
    ) -> FsResult<(Option<u64>, Node)> {
        let known = {
            let t = lock(&self.ns.table);
            t.child(parent, name)
                .and_then(|ino| t.get(ino).map(|n| (ino, n.clone())))
        };
        match known {
            Some((ino, n)) if self.ns.fresh(&n) || self.files.holds_news(ino) => {
                return Ok((Some(ino), n));
            }
            Some(_) => {}
            None if self.ns.known_absent(parent, name) => {
                // A fresh listing or negative entry says so: no request (the target of a
                // rename onto a new name, `rsync`'s final name).
                self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
                return Err(FsError::NotFound);
            }
            None => {}
        }
        let p: Probe = self
            .ns
            .resolve(parent, name)
            .await?
            .ok_or(FsError::NotFound)?;
        let node = self
            .ns
            .node_from(parent, name, &p)?
            .ok_or(FsError::NotFound)?;
        let ino = lock(&self.ns.table).child(parent, name);
        Ok((ino, node))
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.ns.check_node_writable(parent)?;
        let _scope = self.files.enter_gate(&[parent]).await;
        let (ino, node) = self.child_node(parent, name).await?;
        if node.policy.read_only {
            return Err(FsError::ReadOnly);
        }
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let key = self.ns.child_key(&self.ns.key_of(parent)?, &node.seg);
        if self.backend.capabilities().real_dirs {
            return self.rmdir_real(parent, name, ino, &key).await;
        }
        let prefix = format!("{key}/");
        let page = self.backend.list_under(&prefix, 3).await?;
        let local_children = ino
            .map(|i| !lock(&self.ns.table).local_children(i).is_empty())
            .unwrap_or(false);
        if local_children
            || !page.prefixes.is_empty()
            || page.objects.iter().any(|o| o.key != prefix)
        {
            return Err(FsError::NotEmpty);
        }
        let has_slash = page.objects.iter().any(|o| o.key == prefix);
        if has_slash {
            ignore_missing(self.backend.delete(&prefix).await)?;
        }
        if node.marker == Marker::Folder {
            ignore_missing(self.backend.delete(&key).await)?;
        }
        let mut t = lock(&self.ns.table);
        t.unlink(parent, name);
        t.name_changed(parent, name, None);
        t.entries_changed(parent);
        Ok(())
    }

    /// rmdir of a real directory: one Path - Delete without `recursive`; the store says
    /// whether it is empty (files created here and not uploaded yet count too).
    async fn rmdir_real(
        &self,
        parent: u64,
        name: &str,
        ino: Option<u64>,
        key: &str,
    ) -> FsResult<()> {
        let local_children =
            ino.is_some_and(|i| !lock(&self.ns.table).local_children(i).is_empty());
        if local_children {
            return Err(FsError::NotEmpty);
        }
        match self.backend.delete_dir(key, false).await {
            // Gone already (removed by someone else): what rmdir wanted.
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(BackendError::NotEmpty { .. }) => return Err(FsError::NotEmpty),
            Err(e) => return Err(e.into()),
        }
        let mut t = lock(&self.ns.table);
        t.unlink(parent, name);
        t.name_changed(parent, name, None);
        t.entries_changed(parent);
        Ok(())
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.ns.check_node_writable(parent)?;
        let _scope = self.files.enter_gate(&[parent]).await;
        let (ino, node) = self.child_node(parent, name).await?;
        if node.policy.read_only {
            return Err(FsError::ReadOnly);
        }
        if node.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let mut local_only = node.local_only;
        if let Some(ino) = ino {
            self.files.mark_unlinked(ino).await;
            self.attrs.forget(ino);
            // An upload of the file may have been under way (a release, or one written
            // behind): marking it unlinked waited for it, so the node says now whether the
            // store has the object (and no later upload will put it there).
            if let Some(n) = lock(&self.ns.table).get(ino) {
                local_only = n.local_only;
            }
        }
        if !local_only {
            let key = self.ns.child_key(&self.ns.key_of(parent)?, &node.seg);
            ignore_missing(self.backend.delete(&key).await)?;
        }
        let mut t = lock(&self.ns.table);
        if let Some(ino) = t.unlink(parent, name)
            && let Some(n) = t.get_mut(ino)
        {
            n.local_only = false;
        }
        t.name_changed(parent, name, None);
        t.entries_changed(parent);
        Ok(())
    }

    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        c: Caller,
    ) -> FsResult<Attr> {
        self.ns.check_writable()?;
        names::check_new(name)?;
        if self.ns.node_kind(parent)? != Kind::Dir {
            return Err(FsError::NotDir);
        }
        self.ns.check_create(parent, name, Kind::Symlink, c)?;
        let _scope = self.files.enter_gate(&[parent]).await;
        self.ensure_absent(parent, name).await?;
        let key = self.ns.child_key(&self.ns.key_of(parent)?, name);
        let mut node = self.new_node(parent, name, Kind::Symlink, 0o777, c);
        let mut meta = attr::encode(
            &UserMetadata::new(),
            Kind::Symlink,
            0o777,
            c.uid,
            c.gid,
            node.mtime,
        );
        // gcsfuse reads a symlink's target from metadata only (attr.rs). Header values must
        // be short printable ASCII on every store (S3 allows 2 KiB of metadata in all).
        if target.len() <= attr::PEER_SYMLINK_MAX
            && target.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            meta.insert(attr::META_GCSFUSE_SYMLINK.into(), target.to_string());
        }
        let pm = PutMeta {
            metadata: meta,
            content_type: None,
        };
        let r = self
            .backend
            .put(
                &key,
                Bytes::from(target.as_bytes().to_vec()),
                &pm,
                &Precondition::IfNotExists,
            )
            .await
            .map_err(|e| match e {
                BackendError::AlreadyExists { .. } => FsError::Exists,
                e => e.into(),
            })?;
        node.size = target.len() as u64;
        node.etag = r.etag;
        node.symlink = Some(target.to_string());
        Ok(self.insert_new(parent, name, node))
    }

    /// FUSE rename (`RENAME_NOREPLACE` as `no_replace`); see `rename.rs`.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        crate::rename::Renamer(self)
            .rename(parent, name, new_parent, new_name, no_replace)
            .await
    }

    pub fn link(&self) -> FsResult<Attr> {
        Err(FsError::NotPermitted(
            "hard links are not supported by object storage",
        ))
    }
}

fn panic_free_attr(ino: u64, _name: &str) -> Attr {
    // Only reachable if the node vanished between insert and read under the same lock,
    // which cannot happen; return a harmless attribute rather than panicking.
    Attr {
        ino,
        kind: Kind::File,
        size: 0,
        perm: 0,
        uid: 0,
        gid: 0,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        atime: SystemTime::UNIX_EPOCH,
        nlink: 1,
    }
}
