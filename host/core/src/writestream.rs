//! Streaming writes: a new (or truncated) file written in order from offset 0 is uploaded in
//! parts while it is being written, so `close` only sends the tail and commits.
//!
//! Why: the checkpoint case. Staging the whole file and uploading it at `close` makes the
//! writer wait for the full upload after it has written everything; streaming overlaps the
//! two. The staging file stays the source of truth (every byte is written there first), so
//! an out-of-order write, a truncate or a failed part simply abandons the
//! upload (aborted in the background; nothing was committed) and `close` uploads the staged
//! file as before: falling back never loses data. Parts are read back from the staging file
//! (hot in the page cache) into buffers charged to the same memory budget as read-ahead
//! blocks; with no budget free, a part waits for one in flight or is left for later. Nothing
//! is visible in the store before the commit on `flush`/`fsync`/`close`; the commit is
//! conditional like any upload (ESTALE and `conflicts/` on a conflict).
//!
//! A part is normally also kept in memory as it is written (`StreamWrite::pending`, charged to
//! the budget from its first byte), so sending it costs no read back from the staging file:
//! on two cores shared with the store's emulator that read and zeroing the buffer were a sixth
//! of the daemon's CPU in a sequential write. Without budget at a part's start, the part is
//! read back as before.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;

use blobmount_backend::{BackendError, PartUpload, Precondition, PutMeta, PutOutcome};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::attr;
use crate::budget::Charge;
use std::sync::Arc;

use blobmount_backend::Backend;

use crate::budget::MemoryBudget;
use crate::config::FsConfig;
use crate::error::FsResult;
use crate::types::FsStats;

/// What streaming needs from the open-file layer that runs it (`crate::files::Files`).
pub(crate) trait StreamHost {
    fn backend(&self) -> &Arc<dyn Backend>;
    fn cfg(&self) -> &FsConfig;
    fn budget(&self) -> &Arc<MemoryBudget>;
    fn stats(&self) -> &FsStats;
    /// The key and metadata an upload of `ino` starts with now (`upload_id` included).
    fn upload_target(&self, ino: u64, upload_id: &str) -> FsResult<(String, PutMeta)>;
}

/// S3 allows 10,000 parts; beyond this many the file is uploaded whole at close.
const MAX_PARTS: u64 = 9_000;

/// Streaming state of one open file (inside its `OpenFile`, under its lock).
#[derive(Default)]
pub(crate) struct StreamWrite {
    /// Every write so far went in order from offset 0 into a new or truncated file.
    eligible: bool,
    /// End of the data written in order.
    seq_end: u64,
    /// Bytes handed to parts: parts cover `[0, sent)`.
    sent: u64,
    parts: u64,
    upload: Option<Box<dyn PartUpload>>,
    /// Condition the upload was started with (GCS fixes it then; it cannot change either).
    cond: Option<Precondition>,
    in_flight: VecDeque<JoinHandle<Result<(), BackendError>>>,
    /// The next part as it is written: bytes `[sent, sent + len)` kept in memory (charged to
    /// the budget), so sending it needs no read back from the staging file. `None` when no
    /// budget was free as the part began: it is then read back at send time.
    pending: Option<(BytesMut, Charge)>,
}

impl StreamWrite {
    /// State for a file that starts empty (created, or truncated to 0) when `on`.
    pub fn starting_empty(on: bool) -> Self {
        let mut s = StreamWrite::default();
        s.eligible = on;
        s
    }

    pub fn is_active(&self) -> bool {
        self.upload.is_some()
    }
}

impl Drop for StreamWrite {
    fn drop(&mut self) {
        // An upload still open here was never committed (the file was unlinked, or its last
        // flush failed): abort it so the store does not keep its parts.
        if let Some(up) = self.upload.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            for h in self.in_flight.drain(..) {
                h.abort();
            }
            rt.spawn(async move {
                let _ = up.abort().await;
            });
        }
    }
}

/// How far [`StreamWrite::send_full_parts`] got.
enum Sent {
    All,
    /// No memory free for the next part now.
    Blocked,
    /// Streaming was given up (the file is uploaded whole at close).
    GaveUp,
}

/// Metadata for a streamed upload: the mtime is left to the store (the commit time), since
/// writes go on after the upload starts.
fn stream_meta(pm: &PutMeta) -> PutMeta {
    let mut m = pm.clone();
    m.metadata.remove(attr::META_MTIME);
    m
}

impl StreamWrite {
    /// A fresh streaming state for a file that starts empty (streaming when configured).
    pub(crate) fn for_new_file(cfg: &FsConfig) -> StreamWrite {
        StreamWrite::starting_empty(cfg.write_streaming && cfg.write_part_size > 0)
    }

