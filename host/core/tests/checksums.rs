//! Integrity end to end through the core, against the in-memory store, which checks the MD5
//! each upload carries (as the clouds do) and can damage bytes on the way or at rest:
//! a damaged upload is sent once more, and if it stays damaged the close fails and the data
//! is kept; a damaged stored object read to the end in `direct` or `block-cache` mode fails
//! the last read with EIO instead of being served as good, and so does a damaged object
//! downloaded by the file cache; each with the kind of checksum the store prefers (MD5, or
//! CRC32C as GCS).

mod common;

use std::sync::atomic::Ordering;

use blobmount_backend::checksum::{ChecksumKind, UPLOAD_CHECKS};
use blobmount_core::{Caller, Fs, FsError, ROOT_INO, ReadMode};
use common::{TestFs, put, read_seq, stored, test_fs};

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};
const PART: usize = 64 * 1024;
const MIB: usize = 1 << 20;

fn setup(mode: ReadMode) -> TestFs {
    test_fs(|cfg| {
        cfg.write_part_size = PART;
        cfg.read_mode = mode;
        cfg.read_block = 256 * 1024;
        cfg.read_ahead_max = 2 * MIB;
        cfg.read_memory = 64 * MIB;
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 4099) % 251) as u8 ^ seed)
        .collect()
}

/// The cache's `conflicts/` files.
fn kept(t: &TestFs) -> Vec<Vec<u8>> {
    match std::fs::read_dir(t.fs.config().cache_dir.join("conflicts")) {
        Ok(d) => d
            .flatten()
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect(),
        Err(_) => vec![],
    }
}

