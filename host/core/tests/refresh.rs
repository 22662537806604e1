//! `Fs::refresh` over the in-memory store: with TTLs long enough that nothing would be asked
//! again, another client's changes are seen right after a refresh (and not before), an open
//! file with local changes is left alone, and the kernel is told what to forget.

use std::time::Duration;

use blobmount_backend::Backend;
use blobmount_core::{Caller, Fs, FsError, Invalidation, ROOT_INO};

mod common;
use common::{TestFs, names, put, test_fs};

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

fn long_ttls() -> TestFs {
    test_fs(|c| {
        c.attr_ttl = Duration::from_secs(3600);
        c.list_ttl = Duration::from_secs(3600);
        c.negative_ttl = Duration::from_secs(3600);
    })
}

async fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let h = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        match fs.read(h.fh, out.len() as u64, 4096).await {
            Ok(b) if b.is_empty() => break,
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => {
                fs.release(h.fh).await.unwrap();
                return format!("error {}", e.errno()).into_bytes();
            }
        }
    }
    fs.release(h.fh).await.unwrap();
    out
}

#[tokio::test]
async fn a_refreshed_file_is_read_anew_and_the_kernel_told() {
    let t = long_ttls();
    put(&t.mem, "d/f", b"old").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let f = t.fs.lookup(d, "f").await.unwrap();
    assert_eq!(read_all(&t.fs, f.ino).await, b"old");
    put(&t.mem, "d/f", b"new and longer").await;
    // Within the TTL the old attributes are served, and the old version with them.
    assert_eq!(t.fs.getattr(f.ino).await.unwrap().size, 3);
    assert_ne!(read_all(&t.fs, f.ino).await, b"new and longer");

    let r = t.fs.refresh("d/f", false).unwrap();
    assert_eq!(r.nodes, 1);
    assert!(r.skipped.is_empty() && !r.not_cached);
    assert_eq!(
        r.invalidations,
        [
            Invalidation::Inode {
                ino: f.ino,
                data: true
            },
            Invalidation::Entry {
                parent: d,
                name: "f".into()
            }
        ]
    );
    assert_eq!(t.fs.getattr(f.ino).await.unwrap().size, 14);
    assert_eq!(read_all(&t.fs, f.ino).await, b"new and longer");
}

#[tokio::test]
async fn a_refreshed_directory_shows_new_and_drops_deleted_names() {
    let t = long_ttls();
    put(&t.mem, "d/a", b"1").await;
    put(&t.mem, "d/gone", b"2").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    assert_eq!(names(&t.fs, d).await, ["a", "gone"]);
    let gone = t.fs.lookup(d, "gone").await.unwrap().ino;
    assert!(matches!(
        t.fs.lookup(d, "new").await,
        Err(FsError::NotFound)
    ));
    put(&t.mem, "d/new", b"3").await;
    t.mem.delete("d/gone").await.unwrap();
    // Cached: the listing, the negative entry and the attributes all still say the old.
    assert_eq!(names(&t.fs, d).await, ["a", "gone"]);
    assert!(t.fs.lookup(d, "new").await.is_err());
    assert!(t.fs.getattr(gone).await.is_ok());

    let r = t.fs.refresh("d", false).unwrap();
    assert!(r.invalidations.contains(&Invalidation::Entry {
        parent: d,
        name: "gone".into()
    }));
    assert_eq!(names(&t.fs, d).await, ["a", "new"]);
    assert!(t.fs.lookup(d, "new").await.is_ok());
    assert!(matches!(t.fs.getattr(gone).await, Err(FsError::NotFound)));
}

#[tokio::test]
async fn an_unknown_name_drops_the_negative_entry_of_its_parent() {
    let t = long_ttls();
    assert!(t.fs.lookup(ROOT_INO, "later").await.is_err());
    put(&t.mem, "later", b"x").await;
    assert!(
        t.fs.lookup(ROOT_INO, "later").await.is_err(),
        "negative entry"
    );
    let r = t.fs.refresh("later", false).unwrap();
    assert!(r.not_cached);
    assert!(t.fs.lookup(ROOT_INO, "later").await.is_ok());
    assert!(t.fs.refresh("a/../b", false).is_err());
}

#[tokio::test]
async fn a_file_with_local_changes_is_skipped_and_kept() {
    let t = long_ttls();
    put(&t.mem, "dir/sub/x", b"x").await;
    let (a, h) =
        t.fs.create(ROOT_INO, "mine", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    t.fs.write(h.fh, 0, b"unsaved").await.unwrap();
    let r = t.fs.refresh("mine", false).unwrap();
    assert_eq!(r.skipped, ["mine"]);
    assert!(r.invalidations.is_empty());
    let r = t.fs.refresh("", true).unwrap();
    assert_eq!(r.skipped, ["mine"]);
    assert!(
        !r.invalidations
            .iter()
            .any(|i| matches!(i, Invalidation::Inode { ino, .. } if *ino == a.ino))
    );
    t.fs.flush(h.fh).await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(
        common::stored(t.mem.as_ref(), "mine").await.unwrap(),
        b"unsaved"
    );
    // A recursive refresh reaches known nodes at any depth.
    let dir = t.fs.lookup(ROOT_INO, "dir").await.unwrap().ino;
    let sub = t.fs.lookup(dir, "sub").await.unwrap().ino;
    let x = t.fs.lookup(sub, "x").await.unwrap().ino;
    let r = t.fs.refresh("dir", true).unwrap();
    assert_eq!(r.nodes, 3);
    let r = t.fs.refresh("dir", false).unwrap();
    assert_eq!(r.nodes, 2, "the directory and its child only");
    assert!(
        !r.invalidations
            .iter()
            .any(|i| matches!(i, Invalidation::Inode { ino, .. } if *ino == x))
    );
}

#[tokio::test]
async fn the_file_cache_copy_of_a_refreshed_file_is_dropped() {
    let t = test_fs(|c| {
        c.attr_ttl = Duration::from_secs(3600);
        c.read_mode = blobmount_core::ReadMode::FileCache;
    });
    put(&t.mem, "f", b"cached bytes").await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap().ino;
    assert_eq!(read_all(&t.fs, f).await, b"cached bytes");
    let fc = t.fs.file_cache.clone().unwrap();
    assert_eq!(fc.len(), 1);
    put(&t.mem, "f", b"new").await;
    let r = t.fs.refresh("f", false).unwrap();
    assert_eq!(r.nodes, 1);
    assert_eq!(fc.len(), 0, "the old copy is gone");
    assert_eq!(read_all(&t.fs, f).await, b"new");
}

#[tokio::test]
async fn a_clean_open_file_gets_its_attributes_refreshed_only() {
    let t = long_ttls();
    put(&t.mem, "f", b"v1").await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let h = t.fs.open(f, libc::O_RDONLY).await.unwrap();
    put(&t.mem, "f", b"version 2").await;
    let r = t.fs.refresh("f", false).unwrap();
    assert_eq!(r.attrs_only, ["f"]);
    assert!(r.invalidations.contains(&Invalidation::Inode {
        ino: f,
        data: false
    }));
    assert_eq!(t.fs.getattr(f).await.unwrap().size, 9);
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(read_all(&t.fs, f).await, b"version 2");
}