    /// Stop streaming this file: the upload (if any) is aborted in the background and the
    /// file will be uploaded whole at the next flush.
    pub(crate) fn cancel(&mut self, why: &str) {
        if self.eligible || self.upload.is_some() {
            debug!(why, parts = self.parts, "streaming upload abandoned");
        }
        self.eligible = false;
        self.pending = None;
        for h in self.in_flight.drain(..) {
            h.abort();
        }
        if let Some(up) = self.upload.take() {
            tokio::spawn(async move {
                if let Err(e) = up.abort().await {
                    debug!(error = %e, "aborting an abandoned upload failed (the store discards it later)");
                }
            });
        }
    }

    /// After `data` was written at `offset` into the staging file `file` (the open file's
    /// lock is held): keep streaming if the write was in order, and send every full part.
    /// `cond` is what the upload would be conditional on now. Never fails the write: any
    /// problem falls back to uploading at close.
    pub(crate) async fn after_write(
        &mut self,
        f: &impl StreamHost,
        ino: u64,
        file: &std::fs::File,
        (offset, data): (u64, &[u8]),
        upload: (&Precondition, &str),
    ) {
        if !self.eligible {
            return;
        }
        if offset != self.seq_end {
            self.cancel("write out of order");
            return;
        }
        let part = f.cfg().write_part_size as u64;
        // The write in pieces that each end at a part boundary (or hold the rest), so every
        // part can be kept in memory from its first byte.
        let mut rest = data;
        let mut blocked = false;
        while !rest.is_empty() {
            let at = self.seq_end - self.sent;
            let n = if at < part {
                (part - at).min(rest.len() as u64) as usize
            } else {
                rest.len()
            };
            self.keep_pending(f, &rest[..n], part);
            self.seq_end += n as u64;
            rest = &rest[n..];
            if !blocked {
                match self.send_full_parts(f, ino, file, upload).await {
                    Sent::All => {}
                    // No memory now: later parts are sent at a later write or at close.
                    Sent::Blocked => blocked = true,
                    Sent::GaveUp => return,
                }
            }
        }
    }

    /// Send every full part written so far (starting the upload at the first).
    async fn send_full_parts(
        &mut self,
        f: &impl StreamHost,
        ino: u64,
        file: &std::fs::File,
        (cond, upload_id): (&Precondition, &str),
    ) -> Sent {
        let part = f.cfg().write_part_size as u64;
        while self.seq_end - self.sent >= part {
            if self.parts >= MAX_PARTS {
                self.cancel("too many parts");
                return Sent::GaveUp;
            }
            if self.upload.is_none() {
                let Ok((key, pm)) = f.upload_target(ino, upload_id) else {
                    self.cancel("file vanished");
                    return Sent::GaveUp;
                };
                let meta = stream_meta(&pm);
                match f.backend().clone().start_upload(&key, &meta, cond).await {
                    Ok(Some(up)) => {
                        self.upload = Some(up);
                        self.cond = Some(cond.clone());
                    }
                    Ok(None) => {
                        // The store has no uploads in parts.
                        self.eligible = false;
                        self.pending = None;
                        return Sent::GaveUp;
                    }
                    Err(e) => {
                        warn!(key, error = %e, "could not start a streaming upload; the file is uploaded at close");
                        self.cancel("start failed");
                        return Sent::GaveUp;
                    }
                }
            }
            if !self.send_next_part(f, file, part).await {
                return if self.eligible {
                    Sent::Blocked
                } else {
                    Sent::GaveUp
                };
            }
        }
        Sent::All
    }

    /// Send the next `len` bytes as a part: the buffer filled while writing when it holds
    /// them all, else a read back from the staging file into newly charged memory. `false`
    /// when it was not sent (no memory now, or streaming was given up).
    async fn send_next_part(
        &mut self,
        f: &impl StreamHost,
        file: &std::fs::File,
        len: u64,
    ) -> bool {
        // A buffer without the whole part (its start was not kept) is dropped: read back.
        if let Some((buf, charge)) = self.pending.take()
            && buf.len() as u64 == len
        {
            // Wait for a slot as a read-back part would (bounds the parts in flight).
            while self.in_flight.len() >= f.cfg().write_parts_in_flight.max(1) {
                let Some(h) = self.in_flight.pop_front() else {
                    break;
                };
                if !matches!(h.await, Ok(Ok(()))) {
                    self.cancel("part upload failed");
                    return false;
                }
            }
            return self.dispatch_part(f, buf.freeze(), charge);
        }
        let Some(charge) = self.part_budget(f, len).await else {
            return false; // no memory free now: sent at a later write or at close
        };
        self.send_part(f, file, len, charge).await
    }

