//! Crash safety of staged writes: what a killed daemon leaves in the cache directory is
//! uploaded (or kept) by the next core over the same directory, never dropped.

mod common;

use std::path::Path;
use std::sync::Arc;

use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, Precondition, PutMeta};
use blobmount_core::{Caller, Fs, FsConfig, ROOT_INO, Recovery};
use bytes::Bytes;
use common::put;

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

fn core(mem: &Arc<MemoryBackend>, dir: &Path) -> Fs {
    Fs::new(mem.clone(), FsConfig::for_tests(dir.to_path_buf())).unwrap()
}

async fn get(mem: &MemoryBackend, key: &str) -> Option<Vec<u8>> {
    match mem.get_range(key, 0..u64::MAX, None).await {
        Ok(b) => Some(b.to_vec()),
        Err(_) => None,
    }
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_new_file_written_before_a_crash_is_uploaded_by_the_next_mount() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let fs = core(&mem, dir.path());
    let d = fs.mkdir(ROOT_INO, "ckpt", 0o755, ME).await.unwrap();
    let (_, h) = fs
        .create(d.ino, "step-1.bin", 0o600, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"weights").await.unwrap();
    fs.write(h.fh, 7, b" and more").await.unwrap();
    fs.abandon_like_a_crash();
    assert_eq!(
        get(&mem, "ckpt/step-1.bin").await,
        None,
        "nothing was committed"
    );

    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(r.uploaded, vec!["ckpt/step-1.bin".to_string()]);
    assert!(r.kept.is_empty());
    assert_eq!(
        get(&mem, "ckpt/step-1.bin").await.as_deref(),
        Some(&b"weights and more"[..])
    );
    // The mode travelled with it.
    let a = fs.lookup(fs.lookup(ROOT_INO, "ckpt").await.unwrap().ino, "step-1.bin");
    assert_eq!(a.await.unwrap().perm, 0o600);
    assert!(files_in(&dir.path().join("staging")).is_empty());
    assert_eq!(
        fs.stats
            .recovered_uploaded
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_changed_object_is_not_overwritten_by_recovery() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    mem.put(
        "f",
        Bytes::from_static(b"v1"),
        &PutMeta::default(),
        &Precondition::None,
    )
    .await
    .unwrap();
    let fs = core(&mem, dir.path());
    let a = fs.lookup(ROOT_INO, "f").await.unwrap();
    let h = fs.open(a.ino, libc::O_RDWR).await.unwrap();
    fs.write(h.fh, 0, b"mine").await.unwrap();
    fs.abandon_like_a_crash();
    // Another client replaces the object while the daemon is down.
    mem.put(
        "f",
        Bytes::from_static(b"theirs"),
        &PutMeta::default(),
        &Precondition::None,
    )
    .await
    .unwrap();

    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Upload).await;
    assert!(r.uploaded.is_empty());
    assert_eq!(r.kept.len(), 1);
    assert_eq!(r.kept[0].0, "f");
    assert_eq!(std::fs::read(&r.kept[0].1).unwrap(), b"mine");
    assert!(r.kept[0].1.starts_with(dir.path().join("conflicts")));
    assert_eq!(get(&mem, "f").await.as_deref(), Some(&b"theirs"[..]));
}

#[tokio::test]
async fn keep_mode_leaves_the_store_alone_and_unlinked_or_clean_files_are_not_recovered() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let fs = core(&mem, dir.path());
    // Dirty: kept.
    let (_, h1) = fs
        .create(ROOT_INO, "dirty", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h1.fh, 0, b"unsaved").await.unwrap();
    // Uploaded by fsync and not changed since: nothing to do.
    let (_, h2) = fs
        .create(ROOT_INO, "synced", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    fs.write(h2.fh, 0, b"durable").await.unwrap();
    fs.fsync(h2.fh).await.unwrap();
    // Unlinked while open: must not come back.
    let (_, h3) = fs
        .create(ROOT_INO, "scratch", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h3.fh, 0, b"temporary").await.unwrap();
    fs.unlink(ROOT_INO, "scratch").await.unwrap();
    fs.abandon_like_a_crash();

    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Keep).await;
    assert!(r.uploaded.is_empty());
    assert_eq!(r.clean, 2, "the fsynced file and the unlinked one");
    let kept: Vec<&str> = r.kept.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kept, vec!["dirty"]);
    assert_eq!(std::fs::read(&r.kept[0].1).unwrap(), b"unsaved");
    assert_eq!(get(&mem, "dirty").await, None);
    assert_eq!(get(&mem, "scratch").await, None);
    assert_eq!(get(&mem, "synced").await.as_deref(), Some(&b"durable"[..]));
    assert!(files_in(&dir.path().join("staging")).is_empty());
}

