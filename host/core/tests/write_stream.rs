//! Streaming writes: parts go up while a new file is written in order, nothing is visible
//! before the commit, and every way out of streaming (out-of-order write, failed part,
//! conflict) ends with the right object or a reported error, never a corrupt one.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, Precondition, PutMeta};
use blobmount_core::{Caller, Fs, ROOT_INO};
use bytes::Bytes;
use common::test_fs;

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};
const PART: usize = 64 * 1024;

fn setup(memory: usize) -> (Arc<MemoryBackend>, Arc<Fs>, tempfile::TempDir) {
    let t = test_fs(|cfg| {
        cfg.write_part_size = PART;
        cfg.read_memory = memory;
    });
    (t.mem, t.fs, t.dir)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn stored(mem: &MemoryBackend, key: &str) -> Option<Bytes> {
    mem.get_range(key, 0..u64::MAX, None).await.ok()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a == b
}

/// The cache's `conflicts/` holds exactly one file, with `data`.
fn assert_kept_once(cache: &std::path::Path, data: &[u8]) {
    let kept: Vec<_> = std::fs::read_dir(cache.join("conflicts"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(same(&std::fs::read(kept[0].path()).unwrap(), data));
}

#[tokio::test]
async fn a_file_written_in_order_goes_up_in_parts_and_appears_only_at_close() {
    let (mem, fs, _d) = setup(64 * 1024 * 1024);
    let data = pattern(10 * PART + 1234);
    let (_, h) = fs
        .create(ROOT_INO, "ckpt.bin", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    for (i, chunk) in data.chunks(32 * 1024).enumerate() {
        fs.write(h.fh, (i * 32 * 1024) as u64, chunk).await.unwrap();
    }
    // Most of it is already sent, but nothing is visible yet.
    assert_eq!(fs.stats.parts_sent.load(Ordering::Relaxed), 10);
    assert!(mem.counters.part.load(Ordering::SeqCst) >= 6);
    assert!(stored(&mem, "ckpt.bin").await.is_none());
    fs.flush(h.fh).await.unwrap();
    fs.release(h.fh).await.unwrap();
    let got = stored(&mem, "ckpt.bin").await.unwrap();
    assert!(same(&got, &data), "content differs");
    assert_eq!(mem.counters.part.load(Ordering::SeqCst), 11);
    assert_eq!(mem.counters.complete.load(Ordering::SeqCst), 1);
    assert_eq!(fs.stats.streamed_uploads.load(Ordering::Relaxed), 1);
    // The memory for parts was given back.
    assert_eq!(fs.budget.in_use(), 0);
}

#[tokio::test]
async fn parts_are_kept_as_written_whatever_the_write_sizes() {
    let (mem, fs, _d) = setup(64 * 1024 * 1024);
    let data = pattern(7 * PART + 4321);
    let (_, h) = fs
        .create(ROOT_INO, "odd.bin", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    // Writes that straddle part boundaries.
    for (i, chunk) in data.chunks(10_007).enumerate() {
        fs.write(h.fh, (i * 10_007) as u64, chunk).await.unwrap();
    }
    fs.release(h.fh).await.unwrap();
    assert!(same(&stored(&mem, "odd.bin").await.unwrap(), &data));
    assert_eq!(mem.counters.part.load(Ordering::SeqCst), 8);
    assert_eq!(
        fs.stats.parts_read_back.load(Ordering::Relaxed),
        0,
        "every part was sent from memory"
    );
    assert_eq!(fs.budget.in_use(), 0);
}

#[tokio::test]
async fn an_out_of_order_write_falls_back_to_a_whole_upload() {
    let (mem, fs, _d) = setup(64 * 1024 * 1024);
    let mut data = pattern(6 * PART);
    let (_, h) = fs
        .create(ROOT_INO, "f", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, &data[..4 * PART]).await.unwrap();
    assert_eq!(fs.stats.parts_sent.load(Ordering::Relaxed), 4);
    // Rewrite bytes that were already sent, then finish.
    data[100..200].fill(0xEE);
    fs.write(h.fh, 100, &data[100..200]).await.unwrap();
    fs.write(h.fh, 4 * PART as u64, &data[4 * PART..])
        .await
        .unwrap();
    fs.release(h.fh).await.unwrap();
    assert!(same(&stored(&mem, "f").await.unwrap(), &data));
    assert_eq!(mem.counters.complete.load(Ordering::SeqCst), 0);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(mem.counters.abort.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failed_parts_fall_back_and_a_failing_store_is_an_error_at_close() {
    // Parts fail, the store still takes whole objects: the file arrives intact.
    let (mem, fs, _d) = setup(64 * 1024 * 1024);
    mem.set_fail_parts_after(Some(2));
    let data = pattern(8 * PART + 5);
    let (_, h) = fs
        .create(ROOT_INO, "ok", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, &data).await.unwrap();
    fs.release(h.fh).await.unwrap();
    assert!(same(&stored(&mem, "ok").await.unwrap(), &data));

    // Parts fail and so does everything else: close reports it, nothing is committed, and
    // the data is kept.
    let (mem, fs, d) = setup(64 * 1024 * 1024);
    mem.set_fail_parts_after(Some(2));
    let (_, h) = fs
        .create(ROOT_INO, "doomed", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, &data).await.unwrap();
    mem.set_fail_writes(true);
    assert_eq!(fs.flush(h.fh).await.unwrap_err().errno(), libc::EIO);
    assert!(fs.release(h.fh).await.is_err());
    assert!(stored(&mem, "doomed").await.is_none());
    assert_kept_once(d.path(), &data);
}

#[tokio::test]
async fn a_file_created_meanwhile_by_another_client_wins_and_ours_is_kept() {
    let (mem, fs, d) = setup(64 * 1024 * 1024);
    let data = pattern(5 * PART);
    let (_, h) = fs
        .create(ROOT_INO, "race", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, &data).await.unwrap();
    mem.put(
        "race",
        Bytes::from_static(b"theirs"),
        &PutMeta::default(),
        &Precondition::None,
    )
    .await
    .unwrap();
    assert_eq!(fs.flush(h.fh).await.unwrap_err().errno(), libc::ESTALE);
    let _ = fs.release(h.fh).await;
    assert_eq!(&stored(&mem, "race").await.unwrap()[..], b"theirs");
    assert_kept_once(d.path(), &data);
}

#[tokio::test]
async fn parts_stay_within_the_memory_budget() {
    // Room for two parts: the writer waits for parts in flight instead of growing.
    let (mem, fs, _d) = setup(2 * PART);
    let data = pattern(20 * PART);
    let (_, h) = fs
        .create(ROOT_INO, "big", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    for (i, chunk) in data.chunks(PART / 2).enumerate() {
        fs.write(h.fh, (i * PART / 2) as u64, chunk).await.unwrap();
    }
    fs.release(h.fh).await.unwrap();
    assert!(same(&stored(&mem, "big").await.unwrap(), &data));
    assert!(
        fs.budget.peak() <= 2 * PART as u64,
        "peak {}",
        fs.budget.peak()
    );
    // With so little memory some parts could not be kept as they were written.
    assert!(fs.stats.parts_read_back.load(Ordering::Relaxed) > 0);
    assert_eq!(mem.counters.complete.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn fsync_commits_and_later_writes_go_up_as_an_append() {
    let (mem, fs, _d) = setup(64 * 1024 * 1024);
    let mut data = pattern(3 * PART + 7);
    let (_, h) = fs
        .create(ROOT_INO, "log", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, &data).await.unwrap();
    fs.fsync(h.fh).await.unwrap();
    assert!(same(&stored(&mem, "log").await.unwrap(), &data));
    let more = pattern(PART);
    fs.write(h.fh, data.len() as u64, &more).await.unwrap();
    data.extend_from_slice(&more);
    fs.release(h.fh).await.unwrap();
    assert!(same(&stored(&mem, "log").await.unwrap(), &data));
    assert_eq!(mem.counters.complete.load(Ordering::SeqCst), 1);
    // The store kept what the fsync committed: only the bytes after it went up again.
    assert_eq!(mem.counters.append.load(Ordering::SeqCst), 1);
    assert_eq!(
        mem.counters.append_bytes.load(Ordering::SeqCst),
        PART as u64
    );
}

#[tokio::test]
async fn truncating_an_existing_file_to_zero_streams_its_rewrite() {
    let (mem, fs, _d) = setup(64 * 1024 * 1024);
    mem.put(
        "old",
        Bytes::from(pattern(10)),
        &PutMeta::default(),
        &Precondition::None,
    )
    .await
    .unwrap();
    let a = fs.lookup(ROOT_INO, "old").await.unwrap();
    let h = fs
        .open(a.ino, libc::O_WRONLY | libc::O_TRUNC)
        .await
        .unwrap();
    let data = pattern(4 * PART + 3);
    fs.write(h.fh, 0, &data).await.unwrap();
    fs.release(h.fh).await.unwrap();
    assert!(same(&stored(&mem, "old").await.unwrap(), &data));
    assert_eq!(mem.counters.complete.load(Ordering::SeqCst), 1);
}