    /// Copy the bytes of an in-order write that belong to the part being filled into its
    /// buffer (starting one, if budget is free, when the write begins a part). Bytes beyond
    /// the part stay in the staging file only: the buffer is started at part boundaries.
    fn keep_pending(&mut self, f: &impl StreamHost, data: &[u8], part: u64) {
        let at = self.seq_end - self.sent; // where `data` starts within the part being filled
        if self.pending.is_none() && at == 0 && part > 0 {
            self.pending = f
                .budget()
                .try_take(part)
                .map(|c| (BytesMut::with_capacity(part as usize), c));
        }
        let Some((buf, _)) = self.pending.as_mut() else {
            return;
        };
        if buf.len() as u64 != at {
            self.pending = None; // cannot happen for in-order writes; be safe
            return;
        }
        let room = (part - at).min(data.len() as u64) as usize;
        buf.extend_from_slice(&data[..room]);
    }

    /// Memory for one part: waits for parts in flight while the budget is full and there are
    /// any (also bounding parts in flight); `None` when none is free.
    async fn part_budget(&mut self, f: &impl StreamHost, len: u64) -> Option<Charge> {
        loop {
            if self.in_flight.len() < f.cfg().write_parts_in_flight.max(1)
                && let Some(c) = f.budget().try_take(len)
            {
                return Some(c);
            }
            let h = self.in_flight.pop_front()?;
            if !matches!(h.await, Ok(Ok(()))) {
                self.cancel("part upload failed");
                return None;
            }
        }
    }

    /// Read the next `len` bytes after `sent` from the staging file and send them as a part.
    async fn send_part(
        &mut self,
        f: &impl StreamHost,
        file: &std::fs::File,
        len: u64,
        charge: Charge,
    ) -> bool {
        let mut buf = vec![0u8; len as usize];
        // A whole part (megabytes) read back: off the async workers.
        let sent = self.sent;
        if crate::blocking::run(|| file.read_exact_at(&mut buf, sent)).is_err() {
            self.cancel("staging read failed");
            return false;
        }
        f.stats()
            .parts_read_back
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dispatch_part(f, Bytes::from(buf), charge)
    }

    /// Hand the next part's bytes to the upload; the charge is returned when it has landed.
    fn dispatch_part(&mut self, f: &impl StreamHost, data: Bytes, charge: Charge) -> bool {
        let len = data.len() as u64;
        let Some(up) = self.upload.as_mut() else {
            return false;
        };
        let fut = up.put_part(data);
        self.in_flight.push_back(tokio::spawn(async move {
            let r = fut.await;
            drop(charge);
            r
        }));
        self.sent += len;
        self.parts += 1;
        f.stats()
            .parts_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// At flush (lock held): if the file is being streamed, send the tail, wait for every
    /// part and commit under `cond`. `None` when the file is not streamed (or streaming had to
    /// be given up) and the caller uploads the staged file whole. The upload carries the
    /// metadata it was started with; attributes changed since are the caller's to set after
    /// it (`chmod` on an open file, as `tar -p` does, must not abandon the upload).
    pub(crate) async fn commit(
        &mut self,
        f: &impl StreamHost,
        file: &std::fs::File,
        size: u64,
        cond: &Precondition,
    ) -> Option<Result<PutOutcome, BackendError>> {
        self.upload.as_ref()?;
        if !self.eligible || self.seq_end != size || self.cond.as_ref() != Some(cond) {
            self.cancel("changed since the upload started");
            return None;
        }
        let part = f.cfg().write_part_size as u64;
        while size > self.sent {
            let len = part.min(size - self.sent);
            if !self.send_next_part(f, file, len).await {
                // No memory and nothing in flight to wait for (or a part failed).
                self.cancel("no memory for the last parts");
                return None;
            }
        }
        for h in self.in_flight.drain(..).collect::<Vec<_>>() {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "a part of a streaming upload failed; uploading the file whole");
                    self.cancel("part upload failed");
                    return None;
                }
                Err(_) => {
                    self.cancel("part task failed");
                    return None;
                }
            }
        }
        let up = self.upload.take()?;
        self.eligible = false; // committed (or failed): later changes upload the file whole
        self.cond = None;
        let r = up.complete(cond).await;
        if r.is_ok() {
            f.stats()
                .streamed_uploads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(r)
    }
}
