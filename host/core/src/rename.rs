//! Rename: a file or a directory moved to another name or directory.
//!
//! Why its own module: a rename is the one operation that is several store requests on a
//! flat store (copy, then delete; a directory journaled key by key, `journal.rs`) and one on a
//! store that renames natively (ADLS Gen2), and it must hold open files, held attributes
//! and the directories on both ends steady while it runs (`renamegate.rs`).

use blobmount_backend::{BackendError, Precondition, PutOutcome, RenameCond};

use crate::attr::Kind;
use crate::error::{FsError, FsResult, ignore_missing};
use crate::fs::Fs;
use crate::inode::{Marker, Node};
use crate::journal::{RenameOutcome, RenamePlan};
use crate::names;
use crate::sync::lock;

/// The rename code's view of the file system (its methods are the steps of a rename; the
/// file system's own state through `Deref`).
pub(crate) struct Renamer<'a>(pub(crate) &'a Fs);

impl std::ops::Deref for Renamer<'_> {
    type Target = Fs;
    fn deref(&self) -> &Fs {
        self.0
    }
}

impl Renamer<'_> {
    /// Every key under directory key `key` (recursive), at most `limit + 1` of them.
    async fn collect_tree(&self, key: &str, limit: usize) -> FsResult<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![format!("{key}/")];
        while let Some(prefix) = stack.pop() {
            let mut token = None;
            loop {
                let page = self
                    .backend
                    .list_page(&prefix, token, self.cfg.list_page_size)
                    .await?;
                out.extend(page.objects.into_iter().map(|o| o.key));
                stack.extend(page.prefixes);
                if out.len() > limit {
                    return Ok(out);
                }
                token = page.next;
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        self.ns.check_node_writable(parent)?;
        self.ns.check_node_writable(new_parent)?;
        names::check_new(new_name)?;
        if self.ns.node_kind(new_parent)? != Kind::Dir {
            return Err(FsError::NotDir);
        }
        // No rename moves the two directories meanwhile, and this one starts moving only
        // when nothing works inside what it moves (see `renamegate.rs`); until then, the
        // names are resolved again each time the gate changes.
        let _cross = match parent == new_parent {
            true => None,
            false => Some(self.files.gate.cross_directory().await),
        };
        let scope = self.files.enter_gate(&[parent, new_parent]).await;
        let ends = ((parent, name), (new_parent, new_name));
        loop {
            let epoch = self.files.gate.epoch();
            let Some(job) = self.rename_plan(ends, no_replace).await? else {
                return Ok(());
            };
            match self.files.begin_move(job.ino, job.replaced, &scope) {
                Some((moving, open)) => {
                    let r = self.rename_run(ends, job, &open).await;
                    drop(moving);
                    return r;
                }
                None => self.files.gate.wait_past(epoch).await,
            }
        }
    }

    /// Resolve both ends of a rename and check it is allowed. `None`: nothing to do (the
    /// same key).
    async fn rename_plan(
        &self,
        ((parent, name), (new_parent, new_name)): RenameEnds<'_>,
        no_replace: bool,
    ) -> FsResult<Option<RenameJob>> {
        let (ino, node) = self.child_node(parent, name).await?;
        if node.policy.read_only {
            return Err(FsError::ReadOnly);
        }
        let from = self.ns.child_key(&self.ns.key_of(parent)?, &node.seg);
        let to = self.ns.child_key(&self.ns.key_of(new_parent)?, new_name);
        if node.kind == Kind::Dir && to.starts_with(&format!("{from}/")) {
            // Before any check of the target, as the kernel orders them.
            return Err(FsError::Invalid("cannot move a directory into itself"));
        }
        let target = match self.child_node(new_parent, new_name).await {
            Ok((tino, t)) => Some((tino, t)),
            Err(FsError::NotFound) => {
                self.ns.check_not_hidden(new_parent, new_name).await?;
                self.ns.check_new_name(new_parent, new_name, node.kind)?;
                None
            }
            Err(e) => return Err(e),
        };
        if let Some((_, t)) = &target {
            if t.policy.read_only {
                return Err(FsError::ReadOnly);
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            match (node.kind == Kind::Dir, t.kind == Kind::Dir) {
                (false, true) => return Err(FsError::IsDir),
                (true, false) => return Err(FsError::NotDir),
                _ => {}
            }
        }
        if from == to {
            return Ok(None);
        }
        let replaced = target
            .as_ref()
            .and_then(|(t, _)| *t)
            .filter(|t| Some(*t) != ino);
        Ok(Some(RenameJob {
            ino,
            node,
            from,
            to,
            target: target.map(|(t, _)| t),
            replaced,
            no_replace,
        }))
    }

    /// Carry out a planned rename, with the open files it moves (`open`) held still from
    /// their flush to their re-pin.
    async fn rename_run(
        &self,
        ((parent, name), (new_parent, new_name)): RenameEnds<'_>,
        job: RenameJob,
        open: &[(u64, std::sync::Arc<crate::files::OpenEntry>)],
    ) -> FsResult<()> {
        let mut held = self.files.hold(open).await;
        let (mut unsent, mut over) = (None, None);
        let native = self.backend.capabilities().native_rename;
        if native {
            self.rename_native(&mut held, &job).await?;
        }
        let RenameJob {
            ino,
            node,
            from,
            to,
            target,
            replaced,
            no_replace: _,
        } = job;
        if native {
            // Done in one request above.
        } else if node.kind == Kind::Dir {
            if let Some(tino) = &target {
                // Files created there and not uploaded yet count, as for rmdir.
                let local =
                    tino.is_some_and(|t| !lock(&self.ns.table).local_children(t).is_empty());
                let page = self.backend.list_under(&format!("{to}/"), 3).await?;
                if local
                    || !page.prefixes.is_empty()
                    || page.objects.iter().any(|o| o.key != format!("{to}/"))
                {
                    return Err(FsError::NotEmpty);
                }
            }
            // Open files inside are uploaded first, so the listing below has them and the
            // copy carries their data; so are attributes held for a moment (`attrwrite.rs`).
            self.files.flush_held(&mut held, replaced, None).await?;
            self.attrs.flush_all().await;
            let keys = self.collect_tree(&from, self.cfg.rename_dir_limit).await?;
            if keys.len() > self.cfg.rename_dir_limit {
                return Err(FsError::RenameTooLarge(keys.len()));
            }
            let plan = RenamePlan {
                from: from.clone(),
                to: to.clone(),
                keys,
                folder_marker: node.marker == Marker::Folder,
            };
            // Journaled, so a crash or a failing store leaves it rolled back or finished.
            let journal = self.journal.begin(&plan)?;
            if let Err(e) = self.journal.run(&plan).await {
                match self.journal.settle(&plan).await {
                    Ok(RenameOutcome::Finished { .. }) => self.journal.done(&journal),
                    Ok(RenameOutcome::RolledBack { .. }) => {
                        self.journal.done(&journal);
                        return Err(e);
                    }
                    // Left for the next mount to settle.
                    Err(_) => return Err(e),
                }
            } else {
                self.journal.done(&journal);
            }
        } else {
            // Writing behind, a closed file not in the store yet only moves here.
            if self.files.moves_unsent(&held, ino) {
                unsent = ino;
                over = self.replaced_in_store(&held, &target, replaced);
            }
            self.files.flush_held(&mut held, replaced, unsent).await?;
            let local_only = ino
                .and_then(|i| lock(&self.ns.table).get(i).map(|n| n.local_only))
                .unwrap_or(false);
            if let Some(i) = ino
                && local_only
                && unsent.is_none()
            {
                self.attrs.flush(i).await?;
            }
            if !local_only {
                self.copy_file_over(ino, &node, &from, &to).await?;
            }
        }
        if let Some(r) = replaced {
            self.files.unlink_held(&mut held, r);
        }
        let dir_ino = ino.filter(|_| node.kind == Kind::Dir);
        self.move_in_table(
            (parent, name),
            (new_parent, new_name),
            node.kind,
            ino,
            target.is_some(),
        );
        if let Some(d) = dir_ino {
            lock(&self.ns.table).mark_stale_under(d);
        }
        let repinned = self.files.repin_held(&mut held).await;
        if let Some(u) = unsent {
            self.files.settle_unsent_move(&mut held, u, over);
        }
        drop(held);
        repinned
    }

    /// What the new name holds in the store, read with the open files held (an upload of
    /// the replaced file that was under way has finished): `None` for nothing (no target, or
    /// one not uploaded yet), else its ETag if known.
    fn replaced_in_store(
        &self,
        held: &crate::files::Held<'_>,
        target: &Option<Option<u64>>,
        replaced: Option<u64>,
    ) -> Option<Option<String>> {
        target.as_ref()?;
        let Some(r) = replaced else {
            return Some(None);
        };
        let node = lock(&self.ns.table)
            .get(r)
            .map(|n| (n.local_only, n.etag.clone()));
        match node {
            Some((false, etag)) => Some(etag),
            None => Some(None),
            // Not uploaded yet (itself moved over an object, say): the store holds what its
            // own upload was to replace.
            Some((true, _)) => held
                .iter()
                .find(|(i, _, _)| *i == r)
                .and_then(|(_, _, st)| st.exists_remote.then(|| st.base_etag.clone())),
        }
    }

    /// A file's rename on a flat store: copy to the new name, then delete the old one. The
    /// renamed file takes its new name's type (a deliberate type of the old object does not
    /// outlive its name), and mode and times held for a moment (`attrwrite.rs`) go up with
    /// the copy; the node then follows the copy's version.
    async fn copy_file_over(
        &self,
        ino: Option<u64>,
        node: &Node,
        from: &str,
        to: &str,
    ) -> FsResult<()> {
        let new_type =
            (node.kind == Kind::File).then(|| self.config().content_types.for_name(to).to_string());
        let carried = match ino {
            Some(i) => {
                self.attrs
                    .copy_carrying(i, from, to, new_type.as_deref())
                    .await?
            }
            None => None,
        };
        let copied = match (carried, &new_type) {
            (Some(etag), _) => PutOutcome { etag },
            (None, Some(ct)) if node.content_type.as_deref() != Some(ct.as_str()) => {
                self.backend
                    .copy_typed(from, to, ct, &Precondition::None)
                    .await?
            }
            (None, Some(_) | None) => self.backend.copy(from, to, &Precondition::None).await?,
        };
        ignore_missing(self.backend.delete(from).await)?;
        if let Some(i) = ino
            && let Some(n) = lock(&self.ns.table).get_mut(i)
        {
            if let Some(ct) = new_type {
                n.content_type = Some(ct);
            }
            // The copy is a new version: a later metadata write is conditional on it (or on
            // nothing, where the store does not report the copy's ETag).
            n.etag = copied.etag;
        }
        Ok(())
    }

    /// A rename on a store that renames natively (ADLS Gen2 HNS): a file or a whole
    /// directory moves in one request, atomically, whatever its size; no copy, no journal.
    /// Open files inside are uploaded first (their changes move with them) and attributes
    /// held for a moment go up before. The store checks what could have changed since the
    /// plan: the destination's absence under RENAME_NOREPLACE, a non-empty directory there
    /// (ENOTEMPTY), the destination's parent (ENOENT).
    async fn rename_native(
        &self,
        held: &mut crate::files::Held<'_>,
        job: &RenameJob,
    ) -> FsResult<()> {
        if job.node.kind == Kind::Dir {
            // Files created in the replaced directory and not uploaded yet count, as for
            // rmdir; what is in the store the store checks.
            let local = job
                .target
                .flatten()
                .is_some_and(|t| !lock(&self.ns.table).local_children(t).is_empty());
            if local {
                return Err(FsError::NotEmpty);
            }
            self.files.flush_held(held, job.replaced, None).await?;
            self.attrs.flush_all().await;
        } else {
            self.files.flush_held(held, job.replaced, None).await?;
            if let Some(i) = job.ino {
                self.attrs.flush(i).await?;
            }
            let local_only = job
                .ino
                .and_then(|i| lock(&self.ns.table).get(i).map(|n| n.local_only))
                .unwrap_or(false);
            if local_only {
                return Ok(());
            }
        }
        let cond = RenameCond {
            source_etag: None,
            no_replace: job.no_replace,
        };
        let out = self
            .backend
            .rename(&job.from, &job.to, &cond)
            .await
            .map_err(|e| match e {
                BackendError::AlreadyExists { .. } => FsError::Exists,
                BackendError::NotEmpty { .. } => FsError::NotEmpty,
                e => e.into(),
            })?;
        if job.node.kind != Kind::Dir
            && let Some(i) = job.ino
            && let Some(n) = lock(&self.ns.table).get_mut(i)
        {
            // The same object under a new name: the store reports its ETag (kept).
            n.etag = out.etag;
        }
        Ok(())
    }

    fn move_in_table(
        &self,
        (parent, name): (u64, &str),
        (new_parent, new_name): (u64, &str),
        kind: Kind,
        ino: Option<u64>,
        replaced: bool,
    ) {
        let mut t = lock(&self.ns.table);
        if replaced {
            t.unlink(new_parent, new_name);
        }
        match ino {
            Some(ino) => t.rename(ino, new_parent, new_name),
            None => {
                t.unlink(parent, name);
            }
        }
        if let Some(ino) = ino
            && let Some(n) = t.get_mut(ino)
        {
            n.fetched = None; // new key: revalidate (etag changed by the copy)
        }
        t.name_changed(parent, name, None);
        t.name_changed(new_parent, new_name, Some(kind));
        t.entries_changed(parent);
        t.entries_changed(new_parent);
    }
}

/// The two ends of a rename: `(parent, name)` and `(new parent, new name)`.
type RenameEnds<'a> = ((u64, &'a str), (u64, &'a str));

/// A rename resolved and checked, ready to run.
struct RenameJob {
    /// The moved entry's inode (`None`: never looked up, so nothing of it is open).
    ino: Option<u64>,
    node: Node,
    from: String,
    to: String,
    /// The entry replaced at the new name, if any (its inode, when it has one).
    target: Option<Option<u64>>,
    /// The replaced entry's inode when it is not the moved one.
    replaced: Option<u64>,
    /// RENAME_NOREPLACE: the store checks the destination's absence too.
    no_replace: bool,
}
