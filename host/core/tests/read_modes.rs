//! The three read paths (direct, block-cache, file-cache) and preload, driven through the
//! core against the in-memory backend, counting the GETs they make.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use blobmount_backend::memory::MemoryBackend;
use blobmount_core::{Fs, FsConfig, FsError, PreloadProgress, ROOT_INO, ReadMode};

mod common;
use common::{TestFs, put, read_seq, test_fs};

const MIB: usize = 1 << 20;

fn setup(mode: ReadMode, tweak: impl FnOnce(&mut FsConfig)) -> TestFs {
    test_fs(|cfg| {
        cfg.read_mode = mode;
        cfg.read_block = 256 * 1024;
        cfg.read_ahead_max = 2 * MIB;
        cfg.read_memory = 16 * MIB;
        tweak(cfg);
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 4099) % 251) as u8 ^ seed)
        .collect()
}

async fn ino_of(fs: &Fs, path: &str) -> u64 {
    let mut ino = ROOT_INO;
    for seg in path.split('/') {
        ino = fs.lookup(ino, seg).await.unwrap().ino;
    }
    ino
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_returns_the_right_bytes_for_sequential_and_random_reads() {
    for mode in [ReadMode::Direct, ReadMode::BlockCache, ReadMode::FileCache] {
        let t = setup(mode, |_| {});
        let data = pattern(3 * MIB + 12345, 7);
        put(&t.mem, "d/f", &data).await;
        let ino = ino_of(&t.fs, "d/f").await;
        assert_eq!(
            read_seq(&t.fs, ino, 128 * 1024).await.unwrap(),
            data,
            "{mode:?}"
        );
        let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
        for &(off, len) in &[
            (2_000_000u64, 4096u32),
            (5, 100),
            (3 * MIB as u64 + 12000, 4096),
            (300_000, 700_000),
            (0, 1),
            (3 * MIB as u64 + 12345, 10),
        ] {
            let b = t.fs.read(h.fh, off, len).await.unwrap();
            let end = (off as usize + len as usize).min(data.len());
            let start = (off as usize).min(end);
            assert_eq!(&b[..], &data[start..end], "{mode:?} at {off}+{len}");
        }
        t.fs.release(h.fh).await.unwrap();
    }
}

#[tokio::test]
async fn direct_mode_grows_its_window_for_sequential_readers() {
    let t = setup(ReadMode::Direct, |c| c.read_ahead_max = 4 * MIB);
    let data = pattern(8 * MIB, 1);
    put(&t.mem, "f", &data).await;
    let ino = ino_of(&t.fs, "f").await;
    assert_eq!(read_seq(&t.fs, ino, 128 * 1024).await.unwrap(), data);
    let (gets, bytes) = t.c.gets();
    // 64 kernel-sized reads; a doubling window (256K, 512K, ... 4M) needs about 6 GETs.
    assert!(gets <= 10, "{gets} GETs for 64 sequential reads");
    assert!(
        bytes <= data.len() as u64 + 4 * MIB as u64,
        "fetched {bytes}"
    );
    // A random reader gets just its bytes.
    let before = t.c.gets();
    let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    t.fs.read(h.fh, 5 * MIB as u64 + 17, 4096).await.unwrap();
    t.fs.read(h.fh, 100, 4096).await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    let after = t.c.gets();
    assert_eq!(
        after.1 - before.1,
        8192,
        "random reads fetched more than asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_cache_shares_blocks_between_handles_of_one_version() {
    let t = setup(ReadMode::BlockCache, |_| {});
    let data = pattern(4 * MIB, 3);
    put(&t.mem, "f", &data).await;
    let ino = ino_of(&t.fs, "f").await;
    let (a, b) = (
        t.fs.open(ino, libc::O_RDONLY).await.unwrap(),
        t.fs.open(ino, libc::O_RDONLY).await.unwrap(),
    );
    // Two readers in lock step: the second always finds the first one's blocks.
    let mut off = 0u64;
    while off < data.len() as u64 {
        let x = t.fs.read(a.fh, off, 128 * 1024).await.unwrap();
        let y = t.fs.read(b.fh, off, 128 * 1024).await.unwrap();
        assert_eq!(x, y);
        assert_eq!(&x[..], &data[off as usize..off as usize + x.len()]);
        off += x.len() as u64;
    }
    t.fs.release(a.fh).await.unwrap();
    t.fs.release(b.fh).await.unwrap();
    let (_, fetched) = t.c.gets();
    assert!(
        fetched <= data.len() as u64 + 256 * 1024,
        "two handles fetched {fetched} bytes of a {} byte object",
        data.len()
    );
    assert!(t.fs.pool.shared_hits.load(Ordering::Relaxed) > 0);
    assert_eq!(t.fs.pool.live_blocks(), 0, "blocks leaked after release");
    assert_eq!(t.fs.budget.in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cache_serves_later_opens_from_disk_until_the_object_changes() {
    let t = setup(ReadMode::FileCache, |c| {
        c.attr_ttl = Duration::from_millis(200);
        c.list_ttl = c.attr_ttl;
    });
    let data = pattern(2 * MIB + 5, 9);
    put(&t.mem, "f", &data).await;
    let ino = ino_of(&t.fs, "f").await;
    assert_eq!(read_seq(&t.fs, ino, 128 * 1024).await.unwrap(), data);
    let fc = t.fs.file_cache.clone().unwrap();
    let cold = t.c.gets();
    assert_eq!(read_seq(&t.fs, ino, 64 * 1024).await.unwrap(), data);
    assert_eq!(t.c.gets(), cold, "second open went to the store");
    assert_eq!(fc.stats.hits.load(Ordering::Relaxed), 1);
    // Cached files are private to the daemon.
    let dir = t.dir.path().join("files");
    let mode = std::fs::metadata(&dir).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    // Another client replaces the object: after the attribute TTL, the next open sees it.
    let new = pattern(MIB, 42);
    put(&t.mem, "f", &new).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_seq(&t.fs, ino, 128 * 1024).await.unwrap(), new);
    assert_eq!(fc.len(), 1, "the old version's copy must be dropped");
    assert_eq!(fc.used_bytes(), new.len() as u64);
}

/// A handle that starts reading in the middle (a footer, an index) downloads the whole
/// object by default; with `file_cache_range_reads` off it reads just its ranges, and the
/// first read from the start downloads it for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_download_only_when_configured() {
    for range_reads in [true, false] {
        let t = setup(ReadMode::FileCache, |c| {
            c.file_cache_range_reads = range_reads
        });
        let data = pattern(4 * MIB + 3, 5);
        put(&t.mem, "f", &data).await;
        let ino = ino_of(&t.fs, "f").await;
        let fc = t.fs.file_cache.clone().unwrap();
        let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
        let tail = (data.len() - 1000) as u64;
        let b = t.fs.read(h.fh, tail, 1000).await.unwrap();
        assert!(b[..] == data[tail as usize..], "tail bytes ({range_reads})");
        let b = t.fs.read(h.fh, 100, 10).await.unwrap();
        assert!(b[..] == data[100..110], "head bytes ({range_reads})");
        t.fs.release(h.fh).await.unwrap();
        if range_reads {
            assert_eq!(fc.len(), 1, "a range read starts the download");
            assert_eq!(fc.stats.range_reads.load(Ordering::Relaxed), 0);
            continue;
        }
        assert_eq!(fc.len(), 0, "range reads must not download");
        assert_eq!(fc.stats.misses.load(Ordering::Relaxed), 0);
        assert_eq!(fc.stats.range_reads.load(Ordering::Relaxed), 1);
        let (gets, bytes) = t.c.gets();
        assert!(
            gets <= 3 && bytes < 64 * 1024,
            "{gets} GETs of {bytes} bytes for two small ranges"
        );
        // A sequential reader from the start downloads it; a later range reader uses the copy.
        assert_eq!(read_seq(&t.fs, ino, 128 * 1024).await.unwrap(), data);
        assert_eq!(fc.len(), 1);
        assert_eq!(fc.stats.misses.load(Ordering::Relaxed), 1);
        let gets = t.c.gets();
        let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
        let b = t.fs.read(h.fh, tail, 1000).await.unwrap();
        assert!(b[..] == data[tail as usize..]);
        t.fs.release(h.fh).await.unwrap();
        assert_eq!(
            t.c.gets(),
            gets,
            "the cached copy must serve the range read"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cache_evicts_least_recently_used_to_stay_under_its_cap() {
    let t = setup(ReadMode::FileCache, |c| c.file_cache_max = 3 * MIB as u64);
    for i in 0..5u8 {
        put(&t.mem, &format!("f{i}"), &pattern(MIB, i)).await;
    }
    // Written before the first lookup lists the directory (a name another client adds
    // later shows after the list TTL).
    let big = pattern(4 * MIB, 77);
    put(&t.mem, "big", &big).await;
    for i in 0..5u8 {
        let ino = ino_of(&t.fs, &format!("f{i}")).await;
        assert_eq!(
            read_seq(&t.fs, ino, 128 * 1024).await.unwrap(),
            pattern(MIB, i)
        );
        let fc = t.fs.file_cache.as_ref().unwrap();
        assert!(fc.used_bytes() <= 3 * MIB as u64);
        let on_disk: u64 = std::fs::read_dir(t.dir.path().join("files"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 3 * MIB as u64, "{on_disk} bytes on disk");
    }
    let fc = t.fs.file_cache.as_ref().unwrap();
    assert_eq!(fc.stats.evictions.load(Ordering::Relaxed), 2);
    // The most recent three are still cached: reading f4 again makes no request.
    let before = t.c.gets();
    let ino = ino_of(&t.fs, "f4").await;
    read_seq(&t.fs, ino, 128 * 1024).await.unwrap();
    assert_eq!(t.c.gets(), before);
    // An object bigger than the cap is read through the block cache, correctly.
    let ino = ino_of(&t.fs, "big").await;
    assert_eq!(read_seq(&t.fs, ino, 128 * 1024).await.unwrap(), big);
    assert_eq!(fc.stats.bypassed.load(Ordering::Relaxed), 1);
    assert!(fc.used_bytes() <= 3 * MIB as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cache_download_of_a_changing_object_gives_stale_not_mixed_data() {
    let t = setup(ReadMode::FileCache, |_| {});
    let data = pattern(4 * MIB, 5);
    put(&t.mem, "f", &data).await;
    let ino = ino_of(&t.fs, "f").await;
    let new = pattern(4 * MIB, 6);
    // Every chunk of the download is fetched after the change.
    t.c.get_delay_ms.store(300, Ordering::SeqCst);
    let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    put(&t.mem, "f", &new).await;
    let mut got = Err(FsError::NotFound);
    for off in (0..4 * MIB as u64).step_by(512 * 1024) {
        got = t.fs.read(h.fh, off, 4096).await.map(|_| ());
        if got.is_err() {
            break;
        }
    }
    assert_eq!(got, Err(FsError::Stale));
    t.fs.release(h.fh).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_fills_the_file_cache_and_counts_progress() {
    let t = setup(ReadMode::FileCache, |c| {
        c.attr_ttl = Duration::from_secs(60);
        c.list_ttl = c.attr_ttl;
    });
    let mut total = 0;
    for i in 0..12u8 {
        let len = 100_000 + i as usize * 7000;
        total += len as u64;
        put(&t.mem, &format!("data/s{}/f{i}", i % 3), &pattern(len, i)).await;
    }
    put(&t.mem, "other/x", b"not preloaded").await;
    let p = PreloadProgress::default();
    t.fs.preload("data", 4, &p).await.unwrap();
    assert_eq!(p.snapshot(), (12, 12, total, total));
    assert_eq!(p.failed.load(Ordering::Relaxed), 0);
    let fc = t.fs.file_cache.clone().unwrap();
    assert_eq!(fc.len(), 12);
    let before = t.c.gets();
    for i in 0..12u8 {
        let ino = ino_of(&t.fs, &format!("data/s{}/f{i}", i % 3)).await;
        let len = 100_000 + i as usize * 7000;
        assert_eq!(read_seq(&t.fs, ino, 65536).await.unwrap(), pattern(len, i));
    }
    assert_eq!(t.c.gets(), before, "preloaded files were fetched again");
    assert_eq!(
        t.fs.preload("missing", 4, &p).await.err(),
        Some(FsError::NotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cache_checks_downloads_against_the_stores_md5() {
    let t = setup(ReadMode::FileCache, |_| {});
    let data = pattern(MIB + 3, 4);
    put(&t.mem, "good", &data).await;
    put(&t.mem, "bad", &data).await;
    put(&t.mem, "empty", b"").await;
    let fc = t.fs.file_cache.clone().unwrap();
    let p = PreloadProgress::default();
    t.fs.preload("", 2, &p).await.unwrap();
    assert_eq!(fc.stats.verified.load(Ordering::Relaxed), 2, "good and bad");
    assert_eq!(p.files_done.load(Ordering::Relaxed), 3);
    // A copy that does not match what the store says it holds is never served again.
    t.c.bad_md5.store(true, Ordering::SeqCst);
    let ino = ino_of(&t.fs, "bad").await;
    let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    // Still the verified copy from the preload.
    assert_eq!(t.fs.read(h.fh, 0, 10).await.unwrap(), &data[..10]);
    t.fs.release(h.fh).await.unwrap();
    let ino2 = ino_of(&t.fs, "good").await;
    // Force a fresh download of "good" under the wrong checksum by dropping its copy.
    put(&t.mem, "good", &data).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let h = t.fs.open(ino2, libc::O_RDONLY).await.unwrap();
    let mut failed = None;
    for _ in 0..100 {
        match t.fs.read(h.fh, MIB as u64, 3).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        failed.map(|e| e.errno()),
        Some(libc::EIO),
        "a mismatched copy must fail reads"
    );
    assert_eq!(fc.stats.checksum_failures.load(Ordering::Relaxed), 1);
    t.fs.release(h.fh).await.unwrap();
    // With the store's checksum right again the next open downloads and serves it.
    t.c.bad_md5.store(false, Ordering::SeqCst);
    assert_eq!(read_seq(&t.fs, ino2, 65536).await.unwrap(), data);
}

#[test]
fn file_cache_directory_is_emptied_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("0000000000000001"), b"stale copy").unwrap();
    let mut cfg = FsConfig::for_tests(dir.path().to_path_buf());
    cfg.read_mode = ReadMode::FileCache;
    let _fs = Fs::new(Arc::new(MemoryBackend::new()), cfg).unwrap();
    assert_eq!(std::fs::read_dir(&files).unwrap().count(), 0);
}
