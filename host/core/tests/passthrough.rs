//! Kernel passthrough of cached files, as the core decides it (no kernel here: the tests
//! check the decisions the kernel's rule needs, `blobmount_core::passthrough`): which opens
//! are answered with the cached copy, that every open of an inode in passthrough shares one
//! backing file, that nothing opens through the daemon beside it, and that writers wait and
//! then get ETXTBSY instead of the kernel's EIO.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blobmount_core::{Fs, FsConfig, FsError, ROOT_INO, ReadMode, SetAttr};

mod common;
use common::{TestFs, put, read_seq, stored, test_fs};

const MIB: usize = 1 << 20;

fn setup(passthrough: bool, tweak: impl FnOnce(&mut FsConfig)) -> TestFs {
    test_fs(|cfg| {
        cfg.read_mode = ReadMode::FileCache;
        cfg.read_block = 256 * 1024;
        cfg.read_ahead_max = 2 * MIB;
        cfg.passthrough = passthrough;
        tweak(cfg);
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + i / 513) % 253) as u8 ^ seed)
        .collect()
}

/// A file `f` of `data`, read once (so its copy is downloaded and checked); its inode.
async fn cached_file(t: &TestFs, data: &[u8]) -> u64 {
    put(&t.mem, "f", data).await;
    let ino = t.fs.lookup(ROOT_INO, "f").await.unwrap().ino;
    assert_eq!(read_seq(&t.fs, ino, 128 * 1024).await.unwrap(), data);
    let fc = t.fs.file_cache.clone().unwrap();
    let t0 = Instant::now();
    // The check after the last chunk may finish just after the read returned.
    while fc.stats.verified.load(Ordering::Relaxed) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "copy never checked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ino
}

fn contents(p: &blobmount_core::passthrough::PassFile, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    p.file().read_exact_at(&mut buf, 0).unwrap();
    buf
}

fn passthrough_opens(fs: &Fs) -> u64 {
    let fc = fs.file_cache.clone().unwrap();
    fc.stats.passthrough_opens.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_opens_of_a_checked_copy_share_one_backing_file() {
    let t = setup(true, |_| {});
    let data = pattern(MIB + 17, 1);
    let ino = cached_file(&t, &data).await;
    // (The open that downloaded it went through the daemon, unless the download was done
    // before that open was answered.)
    let opens = passthrough_opens(&t.fs);
    let a = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let b = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let (pa, pb) = (
        a.passthrough.clone().unwrap(),
        b.passthrough.clone().unwrap(),
    );
    assert!(Arc::ptr_eq(&pa, &pb), "two backing files for one inode");
    assert_eq!(contents(&pa, data.len()), data);
    // The backing id is registered once and shared.
    let registered = AtomicUsize::new(0);
    let reg = |_: &std::fs::File| {
        registered.fetch_add(1, Ordering::Relaxed);
        Ok(7u32)
    };
    assert_eq!(*pa.backing(reg).unwrap(), 7);
    assert_eq!(*pb.backing(|_| Ok(8u32)).unwrap(), 7);
    assert_eq!(registered.load(Ordering::Relaxed), 1);
    assert_eq!(passthrough_opens(&t.fs) - opens, 2);
    t.fs.release(a.fh).await.unwrap();
    t.fs.release(b.fh).await.unwrap();
    // Nothing was fetched for them.
    let gets = t.c.gets();
    let c = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(c.passthrough.is_some());
    t.fs.release(c.fh).await.unwrap();
    assert_eq!(t.c.gets(), gets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_every_open_goes_through_the_daemon() {
    let t = setup(false, |_| {});
    let ino = cached_file(&t, &pattern(MIB, 2)).await;
    let a = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(a.passthrough.is_none());
    t.fs.release(a.fh).await.unwrap();
    assert_eq!(passthrough_opens(&t.fs), 0);
}

/// The kernel fails a passthrough open of an inode open through the daemon (EIO): while
/// any such open lasts, new opens go through the daemon too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_through_the_daemon_keeps_the_inode_there() {
    // The download starts at the first read, not at the open: the first open is surely
    // answered before the copy is complete.
    let t = setup(true, |c| c.file_cache_range_reads = false);
    let data = pattern(MIB, 3);
    put(&t.mem, "f", &data).await;
    let ino = t.fs.lookup(ROOT_INO, "f").await.unwrap().ino;
    // Opened before its copy was complete: through the daemon, and it stays open.
    let first = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(first.passthrough.is_none());
    let mut got = Vec::new();
    loop {
        let b =
            t.fs.read(first.fh, got.len() as u64, 256 * 1024)
                .await
                .unwrap();
        if b.is_empty() {
            break;
        }
        got.extend_from_slice(&b);
    }
    assert_eq!(got, data);
    let fc = t.fs.file_cache.clone().unwrap();
    let t0 = Instant::now();
    while fc.stats.verified.load(Ordering::Relaxed) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(
        second.passthrough.is_none(),
        "passthrough beside an open through the daemon"
    );
    // A writer through the daemon beside them is fine.
    let w = t.fs.open(ino, libc::O_WRONLY).await.unwrap();
    t.fs.release(w.fh).await.unwrap();
    t.fs.release(first.fh).await.unwrap();
    t.fs.release(second.fh).await.unwrap();
    let third = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(third.passthrough.is_some());
    t.fs.release(third.fh).await.unwrap();
}

/// Writes must reach the daemon: an open for writing (or a truncate) of a file open in
/// passthrough waits for those opens to close, and fails with ETXTBSY if they do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_wait_for_passthrough_readers_then_get_etxtbsy() {
    let t = setup(true, |_| {});
    let data = pattern(MIB, 4);
    let ino = cached_file(&t, &data).await;
    let r = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(r.passthrough.is_some());
    let t0 = Instant::now();
    let e = t.fs.open(ino, libc::O_WRONLY).await.err();
    assert_eq!(e, Some(FsError::TextBusy));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(FsError::TextBusy.errno(), libc::ETXTBSY);
    let e = t.fs.open(ino, libc::O_RDONLY | libc::O_TRUNC).await.err();
    assert_eq!(e, Some(FsError::TextBusy));
    let size0 = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    let e = t.fs.setattr(ino, size0.clone()).await.err();
    assert_eq!(e, Some(FsError::TextBusy));
    assert_eq!(stored(&*t.mem, "f").await.unwrap(), data, "store changed");
    // A close whose release arrives during the wait lets the writer in.
    let fs = t.fs.clone();
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fs.release(r.fh).await.unwrap();
    });
    // (It would have got ETXTBSY after the whole wait.)
    let w = t.fs.open(ino, libc::O_WRONLY).await.unwrap();
    closer.await.unwrap();
    assert!(w.passthrough.is_none());
    t.fs.write(w.fh, 0, b"new").await.unwrap();
    // While it is open for writing, readers go through the daemon (and see its bytes).
    let r2 = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(r2.passthrough.is_none());
    assert_eq!(&t.fs.read(r2.fh, 0, 3).await.unwrap()[..], b"new");
    t.fs.release(r2.fh).await.unwrap();
    t.fs.release(w.fh).await.unwrap();
    assert_eq!(&stored(&*t.mem, "f").await.unwrap()[..3], b"new");
    // With no open left, a truncate goes through.
    t.fs.setattr(ino, size0).await.unwrap();
    assert_eq!(stored(&*t.mem, "f").await.unwrap(), b"");
}

