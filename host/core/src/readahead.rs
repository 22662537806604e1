//! Streaming reads: a sequential reader gets fixed-size blocks fetched ahead of it, several
//! in parallel, within one global memory budget; a random reader gets small direct ranges.
//!
//! Why: one ranged GET at a time leaves a store's per-request latency on the critical path
//! and cannot use more than one connection's bandwidth; training jobs read large files
//! front to back. Blocks are pinned to the ETag seen at open (If-Match), so a file replaced
//! mid-read fails with ESTALE instead of mixing versions. Memory is bounded by
//! [`MemoryBudget`]: prefetch only takes what is free, and a read that cannot get budget
//! falls back to fetching just the bytes asked for.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use blobmount_backend::BackendError;
use bytes::{Bytes, BytesMut};

use crate::blockpool::Shared;
use crate::blockpool::Source;
use crate::budget::KIB;
use crate::readpath::ReadPath;

/// Which bytes of a stream have been read, when reads arrive out of order: everything below
/// `done`, plus the ranges in `beyond`. Blocks below `done` are let go; those above may still
/// be wanted by a read the kernel sent earlier but that reaches us later.
#[derive(Default)]
struct Progress {
    done: u64,
    beyond: BTreeMap<u64, u64>,
}

/// Most ranges remembered past a gap (a reader that skips bytes for good would otherwise
/// grow the map; the gap is then given up on).
const MAX_BEYOND: usize = 64;

impl Progress {
    fn reset(&mut self, at: u64) {
        self.done = at;
        self.beyond.clear();
    }

    fn record(&mut self, range: Range<u64>) {
        if range.start > self.done {
            let e = self.beyond.entry(range.start).or_insert(range.end);
            *e = (*e).max(range.end);
            if self.beyond.len() > MAX_BEYOND
                && let Some((&s, _)) = self.beyond.first_key_value()
            {
                self.done = s;
            }
        } else {
            self.done = self.done.max(range.end);
        }
        self.absorb();
    }

    /// Give up on bytes below `at` (they were skipped, or are too far behind to wait for).
    fn at_least(&mut self, at: u64) {
        self.done = self.done.max(at);
        self.absorb();
    }

    fn absorb(&mut self) {
        while let Some((&s, &e)) = self.beyond.first_key_value() {
            if s > self.done {
                break;
            }
            self.beyond.remove(&s);
            self.done = self.done.max(e);
        }
    }
}

/// The read state of one open handle.
pub struct Stream {
    block: u64,
    max_ahead: usize,
    blocks: BTreeMap<u64, Arc<Shared>>,
    /// The furthest point read: where the next sequential read starts.
    next: u64,
    /// What has been read below `next`.
    progress: Progress,
    /// Consecutive sequential reads (ramps the prefetch depth up).
    streak: usize,
    /// The version the held blocks belong to.
    etag: Option<String>,
}

impl Stream {
    pub fn new(block: u64, max_ahead: usize) -> Self {
        Stream {
            block: block.max(64 * KIB),
            max_ahead,
            blocks: BTreeMap::new(),
            next: 0,
            progress: Progress::default(),
            streak: 0,
            etag: None,
        }
    }

    fn block_range(&self, idx: u64, size: u64) -> Range<u64> {
        let start = idx * self.block;
        start..(start + self.block).min(size)
    }

    /// Start fetching block `idx` (or join another handle's fetch of it) if it is not held
    /// yet. False when there is no budget for it.
    fn start(&mut self, src: &Source<'_>, idx: u64) -> bool {
        if self.blocks.contains_key(&idx) {
            return true;
        }
        let range = self.block_range(idx, src.size);
        if range.is_empty() {
            return false;
        }
        match src.pool.block(src, idx, range) {
            Some(b) => {
                self.blocks.insert(idx, b);
                true
            }
            None => false,
        }
    }

    /// Bytes of block `idx` (fetched or awaited).
    async fn bytes_of(&mut self, src: &Source<'_>, idx: u64) -> Result<Bytes, BackendError> {
        let Some(b) = self.blocks.get(&idx).cloned() else {
            return Err(BackendError::Other("read-ahead block missing".into()));
        };
        let r = b.bytes().await;
        if r.is_err() {
            src.pool.forget(&b);
            self.blocks.remove(&idx);
        }
        r
    }

    fn drop_blocks(&mut self, keep: impl Fn(u64) -> bool) {
        self.blocks.retain(|i, _| keep(*i));
    }

