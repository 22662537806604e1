//! Regression tests of the ways blobmount once lost or refused data (issue "no lost byte"):
//! each test names its case and failed on the code before the fix.
//!
//! 1. An attribute change on an open, streaming file made its own upload a conflict.
//! 2. Writes racing a rename went to the old key between the copy and the delete.
//! 3. A failed save to `conflicts/` deleted the data.
//! 4. Memory and disk followed a file's logical size (sparse files).
//! 5. A full cache disk reported EIO.
//! 6. An upload whose reply was lost (and whose retry was refused) was called a conflict.
//!
//! Found later by the seeded interleavings of `interleave.rs`: a `stat` whose answer arrived
//! after a local change (a chmod, a rename) put the store's older state back over it.
//!
//! 7. (Found by the write-behind property test, `write_behind.rs`.) An unlink of a new file
//!    whose first upload was under way decided from the node it read before waiting for the
//!    upload that the store had nothing to delete: the upload landed, the file came back.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, Precondition, PutMeta, StoreConfig};
use blobmount_core::{Caller, Fs, FsConfig, ROOT_INO, Recovery, SetAttr};
use bytes::Bytes;
use common::hooked::{Hooked, Lost};
use common::{put, stored, test_fs};

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};
const PART: usize = 64 * 1024;

fn config(dir: &Path) -> FsConfig {
    let mut cfg = FsConfig::for_tests(dir.to_path_buf());
    cfg.write_part_size = PART;
    cfg
}

fn setup() -> (Arc<MemoryBackend>, Arc<Fs>, tempfile::TempDir) {
    let t = test_fs(|cfg| cfg.write_part_size = PART);
    (t.mem, t.fs, t.dir)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 % 251) as u8 ^ seed)
        .collect::<Vec<_>>()
}

