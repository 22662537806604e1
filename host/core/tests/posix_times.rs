//! Times and link counts as POSIX gives them (found failing by the pjdfstest run, see
//! tests/pjdfstest/): a directory's mtime and ctime move when an entry is created, removed
//! or renamed in it; `utimensat`'s atime is kept (and stored); ctime survives a re-read
//! from the store; an open file that lost its name has `st_nlink` 0.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobmount_backend::memory::MemoryBackend;
use blobmount_core::{Caller, Fs, FsConfig, ROOT_INO, SetAttr};

const ME: Caller = Caller { uid: 0, gid: 0 };

fn core(ttl: Duration) -> (Arc<MemoryBackend>, Fs, tempfile::TempDir) {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::for_tests(dir.path().to_path_buf());
    cfg.attr_ttl = ttl;
    let fs = Fs::new(mem.clone(), cfg).unwrap();
    (mem, fs, dir)
}

#[tokio::test]
async fn entries_changing_move_the_directory_times() {
    let (_m, fs, _d) = core(Duration::from_secs(60));
    let d = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap();
    let mut last = fs.getattr(d.ino).await.unwrap();
    for step in ["create", "mkdir", "symlink", "rename", "unlink", "rmdir"] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        match step {
            "create" => {
                let (_, h) = fs
                    .create(d.ino, "f", 0o644, libc::O_WRONLY, ME)
                    .await
                    .unwrap();
                fs.release(h.fh).await.unwrap();
            }
            "mkdir" => drop(fs.mkdir(d.ino, "sub", 0o755, ME).await.unwrap()),
            "symlink" => drop(fs.symlink(d.ino, "l", "f", ME).await.unwrap()),
            "rename" => fs.rename(d.ino, "f", d.ino, "g", false).await.unwrap(),
            "unlink" => fs.unlink(d.ino, "g").await.unwrap(),
            _ => fs.rmdir(d.ino, "sub").await.unwrap(),
        }
        let now = fs.getattr(d.ino).await.unwrap();
        assert!(now.mtime > last.mtime, "{step}: mtime did not move");
        assert!(now.ctime > last.ctime, "{step}: ctime did not move");
        last = now;
    }
}

#[tokio::test]
async fn atime_and_ctime_are_kept_in_the_store() {
    let (_m, fs, _d) = core(Duration::ZERO);
    let (a, h) = fs
        .create(ROOT_INO, "f", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"x").await.unwrap();
    fs.release(h.fh).await.unwrap();
    let atime = UNIX_EPOCH + Duration::new(1_000_000_000, 5);
    let mtime = UNIX_EPOCH + Duration::new(1_100_000_000, 7);
    let req = SetAttr {
        atime: Some(atime),
        mtime: Some(mtime),
        ..Default::default()
    };
    let before = SystemTime::now();
    fs.setattr(a.ino, req).await.unwrap();
    // Attributes re-read from the store (no TTL): the times are the stored ones.
    let got = fs.getattr(a.ino).await.unwrap();
    assert_eq!(got.atime, atime);
    assert_eq!(got.mtime, mtime);
    assert!(
        got.ctime >= before,
        "ctime is the time of the change, kept in the store"
    );
}

#[tokio::test]
async fn an_open_file_without_a_name_has_no_links() {
    let (_m, fs, _d) = core(Duration::ZERO);
    let (a, h) = fs
        .create(ROOT_INO, "f", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    assert_eq!(fs.getattr(a.ino).await.unwrap().nlink, 1);
    fs.unlink(ROOT_INO, "f").await.unwrap();
    assert_eq!(fs.getattr(a.ino).await.unwrap().nlink, 0);
    fs.release(h.fh).await.unwrap();
}

#[tokio::test]
async fn directory_times_survive_a_re_read_from_the_store() {
    let (_m, fs, _d) = core(Duration::ZERO);
    let d = fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap();
    let before = fs.getattr(d.ino).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    fs.mkdir(d.ino, "sub", 0o755, ME).await.unwrap();
    // No TTL: both ask the store again.
    let again = fs.getattr(d.ino).await.unwrap();
    let looked_up = fs.lookup(ROOT_INO, "d").await.unwrap();
    assert!(again.mtime > before.mtime && again.ctime > before.ctime);
    assert_eq!(looked_up.mtime, again.mtime);
}

#[tokio::test]
async fn a_directory_counts_its_subdirectories_in_its_links() {
    let (_m, fs, _d) = core(Duration::from_secs(60));
    let p = fs.mkdir(ROOT_INO, "p", 0o755, ME).await.unwrap();
    let q = fs.mkdir(ROOT_INO, "q", 0o755, ME).await.unwrap();
    fs.mkdir(p.ino, "s", 0o755, ME).await.unwrap();
    assert_eq!(fs.getattr(p.ino).await.unwrap().nlink, 3);
    assert_eq!(fs.getattr(q.ino).await.unwrap().nlink, 2);
    fs.rename(p.ino, "s", q.ino, "d", false).await.unwrap();
    assert_eq!(fs.getattr(p.ino).await.unwrap().nlink, 2);
    assert_eq!(fs.getattr(q.ino).await.unwrap().nlink, 3);
}