/// The kernel refused the backing file (no CAP_SYS_ADMIN, say): that open and every later
/// one go through the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backing_file_turns_passthrough_off() {
    let t = setup(true, |_| {});
    let ino = cached_file(&t, &pattern(MIB, 5)).await;
    assert!(t.fs.passthrough_wanted());
    let a = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let p = a.passthrough.clone().unwrap();
    let e = p.backing(|_| Err::<u32, _>(std::io::Error::from_raw_os_error(libc::EPERM)));
    assert!(e.is_err());
    t.fs.passthrough_refused(a.fh, "test: EPERM");
    assert!(!t.fs.passthrough_wanted());
    // The open is counted as one through the daemon now: a writer need not wait.
    let t0 = Instant::now();
    let w = t.fs.open(ino, libc::O_WRONLY).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    t.fs.release(w.fh).await.unwrap();
    t.fs.release(a.fh).await.unwrap();
    let b = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(b.passthrough.is_none());
    t.fs.release(b.fh).await.unwrap();
}

/// Another client replaced the object while it is open in passthrough: a new read-only
/// open waits for those opens to close, then (they did not) reads the version they read
/// (the kernel allows one backing file per inode). Once they are closed, opens read the
/// new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_is_read_once_the_passthrough_opens_close() {
    let t = setup(true, |c| {
        c.attr_ttl = Duration::from_millis(100);
        c.list_ttl = c.attr_ttl;
    });
    let old = pattern(MIB, 6);
    let ino = cached_file(&t, &old).await;
    let a = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let pa = a.passthrough.clone().unwrap();
    let new = pattern(MIB / 2, 7);
    put(&t.mem, "f", &new).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let b = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(Arc::ptr_eq(b.passthrough.as_ref().unwrap(), &pa));
    t.fs.release(a.fh).await.unwrap();
    t.fs.release(b.fh).await.unwrap();
    assert_eq!(read_seq(&t.fs, ino, 128 * 1024).await.unwrap(), new);
}

