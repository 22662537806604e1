//! Directory markers on `file://` stores: real directories.
//!
//! Why: `object_store`'s local store has no objects ending in `/`, and it drops user
//! metadata, so neither marker convention (S3's `dir/` object, Azure's `hdi_isfolder` blob)
//! survives there; `mkdir` used to leave an empty *file*. On a local directory the natural
//! marker is the directory itself: a key ending in `/` is a directory on disk, created,
//! reported, copied and removed here. Empty directories are listed as prefixes by
//! `object_store`, so they stay visible.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{BackendError, ObjectInfo, PutOutcome, Result};

/// The directory on disk for marker key `key` (ending in `/`).
fn dir_of(root: &Path, key: &str) -> Result<PathBuf> {
    let rel = key.trim_end_matches('/');
    if rel
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(BackendError::InvalidKey {
            key: key.into(),
            reason: "empty, '.' or '..' segment in a local path".into(),
        });
    }
    Ok(root.join(rel))
}

fn io_err(key: &str, e: std::io::Error) -> BackendError {
    match e.kind() {
        std::io::ErrorKind::NotFound => BackendError::NotFound { key: key.into() },
        std::io::ErrorKind::PermissionDenied => {
            BackendError::PermissionDenied(format!("{key}: {e}"))
        }
        _ => BackendError::Other(format!("{key}: {e}")),
    }
}

/// HEAD of a marker: the directory's attributes.
pub fn head(root: &Path, key: &str) -> Result<ObjectInfo> {
    let dir = dir_of(root, key)?;
    let m = std::fs::metadata(&dir).map_err(|e| io_err(key, e))?;
    if !m.is_dir() {
        return Err(BackendError::NotFound { key: key.into() });
    }
    Ok(ObjectInfo {
        key: key.into(),
        size: 0,
        etag: None,
        last_modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        metadata: Some(Default::default()),
        content_type: None,
    })
}

/// Whether the marker exists (for listings of `key`).
pub fn exists(root: &Path, key: &str) -> bool {
    dir_of(root, key).is_ok_and(|d| d.is_dir())
}

/// PUT of a marker: create the directory (and its parents, as the store would imply them).
pub fn create(root: &Path, key: &str) -> Result<PutOutcome> {
    let dir = dir_of(root, key)?;
    std::fs::create_dir_all(&dir).map_err(|e| io_err(key, e))?;
    Ok(PutOutcome { etag: None })
}

/// DELETE of a marker: remove the directory together with any empty directories below it
/// (left behind when their files were moved or deleted one object at a time). A directory
/// that still holds a file stays (its contents keep it visible, as on an object store).
pub fn delete(root: &Path, key: &str) -> Result<()> {
    let dir = dir_of(root, key)?;
    if !dir.is_dir() {
        return Err(BackendError::NotFound { key: key.into() });
    }
    remove_empty_tree(&dir).map_err(|e| io_err(key, e))?;
    Ok(())
}

/// Remove `dir` if it holds nothing but empty directories; true if it was removed.
fn remove_empty_tree(dir: &Path) -> std::io::Result<bool> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            empty &= remove_empty_tree(&entry.path())?;
        } else {
            empty = false;
        }
    }
    if empty {
        std::fs::remove_dir(dir)?;
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_directories() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        assert!(matches!(
            head(root, "a/b/"),
            Err(BackendError::NotFound { .. })
        ));
        create(root, "a/b/").unwrap();
        assert!(root.join("a/b").is_dir());
        assert!(exists(root, "a/"));
        assert_eq!(head(root, "a/b/").unwrap().size, 0);
        std::fs::write(root.join("a/f"), b"x").unwrap();
        delete(root, "a/").unwrap(); // holds a file: kept, its empty subdirectory removed
        assert!(root.join("a/f").exists());
        assert!(!root.join("a/b").exists());
        create(root, "a/c/").unwrap();
        delete(root, "a/c/").unwrap();
        assert!(!root.join("a/c").exists());
        std::fs::create_dir_all(root.join("m/n/o")).unwrap();
        delete(root, "m/").unwrap(); // only empty directories below: all gone
        assert!(!root.join("m").exists());
        assert!(dir_of(root, "a/../x/").is_err());
        std::fs::write(root.join("file"), b"x").unwrap();
        assert!(head(root, "file/").is_err());
    }
}
