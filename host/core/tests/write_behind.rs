//! Write-behind (`write.close-delay-ms`, `files/close.rs`): a closed file is uploaded a
//! moment after its last close. The point is `rsync -a` and the other temporary-name
//! writers: one upload per file to its final name instead of an upload, a copy and a delete.
//! The rules checked here: nothing is lost (fsync and unmount upload at once, a crash is
//! recovered under the file's new name, a conflict is kept in `conflicts/`), a file reopened
//! in the delay is the same file, and a rename over an existing object replaces it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blobmount_backend::memory::MemoryBackend;
use blobmount_core::{Caller, Fs, FsConfig, FsError, ROOT_INO, Recovery, SetAttr};

mod common;
use common::{Kinds, TestFs, put, read_seq, stored, test_fs_on};

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};
/// Long enough that a loaded machine does not let an upload start between steps the tests
/// expect to come first (a close and the rename after it, a close and another client's PUT).
const DELAY: Duration = Duration::from_millis(1500);

fn mount(mem: Arc<MemoryBackend>) -> TestFs {
    test_fs_on(mem, |c| {
        c.attr_ttl = Duration::from_secs(60);
        c.list_ttl = Duration::from_secs(60);
        c.negative_ttl = Duration::from_secs(60);
        c.close_delay = DELAY;
    })
}

async fn store() -> Arc<MemoryBackend> {
    let mem = Arc::new(MemoryBackend::new());
    for i in 0..5 {
        put(&mem, &format!("dst/old{i}"), b"old").await;
    }
    mem
}

async fn dst(fs: &Fs) -> u64 {
    let d = fs.lookup(ROOT_INO, "dst").await.unwrap().ino;
    let fh = fs.opendir(d).await.unwrap();
    fs.releasedir(fh);
    d
}

fn attrs(perm: Option<u16>, mtime: Option<SystemTime>) -> SetAttr {
    SetAttr {
        perm,
        mtime,
        atime: mtime,
        ..Default::default()
    }
}

/// `rsync -a` of one file: the temporary name created, written, closed, chmod and
/// utimensat, renamed over the final name.
async fn rsync_one(fs: &Fs, dir: u64, name: &str, data: &[u8], mtime: SystemTime) {
    let tmp = format!(".{name}.Xy12z9");
    assert_eq!(fs.lookup(dir, &tmp).await, Err(FsError::NotFound));
    let (a, h) = fs
        .create(dir, &tmp, 0o600, libc::O_RDWR | libc::O_EXCL, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, data).await.unwrap();
    fs.flush(h.fh).await.unwrap();
    fs.release(h.fh).await.unwrap();
    fs.setattr(a.ino, attrs(Some(0o644), None)).await.unwrap();
    fs.setattr(a.ino, attrs(None, Some(mtime))).await.unwrap();
    fs.rename(dir, &tmp, dir, name, false).await.unwrap();
}