fn kept(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(cache.join("conflicts"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn chmod(perm: u16, fh: u64) -> SetAttr {
    SetAttr {
        perm: Some(perm),
        fh: Some(fh),
        ..Default::default()
    }
}

/// Case 1 (`tar -xpf` of a file over one part): create, write past a part, `fchmod`,
/// close. The streaming upload is committed, not abandoned, and the mode follows it.
#[tokio::test]
async fn chmod_of_an_open_streaming_file_joins_its_upload() {
    let (mem, fs, dir) = setup();
    let data = pattern(3 * PART + 100, 0);
    let (a, h) = fs
        .create(
            ROOT_INO,
            "big.bin",
            0o600,
            libc::O_WRONLY | libc::O_EXCL,
            ME,
        )
        .await
        .unwrap();
    fs.write(h.fh, 0, &data).await.unwrap();
    assert!(
        fs.stats.parts_sent.load(Ordering::Relaxed) >= 1,
        "streaming"
    );
    fs.setattr(a.ino, chmod(0o640, h.fh)).await.unwrap();
    fs.flush(h.fh).await.unwrap();
    fs.release(h.fh).await.unwrap();
    assert_eq!(stored(&*mem, "big.bin").await.unwrap(), data);
    assert_eq!(mem.counters.complete.load(Ordering::SeqCst), 1);
    assert_eq!(mem.counters.abort.load(Ordering::SeqCst), 0);
    assert_eq!(fs.stats.streamed_uploads.load(Ordering::Relaxed), 1);
    let meta = mem.head("big.bin").await.unwrap().metadata.unwrap();
    assert_eq!(meta.get("mode").map(String::as_str), Some("33184")); // 0o100640
    assert!(kept(dir.path()).is_empty());
    assert_eq!(fs.getattr(a.ino).await.unwrap().perm, 0o640);
}

/// Case 1, the other half: `chmod` of an open file with nothing pending changes the
/// object's version; the file's next upload must not conflict with it.
#[tokio::test]
async fn chmod_of_an_open_clean_file_does_not_conflict_with_its_next_upload() {
    let (mem, fs, dir) = setup();
    let (a, h) = fs
        .create(ROOT_INO, "f", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"one").await.unwrap();
    fs.fsync(h.fh).await.unwrap();
    fs.setattr(a.ino, chmod(0o600, h.fh)).await.unwrap();
    fs.write(h.fh, 3, b" two").await.unwrap();
    fs.release(h.fh).await.unwrap();
    assert_eq!(stored(&*mem, "f").await.unwrap(), b"one two");
    let meta = mem.head("f").await.unwrap().metadata.unwrap();
    assert_eq!(meta.get("mode").map(String::as_str), Some("33152")); // 0o100600
    assert!(kept(dir.path()).is_empty());
}

/// Set up `dirA/f` (old bytes in the store), open for writing, and a rename of `what`
/// (`dirA` or `dirA/f`) stopped between its copy and its delete.
async fn rename_paused(what: &str) -> (Arc<Hooked>, Arc<Fs>, tempfile::TempDir, u64, u64) {
    let mem = common::new_store();
    mem.put(
        "dirA/",
        Bytes::new(),
        &PutMeta::default(),
        &Precondition::None,
    )
    .await
    .unwrap();
    put(&mem, "dirA/f", b"old").await;
    for i in 0..20 {
        mem.put(
            &format!("dirA/other-{i}"),
            Bytes::from_static(b"x"),
            &PutMeta::default(),
            &Precondition::None,
        )
        .await
        .unwrap();
    }
    let hooked = Hooked::new(mem);
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(Fs::new(hooked.clone(), config(dir.path())).unwrap());
    let d = fs.lookup(ROOT_INO, "dirA").await.unwrap();
    let f = fs.lookup(d.ino, "f").await.unwrap();
    let h = fs.open(f.ino, libc::O_RDWR).await.unwrap();
    hooked.pause_deletes_of(if what == "dirA" { "dirA/" } else { "dirA/f" });
    (hooked, fs, dir, d.ino, h.fh)
}

/// Case 2: `mv dirA dirB` while `dirA/f` is open; the program writes and closes while the
/// rename is between its copies and its deletes. Before the fix the upload went to
/// `dirA/f`, the rename's delete took it away, and write and close both succeeded.
#[tokio::test]
async fn writes_during_a_directory_rename_follow_the_file() {
    let (hooked, fs, _d, dino, fh) = rename_paused("dirA").await;
    let mv = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.rename(ROOT_INO, "dirA", ROOT_INO, "dirB", false).await })
    };
    hooked.entered.notified().await; // copies done, deletes about to start
    let w = {
        let fs = fs.clone();
        tokio::spawn(async move {
            fs.write(fh, 0, b"NEW!").await?;
            fs.flush(fh).await?;
            fs.release(fh).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    hooked.release.add_permits(1000);
    mv.await.unwrap().unwrap();
    w.await.unwrap().unwrap();
    assert_eq!(stored(&*hooked, "dirB/f").await.unwrap(), b"NEW!");
    assert_eq!(stored(&*hooked, "dirA/f").await, None);
    let _ = dino;
}

/// Case 2 for a single file: `mv dirA/f dirA/g` with `f` open and written meanwhile.
#[tokio::test]
async fn writes_during_a_file_rename_follow_the_file() {
    let (hooked, fs, _d, dino, fh) = rename_paused("dirA/f").await;
    let mv = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.rename(dino, "f", dino, "g", false).await })
    };
    hooked.entered.notified().await;
    let w = {
        let fs = fs.clone();
        tokio::spawn(async move {
            fs.write(fh, 3, b"+more").await?;
            fs.release(fh).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    hooked.release.add_permits(1000);
    mv.await.unwrap().unwrap();
    w.await.unwrap().unwrap();
    assert_eq!(stored(&*hooked, "dirA/g").await.unwrap(), b"old+more");
    assert_eq!(stored(&*hooked, "dirA/f").await, None);
}

/// Open `name`, write `data` into it, and let another client replace the object meanwhile,
/// so the upload at close conflicts.
async fn conflicting_close(fs: &Fs, mem: &MemoryBackend, name: &str, data: &[u8]) -> i32 {
    let (_, h) = fs
        .create(ROOT_INO, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, data).await.unwrap();
    put(mem, name, b"theirs").await;
    fs.release(h.fh).await.unwrap_err().errno()
}

/// Case 3, first trigger: a name of 80 CJK characters (240 bytes, a valid Linux name) made
/// the kept copy's name too long; the data was then deleted.
#[tokio::test]
async fn a_conflict_on_a_long_multibyte_name_is_kept() {
    let (mem, fs, dir) = setup();
    let name: String = std::iter::repeat_n('漢', 80).collect();
    assert_eq!(name.len(), 240);
    let errno = conflicting_close(&fs, &mem, &name, b"mine").await;
    assert_eq!(errno, libc::ESTALE);
    let k = kept(dir.path());
    assert_eq!(k.len(), 1);
    assert!(k[0].file_name().unwrap().len() <= 255);
    assert_eq!(std::fs::read(&k[0]).unwrap(), b"mine");
}

/// Case 3, the rule: when the data can go neither to the store nor to `conflicts/`, it stays
/// staged, and the next mount offers it again.
#[tokio::test]
async fn data_that_cannot_be_kept_in_conflicts_stays_staged_for_the_next_mount() {
    let (mem, fs, dir) = setup();
    // `conflicts` is a file now: nothing can be saved in it.
    let conflicts = dir.path().join("conflicts");
    std::fs::remove_dir(&conflicts).unwrap();
    std::fs::write(&conflicts, b"").unwrap();
    let errno = conflicting_close(&fs, &mem, "f", b"precious").await;
    assert_eq!(errno, libc::ESTALE);
    drop(fs);
    let staged: Vec<_> = std::fs::read_dir(dir.path().join("staging"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(staged.len(), 2, "data and manifest stay: {staged:?}");

    std::fs::remove_file(&conflicts).unwrap();
    let fs = Fs::new(mem.clone(), config(dir.path())).unwrap();
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(r.kept.len(), 1, "{r:?}");
    assert_eq!(std::fs::read(&r.kept[0].1).unwrap(), b"precious");
    assert_eq!(stored(&*mem, "f").await.unwrap(), b"theirs");
}

/// Case 3 and 4 together: keeping a conflicting sparse file costs no disk (a link, not a
/// copy full of zeros).
#[tokio::test]
async fn a_kept_sparse_file_stays_sparse() {
    use std::os::unix::fs::MetadataExt;
    let (mem, fs, dir) = setup();
    let (_, h) = fs
        .create(ROOT_INO, "sparse", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 3 << 30, b"tail").await.unwrap();
    put(&mem, "sparse", b"theirs").await;
    assert_eq!(fs.release(h.fh).await.unwrap_err().errno(), libc::ESTALE);
    let k = kept(dir.path());
    assert_eq!(k.len(), 1);
    let m = std::fs::metadata(&k[0]).unwrap();
    assert_eq!(m.len(), (3 << 30) + 4);
    assert!(m.blocks() * 512 < 1 << 20, "kept copy is not sparse");
}

/// Case 4: a write far past the end on a store that cannot hold it fails at once with
/// EFBIG (it used to be accepted and to fail at close with "out of memory").
#[tokio::test]
async fn a_write_past_the_stores_limit_is_efbig_at_once() {
    let (mem, fs, _dir) = setup();
    let (a, h) = fs
        .create(ROOT_INO, "huge", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    let e = fs.write(h.fh, 1 << 40, b"0123456789").await.unwrap_err();
    assert_eq!(e.errno(), libc::EFBIG);
    let trunc = SetAttr {
        size: Some(1 << 40),
        fh: Some(h.fh),
        ..Default::default()
    };
    assert_eq!(
        fs.setattr(a.ino, trunc).await.unwrap_err().errno(),
        libc::EFBIG
    );
    fs.write(h.fh, 0, b"fine").await.unwrap();
    fs.release(h.fh).await.unwrap();
    assert_eq!(stored(&*mem, "huge").await.unwrap(), b"fine");
}

/// Case 4 on a `file://` store: 10 bytes at 1 TiB upload as a sparse file, read in bounded
/// chunks (it used to read the whole logical size into memory and fail at close).
#[tokio::test]
async fn a_sparse_file_uploads_to_a_local_store_without_reading_its_holes() {
    use std::os::unix::fs::MetadataExt;
    let store = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        url: Some(format!("file://{}", store.path().display())),
        ..Default::default()
    };
    let backend = blobmount_backend::open(&cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fs = Fs::new(backend.clone(), config(dir.path())).unwrap();
    let (_, h) = fs
        .create(ROOT_INO, "sparse", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 1 << 40, b"0123456789").await.unwrap();
    fs.release(h.fh).await.unwrap();
    let m = std::fs::metadata(store.path().join("sparse")).unwrap();
    assert_eq!(m.len(), (1 << 40) + 10);
    assert!(m.blocks() * 512 < 1 << 20, "stored copy is not sparse");
    let tail = backend
        .get_range("sparse", (1 << 40)..(1 << 40) + 10, None)
        .await
        .unwrap();
    assert_eq!(&tail[..], b"0123456789");
}

/// Case 5: a full cache disk is ENOSPC to the writer, not EIO. (A 1 MiB tmpfs as the cache
/// directory; needs root, as the rest of the suite does.)
#[tokio::test]
async fn a_full_cache_disk_is_enospc() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&cache)
        .status()
        .expect("run mount");
    assert!(ok.success(), "mounting a tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _u = Unmount(cache.clone());
    let mem = common::new_store();
    let fs = Fs::new(mem.clone(), config(&cache)).unwrap();
    let (_, h) = fs
        .create(ROOT_INO, "f", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let mut err = None;
    for i in 0..8u64 {
        if let Err(e) = fs.write(h.fh, i * chunk.len() as u64, &chunk).await {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err.expect("the disk filled up").errno(), libc::ENOSPC);
    let _ = fs.release(h.fh).await;
}

/// Case 6: an upload that landed although its client saw a refusal (a commit retried after
/// a timeout finds its own first attempt) is a success, not a conflict.
#[tokio::test]
async fn an_upload_whose_retry_was_refused_by_its_own_first_attempt_succeeds() {
    for how in [Lost::Conflict, Lost::Timeout] {
        let mem = common::new_store();
        let hooked = Hooked::new(mem.clone());
        let dir = tempfile::tempdir().unwrap();
        let fs = Fs::new(hooked.clone(), config(dir.path())).unwrap();
        let (_, h) = fs
            .create(ROOT_INO, "f", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.write(h.fh, 0, b"data").await.unwrap();
        hooked.lose_replies(1, how);
        fs.release(h.fh).await.unwrap();
        assert_eq!(stored(&*mem, "f").await.unwrap(), b"data");
        assert!(kept(dir.path()).is_empty(), "{how:?}");
        // The next change is a new upload, conditional on this version.
        let a = fs.lookup(ROOT_INO, "f").await.unwrap();
        let h = fs.open(a.ino, libc::O_WRONLY).await.unwrap();
        fs.write(h.fh, 4, b"+").await.unwrap();
        fs.release(h.fh).await.unwrap();
        assert_eq!(stored(&*mem, "f").await.unwrap(), b"data+");
    }
}

/// Case 6 after a crash: the upload landed, the daemon died before it could mark the
/// staging file clean. The next mount recognises its own upload instead of keeping a copy.
#[tokio::test]
async fn recovery_recognises_an_upload_that_landed_before_the_crash() {
    let (mem, fs, dir) = setup();
    let (_, h) = fs
        .create(ROOT_INO, "f", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"landed").await.unwrap();
    Arc::into_inner(fs)
        .expect("no other reference")
        .abandon_like_a_crash();
    // The upload the dead daemon was making: the staged bytes with the manifest's metadata.
    let manifest = std::fs::read_dir(dir.path().join("staging"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let metadata = m["metadata"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let pm = PutMeta {
        metadata,
        content_type: None,
    };
    mem.put(
        "f",
        Bytes::from_static(b"landed"),
        &pm,
        &Precondition::IfNotExists,
    )
    .await
    .unwrap();

    let fs = Fs::new(mem.clone(), config(dir.path())).unwrap();
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(r.uploaded, vec!["f".to_string()], "{r:?}");
    assert!(r.kept.is_empty());
    assert_eq!(stored(&*mem, "f").await.unwrap(), b"landed");
}

/// Found by the model test: a directory renamed while it holds a file created and still
/// open (never uploaded). The rename listed the directory before uploading the open file,
/// so the file stayed under the old name in the store and the rename failed with ENOENT.
#[tokio::test]
async fn a_directory_holding_a_new_open_file_renames_with_it() {
    let (mem, fs, _dir) = setup();
    let d = fs.mkdir(ROOT_INO, "b", 0o755, ME).await.unwrap();
    let (a, h0) = fs
        .create(d.ino, "a", 0o644, libc::O_RDWR | libc::O_EXCL, ME)
        .await
        .unwrap();
    fs.write(h0.fh, 0, b"new").await.unwrap();
    let h1 = fs.open(a.ino, libc::O_RDWR).await.unwrap();
    fs.rename(ROOT_INO, "b", ROOT_INO, "a", false)
        .await
        .unwrap();
    fs.write(h1.fh, 3, b" file").await.unwrap();
    fs.release(h0.fh).await.unwrap();
    fs.release(h1.fh).await.unwrap();
    assert_eq!(mem.keys(), vec![common::dir_marker("a"), "a/a".to_string()]);
    assert_eq!(stored(&*mem, "a/a").await.unwrap(), b"new file");
}

// Found by the model test (tests/model.rs), each shrunk to these steps.

/// `chmod` of an open file with unsent changes, then a crash: recovery used the mode the
/// manifest had when the file was created.
#[tokio::test]
async fn a_crash_after_chmod_of_a_dirty_open_file_recovers_the_new_mode() {
    let (mem, fs, dir) = setup();
    let (a, h) = fs
        .create(ROOT_INO, "a", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"x").await.unwrap();
    fs.setattr(a.ino, chmod(0o600, h.fh)).await.unwrap();
    Arc::into_inner(fs)
        .expect("no other reference")
        .abandon_like_a_crash();
    let fs = Fs::new(mem.clone(), config(dir.path())).unwrap();
    fs.recover(Recovery::Upload).await;
    let meta = mem.head("a").await.unwrap().metadata.unwrap();
    assert_eq!(meta.get("mode").map(String::as_str), Some("33152")); // 0o100600
}

/// `rename c b` while both are open and new: `b`'s handles keep their file, its close
/// uploads nothing (it used to conflict with, or take the table entry of, the moved file),
/// and `c`'s later changes reach `b`.
#[tokio::test]
async fn a_file_replaced_by_rename_while_open_stays_out_of_the_store() {
    let (mem, fs, dir) = setup();
    let flags = libc::O_RDWR | libc::O_EXCL;
    let (_, hb) = fs.create(ROOT_INO, "b", 0o644, flags, ME).await.unwrap();
    let (_, hc) = fs.create(ROOT_INO, "c", 0o644, flags, ME).await.unwrap();
    fs.write(hb.fh, 0, b"old b").await.unwrap();
    fs.write(hc.fh, 0, b"c").await.unwrap();
    fs.rename(ROOT_INO, "c", ROOT_INO, "b", false)
        .await
        .unwrap();
    fs.write(hb.fh, 5, b"+").await.unwrap();
    assert_eq!(&fs.read(hb.fh, 0, 100).await.unwrap()[..], b"old b+");
    fs.release(hb.fh).await.unwrap();
    let b = fs.lookup(ROOT_INO, "b").await.unwrap();
    fs.setattr(b.ino, chmod(0o600, hc.fh)).await.unwrap();
    fs.write(hc.fh, 1, b" moved").await.unwrap();
    fs.release(hc.fh).await.unwrap();
    assert_eq!(mem.keys(), vec!["b".to_string()]);
    assert_eq!(stored(&*mem, "b").await.unwrap(), b"c moved");
    assert!(kept(dir.path()).is_empty());
}

/// An open file with nothing staged is unlinked: its handle goes on reading and writing it
/// (it used to fail with ENOENT once the object was gone), and nothing is uploaded.
#[tokio::test]
async fn an_unlinked_open_file_stays_readable_and_writable() {
    let mem = common::new_store();
    put(&mem, "f", b"content").await;
    let dir = tempfile::tempdir().unwrap();
    let fs = Fs::new(mem.clone(), config(dir.path())).unwrap();
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_RDWR).await.unwrap();
    fs.unlink(ROOT_INO, "f").await.unwrap();
    assert_eq!(&fs.read(h.fh, 0, 100).await.unwrap()[..], b"content");
    fs.write(h.fh, 0, b"C").await.unwrap();
    assert_eq!(&fs.read(h.fh, 0, 100).await.unwrap()[..], b"Content");
    fs.release(h.fh).await.unwrap();
    assert!(mem.keys().is_empty());
}

/// An append (only the new bytes staged), then `open(O_TRUNC)` and a rewrite, then a crash:
/// recovery put the old first bytes back in front of the new ones.
#[tokio::test]
async fn a_crash_after_truncating_an_appended_file_recovers_only_the_new_bytes() {
    let mem = common::new_store();
    put(&mem, "f", b"old").await;
    let dir = tempfile::tempdir().unwrap();
    let fs = Fs::new(mem.clone(), config(dir.path())).unwrap();
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_RDWR).await.unwrap();
    fs.write(h.fh, 3, b"+appended").await.unwrap();
    let h2 = fs.open(a.ino, libc::O_RDWR | libc::O_TRUNC).await.unwrap();
    fs.write(h2.fh, 0, b"NEW").await.unwrap();
    fs.abandon_like_a_crash();
    let fs = Fs::new(mem.clone(), config(dir.path())).unwrap();
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(r.uploaded, vec!["f".to_string()]);
    assert_eq!(stored(&*mem, "f").await.unwrap(), b"NEW");
}

/// A directory renamed over a directory whose only entry is a file still being written
/// (not in the store yet) is ENOTEMPTY; it used to replace it.
#[tokio::test]
async fn a_directory_holding_only_a_new_file_is_not_empty_for_rename() {
    let (mem, fs, _dir) = setup();
    fs.mkdir(ROOT_INO, "a", 0o755, ME).await.unwrap();
    let t = fs.mkdir(ROOT_INO, "t", 0o755, ME).await.unwrap();
    let (_, h) = fs
        .create(t.ino, "new", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    let e = fs
        .rename(ROOT_INO, "a", ROOT_INO, "t", false)
        .await
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENOTEMPTY);
    fs.release(h.fh).await.unwrap();
    assert!(mem.keys().contains(&"t/new".to_string()));
}

/// Found by the model test in a first version of the chmod fix above: a chmod of an open,
/// clean file after another client replaced its object (the chmod applies to their
/// version) must not re-base the open file on their version, or its next write would
/// silently replace their bytes.
#[tokio::test]
async fn chmod_after_a_remote_replace_does_not_rebase_the_open_file() {
    let mem = common::new_store();
    put(&mem, "f", b"ours").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.attr_ttl = Duration::ZERO;
    let fs = Fs::new(mem.clone(), cfg).unwrap();
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_RDWR).await.unwrap();
    put(&mem, "f", b"theirs").await;
    let a = fs.lookup(ROOT_INO, "f").await.unwrap(); // revalidates: their version
    fs.setattr(a.ino, chmod(0o600, h.fh)).await.unwrap();
    let w = fs.write(h.fh, 0, b"O").await;
    let closed = fs.release(h.fh).await;
    assert!(
        w.is_err() || closed.is_err(),
        "the write must not succeed silently over their version"
    );
    assert_eq!(stored(&*mem, "f").await.unwrap(), b"theirs");
}

/// Found by the exerciser: an unlinked open file truncated to 0 and rewritten in order
/// started a streaming upload under its deleted name (aborted at close, but its parts were
/// sent, and on GCS the refused start logged a misleading warning).
#[tokio::test]
async fn a_file_without_a_name_does_not_stream() {
    let (mem, fs, _dir) = setup();
    let (a, h) = fs
        .create(ROOT_INO, "gone", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"x").await.unwrap();
    fs.fsync(h.fh).await.unwrap();
    fs.unlink(ROOT_INO, "gone").await.unwrap();
    let trunc = SetAttr {
        size: Some(0),
        fh: Some(h.fh),
        ..Default::default()
    };
    fs.setattr(a.ino, trunc).await.unwrap();
    let data = pattern(4 * PART + 10, 9);
    fs.write(h.fh, 0, &data).await.unwrap();
    assert_eq!(&fs.read(h.fh, 0, 16).await.unwrap()[..], &data[..16]);
    fs.release(h.fh).await.unwrap();
    assert_eq!(fs.stats.parts_sent.load(Ordering::Relaxed), 0);
    assert_eq!(mem.counters.part.load(Ordering::SeqCst), 0);
    assert!(mem.keys().is_empty());
}

/// A `Fs` on a store whose HEADs can be held back, with `dir/f0` written and uploaded, open
/// and clean; no attribute caching, so every `stat` asks the store.
async fn stat_paused() -> (Arc<Hooked>, Arc<Fs>, tempfile::TempDir, u64, u64, u64) {
    let hooked = Hooked::new(common::new_store());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.attr_ttl = Duration::ZERO;
    let fs = Arc::new(Fs::new(hooked.clone(), cfg).unwrap());
    let d = fs.mkdir(ROOT_INO, "dir", 0o755, ME).await.unwrap();
    let (a, h) = fs
        .create(d.ino, "f0", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"first").await.unwrap();
    fs.fsync(h.fh).await.unwrap();
    hooked.pause_heads_of("dir/f0", 1);
    (hooked, fs, dir, d.ino, a.ino, h.fh)
}

/// A `stat` of an open, clean file asks the store; meanwhile the program writes and
/// `chmod`s. Before the fix the late answer put the old mode back on the inode, and the
/// next upload carried it: the chmod was lost, silently.
#[tokio::test]
async fn a_late_stat_answer_does_not_undo_a_chmod() {
    let (hooked, fs, dir, _dino, ino, fh) = stat_paused().await;
    let stat = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.getattr(ino).await })
    };
    hooked.entered.notified().await;
    fs.write(fh, 5, b" second").await.unwrap();
    fs.setattr(ino, chmod(0o600, fh)).await.unwrap();
    hooked.release.add_permits(1);
    stat.await.unwrap().unwrap();
    assert_eq!(fs.getattr(ino).await.unwrap().perm, 0o600);
    fs.release(fh).await.unwrap();
    let fresh = Fs::new(hooked.inner.clone(), config(&dir.path().join("again"))).unwrap();
    let d = fresh.lookup(ROOT_INO, "dir").await.unwrap();
    let f = fresh.lookup(d.ino, "f0").await.unwrap();
    assert_eq!((f.perm, f.size), (0o600, 12));
}

/// A `stat` of an open file asks the store; meanwhile the file is renamed. Before the fix
/// the late answer put the old name back on the inode: the next upload went to the old key
/// (ENOENT from its condition, or the old name back in the store).
#[tokio::test]
async fn a_late_stat_answer_does_not_undo_a_rename() {
    let (hooked, fs, _dir, dino, ino, fh) = stat_paused().await;
    let stat = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.getattr(ino).await })
    };
    hooked.entered.notified().await;
    fs.rename(dino, "f0", dino, "f1", false).await.unwrap();
    hooked.release.add_permits(1);
    let _ = stat.await.unwrap();
    fs.write(fh, 5, b" second").await.unwrap();
    fs.fsync(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(
        stored(&*hooked, "dir/f1").await.as_deref(),
        Some(&b"first second"[..])
    );
    assert_eq!(stored(&*hooked, "dir/f0").await, None);
}

/// The same through a lookup (`ls -l` of the directory) whose answer arrives after a chmod.
#[tokio::test]
async fn a_late_lookup_answer_does_not_undo_a_chmod() {
    let (hooked, fs, dir, dino, ino, fh) = stat_paused().await;
    let look = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.lookup(dino, "f0").await })
    };
    hooked.entered.notified().await;
    fs.write(fh, 5, b" second").await.unwrap();
    fs.setattr(ino, chmod(0o600, fh)).await.unwrap();
    hooked.release.add_permits(1);
    assert_eq!(look.await.unwrap().unwrap().perm, 0o600);
    fs.release(fh).await.unwrap();
    let info = hooked.inner.head("dir/f0").await.unwrap();
    assert_eq!(info.size, 12);
    let again = Fs::new(hooked.inner.clone(), config(&dir.path().join("again"))).unwrap();
    let d = again.lookup(ROOT_INO, "dir").await.unwrap();
    assert_eq!(again.lookup(d.ino, "f0").await.unwrap().perm, 0o600);
}

