//! Appends to existing objects: the old bytes are neither downloaded nor sent again when the
//! store can keep them (`Backend::put_appended`), and every path that needs them (a read, a
//! write below the end, a conflict, a crash) still sees or keeps the right data.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, Precondition, PutMeta};
use blobmount_core::{Fs, FsConfig, FsError, ROOT_INO, Recovery, SetAttr};
use bytes::Bytes;

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

fn gets(mem: &MemoryBackend) -> u64 {
    mem.counters.get.load(Relaxed)
}

#[tokio::test]
async fn an_append_sends_only_the_new_bytes_and_downloads_nothing() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let mut want = old_object(&mem, "log").await;
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, "log").await.unwrap();
    let h = fs
        .open(a.ino, libc::O_WRONLY | libc::O_APPEND)
        .await
        .unwrap();
    let before = gets(&mem);
    fs.write(h.fh, a.size, b"line 1\n").await.unwrap();
    fs.fsync(h.fh).await.unwrap();
    want.extend_from_slice(b"line 1\n");
    assert_eq!(get(&mem, "log").await, want);
    // A second append after the fsync sends only what came after it.
    fs.write(h.fh, want.len() as u64, b"line 2\n")
        .await
        .unwrap();
    fs.release(h.fh).await.unwrap();
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
    assert_eq!(fs.getattr(a.ino).await.unwrap().size, want.len() as u64);
}

#[tokio::test]
async fn reads_and_writes_below_the_old_end_see_the_old_bytes() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let mut want = old_object(&mem, "f").await;
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_RDWR).await.unwrap();
    fs.write(h.fh, a.size, b"tail").await.unwrap();
    // A read across the old end: old bytes from the store, new ones from the staging file.
    let r = fs.read(h.fh, a.size - 3, 7).await.unwrap();
    assert_eq!(&r[..3], &want[want.len() - 3..]);
    assert_eq!(&r[3..], b"tail");
    // A write inside the old content stages the old bytes and uploads the whole file.
    fs.write(h.fh, 10, b"XY").await.unwrap();
    fs.release(h.fh).await.unwrap();
    want.extend_from_slice(b"tail");
    want[10..12].copy_from_slice(b"XY");
    assert_eq!(get(&mem, "f").await, want);
    assert_eq!(mem.counters.append.load(Relaxed), 0);
}

#[tokio::test]
async fn truncating_below_the_old_end_uploads_the_kept_bytes() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let want = old_object(&mem, "f").await;
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_RDWR).await.unwrap();
    fs.write(h.fh, a.size, b"more").await.unwrap();
    let req = SetAttr {
        size: Some(1000),
        ..Default::default()
    };
    fs.setattr(a.ino, req).await.unwrap();
    fs.release(h.fh).await.unwrap();
    assert_eq!(get(&mem, "f").await, want[..1000].to_vec());
}

#[tokio::test]
async fn an_append_that_conflicts_keeps_the_new_bytes_and_leaves_the_object() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    old_object(&mem, "f").await;
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_WRONLY).await.unwrap();
    fs.write(h.fh, a.size, b"mine").await.unwrap();
    mem.put(
        "f",
        Bytes::from_static(b"theirs"),
        &PutMeta::default(),
        &Precondition::None,
    )
    .await
    .unwrap();
    let err = fs.release(h.fh).await.unwrap_err();
    let FsError::Conflict { saved_to } = err else {
        panic!("expected a conflict, got {err:?}");
    };
    assert!(
        saved_to.ends_with(&format!(".appended-at-{}", a.size)),
        "{saved_to}"
    );
    assert_eq!(std::fs::read(&saved_to).unwrap(), b"mine");
    assert_eq!(get(&mem, "f").await, b"theirs");
}

#[tokio::test]
async fn an_append_cut_short_by_a_crash_is_finished_by_the_next_mount() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let mut want = old_object(&mem, "f").await;
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_WRONLY).await.unwrap();
    fs.write(h.fh, a.size, b"after the crash").await.unwrap();
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
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    old_object(&mem, "f").await;
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_WRONLY).await.unwrap();
    fs.write(h.fh, a.size, b"new").await.unwrap();
    fs.abandon_like_a_crash();

    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Keep).await;
    assert_eq!(r.kept.len(), 1);
    let kept = &r.kept[0].1;
    assert!(
        kept.to_string_lossy()
            .ends_with(&format!(".appended-at-{}", a.size))
    );
    assert_eq!(std::fs::read(kept).unwrap(), b"new");
}

#[tokio::test]
async fn a_file_renamed_while_open_keeps_appending_under_its_new_name() {
    // Log rotation: the writer keeps its descriptor while the file is renamed.
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let mut want = old_object(&mem, "app.log").await;
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, "app.log").await.unwrap();
    let h = fs.open(a.ino, libc::O_WRONLY).await.unwrap();
    fs.write(h.fh, a.size, b"before\n").await.unwrap();
    fs.rename(ROOT_INO, "app.log", ROOT_INO, "app.log.1", false)
        .await
        .unwrap();
    fs.write(h.fh, a.size + 7, b"after\n").await.unwrap();
    fs.release(h.fh).await.unwrap();
    want.extend_from_slice(b"before\nafter\n");
    assert_eq!(get(&mem, "app.log.1").await, want);
    assert!(mem.get_range("app.log", 0..1, None).await.is_err());
}