    /// Read up to `len` bytes at `offset` (clipped to the object's size).
    pub async fn read_at(
        &mut self,
        src: &Source<'_>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, BackendError> {
        if self.etag.as_deref() != src.etag {
            // The handle now reads another version (re-pinned after an upload or a move):
            // nothing held belongs to it.
            self.drop_blocks(|_| false);
            self.streak = 0;
            self.etag = src.etag.map(str::to_string);
        }
        let end = (offset + len).min(src.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let first = offset / self.block;
        let last = (end - 1) / self.block;
        let held = (first..=last).all(|i| self.blocks.contains_key(&i));
        // The kernel's read-ahead sends several reads of a handle at once (up to
        // `kernel-read-ahead-kib`), and they reach us in any order: a read a little behind
        // the furthest point read, or a little past it, is still the same stream. Treating
        // it as a seek dropped every prefetched block and restarted the ramp.
        let window = (self.max_ahead as u64 + 2) * self.block;
        let in_stream =
            self.streak > 0 && offset + window >= self.next && offset <= self.next + window;
        let sequential = offset == self.next || in_stream;
        if !sequential && !held {
            // Random access: forget the stream, fetch just what is asked.
            self.drop_blocks(|_| false);
            self.streak = 0;
            self.next = end;
            self.progress.reset(end);
            return src.get(offset..end).await;
        }
        self.progress.record(offset..end);
        if offset < self.next && !held {
            // A late read whose blocks are already let go: serve it as asked and leave the
            // stream (its blocks, depth and position) alone.
            return src.get(offset..end).await;
        }
        self.streak = if sequential { self.streak + 1 } else { 1 };
        // Blocks between the furthest read so far and this one (a read that overtook
        // others) are started too, so the ones it overtook find theirs.
        let gap_from = (self.next / self.block).min(first);
        let front = self.next.max(end);
        let front_block = (front - 1) / self.block;
        // Blocks wholly read are done with; those with bytes still unread (by reads this one
        // overtook) stay, up to a window behind the front.
        self.progress
            .at_least(front.saturating_sub(window).min(offset));
        let keep_from = (self.progress.done / self.block).min(gap_from).min(first);
        self.drop_blocks(|i| i >= keep_from);
        let mut have_all = true;
        for i in first..=last {
            have_all &= self.start(src, i);
        }
        if !have_all {
            // No budget for the blocks themselves: fetch exactly the bytes asked for.
            self.next = front;
            return src.get(offset..end).await;
        }
        // Ramp up: one more block ahead per sequential read, up to the maximum.
        let ahead = self.streak.saturating_sub(1).min(self.max_ahead) as u64;
        for i in gap_from..=front_block + ahead {
            if !self.start(src, i) {
                break;
            }
        }
        self.next = front;
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for i in first..=last {
            let data = self.bytes_of(src, i).await?;
            let r = self.block_range(i, src.size);
            let s = offset.max(r.start) - r.start;
            let e = end.min(r.end) - r.start;
            if (data.len() as u64) < e {
                // The object is shorter than when it was opened.
                return Err(BackendError::PreconditionFailed {
                    key: src.key.to_string(),
                });
            }
            if first == last {
                return Ok(data.slice(s as usize..e as usize));
            }
            out.extend_from_slice(&data[s as usize..e as usize]);
        }
        Ok(out.freeze())
    }
}

#[async_trait]
impl ReadPath for Stream {
    async fn read(
        &mut self,
        src: &Source<'_>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, BackendError> {
        self.read_at(src, offset, len).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blobmount_backend::memory::MemoryBackend;
    use blobmount_backend::{Backend, Precondition, PutMeta};
    use std::sync::atomic::Ordering;

    use crate::blockpool::BlockPool;
    use crate::budget::MemoryBudget;

    async fn object(len: usize) -> (Arc<dyn Backend>, Vec<u8>, Option<String>) {
        let mem = MemoryBackend::new();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let out = mem
            .put(
                "o",
                Bytes::from(data.clone()),
                &PutMeta::default(),
                &Precondition::None,
            )
            .await
            .unwrap();
        (Arc::new(mem), data, out.etag)
    }

    #[tokio::test]
    async fn sequential_and_random_reads_return_the_right_bytes_within_budget() {
        let (backend, data, etag) = object(1_000_000).await;
        let budget = MemoryBudget::new(300 * KIB);
        let pool = BlockPool::new(budget.clone());
        let src = Source {
            backend: &backend,
            key: "o",
            etag: etag.as_deref(),
            size: data.len() as u64,
            pool: &pool,
        };
        let mut s = Stream::new(64 * KIB, 8);
        let mut off = 0u64;
        while off < data.len() as u64 {
            let b = s.read_at(&src, off, 10_000).await.unwrap();
            assert_eq!(&b[..], &data[off as usize..off as usize + b.len()]);
            off += b.len() as u64;
        }
        for &(o, l) in &[
            (500_000u64, 4096u64),
            (3, 100),
            (999_990, 100),
            (70_000, 200_000),
        ] {
            let b = s.read_at(&src, o, l).await.unwrap();
            let e = (o + l).min(data.len() as u64) as usize;
            assert_eq!(&b[..], &data[o as usize..e], "at {o}");
        }
        assert!(
            budget.peak() <= budget.total(),
            "{} > {}",
            budget.peak(),
            budget.total()
        );
        assert!(budget.peak() > 64 * KIB, "prefetch never ran");
        drop(s);
        assert_eq!(budget.in_use(), 0);
    }

    /// Read a `len`-byte object through a stream of `block`-byte blocks in 128 KiB chunks, in
    /// the chunk order `order` gives for the chunk count; checks every read's bytes and
    /// returns (GETs made, blocks in the object).
    async fn gets_for_chunks_in(len: usize, block: u64, order: fn(u64) -> Vec<u64>) -> (u64, u64) {
        let mem = Arc::new(MemoryBackend::new());
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let etag = mem
            .put(
                "o",
                Bytes::from(data.clone()),
                &PutMeta::default(),
                &Precondition::None,
            )
            .await
            .unwrap()
            .etag;
        let backend: Arc<dyn Backend> = mem.clone();
        let pool = BlockPool::new(MemoryBudget::new(64 * 1024 * KIB));
        let src = Source {
            backend: &backend,
            key: "o",
            etag: etag.as_deref(),
            size: data.len() as u64,
            pool: &pool,
        };
        let mut s = Stream::new(block, 4);
        let chunk = 128 * KIB;
        for i in order((data.len() as u64).div_ceil(chunk)) {
            let off = i * chunk;
            let b = s.read_at(&src, off, chunk).await.unwrap();
            let e = (off + chunk).min(data.len() as u64) as usize;
            assert!(b[..] == data[off as usize..e], "bytes at {off}");
        }
        let gets = mem.counters.get.load(Ordering::SeqCst);
        (gets, (data.len() as u64).div_ceil(block))
    }

    /// The kernel's read-ahead delivers reads of one handle out of order: a read a little
    /// behind the furthest one must not reset the stream into small serial GETs.
    #[tokio::test]
    async fn reads_delivered_out_of_order_keep_the_stream() {
        // In order at first, then every pair swapped across a block boundary:
        // 0 1 2 4 3 6 5 8 7 ... (two chunks per block: 3 ends block 1, 4 starts block 2).
        let (gets, blocks) = gets_for_chunks_in(4_000_000, 256 * KIB, |n| {
            let mut order: Vec<u64> = vec![0, 1, 2];
            let mut k = 3;
            while k < n {
                if k + 1 < n {
                    order.push(k + 1);
                }
                order.push(k);
                k += 2;
            }
            order
        })
        .await;
        assert!(
            gets <= blocks + 3,
            "{gets} GETs for {blocks} blocks: the stream was reset by late reads"
        );
    }

    /// With a deep kernel read-ahead, several reads of one handle are in flight and a later
    /// one often arrives first: reads that overtake others stay in the stream too.
    #[tokio::test]
    async fn reads_that_overtake_others_keep_the_stream() {
        // Two in order, then groups of eight chunks (two blocks) delivered backwards.
        let (gets, blocks) = gets_for_chunks_in(6_000_000, 512 * KIB, |n| {
            let mut order: Vec<u64> = vec![0, 1];
            let mut k = 2;
            while k < n {
                let g = (k + 8).min(n);
                order.extend((k..g).rev());
                k = g;
            }
            order
        })
        .await;
        assert!(
            gets <= blocks + 2,
            "{gets} GETs for {blocks} blocks: overtaking reads reset the stream"
        );
    }

    #[tokio::test]
    async fn blocks_of_another_version_are_never_served() {
        let (backend, data, etag) = object(200_000).await;
        let budget = MemoryBudget::new(10 * 1024 * KIB);
        let pool = BlockPool::new(budget.clone());
        let mut s = Stream::new(64 * KIB, 4);
        let src = Source {
            backend: &backend,
            key: "o",
            etag: etag.as_deref(),
            size: data.len() as u64,
            pool: &pool,
        };
        assert_eq!(&s.read_at(&src, 0, 1000).await.unwrap()[..], &data[..1000]);
        let new: Vec<u8> = vec![7; 200_000];
        let out = backend
            .put(
                "o",
                Bytes::from(new.clone()),
                &PutMeta::default(),
                &Precondition::None,
            )
            .await
            .unwrap();
        // Re-pinned to the new version: the block held for the old one must not answer.
        let src = Source {
            etag: out.etag.as_deref(),
            ..src
        };
        assert_eq!(
            &s.read_at(&src, 1000, 1000).await.unwrap()[..],
            &new[1000..2000]
        );
    }

    #[tokio::test]
    async fn a_changed_object_gives_precondition_failed() {
        let (backend, data, etag) = object(400_000).await;
        let budget = MemoryBudget::new(10 * 1024 * KIB);
        let pool = BlockPool::new(budget.clone());
        let src = Source {
            backend: &backend,
            key: "o",
            etag: etag.as_deref(),
            size: data.len() as u64,
            pool: &pool,
        };
        let mut s = Stream::new(64 * KIB, 1);
        s.read_at(&src, 0, 1000).await.unwrap();
        backend
            .put(
                "o",
                Bytes::from_static(b"new"),
                &PutMeta::default(),
                &Precondition::None,
            )
            .await
            .unwrap();
        let mut failed = false;
        for i in 1..10 {
            if let Err(e) = s.read_at(&src, i * 64 * KIB, 1000).await {
                assert!(matches!(e, BackendError::PreconditionFailed { .. }), "{e}");
                failed = true;
                break;
            }
        }
        assert!(failed, "reads after the change must fail, not mix versions");
    }
}