/// Create `name`, write `data` in `chunk`-byte writes and close; the flush's result.
async fn write_close(fs: &Fs, name: &str, data: &[u8], chunk: usize) -> Result<(), FsError> {
    let (_, h) = fs
        .create(ROOT_INO, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    for (i, c) in data.chunks(chunk).enumerate() {
        fs.write(h.fh, (i * chunk) as u64, c).await.unwrap();
    }
    let r = fs.flush(h.fh).await;
    let _ = fs.release(h.fh).await;
    r
}

async fn ino_of(fs: &Fs, name: &str) -> u64 {
    fs.lookup(ROOT_INO, name).await.unwrap().ino
}

#[tokio::test]
async fn a_damaged_whole_upload_is_sent_again_once() {
    let t = setup(ReadMode::BlockCache);
    let data = pattern(1000, 1);
    let before = UPLOAD_CHECKS.mismatches.load(Ordering::Relaxed);
    t.mem.set_corrupt_uploads(1);
    write_close(&t.fs, "small", &data, 1000).await.unwrap();
    assert_eq!(stored(&*t.mem, "small").await.unwrap(), data);
    assert!(UPLOAD_CHECKS.mismatches.load(Ordering::Relaxed) > before);
    assert!(kept(&t).is_empty());
}

#[tokio::test]
async fn a_whole_upload_damaged_every_time_is_not_acknowledged_and_is_kept() {
    let t = setup(ReadMode::BlockCache);
    let data = pattern(1000, 2);
    t.mem.set_corrupt_uploads(u64::MAX);
    let e = write_close(&t.fs, "small", &data, 1000).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    t.mem.set_corrupt_uploads(0);
    assert!(
        stored(&*t.mem, "small").await.is_none(),
        "nothing damaged landed"
    );
    assert_eq!(kept(&t), vec![data]);
}

#[tokio::test]
async fn a_streamed_upload_damaged_every_time_is_not_acknowledged_and_is_kept() {
    let t = setup(ReadMode::BlockCache);
    let data = pattern(10 * PART + 77, 3);
    // The parts go up while the file is written; they are damaged from the third one on.
    let (_, h) =
        t.fs.create(ROOT_INO, "ckpt", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    for (i, c) in data.chunks(PART).enumerate() {
        if i == 2 {
            t.mem.set_corrupt_uploads(u64::MAX);
        }
        t.fs.write(h.fh, (i * PART) as u64, c).await.unwrap();
    }
    let e = t.fs.flush(h.fh).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    let _ = t.fs.release(h.fh).await;
    t.mem.set_corrupt_uploads(0);
    assert!(stored(&*t.mem, "ckpt").await.is_none());
    assert_eq!(kept(&t), vec![data]);
}

#[tokio::test]
async fn a_streamed_upload_with_one_damaged_part_lands_whole() {
    let t = setup(ReadMode::BlockCache);
    let data = pattern(10 * PART + 77, 4);
    let (_, h) =
        t.fs.create(ROOT_INO, "ckpt", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    for (i, c) in data.chunks(PART).enumerate() {
        if i == 4 {
            t.mem.set_corrupt_uploads(1);
        }
        t.fs.write(h.fh, (i * PART) as u64, c).await.unwrap();
    }
    t.fs.flush(h.fh).await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    assert!(t.mem.counters.part.load(Ordering::SeqCst) >= 10);
    assert_eq!(stored(&*t.mem, "ckpt").await.unwrap(), data);
}

/// The kinds of checksum the core asked the store for, since the last call.
fn asked(t: &TestFs) -> Vec<ChecksumKind> {
    std::mem::take(&mut *t.c.sums_asked.lock().unwrap())
}

/// A stored object damaged at rest: read to the end in order, the last read is EIO (the
/// store's checksum of kind `kind` was recorded at upload); partial reads are served
/// unchecked.
async fn damaged_object_fails_at_eof(mode: ReadMode, kind: ChecksumKind) {
    let t = setup(mode);
    t.mem.set_checksum_kind(kind);
    let data = pattern(3 * MIB + 4321, 5);
    put(&t.mem, "obj", &data).await;
    let ino = ino_of(&t.fs, "obj").await;
    // Intact: read whole and checked, with one request for the store's MD5.
    assert_eq!(read_seq(&t.fs, ino, 128 * 1024).await.unwrap(), data);
    let s = &t.fs.stats;
    assert_eq!(s.reads_verified.load(Ordering::Relaxed), 1, "{mode:?}");
    assert_eq!(
        s.read_verify_requests.load(Ordering::Relaxed),
        1,
        "{mode:?}"
    );
    assert!(t.mem.corrupt_stored("obj", 2 * MIB as u64 + 17));
    let e = read_seq(&t.fs, ino, 128 * 1024).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO, "{mode:?}");
    assert_eq!(
        s.read_checksum_failures.load(Ordering::Relaxed),
        1,
        "{mode:?}"
    );
    assert_eq!(
        s.read_verify_requests.load(Ordering::Relaxed),
        2,
        "{mode:?}"
    );
    // A partial read cannot be checked: its bytes are served as they are.
    let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let b = t.fs.read(h.fh, 100, 1000).await.unwrap();
    assert_eq!(&b[..], &data[100..1100]);
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(
        s.read_verify_requests.load(Ordering::Relaxed),
        2,
        "{mode:?}"
    );
    // Only the kind the store prefers was asked for (one hasher ran, not two).
    assert_eq!(asked(&t), vec![kind, kind], "{mode:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reads_of_a_damaged_object_fail_at_the_end() {
    damaged_object_fails_at_eof(ReadMode::Direct, ChecksumKind::Md5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_cache_reads_of_a_damaged_object_fail_at_the_end() {
    damaged_object_fails_at_eof(ReadMode::BlockCache, ChecksumKind::Md5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reads_of_a_damaged_object_fail_at_the_end_by_crc32c() {
    damaged_object_fails_at_eof(ReadMode::Direct, ChecksumKind::Crc32c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_cache_reads_of_a_damaged_object_fail_at_the_end_by_crc32c() {
    damaged_object_fails_at_eof(ReadMode::BlockCache, ChecksumKind::Crc32c).await;
}

/// The file cache checks its download of an intact object (it is served) and of one
/// damaged at rest (its reads fail with EIO) against the store's checksum of kind `kind`.
async fn file_cache_download_of_a_damaged_object_fails(kind: ChecksumKind) {
    let t = setup(ReadMode::FileCache);
    t.mem.set_checksum_kind(kind);
    let fc = t.fs.file_cache.clone().unwrap();
    let data = pattern(3 * MIB + 4321, 7);
    put(&t.mem, "good", &data).await;
    put(&t.mem, "bad", &data).await;
    assert!(t.mem.corrupt_stored("bad", MIB as u64 + 3));
    let good = ino_of(&t.fs, "good").await;
    assert_eq!(read_seq(&t.fs, good, 128 * 1024).await.unwrap(), data);
    // The check runs after the last chunk is on disk.
    for _ in 0..200 {
        if fc.stats.verified.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(fc.stats.verified.load(Ordering::Relaxed), 1, "{kind:?}");
    assert_eq!(asked(&t), vec![kind]);
    let bad = ino_of(&t.fs, "bad").await;
    let h = t.fs.open(bad, libc::O_RDONLY).await.unwrap();
    let mut failed = None;
    for _ in 0..200 {
        match t.fs.read(h.fh, data.len() as u64 - 10, 10).await {
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            Err(e) => {
                failed = Some(e.errno());
                break;
            }
        }
    }
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(
        failed,
        Some(libc::EIO),
        "{kind:?}: a damaged copy must fail reads"
    );
    assert_eq!(fc.stats.checksum_failures.load(Ordering::Relaxed), 1);
    assert_eq!(fc.stats.verified.load(Ordering::Relaxed), 1);
    assert_eq!(asked(&t), vec![kind]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cache_download_of_a_damaged_object_fails_by_md5() {
    file_cache_download_of_a_damaged_object_fails(ChecksumKind::Md5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cache_download_of_a_damaged_object_fails_by_crc32c() {
    file_cache_download_of_a_damaged_object_fails(ChecksumKind::Crc32c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_slightly_out_of_order_are_still_checked() {
    let t = setup(ReadMode::BlockCache);
    let data = pattern(MIB, 6);
    put(&t.mem, "obj", &data).await;
    assert!(t.mem.corrupt_stored("obj", 5));
    let ino = ino_of(&t.fs, "obj").await;
    let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let chunk = 128 * 1024;
    // Pairs of reads swapped, as concurrent kernel requests may arrive.
    let mut last = None;
    for pair in (0..MIB / chunk).collect::<Vec<_>>().chunks(2) {
        for &i in pair.iter().rev() {
            last = Some(t.fs.read(h.fh, (i * chunk) as u64, chunk as u32).await);
        }
    }
    t.fs.release(h.fh).await.unwrap();
    // The read that completed the bytes (the first of the last pair) is the one that fails.
    let _ = last;
    assert_eq!(t.fs.stats.read_checksum_failures.load(Ordering::Relaxed), 1);
}
