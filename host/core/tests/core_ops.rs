//! The core driven directly (no kernel) against the in-memory backend.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use blobmount_backend::Backend;
use blobmount_backend::memory::MemoryBackend;
use blobmount_core::{Caller, Fs, FsConfig, FsError, Kind, ROOT_INO, SetAttr};

mod common;
use common::{Counting, TestFs, put, test_fs, test_fs_on};

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

fn setup() -> TestFs {
    test_fs(|_| {})
}

fn mount(mem: Arc<MemoryBackend>) -> TestFs {
    test_fs_on(mem, |_| {})
}

async fn write_file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (a, h) = fs
        .create(parent, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    assert_eq!(fs.write(h.fh, 0, data).await.unwrap() as usize, data.len());
    fs.flush(h.fh).await.unwrap();
    fs.release(h.fh).await.unwrap();
    a.ino
}

async fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let h = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let b = fs.read(h.fh, out.len() as u64, 4096).await.unwrap();
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    fs.release(h.fh).await.unwrap();
    out
}

async fn names(fs: &Fs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino).await.unwrap();
    let v = fs
        .readdir(fh, 0)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.name)
        .collect();
    fs.releasedir(fh);
    v
}

#[tokio::test]
async fn create_write_read_and_metadata_persist_across_mounts() {
    let t = setup();
    let ino = write_file(&t.fs, ROOT_INO, "hello.txt", b"hello world").await;
    assert_eq!(read_all(&t.fs, ino).await, b"hello world");
    assert_eq!(t.mem.keys(), ["hello.txt"]);
    t.fs.setattr(
        ino,
        SetAttr {
            perm: Some(0o600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Unmounted (a chmod of a closed file is held for a moment, then written; see
    // request_budget.rs), then mounted again.
    t.fs.flush_for_shutdown().await;

    let t2 = mount(t.mem.clone());
    let a = t2.fs.lookup(ROOT_INO, "hello.txt").await.unwrap();
    assert_eq!(
        (a.kind, a.size, a.perm, a.uid),
        (Kind::File, 11, 0o600, 1000)
    );
    assert_eq!(read_all(&t2.fs, a.ino).await, b"hello world");
}

#[tokio::test]
async fn directories_explicit_and_implicit() {
    let t = setup();
    put(&t.mem, "a/b/c.txt", b"x").await;
    let d = t.fs.mkdir(ROOT_INO, "empty", 0o755, ME).await.unwrap();
    assert_eq!(d.kind, Kind::Dir);
    // A `dir/` marker; on HNS a real directory (an `hdi_isfolder` blob).
    let marker = if common::hns_mode() {
        "empty"
    } else {
        "empty/"
    };
    assert!(t.mem.keys().contains(&marker.to_string()));
    assert_eq!(names(&t.fs, ROOT_INO).await, [".", "..", "a", "empty"]);
    let a = t.fs.lookup(ROOT_INO, "a").await.unwrap();
    assert_eq!(a.kind, Kind::Dir);
    let b = t.fs.lookup(a.ino, "b").await.unwrap();
    assert_eq!(names(&t.fs, b.ino).await, [".", "..", "c.txt"]);
    assert_eq!(t.fs.rmdir(ROOT_INO, "a").await, Err(FsError::NotEmpty));
    t.fs.rmdir(ROOT_INO, "empty").await.unwrap();
    assert_eq!(
        t.fs.lookup(ROOT_INO, "empty").await.unwrap_err(),
        FsError::NotFound
    );
    assert_eq!(
        t.fs.mkdir(ROOT_INO, "a", 0o755, ME).await.unwrap_err(),
        FsError::Exists
    );
}

#[tokio::test]
async fn odd_names_get_stand_ins_and_stay_readable() {
    let t = setup();
    put(&t.mem, "foo", b"file").await;
    put(&t.mem, "foo/inner", b"in").await;
    put(&t.mem, "a//b", b"double").await;
    let long = "L".repeat(300);
    put(&t.mem, &long, b"long").await;
    let listed = names(&t.fs, ROOT_INO).await;
    assert!(listed.contains(&"foo".to_string()));
    assert!(listed.contains(&"foo.~file".to_string()), "{listed:?}");
    let long_name = listed
        .iter()
        .find(|n| n.starts_with("LLL"))
        .unwrap()
        .clone();
    assert!(long_name.len() <= 255);
    let f = t.fs.lookup(ROOT_INO, "foo.~file").await.unwrap();
    assert_eq!(read_all(&t.fs, f.ino).await, b"file");
    let l = t.fs.lookup(ROOT_INO, &long_name).await.unwrap();
    assert_eq!(read_all(&t.fs, l.ino).await, b"long");
    let a = t.fs.lookup(ROOT_INO, "a").await.unwrap();
    let inner = names(&t.fs, a.ino).await;
    assert_eq!(inner, [".", "..", "~empty"]);
    let e = t.fs.lookup(a.ino, "~empty").await.unwrap();
    let b = t.fs.lookup(e.ino, "b").await.unwrap();
    assert_eq!(read_all(&t.fs, b.ino).await, b"double");
    assert!(
        t.fs.stats
            .name_conflicts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    let too_long = "n".repeat(256);
    assert_eq!(
        t.fs.lookup(ROOT_INO, &too_long).await.unwrap_err(),
        FsError::NameTooLong
    );
}

#[tokio::test]
async fn random_writes_appends_and_truncate() {
    let t = setup();
    let ino = write_file(&t.fs, ROOT_INO, "f", b"0123456789").await;
    let h = t.fs.open(ino, libc::O_RDWR).await.unwrap();
    t.fs.write(h.fh, 2, b"AB").await.unwrap();
    t.fs.write(h.fh, 12, b"Z").await.unwrap(); // hole
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(read_all(&t.fs, ino).await, b"01AB456789\0\0Z");
    t.fs.setattr(
        ino,
        SetAttr {
            size: Some(4),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(read_all(&t.fs, ino).await, b"01AB");
    let h =
        t.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .unwrap();
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(read_all(&t.fs, ino).await, b"");
}

#[tokio::test]
async fn rename_file_and_directory() {
    let t = setup();
    put(&t.mem, "d/x", b"1").await;
    put(&t.mem, "d/sub/y", b"2").await;
    write_file(&t.fs, ROOT_INO, "f", b"data").await;
    t.fs.rename(ROOT_INO, "f", ROOT_INO, "g", false)
        .await
        .unwrap();
    t.fs.rename(ROOT_INO, "d", ROOT_INO, "e", false)
        .await
        .unwrap();
    assert_eq!(t.mem.keys(), ["e/sub/y", "e/x", "g"]);
    let g = t.fs.lookup(ROOT_INO, "g").await.unwrap();
    assert_eq!(read_all(&t.fs, g.ino).await, b"data");
}

#[tokio::test]
async fn big_directory_rename_is_exdev() {
    let mem = common::new_store();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::for_tests(dir.path().to_path_buf());
    cfg.rename_dir_limit = 3;
    let fs = Fs::new(mem.clone(), cfg).unwrap();
    for i in 0..5 {
        put(&mem, &format!("big/{i}"), b"x").await;
    }
    if common::hns_mode() {
        // A native rename has no size limit (hns.rs counts its one request).
        fs.rename(ROOT_INO, "big", ROOT_INO, "b2", false)
            .await
            .unwrap();
        return;
    }
    assert_eq!(
        fs.rename(ROOT_INO, "big", ROOT_INO, "b2", false)
            .await
            .unwrap_err()
            .errno(),
        libc::EXDEV
    );
}

#[tokio::test]
async fn symlinks_round_trip() {
    let t = setup();
    let s =
        t.fs.symlink(ROOT_INO, "ln", "../target/file", ME)
            .await
            .unwrap();
    assert_eq!(s.kind, Kind::Symlink);
    let t2 = mount(t.mem.clone());
    let a = t2.fs.lookup(ROOT_INO, "ln").await.unwrap();
    assert_eq!(a.kind, Kind::Symlink);
    assert_eq!(t2.fs.readlink(a.ino).await.unwrap(), "../target/file");
    assert_eq!(t.fs.link().unwrap_err().errno(), libc::EPERM);
}

#[tokio::test]
async fn failed_upload_is_reported_at_flush_and_data_kept() {
    let t = setup();
    let (_, h) =
        t.fs.create(ROOT_INO, "f", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    t.fs.write(h.fh, 0, b"precious").await.unwrap();
    t.mem.set_fail_writes(true);
    assert_eq!(t.fs.flush(h.fh).await.unwrap_err().errno(), libc::EIO);
    assert!(t.fs.release(h.fh).await.is_err());
    let kept: Vec<_> = std::fs::read_dir(t.fs.config().cache_dir.join("conflicts"))
        .unwrap()
        .collect();
    assert_eq!(kept.len(), 1);
    let p = kept[0].as_ref().unwrap().path();
    assert_eq!(std::fs::read(p).unwrap(), b"precious");
}

#[tokio::test]
async fn concurrent_remote_change_gives_estale_and_keeps_local_data() {
    let t = setup();
    let ino = write_file(&t.fs, ROOT_INO, "f", b"v1").await;
    let h = t.fs.open(ino, libc::O_RDWR).await.unwrap();
    t.fs.write(h.fh, 0, b"mine").await.unwrap();
    put(&t.mem, "f", b"theirs").await; // another client wins
    let e = t.fs.flush(h.fh).await.unwrap_err();
    assert_eq!(e.errno(), libc::ESTALE);
    t.fs.release(h.fh).await.unwrap();
    let r = t.mem.get_range("f", 0..100, None).await.unwrap();
    assert_eq!(&r[..], b"theirs");
    let kept: Vec<_> = std::fs::read_dir(t.fs.config().cache_dir.join("conflicts"))
        .unwrap()
        .collect();
    assert_eq!(
        std::fs::read(kept[0].as_ref().unwrap().path()).unwrap(),
        b"mine"
    );
}

#[tokio::test]
async fn read_pins_the_etag_seen_at_open() {
    let t = setup();
    put(&t.mem, "big", &vec![1u8; 4 << 20]).await;
    let a = t.fs.lookup(ROOT_INO, "big").await.unwrap();
    let h = t.fs.open(a.ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(t.fs.read(h.fh, 0, 4096).await.unwrap(), vec![1u8; 4096]);
    put(&t.mem, "big", &vec![2u8; 4 << 20]).await;
    // Bytes already fetched belong to the version opened; they may still be served.
    assert_eq!(t.fs.read(h.fh, 4096, 4096).await.unwrap(), vec![1u8; 4096]);
    // Beyond what was fetched, the store is asked again and must refuse the new version.
    assert_eq!(
        t.fs.read(h.fh, 3_500_000, 4096).await.unwrap_err(),
        FsError::Stale
    );
}

#[tokio::test]
async fn read_only_mount_refuses_writes() {
    let mem = common::new_store();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::for_tests(dir.path().to_path_buf());
    cfg.read_only = true;
    let fs = Fs::new(mem, cfg).unwrap();
    assert_eq!(
        fs.mkdir(ROOT_INO, "x", 0o755, ME)
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.create(ROOT_INO, "x", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
}

#[tokio::test]
async fn unlink_removes_object() {
    let t = setup();
    write_file(&t.fs, ROOT_INO, "f", b"x").await;
    t.fs.unlink(ROOT_INO, "f").await.unwrap();
    assert!(t.mem.keys().is_empty());
    assert_eq!(
        t.fs.unlink(ROOT_INO, "f").await.unwrap_err(),
        FsError::NotFound
    );
}

/// Opens racing with the last release of the same file must get a working handle
/// (regression: the new handle attached to the state the release was removing, and its
/// reads failed with EBADF, which killed `git` with SIGBUS on mmap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_racing_with_last_release_gets_a_working_handle() {
    let t = setup();
    let ino = write_file(&t.fs, ROOT_INO, "f", b"payload").await;
    let fs = Arc::new(t.fs);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let fs = fs.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..3000 {
                let h = fs.open(ino, libc::O_RDONLY).await.unwrap();
                let data = fs.read(h.fh, 0, 4096).await;
                fs.release(h.fh).await.unwrap();
                assert_eq!(data.as_deref(), Ok(&b"payload"[..]));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn counting(
    ttl: std::time::Duration,
) -> (Arc<MemoryBackend>, Arc<Counting>, Fs, tempfile::TempDir) {
    counting_with(ttl, |_| {})
}

/// [`counting`] with further configuration.
fn counting_with(
    ttl: std::time::Duration,
    tweak: impl FnOnce(&mut FsConfig),
) -> (Arc<MemoryBackend>, Arc<Counting>, Fs, tempfile::TempDir) {
    let mem = common::new_store();
    let c = Counting::new(mem.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::for_tests(dir.path().to_path_buf());
    cfg.attr_ttl = ttl;
    cfg.list_ttl = ttl;
    cfg.negative_ttl = ttl;
    tweak(&mut cfg);
    let fs = Fs::new(c.clone(), cfg).unwrap();
    (mem, c, fs, dir)
}

#[tokio::test]
async fn listing_is_a_list_type_and_negative_cache_within_its_ttl() {
    let ttl = std::time::Duration::from_millis(400);
    let (mem, c, fs, _d) = counting(ttl);
    for k in ["a/x", "a/y", "a/sub/z"] {
        put(&mem, k, b"data").await;
    }
    let a = fs.lookup(ROOT_INO, "a").await.unwrap();
    let before = c.calls();
    assert_eq!(names(&fs, a.ino).await, [".", "..", "sub", "x", "y"]);
    let after_ls = c.calls();
    assert_eq!(after_ls.1 - before.1, 1, "one listing request");
    // ls again: served from the list cache.
    names(&fs, a.ino).await;
    assert_eq!(
        c.calls(),
        after_ls,
        "second ls within the TTL must not call the store"
    );
    // A listed file: one HEAD, no listing (type cache); none where listings carry the
    // metadata (HNS mode, like Azure).
    let x = fs.lookup(a.ino, "x").await.unwrap();
    assert_eq!(x.size, 4);
    let head = usize::from(!common::hns_mode());
    assert_eq!(c.calls(), (after_ls.0 + head, after_ls.1));
    // A name the fresh listing does not have: no request at all.
    assert_eq!(fs.lookup(a.ino, "nope").await, Err(FsError::NotFound));
    assert_eq!(c.calls(), (after_ls.0 + head, after_ls.1));
    // After the TTL the store is asked again, and sees what others wrote meanwhile.
    put(&mem, "a/new", b"n").await;
    assert_eq!(fs.lookup(a.ino, "new").await, Err(FsError::NotFound));
    tokio::time::sleep(ttl + std::time::Duration::from_millis(50)).await;
    assert_eq!(fs.lookup(a.ino, "new").await.unwrap().size, 1);
    assert_eq!(names(&fs, a.ino).await, [".", "..", "new", "sub", "x", "y"]);
}

#[tokio::test]
async fn negative_entries_expire_and_local_changes_invalidate_them() {
    let ttl = std::time::Duration::from_millis(400);
    let (mem, c, fs, _d) = counting(ttl);
    assert_eq!(fs.lookup(ROOT_INO, "f").await, Err(FsError::NotFound));
    let n = c.calls();
    assert_eq!(fs.lookup(ROOT_INO, "f").await, Err(FsError::NotFound));
    assert_eq!(c.calls(), n, "negative cache hit");
    // A local create is seen at once.
    write_file(&fs, ROOT_INO, "f", b"local").await;
    assert_eq!(fs.lookup(ROOT_INO, "f").await.unwrap().size, 5);
    // A remote create is seen once the negative entry expires.
    assert_eq!(fs.lookup(ROOT_INO, "g").await, Err(FsError::NotFound));
    put(&mem, "g", b"remote").await;
    assert_eq!(fs.lookup(ROOT_INO, "g").await, Err(FsError::NotFound));
    tokio::time::sleep(ttl + std::time::Duration::from_millis(50)).await;
    assert_eq!(fs.lookup(ROOT_INO, "g").await.unwrap().size, 6);
    // mkdir over a cached-absent name works and is visible.
    assert_eq!(fs.lookup(ROOT_INO, "d").await, Err(FsError::NotFound));
    fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap();
    assert_eq!(fs.lookup(ROOT_INO, "d").await.unwrap().kind, Kind::Dir);
}

/// Filling a directory (untar, many writers): creating and uploading one file keeps the other
/// names known absent, so each create costs no extra probes for its siblings.
#[tokio::test]
async fn a_local_create_keeps_the_other_negative_entries() {
    let ttl = std::time::Duration::from_secs(30);
    let (_mem, c, fs, _d) = counting(ttl);
    for n in ["a", "b"] {
        assert_eq!(fs.lookup(ROOT_INO, n).await, Err(FsError::NotFound));
    }
    write_file(&fs, ROOT_INO, "a", b"1").await;
    let n = c.calls();
    assert_eq!(fs.lookup(ROOT_INO, "b").await, Err(FsError::NotFound));
    assert_eq!(c.calls(), n, "b is still known absent");
    // The created name itself is no longer negative.
    assert_eq!(fs.lookup(ROOT_INO, "a").await.unwrap().size, 1);
}

/// The kernel looks a name up before creating it: the create then asks the store nothing
/// more (the upload is conditional on absence).
#[tokio::test]
async fn a_create_right_after_a_negative_lookup_asks_nothing_more() {
    let ttl = std::time::Duration::from_secs(30);
    let (mem, c, fs, _d) = counting(ttl);
    assert_eq!(fs.lookup(ROOT_INO, "new").await, Err(FsError::NotFound));
    let before = c.calls();
    let (a, h) = fs
        .create(ROOT_INO, "new", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    assert_eq!(c.calls(), before, "no HEAD or LIST for the create");
    fs.write(h.fh, 0, b"abc").await.unwrap();
    fs.release(h.fh).await.unwrap();
    assert_eq!(read_all(&fs, a.ino).await, b"abc");
    // Another client created a name we believe absent: the conditional upload catches it
    // and the data is kept, not lost.
    assert_eq!(fs.lookup(ROOT_INO, "raced").await, Err(FsError::NotFound));
    put(&mem, "raced", b"theirs").await;
    let (_, h) = fs
        .create(ROOT_INO, "raced", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"mine").await.unwrap();
    assert_eq!(fs.flush(h.fh).await.unwrap_err().errno(), libc::ESTALE);
    let _ = fs.release(h.fh).await;
    assert_eq!(
        mem.get_range("raced", 0..6, None).await.unwrap(),
        &b"theirs"[..]
    );
}

/// A lookup in a small directory whose listing expired lists it again (one request) instead
/// of probing (HEAD + LIST); the names looked up next are answered from that listing.
#[tokio::test]
async fn an_expired_small_listing_is_fetched_again_instead_of_probing() {
    let ttl = std::time::Duration::from_millis(300);
    let (mem, c, fs, _d) = counting(ttl);
    put(&mem, "old", b"x").await;
    names(&fs, ROOT_INO).await;
    tokio::time::sleep(ttl + std::time::Duration::from_millis(50)).await;
    put(&mem, "theirs", b"y").await;
    let before = c.calls();
    assert_eq!(fs.lookup(ROOT_INO, "a").await, Err(FsError::NotFound));
    assert_eq!(c.calls(), (before.0, before.1 + 1), "one LIST, no HEAD");
    assert_eq!(fs.lookup(ROOT_INO, "b").await, Err(FsError::NotFound));
    assert_eq!(
        c.calls(),
        (before.0, before.1 + 1),
        "b: from the new listing"
    );
    // The new listing shows what another client added meanwhile.
    assert_eq!(fs.lookup(ROOT_INO, "theirs").await.unwrap().size, 1);
    assert_eq!(
        fs.stats.relists.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Opening files by name in a directory nobody listed (a training job reading its shards):
/// the first lookup lists the directory when it fits in one page, and the other names come
/// from that listing instead of a probe (HEAD + LIST) each. A directory bigger than a page
/// is not cached that way and its names are probed, without listing it again for each
/// lookup.
#[tokio::test]
async fn lookups_list_an_unlisted_directory_once_when_it_fits_one_page() {
    let (mem, c, fs, _dir) =
        counting_with(std::time::Duration::from_secs(30), |c| c.list_page_size = 4);
    for i in 0..4 {
        put(&mem, &format!("small/f{i}"), b"x").await;
    }
    for i in 0..6 {
        put(&mem, &format!("big/g{i}"), b"yy").await;
    }
    let small = fs.lookup(ROOT_INO, "small").await.unwrap().ino;
    let before = c.calls();
    for i in 0..4 {
        assert_eq!(fs.lookup(small, &format!("f{i}")).await.unwrap().size, 1);
    }
    assert_eq!(fs.lookup(small, "nope").await, Err(FsError::NotFound));
    // One LIST and no probes. (This backend's listings carry no user metadata, so each file
    // still has one HEAD for its mode and owner; Azure's listings carry it, and there that
    // HEAD goes too.)
    assert_eq!(
        c.calls(),
        (
            before.0 + if common::hns_mode() { 0 } else { 4 },
            before.1 + 1
        ),
        "one LIST, no probe"
    );
    let big = fs.lookup(ROOT_INO, "big").await.unwrap().ino;
    assert_eq!(fs.lookup(big, "g0").await.unwrap().size, 2);
    let after_first = c.calls();
    for i in 1..4 {
        assert_eq!(fs.lookup(big, &format!("g{i}")).await.unwrap().size, 2);
    }
    let (heads, lists) = (c.calls().0 - after_first.0, c.calls().1 - after_first.1);
    assert_eq!(heads, 3, "each name in the big directory is probed");
    assert!(
        lists <= 3,
        "the big directory was listed again: {lists} LISTs for 3 lookups"
    );
    assert_eq!(
        fs.stats.relists.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the root and small/ were listed by lookups, big/ was not kept"
    );
}

/// Filling a listed directory (tar x, checkpoints): each new name is answered "absent" by the
/// patched listing, the listing is still served from the cache, and it shows the new files.
#[tokio::test]
async fn local_changes_patch_the_cached_listing() {
    let ttl = std::time::Duration::from_secs(30);
    let (mem, c, fs, _d) = counting(ttl);
    put(&mem, "old", b"x").await;
    put(&mem, "gone", b"x").await;
    assert_eq!(names(&fs, ROOT_INO).await, [".", "..", "gone", "old"]);
    for i in 0..5 {
        let before = c.calls();
        assert_eq!(
            fs.lookup(ROOT_INO, &format!("new{i}")).await,
            Err(FsError::NotFound)
        );
        assert_eq!(
            c.calls(),
            before,
            "new{i}: absent from the listing, no request"
        );
        write_file(&fs, ROOT_INO, &format!("new{i}"), b"12").await;
    }
    fs.unlink(ROOT_INO, "gone").await.unwrap();
    let fh = fs.mkdir(ROOT_INO, "sub", 0o755, ME).await.unwrap();
    let before = c.calls();
    assert_eq!(
        names(&fs, ROOT_INO).await,
        [
            ".", "..", "new0", "new1", "new2", "new3", "new4", "old", "sub"
        ]
    );
    assert_eq!(c.calls().1, before.1, "the listing came from the cache");
    assert_eq!(fs.lookup(ROOT_INO, "new3").await.unwrap().size, 2);
    assert_eq!(fs.lookup(ROOT_INO, "sub").await.unwrap().ino, fh.ino);
    assert_eq!(fs.lookup(ROOT_INO, "gone").await, Err(FsError::NotFound));
    // A directory made here starts out listed (empty).
    let before = c.calls();
    assert_eq!(fs.lookup(fh.ino, "f").await, Err(FsError::NotFound));
    assert_eq!(names(&fs, fh.ino).await, [".", ".."]);
    assert_eq!(c.calls(), before, "nothing asked about the new directory");
}

#[tokio::test]
async fn zero_ttls_always_ask_the_store() {
    let (mem, c, fs, _d) = counting(std::time::Duration::ZERO);
    put(&mem, "x", b"1").await;
    names(&fs, ROOT_INO).await;
    let n = c.calls();
    names(&fs, ROOT_INO).await;
    assert_eq!(c.calls().1, n.1 + 1);
    assert_eq!(fs.lookup(ROOT_INO, "nope").await, Err(FsError::NotFound));
    let n = c.calls();
    assert_eq!(fs.lookup(ROOT_INO, "nope").await, Err(FsError::NotFound));
    assert!(c.calls().0 > n.0, "no negative caching with a zero TTL");
}

/// Sixteen sequential readers at once: every byte right, and the read-ahead memory never
/// above its budget (while still used).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_stay_within_the_memory_budget() {
    let mem = common::new_store();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::for_tests(dir.path().to_path_buf());
    cfg.read_block = 256 * 1024;
    cfg.read_ahead_max = 2 << 20;
    cfg.read_memory = 2 << 20;
    let fs = Arc::new(Fs::new(mem.clone(), cfg).unwrap());
    let len = 3 << 20;
    for i in 0..16u8 {
        let data: Vec<u8> = (0..len).map(|j| (j % 253) as u8 ^ i).collect();
        put(&mem, &format!("f{i}"), &data).await;
    }
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let fs = fs.clone();
        tasks.push(tokio::spawn(async move {
            let a = fs.lookup(ROOT_INO, &format!("f{i}")).await.unwrap();
            let h = fs.open(a.ino, libc::O_RDONLY).await.unwrap();
            let mut off = 0usize;
            while off < len {
                let b = fs.read(h.fh, off as u64, 128 * 1024).await.unwrap();
                assert!(!b.is_empty());
                for (k, byte) in b.iter().enumerate() {
                    assert_eq!(
                        *byte,
                        ((off + k) % 253) as u8 ^ i,
                        "file {i} at {}",
                        off + k
                    );
                }
                off += b.len();
            }
            fs.release(h.fh).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (peak, total) = (fs.budget.peak(), fs.budget.total());
    assert!(peak <= total, "peak {peak} over budget {total}");
    assert!(peak >= 1 << 20, "read-ahead was barely used: {peak}");
    assert_eq!(fs.budget.in_use(), 0, "blocks leaked after release");
}

/// Cached listings together stay under their entry cap: the least recently listed
/// directory is dropped (and listed again when needed), the newest is kept.
#[tokio::test]
async fn cached_listings_stay_under_their_entry_cap() {
    let mem = common::new_store();
    let c = Counting::new(mem.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::for_tests(dir.path().to_path_buf());
    cfg.list_ttl = std::time::Duration::from_secs(60);
    cfg.attr_ttl = cfg.list_ttl;
    cfg.list_cache_max_entries = 25;
    let fs = Fs::new(c.clone(), cfg).unwrap();
    for d in ["a", "b", "c"] {
        for i in 0..10 {
            put(&mem, &format!("{d}/f{i}"), b"x").await;
        }
    }
    let ino = |n: &'static str| {
        let fs = &fs;
        async move { fs.lookup(ROOT_INO, n).await.unwrap().ino }
    };
    let (a, b, cc) = (ino("a").await, ino("b").await, ino("c").await);
    assert_eq!(names(&fs, a).await.len(), 12);
    assert_eq!(names(&fs, b).await.len(), 12);
    let lists = c.calls().1;
    names(&fs, b).await;
    assert_eq!(c.calls().1, lists, "b's listing is cached");
    // Listing c (10 more entries) goes over 25: the oldest are dropped, the root's (listed
    // by the first lookup, 3 entries) and a's.
    names(&fs, cc).await;
    assert_eq!(fs.stats.list_evictions.load(Ordering::Relaxed), 2);
    let lists = c.calls().1;
    names(&fs, b).await;
    names(&fs, cc).await;
    assert_eq!(c.calls().1, lists, "b and c stay cached");
    assert_eq!(names(&fs, a).await.len(), 12);
    assert_eq!(c.calls().1, lists + 1, "a is listed again");
}
