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

use crate::api::{ObjectInfo, PutOutcome, Result};
use crate::error::BackendError;

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

/// Bytes copied per read by [`copy_sparse`].
const COPY_CHUNK: usize = 1024 * 1024;

/// Copy `src` from offset `from` to its end into `dst` at offset `to`, reading only the
/// data regions (`SEEK_DATA` / `SEEK_HOLE`) in chunks of [`COPY_CHUNK`]: a sparse file is
/// copied sparse, and memory does not grow with the file. `dst` ends exactly where the copy
/// does. (Used for uploads to a `file://` store and for copies kept in `conflicts/`.)
pub fn copy_sparse(
    src: &std::fs::File,
    from: u64,
    dst: &std::fs::File,
    to: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let len = src.metadata()?.len();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut off = from;
    while off < len {
        // SAFETY: lseek on a descriptor we own; no memory is involved.
        let data = unsafe { libc::lseek(src.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e);
        }
        let data = data as u64;
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            len
        } else {
            (hole as u64).min(len)
        };
        let mut at = data;
        while at < hole {
            let n = ((hole - at) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], at)?;
            dst.write_all_at(&buf[..n], at - from + to)?;
            at += n as u64;
        }
        off = hole.max(data + 1);
    }
    dst.set_len(len.saturating_sub(from) + to)
}

/// Put the local file `src` at `dst` (a path inside a `file://` store): copied sparse to a
/// temporary name beside it (one `object_store` itself skips in listings), synced, then
/// renamed over `dst`, so a reader sees the old object or the new one, never a part.
pub fn install_copy(src: &Path, dst: &Path) -> Result<()> {
    let key = dst.display().to_string();
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(&key, e))?;
    }
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(format!("#{}", rand::random::<u32>()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let input = std::fs::File::open(src)?;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        copy_sparse(&input, 0, &out, 0)?;
        out.sync_all()?;
        std::fs::rename(&tmp, dst)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(if crate::error::is_no_space(&e) {
            BackendError::LocalNoSpace(format!("{key}: {e}"))
        } else {
            io_err(&key, e)
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_files_are_copied_sparse_and_exact() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let f = std::fs::File::create(&src).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", 1 << 36).unwrap(); // 64 GiB logical
        drop(f);
        let dst = t.path().join("store/dir/obj");
        install_copy(&src, &dst).unwrap();
        let m = std::fs::metadata(&dst).unwrap();
        assert_eq!(m.len(), (1 << 36) + 4);
        assert!(
            m.blocks() * 512 < 16 << 20,
            "copy is not sparse: {} blocks",
            m.blocks()
        );
        let out = std::fs::File::open(&dst).unwrap();
        let mut b = [0u8; 4];
        out.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"head");
        out.read_exact_at(&mut b, 1 << 36).unwrap();
        assert_eq!(&b, b"tail");
        out.read_exact_at(&mut b, 1 << 30).unwrap();
        assert_eq!(b, [0; 4]);
        // Only the part after `from`, at `to`.
        let part = t.path().join("part");
        let p = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&part)
            .unwrap();
        copy_sparse(&std::fs::File::open(&src).unwrap(), 2, &p, 1).unwrap();
        assert_eq!(p.metadata().unwrap().len(), (1 << 36) + 4 - 2 + 1);
        let mut b = [0u8; 3];
        p.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"\0ad");
        // Nothing is left beside the object.
        let names: Vec<_> = std::fs::read_dir(t.path().join("store/dir"))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1);
    }

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