/// The kernel's rule as a property, over random sequences of opens, releases, refusals and
/// outside replacements on two files (time paused, so the 1 s waits cost nothing): an inode
/// never has opens in passthrough and through the daemon at once, its passthrough opens share
/// one file, and an open for writing fails with ETXTBSY exactly when passthrough opens of its
/// file are still open.
mod property {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    #[derive(Clone, Debug)]
    enum Op {
        OpenRo { file: usize, refuse: bool },
        OpenRw { file: usize },
        Release { h: usize },
        Remote { file: usize, seed: u8 },
        Sleep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..2usize, proptest::bool::weighted(0.05))
                .prop_map(|(file, refuse)| Op::OpenRo { file, refuse }),
            2 => (0..2usize).prop_map(|file| Op::OpenRw { file }),
            4 => (0..8usize).prop_map(|h| Op::Release { h }),
            1 => (0..2usize, any::<u8>()).prop_map(|(file, seed)| Op::Remote { file, seed }),
            2 => Just(Op::Sleep),
        ]
    }

    struct Open {
        fh: u64,
        file: usize,
        pass: Option<Arc<blobmount_core::passthrough::PassFile>>,
    }

    async fn run(ops: Vec<Op>) -> Result<u64, TestCaseError> {
        let t = setup(true, |c| {
            c.attr_ttl = Duration::from_millis(500);
            c.list_ttl = c.attr_ttl;
        });
        let names = ["a", "b"];
        for (i, n) in names.iter().enumerate() {
            put(&t.mem, n, &pattern(300_000, i as u8)).await;
        }
        let mut inos = Vec::new();
        for n in names {
            inos.push(t.fs.lookup(ROOT_INO, n).await.unwrap().ino);
        }
        let mut open: Vec<Open> = Vec::new();
        let mut pass_opens = 0;
        for op in ops {
            match op {
                Op::OpenRo { file, refuse } => {
                    let r = t.fs.open(inos[file], libc::O_RDONLY).await.unwrap();
                    let mut pass = r.passthrough.clone();
                    if let Some(p) = &pass {
                        // What the FUSE adapter does with it.
                        let id = p.backing(|_| match refuse {
                            true => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
                            false => Ok(1u32),
                        });
                        if id.is_err() {
                            t.fs.passthrough_refused(r.fh, "test");
                            pass = None;
                        } else {
                            pass_opens += 1;
                        }
                    }
                    let held = open.iter().filter(|o| o.file == file);
                    if let Some(shared) = held.clone().find_map(|o| o.pass.clone()) {
                        prop_assert!(
                            pass.as_ref().is_some_and(|p| Arc::ptr_eq(p, &shared)),
                            "a read-only open beside passthrough opens did not share their file"
                        );
                    }
                    open.push(Open {
                        fh: r.fh,
                        file,
                        pass,
                    });
                }
                Op::OpenRw { file } => {
                    let passing = open.iter().any(|o| o.file == file && o.pass.is_some());
                    match t.fs.open(inos[file], libc::O_RDWR).await {
                        Ok(r) => {
                            prop_assert!(!passing, "a writer opened beside passthrough opens");
                            prop_assert!(r.passthrough.is_none());
                            open.push(Open {
                                fh: r.fh,
                                file,
                                pass: None,
                            });
                        }
                        Err(FsError::TextBusy) => {
                            prop_assert!(passing, "ETXTBSY without a passthrough open")
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("open: {e}"))),
                    }
                }
                Op::Release { h } => {
                    if h < open.len() {
                        let o = open.remove(h);
                        // A writer's upload may meet the outside replacement: a conflict.
                        match t.fs.release(o.fh).await {
                            Ok(()) | Err(FsError::Conflict { .. }) => {}
                            Err(e) => return Err(TestCaseError::fail(format!("release: {e}"))),
                        }
                    }
                }
                Op::Remote { file, seed } => {
                    put(&t.mem, names[file], &pattern(200_000, seed)).await;
                }
                Op::Sleep => tokio::time::sleep(Duration::from_secs(2)).await,
            }
            for file in 0..2 {
                let mine: Vec<&Open> = open.iter().filter(|o| o.file == file).collect();
                let passing: Vec<_> = mine.iter().filter_map(|o| o.pass.clone()).collect();
                prop_assert!(
                    passing.is_empty() || passing.len() == mine.len(),
                    "file {file}: {} passthrough opens beside {} through the daemon",
                    passing.len(),
                    mine.len() - passing.len()
                );
                prop_assert!(passing.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
            }
        }
        for o in open {
            let _ = t.fs.release(o.fh).await;
        }
        Ok(pass_opens)
    }

    #[test]
    fn opens_keep_the_kernels_one_mode_per_inode_rule() {
        let cases = std::env::var("PASSTHROUGH_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let total = std::sync::atomic::AtomicU64::new(0);
        runner
            .run(&proptest::collection::vec(op(), 1..40), |ops| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
                    .unwrap();
                let n = rt.block_on(run(ops))?;
                total.fetch_add(n, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        // The sequences did reach passthrough (the property is not vacuous).
        assert!(total.load(Ordering::Relaxed) > 0);
    }
}