#[tokio::test]
async fn staged_data_without_a_record_is_kept_not_deleted() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    drop(core(&mem, dir.path()));
    // As left by an older daemon, or by a crash between creating the file and its record.
    std::fs::write(dir.path().join("staging/stage-x1"), b"who am I").unwrap();
    std::fs::write(dir.path().join("staging/empty.data"), b"").unwrap();
    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(r.kept.len(), 1);
    assert_eq!(std::fs::read(&r.kept[0].1).unwrap(), b"who am I");
    assert!(files_in(&dir.path().join("staging")).is_empty());
}

#[tokio::test]
async fn two_cores_cannot_share_a_cache_directory() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let first = core(&mem, dir.path());
    let e = Fs::new(mem.clone(), FsConfig::for_tests(dir.path().to_path_buf())).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY);
    assert!(e.to_string().contains("in use by another blobmount"), "{e}");
    drop(first);
    core(&mem, dir.path());
}

fn leave_journal(dir: &Path, keys: &[&str]) {
    let j = dir.join("journal");
    std::fs::create_dir_all(&j).unwrap();
    let plan = format!(
        r#"{{"from":"d","to":"e","keys":[{}],"folder_marker":false}}"#,
        keys.iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    std::fs::write(j.join("rename-1.json"), plan).unwrap();
}

#[tokio::test]
async fn a_directory_rename_cut_short_before_any_delete_is_rolled_back() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    for k in ["d/a", "d/b", "d/sub/c"] {
        put(&mem, k, b"x").await;
    }
    // The crash came after two of three copies.
    put(&mem, "e/a", b"x").await;
    put(&mem, "e/b", b"x").await;
    leave_journal(dir.path(), &["d/a", "d/b", "d/sub/c"]);
    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(
        r.renames,
        vec![blobmount_core::RenameOutcome::RolledBack {
            from: "d".into(),
            to: "e".into()
        }]
    );
    assert_eq!(mem.keys(), vec!["d/a", "d/b", "d/sub/c"]);
    assert!(files_in(&dir.path().join("journal")).is_empty());
}

#[tokio::test]
async fn a_directory_rename_cut_short_while_deleting_is_finished() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    // All copied; the deletes (last key first) had removed one source.
    for k in ["d/a", "d/b", "e/a", "e/b", "e/sub/c"] {
        put(&mem, k, b"x").await;
    }
    leave_journal(dir.path(), &["d/a", "d/b", "d/sub/c"]);
    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(
        r.renames,
        vec![blobmount_core::RenameOutcome::Finished {
            from: "d".into(),
            to: "e".into()
        }]
    );
    assert_eq!(mem.keys(), vec!["e/a", "e/b", "e/sub/c"]);
}

#[tokio::test]
async fn a_rename_the_store_fails_is_settled_now_or_at_the_next_mount() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    for k in ["d/a", "d/b"] {
        put(&mem, k, b"x").await;
    }
    let fs = core(&mem, dir.path());
    mem.set_fail_writes(true);
    let e = fs.rename(ROOT_INO, "d", ROOT_INO, "e", false).await;
    assert!(e.is_err());
    // Nothing half-moved is visible, and the plan waits for a mount that can settle it.
    assert_eq!(mem.keys(), vec!["d/a", "d/b"]);
    assert_eq!(files_in(&dir.path().join("journal")).len(), 1);
    mem.set_fail_writes(false);
    drop(fs);
    let fs = core(&mem, dir.path());
    let r = fs.recover(Recovery::Upload).await;
    assert_eq!(r.renames.len(), 1);
    assert_eq!(mem.keys(), vec!["d/a", "d/b"]);
    assert!(files_in(&dir.path().join("journal")).is_empty());
    // A rename that works leaves no journal behind.
    fs.rename(ROOT_INO, "d", ROOT_INO, "e", false)
        .await
        .unwrap();
    assert_eq!(mem.keys(), vec!["e/a", "e/b"]);
    assert!(files_in(&dir.path().join("journal")).is_empty());
}
