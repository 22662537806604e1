//! Dropping what the mount has cached for a path that another client changed
//! (`blobmount refresh`, `POST /refresh`).
//!
//! Why: attributes, listings and negative entries are trusted for their TTLs, and the
//! kernel keeps entries, attributes and pages for as long as it was told. A user who knows
//! that a path changed behind the mount's back wants the next access to ask the store, not
//! to wait for a TTL. The core forgets its own state here and returns what the kernel must
//! forget too ([`Invalidation`]); the daemon sends those as FUSE notifications, so this crate
//! stays free of FUSE types.
//!
//! Open files: a file with changes not uploaded yet (or created here and not uploaded) is
//! left alone and reported ([`Refresh::skipped`]): its local state is newer than the store's.
//! A clean open file gets its attributes refreshed only: its handles stay pinned to the
//! version they opened (reads past what is cached give `ESTALE` as always), the next open
//! sees the new version.

use std::collections::HashSet;

use crate::attr::Kind;
use crate::error::{FsError, FsResult};
use crate::fs::Fs;
use crate::inode::{ROOT_INO, Table};
use crate::sync::lock;

/// What the kernel must forget after a refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// The inode's attributes, and its cached pages too when `data`.
    Inode { ino: u64, data: bool },
    /// The name `name` in directory `parent` (the dentry, positive or negative).
    Entry { parent: u64, name: String },
}

/// What a refresh of one path did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refresh {
    /// Nodes whose cached attributes (and listing, for a directory) were dropped.
    pub nodes: usize,
    /// The path was not known to the mount beyond its parent: only the parent's listing
    /// and negative entry for the name were dropped.
    pub not_cached: bool,
    /// Mount-relative paths of open files left alone because they hold changes the store
    /// does not have yet.
    pub skipped: Vec<String>,
    /// Mount-relative paths of open files whose attributes only were refreshed (their
    /// handles keep reading the version they opened).
    pub attrs_only: Vec<String>,
    /// For the daemon to send to the kernel, in order.
    pub invalidations: Vec<Invalidation>,
}

/// The names of a mount-relative path (`a/b/c`; `""` or `.` is the root). `..` is refused.
fn components(path: &str) -> FsResult<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(FsError::Invalid("`..` in a refresh path")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Whose state a refresh drops: the node itself and, for a directory, its known children
/// (all known descendants when `recursive`).
fn targets(t: &Table, ino: u64, recursive: bool) -> Vec<u64> {
    let mut out = vec![ino];
    if t.get(ino).is_some_and(|n| n.kind == Kind::Dir) {
        if recursive {
            out.extend(t.descendants(ino));
        } else {
            out.extend(t.children_of(ino).into_iter().map(|(_, c)| c));
        }
    }
    out
}

/// [`Fs::refresh`]: forget what is cached for the mount-relative `path` (see the module doc)
/// and say what the kernel must forget. Asks the store nothing: the next access does.
pub(crate) fn refresh(fs: &Fs, path: &str, recursive: bool) -> FsResult<Refresh> {
    let names = components(path)?;
    let mut out = Refresh::default();
    let mut drop_keys = Vec::new();
    {
        let mut t = lock(&fs.ns.table);
        let mut cur = ROOT_INO;
        for name in &names {
            match t.child(cur, name) {
                Some(c) => cur = c,
                None => {
                    // Nothing is cached below an unknown name; the parent may still
                    // hold a listing or a negative entry for it.
                    if let Some(p) = t.get_mut(cur) {
                        p.dir.forget_name(name);
                    }
                    out.not_cached = true;
                    out.invalidations.push(Invalidation::Entry {
                        parent: cur,
                        name: (*name).to_string(),
                    });
                    return Ok(out);
                }
            }
        }
        // The parent's listing may carry this name's old attributes (Azure listings do).
        if let (Some(last), Some(parent)) = (names.last(), t.get(cur).map(|n| n.parent))
            && cur != ROOT_INO
            && let Some(p) = t.get_mut(parent)
        {
            p.dir.forget_name(last);
        }
        let mut seen = HashSet::new();
        for ino in targets(&t, cur, recursive) {
            if !seen.insert(ino) {
                continue;
            }
            let Some(n) = t.get(ino) else { continue };
            let (parent, name, kind) = (n.parent, n.name.clone(), n.kind);
            let shown = || t.path_of(ino).unwrap_or_else(|| name.clone());
            if n.local_only || fs.files.holds_news(ino) {
                out.skipped.push(shown());
                continue;
            }
            let open = fs.files.entry(ino).is_some();
            if open {
                out.attrs_only.push(shown());
            } else if kind != Kind::Dir
                && let Some(key) = t.key_of(ino, &fs.cfg.prefix)
            {
                drop_keys.push(key);
            }
            if let Some(n) = t.get_mut(ino) {
                if ino != ROOT_INO {
                    n.fetched = None;
                }
                n.dir.changed();
                if !open {
                    n.symlink = None;
                }
            }
            out.nodes += 1;
            out.invalidations.push(Invalidation::Inode {
                ino,
                data: !open && kind != Kind::Dir,
            });
            if ino != ROOT_INO {
                out.invalidations.push(Invalidation::Entry { parent, name });
            }
        }
    }
    if let Some(fc) = &fs.file_cache {
        for key in &drop_keys {
            fc.forget(key);
        }
    }
    // The next open must not keep the kernel's pages of the old version.
    let mut etags = lock(&fs.files.opened_etags);
    for inv in &out.invalidations {
        if let Invalidation::Inode { ino, data: true } = inv {
            etags.remove(ino);
        }
    }
    drop(etags);
    Ok(out)
}
