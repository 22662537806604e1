//! Appends to existing objects: the old bytes are neither downloaded nor sent again when the
//! store can keep them (`Backend::put_appended`), and every path that needs them (a read, a
//! write below the end, a conflict, a crash) still sees or keeps the right data.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, Precondition, PutMeta};
use blobmount_core::{Fs, FsConfig, FsError, ROOT_INO, Recovery, SetAttr};
use bytes::Bytes;
use common::put;

fn core(mem: &Arc<MemoryBackend>, dir: &Path) -> Fs {
    Fs::new(mem.clone(), FsConfig::for_tests(dir.to_path_buf())).unwrap()
}

async fn get(mem: &MemoryBackend, key: &str) -> Vec<u8> {
    mem.get_range(key, 0..u64::MAX, None)
        .await
        .unwrap()
        .to_vec()
}

/// A 3 MiB object with a recognisable pattern.
async fn old_object(mem: &MemoryBackend, key: &str) -> Vec<u8> {
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    mem.put(
        key,
        Bytes::from(data.clone()),
        &PutMeta::default(),
        &Precondition::None,
    )
    .await
    .unwrap();
    data
}

/// A core over a store holding `key` (see [`old_object`]), with `key` open with `flags`.
struct Opened {
    mem: Arc<MemoryBackend>,
    dir: tempfile::TempDir,
    fs: Fs,
    /// The object's content before the test.
    old: Vec<u8>,
    size: u64,
    ino: u64,
    fh: u64,
}

async fn opened(key: &str, flags: i32) -> Opened {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let old = old_object(&mem, key).await;
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, key).await.unwrap();
    let fh = fs.open(a.ino, flags).await.unwrap().fh;
    Opened {
        mem,
        dir,
        fs,
        old,
        size: a.size,
        ino: a.ino,
        fh,
    }
}

fn gets(mem: &MemoryBackend) -> u64 {
    mem.counters.get.load(Relaxed)
}

#[tokio::test]
async fn an_append_sends_only_the_new_bytes_and_downloads_nothing() {
    let Opened {
        mem,
        dir: _dir,
        fs,
        old,
        size,
        ino,
        fh,
    } = opened("log", libc::O_WRONLY | libc::O_APPEND).await;
    let mut want = old;
    let before = gets(&mem);
    fs.write(fh, size, b"line 1\n").await.unwrap();
    fs.fsync(fh).await.unwrap();
    want.extend_from_slice(b"line 1\n");
    assert_eq!(get(&mem, "log").await, want);
    // A second append after the fsync sends only what came after it.
    fs.write(fh, want.len() as u64, b"line 2\n").await.unwrap();
    fs.release(fh).await.unwrap();
    want.extend_from_slice(b"line 2\n");
    assert_eq!(get(&mem, "log").await, want);
    assert_eq!(
        gets(&mem),
        before + 2,
        "only the two checks above read the object"
    );
    assert_eq!(mem.counters.append.load(Relaxed), 2);
    assert_eq!(mem.counters.append_bytes.load(Relaxed), 14);
    assert_eq!(fs.stats.append_uploads.load(Relaxed), 2);
    assert_eq!(fs.getattr(ino).await.unwrap().size, want.len() as u64);
}

#[tokio::test]
async fn reads_and_writes_below_the_old_end_see_the_old_bytes() {
    let Opened {
        mem,
        dir: _dir,
        fs,
        old,
        size,
        fh,
        ..
    } = opened("f", libc::O_RDWR).await;
    let mut want = old;
    fs.write(fh, size, b"tail").await.unwrap();
    // A read across the old end: old bytes from the store, new ones from the staging file.
    let r = fs.read(fh, size - 3, 7).await.unwrap();
    assert_eq!(&r[..3], &want[want.len() - 3..]);
    assert_eq!(&r[3..], b"tail");
    // A write inside the old content stages the old bytes and uploads the whole file.
    fs.write(fh, 10, b"XY").await.unwrap();
    fs.release(fh).await.unwrap();
    want.extend_from_slice(b"tail");
    want[10..12].copy_from_slice(b"XY");
    assert_eq!(get(&mem, "f").await, want);
    assert_eq!(mem.counters.append.load(Relaxed), 0);
}

#[tokio::test]
async fn truncating_below_the_old_end_uploads_the_kept_bytes() {
    let Opened {
        mem,
        dir: _dir,
        fs,
        old,
        size,
        ino,
        fh,
    } = opened("f", libc::O_RDWR).await;
    let want = old;
    fs.write(fh, size, b"more").await.unwrap();
    let req = SetAttr {
        size: Some(1000),
        ..Default::default()
    };
    fs.setattr(ino, req).await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(get(&mem, "f").await, want[..1000].to_vec());
}

#[tokio::test]
async fn an_append_that_conflicts_keeps_the_new_bytes_and_leaves_the_object() {
    let Opened {
        mem,
        dir: _dir,
        fs,
        size,
        fh,
        ..
    } = opened("f", libc::O_WRONLY).await;
    fs.write(fh, size, b"mine").await.unwrap();
    put(&mem, "f", b"theirs").await;
    let err = fs.release(fh).await.unwrap_err();
    let FsError::Conflict { saved_to } = err else {
        panic!("expected a conflict, got {err:?}");
    };
    assert!(
        saved_to.ends_with(&format!(".appended-at-{}", size)),
        "{saved_to}"
    );
    assert_eq!(std::fs::read(&saved_to).unwrap(), b"mine");
    assert_eq!(get(&mem, "f").await, b"theirs");
}

#[tokio::test]
async fn an_append_cut_short_by_a_crash_is_finished_by_the_next_mount() {
    let Opened {
        mem,
        dir,
        fs,
        old,
        size,
        fh,
        ..
    } = opened("f", libc::O_WRONLY).await;
    let mut want = old;
    fs.write(fh, size, b"after the crash").await.unwrap();
    fs.abandon_like_a_crash();

    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(r.uploaded, vec!["f".to_string()]);
    want.extend_from_slice(b"after the crash");
    assert_eq!(get(&mem, "f").await, want);
    assert_eq!(mem.counters.append_bytes.load(Relaxed), 15);
}

#[tokio::test]
async fn a_crashed_append_kept_by_recovery_holds_only_the_new_bytes() {
    let Opened {
        mem,
        dir,
        fs,
        size,
        fh,
        ..
    } = opened("f", libc::O_WRONLY).await;
    fs.write(fh, size, b"new").await.unwrap();
    fs.abandon_like_a_crash();

    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Keep).await;
    assert_eq!(r.kept.len(), 1);
    let kept = &r.kept[0].1;
    assert!(
        kept.to_string_lossy()
            .ends_with(&format!(".appended-at-{}", size))
    );
    assert_eq!(std::fs::read(kept).unwrap(), b"new");
}

#[tokio::test]
async fn a_file_renamed_while_open_keeps_appending_under_its_new_name() {
    // Log rotation: the writer keeps its descriptor while the file is renamed.
    let Opened {
        mem,
        dir: _dir,
        fs,
        old,
        size,
        fh,
        ..
    } = opened("app.log", libc::O_WRONLY).await;
    let mut want = old;
    fs.write(fh, size, b"before\n").await.unwrap();
    fs.rename(ROOT_INO, "app.log", ROOT_INO, "app.log.1", false)
        .await
        .unwrap();
    fs.write(fh, size + 7, b"after\n").await.unwrap();
    fs.release(fh).await.unwrap();
    want.extend_from_slice(b"before\nafter\n");
    assert_eq!(get(&mem, "app.log.1").await, want);
    assert!(mem.get_range("app.log", 0..1, None).await.is_err());
}