async fn settle() {
    tokio::time::sleep(DELAY * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_costs_one_upload_per_file_to_its_final_name() {
    let t = mount(store().await);
    let d = dst(&t.fs).await;
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let before = t.c.kinds();
    // New files, and files replacing existing objects (`old0`..`old4`).
    let names: Vec<String> = (0..20)
        .map(|i| format!("f{i}"))
        .chain((0..5).map(|i| format!("old{i}")))
        .collect();
    for n in &names {
        rsync_one(&t.fs, d, n, format!("data of {n}").as_bytes(), when).await;
    }
    // Nothing is in the store yet, but the mount shows every file as written.
    assert_eq!(stored(&*t.mem, "dst/f0").await, None);
    assert_eq!(stored(&*t.mem, "dst/old0").await.unwrap(), b"old");
    let a = t.fs.lookup(d, "f3").await.unwrap();
    assert_eq!((a.perm, a.mtime), (0o644, when));
    settle().await;
    let k = t.c.kinds() - before;
    println!("rsync -a of {} files writing behind: {k:?}", names.len());
    // One upload per file; a file replacing an object also looks that object up (one HEAD:
    // the listing names it without its version), as without the delay.
    assert_eq!(
        k,
        Kinds {
            put: names.len(),
            head: 5,
            ..Default::default()
        }
    );
    let other = test_fs_on(t.mem.clone(), |_| {});
    let d2 = other.fs.lookup(ROOT_INO, "dst").await.unwrap().ino;
    for n in &names {
        let a = other.fs.lookup(d2, n).await.unwrap();
        assert_eq!((a.perm, a.mtime), (0o644, when), "{n}");
        let want = format!("data of {n}");
        assert_eq!(
            stored(&*t.mem, &format!("dst/{n}")).await.unwrap(),
            want.as_bytes()
        );
        assert_eq!(stored(&*t.mem, &format!("dst/.{n}.Xy12z9")).await, None);
    }
    assert_eq!(t.fs.pending_uploads(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_and_unmount_upload_at_once() {
    let t = mount(store().await);
    let d = dst(&t.fs).await;
    let (_, h) =
        t.fs.create(d, "synced", 0o644, libc::O_RDWR | libc::O_EXCL, ME)
            .await
            .unwrap();
    t.fs.write(h.fh, 0, b"durable").await.unwrap();
    t.fs.fsync(h.fh).await.unwrap();
    assert_eq!(stored(&*t.mem, "dst/synced").await.unwrap(), b"durable");
    t.fs.release(h.fh).await.unwrap();
    let (_, h) =
        t.fs.create(d, "pending", 0o644, libc::O_RDWR | libc::O_EXCL, ME)
            .await
            .unwrap();
    t.fs.write(h.fh, 0, b"at unmount").await.unwrap();
    t.fs.flush(h.fh).await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(t.fs.pending_uploads(), 1);
    assert_eq!(stored(&*t.mem, "dst/pending").await, None);
    assert_eq!(t.fs.flush_for_shutdown().await, (1, 0));
    assert_eq!(stored(&*t.mem, "dst/pending").await.unwrap(), b"at unmount");
    settle().await;
    assert_eq!(t.fs.pending_uploads(), 0);
}

/// Opened again within the delay: the same file (its bytes, from staging), and its upload
/// waits for the new last close; one upload in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_reopened_in_the_delay_is_the_same_file() {
    let t = mount(store().await);
    let d = dst(&t.fs).await;
    let (a, h) =
        t.fs.create(d, "log", 0o644, libc::O_RDWR | libc::O_EXCL, ME)
            .await
            .unwrap();
    t.fs.write(h.fh, 0, b"one ").await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    let puts = t.c.kinds().put;
    let h = t.fs.open(a.ino, libc::O_RDWR).await.unwrap();
    assert_eq!(&t.fs.read(h.fh, 0, 100).await.unwrap()[..], b"one ");
    t.fs.write(h.fh, 4, b"two").await.unwrap();
    tokio::time::sleep(DELAY * 2).await;
    assert_eq!(
        stored(&*t.mem, "dst/log").await,
        None,
        "uploaded while open"
    );
    t.fs.release(h.fh).await.unwrap();
    settle().await;
    assert_eq!(stored(&*t.mem, "dst/log").await.unwrap(), b"one two");
    assert_eq!(t.c.kinds().put - puts, 1);
}

/// Another client creates the name while our upload waits: ours conflicts after close, and
/// its bytes are kept in `conflicts/` (logged), theirs stay in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_conflicts_after_close_is_kept() {
    let t = mount(store().await);
    let d = dst(&t.fs).await;
    let (_, h) =
        t.fs.create(d, "race", 0o644, libc::O_RDWR | libc::O_EXCL, ME)
            .await
            .unwrap();
    t.fs.write(h.fh, 0, b"mine").await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    put(&t.mem, "dst/race", b"theirs").await;
    settle().await;
    assert_eq!(stored(&*t.mem, "dst/race").await.unwrap(), b"theirs");
    let kept = find_kept(&t.dir.path().join("conflicts"));
    assert!(
        kept.iter().any(|p| std::fs::read(p).unwrap() == b"mine"),
        "not kept: {kept:?}"
    );
}

fn find_kept(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find_kept(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A crash after close, before the upload: the next mount's recovery uploads the file under
/// the name it was renamed to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_upload_is_recovered_under_the_new_name() {
    let mem = store().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = |long: bool| {
        let mut c = FsConfig::for_tests(dir.path().to_path_buf());
        c.close_delay = if long { Duration::from_secs(60) } else { DELAY };
        c
    };
    let fs = Fs::new(mem.clone(), cfg(true)).unwrap();
    let d = dst(&fs).await;
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_650_000_000);
    rsync_one(&fs, d, "new", b"fresh", when).await;
    rsync_one(&fs, d, "old1", b"replaced", when).await;
    assert_eq!(stored(&*mem, "dst/new").await, None);
    fs.abandon_like_a_crash();
    let fs = Fs::new(mem.clone(), cfg(false)).unwrap();
    let r = fs.recover(Recovery::Upload).await;
    let mut up = r.uploaded.clone();
    up.sort();
    assert_eq!(up, vec!["dst/new".to_string(), "dst/old1".to_string()]);
    assert_eq!(stored(&*mem, "dst/new").await.unwrap(), b"fresh");
    assert_eq!(stored(&*mem, "dst/old1").await.unwrap(), b"replaced");
    assert_eq!(stored(&*mem, "dst/.new.Xy12z9").await, None);
}

/// Without the setting nothing changes: close uploads, rename copies and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_delay_close_uploads() {
    let t = test_fs_on(store().await, |c| {
        c.attr_ttl = Duration::from_secs(60);
        c.list_ttl = Duration::from_secs(60);
    });
    let d = dst(&t.fs).await;
    let before = t.c.kinds();
    rsync_one(&t.fs, d, "f", b"x", SystemTime::now()).await;
    let k = t.c.kinds() - before;
    assert_eq!((k.put, k.copy, k.delete), (1, 1, 1));
    assert_eq!(stored(&*t.mem, "dst/f").await.unwrap(), b"x");
}

/// Write-behind against a model, over random sequences of whole-file writes, appends,
/// renames (over existing names too), unlinks, reads, waits shorter and longer than the
/// delay and crashes (time paused): what the mount shows is always the model, after a crash
/// and recovery the store is the model, and once every upload has had its delay the store
/// is the model, with no temporary name left behind.
mod property {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    const NAMES: [&str; 4] = ["a", "b", ".a.tmp", ".b.tmp"];

    #[derive(Clone, Debug)]
    enum Op {
        Write { name: usize, seed: u8, len: usize },
        Append { name: usize, seed: u8 },
        Rename { from: usize, to: usize },
        Unlink { name: usize },
        Read { name: usize },
        Wait { long: bool },
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        let n = || 0..NAMES.len();
        prop_oneof![
            4 => (n(), any::<u8>(), 0..3000usize).prop_map(|(name, seed, len)| Op::Write { name, seed, len }),
            1 => (n(), any::<u8>()).prop_map(|(name, seed)| Op::Append { name, seed }),
            4 => (n(), n()).prop_map(|(from, to)| Op::Rename { from, to }),
            1 => n().prop_map(|name| Op::Unlink { name }),
            2 => n().prop_map(|name| Op::Read { name }),
            2 => any::<bool>().prop_map(|long| Op::Wait { long }),
            1 => Just(Op::Crash),
        ]
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn config(dir: &Path) -> FsConfig {
        let mut c = FsConfig::for_tests(dir.to_path_buf());
        c.close_delay = DELAY;
        // Shorter than the delay: listings and names expire while uploads are pending.
        c.attr_ttl = DELAY / 3;
        c.list_ttl = DELAY / 3;
        c.negative_ttl = DELAY / 3;
        c
    }

    async fn store_files(mem: &MemoryBackend) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for n in NAMES {
            if let Some(b) = stored(mem, &format!("d/{n}")).await {
                out.insert(n.to_string(), b);
            }
        }
        out
    }

    async fn dir_of(fs: &Fs) -> u64 {
        fs.lookup(ROOT_INO, "d").await.unwrap().ino
    }

    async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mem = Arc::new(MemoryBackend::new());
        put(&mem, "d/", b"").await;
        let cache = tempfile::tempdir().unwrap();
        let mut fs = Fs::new(mem.clone(), config(cache.path())).unwrap();
        let mut d = dir_of(&fs).await;
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Write { name, seed, len } => {
                    let n = NAMES[name];
                    let data = bytes(len, seed);
                    let fh = match fs.lookup(d, n).await {
                        Ok(a) => {
                            fs.open(a.ino, libc::O_WRONLY | libc::O_TRUNC)
                                .await
                                .unwrap()
                                .fh
                        }
                        Err(FsError::NotFound) => {
                            fs.create(d, n, 0o644, libc::O_WRONLY | libc::O_EXCL, ME)
                                .await
                                .unwrap()
                                .1
                                .fh
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("lookup {n}: {e}"))),
                    };
                    fs.write(fh, 0, &data).await.unwrap();
                    fs.flush(fh).await.unwrap();
                    fs.release(fh).await.unwrap();
                    model.insert(n.to_string(), data);
                }
                Op::Append { name, seed } => {
                    let n = NAMES[name];
                    let Some(cur) = model.get_mut(n) else {
                        continue;
                    };
                    let a = fs.lookup(d, n).await.unwrap();
                    let fh = fs.open(a.ino, libc::O_RDWR).await.unwrap().fh;
                    let more = bytes(100, seed);
                    fs.write(fh, cur.len() as u64, &more).await.unwrap();
                    fs.release(fh).await.unwrap();
                    cur.extend_from_slice(&more);
                }
                Op::Rename { from, to } => {
                    let (f, t) = (NAMES[from], NAMES[to]);
                    if !model.contains_key(f) || f == t {
                        continue;
                    }
                    fs.rename(d, f, d, t, false).await.unwrap();
                    let v = model.remove(f).unwrap();
                    model.insert(t.to_string(), v);
                }
                Op::Unlink { name } => {
                    let n = NAMES[name];
                    if model.remove(n).is_some() {
                        fs.unlink(d, n).await.unwrap();
                    }
                }
                Op::Read { name } => {
                    let n = NAMES[name];
                    match (fs.lookup(d, n).await, model.get(n)) {
                        (Ok(a), Some(want)) => {
                            let got = read_seq(&fs, a.ino, 4096).await.unwrap();
                            prop_assert_eq!(&got, want, "{} read through the mount", n);
                        }
                        (Err(FsError::NotFound), None) => {}
                        (got, want) => {
                            return Err(TestCaseError::fail(format!(
                                "{n}: lookup {:?}, model has {} bytes",
                                got.map(|a| a.size),
                                want.map(|w| w.len()).unwrap_or(0)
                            )));
                        }
                    }
                }
                Op::Wait { long } => {
                    let k = if long { 3 } else { 1 };
                    tokio::time::sleep(DELAY * k / 2).await;
                }
                Op::Crash => {
                    fs.abandon_like_a_crash();
                    fs = Fs::new(mem.clone(), config(cache.path())).unwrap();
                    let r = fs.recover(Recovery::Upload).await;
                    prop_assert!(r.kept.is_empty(), "recovery kept {:?}", r.kept);
                    prop_assert_eq!(&store_files(&mem).await, &model, "after crash and recovery");
                    d = dir_of(&fs).await;
                }
            }
        }
        tokio::time::sleep(DELAY * 3).await;
        prop_assert_eq!(fs.pending_uploads(), 0);
        prop_assert_eq!(&store_files(&mem).await, &model, "after every delay");
        Ok(())
    }

    #[test]
    fn the_store_ends_as_the_model_whatever_the_order() {
        let cases = std::env::var("WRITE_BEHIND_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&proptest::collection::vec(op(), 1..30), |ops| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
                    .unwrap();
                rt.block_on(run(ops))
            })
            .unwrap();
    }
}
