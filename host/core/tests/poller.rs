//! The background poller (`Fs::poll`) over the in-memory store: with TTLs long enough that
//! nothing would be asked again, one round finds what another client changed (an
//! overwrite, a new name, a removal, an open file's new version), drops it, tells the
//! kernel, costs the requests its bounds allow, and leaves local work alone.

use std::time::Duration;

use blobmount_backend::Backend;
use blobmount_core::{Fs, Invalidation, PollConfig, ROOT_INO};

mod common;
use common::{TestFs, names, put, test_fs};

fn polled(tweak: impl FnOnce(&mut PollConfig)) -> TestFs {
    test_fs(|c| {
        c.attr_ttl = Duration::from_secs(3600);
        c.list_ttl = Duration::from_secs(3600);
        c.negative_ttl = Duration::from_secs(3600);
        c.attr_write_delay = Duration::ZERO;
        c.poll = PollConfig {
            interval: Duration::from_secs(1),
            ..Default::default()
        };
        tweak(&mut c.poll);
    })
}

async fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let h = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let data = common::read_seq(fs, ino, 4096).await.unwrap_or_default();
    fs.release(h.fh).await.unwrap();
    data
}

#[tokio::test]
async fn an_outside_overwrite_is_found_in_one_listing_and_dropped() {
    let t = polled(|_| {});
    put(&t.mem, "d/f", b"old").await;
    put(&t.mem, "d/g", b"same").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    assert_eq!(names(&t.fs, d).await, ["f", "g"]);
    let f = t.fs.lookup(d, "f").await.unwrap();
    let g = t.fs.lookup(d, "g").await.unwrap();
    assert_eq!(read_all(&t.fs, f.ino).await, b"old");

    // Nothing changed: a round costs the listings of the used directories and finds nothing.
    let before = t.c.kinds();
    let r = t.fs.poll().await;
    let cost = t.c.kinds() - before;
    assert!(r.changed.is_empty(), "{r:?}");
    assert!(r.invalidations.is_empty(), "{r:?}");
    assert_eq!((cost.list, cost.head, cost.total()), (2, 0, 2), "{cost:?}");
    assert_eq!(r.dirs, 2); // the root (looked up in) and d

    put(&t.mem, "d/f", b"new and longer").await;
    assert_eq!(
        t.fs.getattr(f.ino).await.unwrap().size,
        3,
        "TTL still holds"
    );
    let r = t.fs.poll().await;
    assert_eq!(r.changed, ["d/f"]);
    assert!(r.invalidations.contains(&Invalidation::Inode {
        ino: f.ino,
        data: true
    }));
    assert!(
        !r.invalidations
            .iter()
            .any(|i| matches!(i, Invalidation::Inode { ino, .. } if *ino == g.ino)),
        "an unchanged neighbour keeps its pages: {r:?}"
    );
    assert_eq!(t.fs.getattr(f.ino).await.unwrap().size, 14);
    assert_eq!(read_all(&t.fs, f.ino).await, b"new and longer");
    // The next round has nothing to say.
    assert!(t.fs.poll().await.changed.is_empty());
}

#[tokio::test]
async fn new_and_removed_names_are_seen_and_negative_entries_dropped() {
    let t = polled(|_| {});
    put(&t.mem, "d/a", b"a").await;
    put(&t.mem, "d/gone", b"x").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    assert_eq!(names(&t.fs, d).await, ["a", "gone"]);
    // A name looked up and absent: negative entry held for an hour.
    assert!(t.fs.lookup(d, "new").await.is_err());

    put(&t.mem, "d/new", b"n").await;
    t.mem.delete("d/gone").await.unwrap();
    // Before the round the mount still answers from its caches.
    assert!(t.fs.lookup(d, "new").await.is_err());
    assert_eq!(names(&t.fs, d).await, ["a", "gone"]);

    let r = t.fs.poll().await;
    let mut changed = r.changed.clone();
    changed.sort();
    assert_eq!(changed, ["d/gone", "d/new"], "{r:?}");
    for name in ["gone", "new"] {
        assert!(
            r.invalidations.contains(&Invalidation::Entry {
                parent: d,
                name: name.into()
            }),
            "{r:?}"
        );
    }
    assert!(r.invalidations.contains(&Invalidation::Inode {
        ino: d,
        data: false
    }));
    assert_eq!(names(&t.fs, d).await, ["a", "new"]);
    assert_eq!(t.fs.lookup(d, "new").await.unwrap().size, 1);
}

#[tokio::test]
async fn a_name_removed_after_one_round_is_seen_against_that_round() {
    let t = polled(|_| {});
    put(&t.mem, "d/a", b"a").await;
    put(&t.mem, "d/b", b"b").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    // Looked up in, never listed: the first round has only its own listing to go by.
    t.fs.lookup(d, "a").await.unwrap();
    assert!(t.fs.poll().await.changed.is_empty());
    t.mem.delete("d/b").await.unwrap();
    put(&t.mem, "d/c", b"c").await;
    let mut changed = t.fs.poll().await.changed;
    changed.sort();
    assert_eq!(changed, ["d/b", "d/c"]);
}