/// Found by the seeded interleavings: operations inside a directory while it is renamed
/// (the kernel lets `mv dirA dirB` and `mv dirA/f dirA/g` or `mkdir dirA/sub` run at the
/// same time). Before the fix they worked on the old keys: the file rename failed with
/// ENOENT or left `dirA/g` behind under the old name, and the new directory's marker stayed
/// at `dirA/sub/`. Now they wait for the directory's rename and work at its new place.
#[tokio::test]
async fn operations_inside_a_directory_being_renamed_follow_it() {
    let mem = common::new_store();
    put(&mem, "dirA/", b"").await;
    put(&mem, "dirA/f", b"data").await;
    put(&mem, "dirA/other", b"x").await;
    let hooked = Hooked::new(mem.clone());
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(Fs::new(hooked.clone(), config(dir.path())).unwrap());
    let d = fs.lookup(ROOT_INO, "dirA").await.unwrap();
    fs.lookup(d.ino, "f").await.unwrap();
    hooked.pause_deletes_of("dirA/");
    let mv = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.rename(ROOT_INO, "dirA", ROOT_INO, "dirB", false).await })
    };
    hooked.entered.notified().await; // copies done, deletes about to start
    let inner = {
        let fs = fs.clone();
        tokio::spawn(async move {
            fs.rename(d.ino, "f", d.ino, "g", false).await?;
            fs.mkdir(d.ino, "sub", 0o755, ME).await.map(|_| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    hooked.release.add_permits(1000);
    mv.await.unwrap().unwrap();
    inner.await.unwrap().unwrap();
    let sub = common::dir_marker("dirB/sub");
    assert_eq!(mem.keys(), ["dirB/", "dirB/g", "dirB/other", sub.as_str()]);
    assert_eq!(stored(&*mem, "dirB/g").await.unwrap(), b"data");
}

/// Case 7: a new file's upload (at release; written behind it is the same upload a moment
/// later) is in flight when another process unlinks the file. The unlink waits for the
/// upload and must then delete what it put in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlink_during_the_first_upload_deletes_what_it_uploaded() {
    let mem = common::new_store();
    let hooked = Hooked::new(mem.clone());
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(Fs::new(hooked.clone(), config(dir.path())).unwrap());
    let (_, h) = fs
        .create(ROOT_INO, "new", 0o644, libc::O_RDWR | libc::O_EXCL, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"short-lived").await.unwrap();
    hooked.pause_puts_of("new", 1);
    let closer = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.release(h.fh).await })
    };
    // The upload has landed; its reply is held back.
    hooked.entered.notified().await;
    let unlinker = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.unlink(ROOT_INO, "new").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    hooked.release.add_permits(1);
    closer.await.unwrap().unwrap();
    unlinker.await.unwrap().unwrap();
    assert_eq!(
        stored(&*mem, "new").await,
        None,
        "the unlinked file came back"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, "new").await.err(),
        Some(blobmount_core::FsError::NotFound)
    );
}