#[tokio::test]
async fn an_open_file_is_asked_about_and_the_next_open_sees_the_new_version() {
    // No directory is polled: the open file alone is asked about (one HEAD).
    let t = polled(|p| p.max_dirs = 0);
    put(&t.mem, "d/f", b"version 1").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let f = t.fs.lookup(d, "f").await.unwrap().ino;
    let h = t.fs.open(f, libc::O_RDONLY).await.unwrap();
    assert_eq!(
        t.fs.read(h.fh, 0, 100).await.unwrap().as_ref(),
        b"version 1"
    );
    put(&t.mem, "d/f", b"version two").await;

    let before = t.c.kinds();
    let r = t.fs.poll().await;
    let cost = t.c.kinds() - before;
    assert_eq!((cost.head, cost.list), (1, 0), "{cost:?}");
    assert_eq!(r.files, 1);
    assert_eq!(r.changed, ["d/f"]);
    // The open handle keeps its version's pages (attributes only); the next open reads anew.
    assert!(r.invalidations.contains(&Invalidation::Inode {
        ino: f,
        data: false
    }));
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(read_all(&t.fs, f).await, b"version two");
}

#[tokio::test]
async fn local_changes_are_left_alone() {
    let t = polled(|_| {});
    put(&t.mem, "d/f", b"theirs").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let f = t.fs.lookup(d, "f").await.unwrap().ino;
    let h = t.fs.open(f, libc::O_RDWR).await.unwrap();
    t.fs.write(h.fh, 0, b"MINE").await.unwrap();
    put(&t.mem, "d/f", b"theirs, changed").await;
    let r = t.fs.poll().await;
    assert!(r.changed.is_empty(), "{r:?}");
    assert!(
        !r.invalidations
            .iter()
            .any(|i| matches!(i, Invalidation::Inode { ino, .. } if *ino == f)),
        "{r:?}"
    );
    // The dirty file kept its upload condition: the close reports the conflict (ESTALE).
    let e = t.fs.flush(h.fh).await.unwrap_err();
    assert_eq!(e.errno(), libc::ESTALE);
    let _ = t.fs.release(h.fh).await;
}

#[tokio::test]
async fn bounds_hold_too_large_directories_and_old_uses_are_skipped() {
    let t = polled(|p| {
        p.max_entries = 10;
        p.recent = Duration::from_millis(300);
    });
    for i in 0..20 {
        put(&t.mem, &format!("big/f{i:02}"), b"x").await;
    }
    put(&t.mem, "small/a", b"x").await;
    let big = t.fs.lookup(ROOT_INO, "big").await.unwrap().ino;
    let small = t.fs.lookup(ROOT_INO, "small").await.unwrap().ino;
    names(&t.fs, big).await;
    names(&t.fs, small).await;
    let r = t.fs.poll().await;
    assert_eq!(r.too_large, 1, "{r:?}");
    assert_eq!(r.dirs, 2, "root and small: {r:?}");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = t.c.kinds();
    let r = t.fs.poll().await;
    assert_eq!((r.dirs, r.files), (0, 0), "nothing used lately: {r:?}");
    assert_eq!((t.c.kinds() - before).total(), 0);
}

#[tokio::test]
async fn off_by_default_tracks_nothing() {
    let t = test_fs(|_| {});
    put(&t.mem, "d/f", b"x").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    names(&t.fs, d).await;
    let before = t.c.kinds();
    let r = t.fs.poll().await;
    assert_eq!((r.dirs, r.files), (0, 0));
    assert_eq!((t.c.kinds() - before).total(), 0);
}

#[tokio::test]
async fn a_reader_opening_again_gets_the_new_version_while_its_old_handle_keeps_the_old() {
    let t = polled(|_| {});
    put(&t.mem, "d/f", b"version 1").await;
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let f = t.fs.lookup(d, "f").await.unwrap().ino;
    let old = t.fs.open(f, libc::O_RDONLY).await.unwrap();
    assert_eq!(t.fs.read(old.fh, 0, 4).await.unwrap().as_ref(), b"vers");
    put(&t.mem, "d/f", b"version two").await;
    assert_eq!(t.fs.poll().await.changed, ["d/f"]);
    let new = t.fs.open(f, libc::O_RDONLY).await.unwrap();
    assert!(
        !new.keep_cache,
        "the kernel must drop the old version's pages"
    );
    assert_eq!(
        t.fs.read(new.fh, 0, 100).await.unwrap().as_ref(),
        b"version two"
    );
    // The old handle never mixes versions: its version, or ESTALE.
    match t.fs.read(old.fh, 0, 100).await {
        Ok(b) => assert_eq!(b.as_ref(), b"version 1"),
        Err(e) => assert_eq!(e.errno(), libc::ESTALE),
    }
    t.fs.release(old.fh).await.unwrap();
    t.fs.release(new.fh).await.unwrap();
    // A writer keeps one opening: its upload is conditional on the version it started from.
    let w = t.fs.open(f, libc::O_RDWR).await.unwrap();
    put(&t.mem, "d/f", b"version three").await;
    t.fs.poll().await;
    let r = t.fs.open(f, libc::O_RDONLY).await.unwrap();
    // (The write needs the old bytes around it, so it may fail at once rather than at flush.)
    let e = match t.fs.write(w.fh, 0, b"MINE").await {
        Ok(_) => t.fs.flush(w.fh).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(e.errno(), libc::ESTALE);
    let _ = t.fs.release(w.fh).await;
    let _ = t.fs.release(r.fh).await;
}
