//! Streaming writes: a new (or truncated) file written in order from offset 0 is uploaded in
//! parts while it is being written, so `close` only sends the tail and commits.
//!
//! Why: the checkpoint case. Staging the whole file and uploading it at `close` makes the
//! writer wait for the full upload after it has written everything; streaming overlaps the
//! two. The staging file stays the source of truth (every byte is written there first), so
//! an out-of-order write, a truncate, a metadata change or a failed part simply abandons the
//! upload (aborted in the background; nothing was committed) and `close` uploads the staged
//! file as before: falling back never loses data. Parts are read back from the staging file
//! (hot in the page cache) into buffers charged to the same memory budget as read-ahead
//! blocks; with no budget free, a part waits for one in flight or is left for later. Nothing
//! is visible in the store before the commit on `flush`/`fsync`/`close`; the commit is
//! conditional like any upload (ESTALE and `conflicts/` on a conflict).

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;

use blobmount_backend::{BackendError, PartUpload, Precondition, PutMeta, PutOutcome};
use bytes::Bytes;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::attr;
use crate::fs::Fs;
use crate::readahead::Charge;

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
    /// Metadata the upload was started with (it cannot change before the commit).
    meta: Option<PutMeta>,
    /// Condition the upload was started with (GCS fixes it then; it cannot change either).
    cond: Option<Precondition>,
    in_flight: VecDeque<JoinHandle<Result<(), BackendError>>>,
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

/// Metadata for a streamed upload: the mtime is left to the store (the commit time), since
/// writes go on after the upload starts.
fn stream_meta(pm: &PutMeta) -> PutMeta {
    let mut m = pm.clone();
    m.metadata.remove(attr::META_MTIME);
    m
}

impl Fs {
    fn stream_on(&self) -> bool {
        self.cfg.write_streaming && self.cfg.write_part_size > 0
    }

    /// A fresh streaming state for a file that starts empty.
    pub(crate) fn new_stream(&self) -> StreamWrite {
        StreamWrite::starting_empty(self.stream_on())
    }

    /// Stop streaming this file: the upload (if any) is aborted in the background and the
    /// file will be uploaded whole at the next flush.
    pub(crate) fn stream_cancel(&self, sw: &mut StreamWrite, why: &str) {
        if sw.eligible || sw.upload.is_some() {
            debug!(why, parts = sw.parts, "streaming upload abandoned");
        }
        sw.eligible = false;
        for h in sw.in_flight.drain(..) {
            h.abort();
        }
        if let Some(up) = sw.upload.take() {
            tokio::spawn(async move {
                if let Err(e) = up.abort().await {
                    debug!(error = %e, "aborting an abandoned upload failed (the store discards it later)");
                }
            });
        }
    }

    /// After `len` bytes were written at `offset` into the staging file `file` (the open
    /// file's lock is held): keep streaming if the write was in order, and send every full
    /// part. `cond` is what the upload would be conditional on now. Never fails the write:
    /// any problem falls back to uploading at close.
    pub(crate) async fn stream_after_write(
        &self,
        ino: u64,
        sw: &mut StreamWrite,
        file: &std::fs::File,
        (offset, len): (u64, u64),
        cond: &Precondition,
    ) {
        if !sw.eligible {
            return;
        }
        if offset != sw.seq_end {
            self.stream_cancel(sw, "write out of order");
            return;
        }
        sw.seq_end += len;
        let part = self.cfg.write_part_size as u64;
        while sw.seq_end - sw.sent >= part {
            if sw.parts >= MAX_PARTS {
                self.stream_cancel(sw, "too many parts");
                return;
            }
            if sw.upload.is_none() {
                let (Ok(key), Ok(pm)) = (self.key_of(ino), self.put_meta(ino)) else {
                    self.stream_cancel(sw, "file vanished");
                    return;
                };
                let meta = stream_meta(&pm);
                match self.backend.clone().start_upload(&key, &meta, cond).await {
                    Ok(Some(up)) => {
                        sw.upload = Some(up);
                        sw.meta = Some(meta);
                        sw.cond = Some(cond.clone());
                    }
                    Ok(None) => {
                        sw.eligible = false; // the store has no uploads in parts
                        return;
                    }
                    Err(e) => {
                        warn!(key, error = %e, "could not start a streaming upload; the file is uploaded at close");
                        self.stream_cancel(sw, "start failed");
                        return;
                    }
                }
            }
            let Some(charge) = self.part_budget(sw, part).await else {
                return; // no memory free now: sent at a later write or at close
            };
            if !self.send_part(sw, file, part, charge).await {
                return;
            }
        }
    }

    /// Memory for one part: waits for parts in flight while the budget is full and there are
    /// any (also bounding parts in flight); `None` when none is free.
    async fn part_budget(&self, sw: &mut StreamWrite, len: u64) -> Option<Charge> {
        loop {
            if sw.in_flight.len() < self.cfg.write_parts_in_flight.max(1)
                && let Some(c) = self.budget.try_take(len)
            {
                return Some(c);
            }
            let h = sw.in_flight.pop_front()?;
            if !matches!(h.await, Ok(Ok(()))) {
                self.stream_cancel(sw, "part upload failed");
                return None;
            }
        }
    }

    /// Read the next `len` bytes after `sent` from the staging file and send them as a part.
    async fn send_part(
        &self,
        sw: &mut StreamWrite,
        file: &std::fs::File,
        len: u64,
        charge: Charge,
    ) -> bool {
        let mut buf = vec![0u8; len as usize];
        if file.read_exact_at(&mut buf, sw.sent).is_err() {
            self.stream_cancel(sw, "staging read failed");
            return false;
        }
        let Some(up) = sw.upload.as_mut() else {
            return false;
        };
        let fut = up.put_part(Bytes::from(buf));
        sw.in_flight.push_back(tokio::spawn(async move {
            let r = fut.await;
            drop(charge);
            r
        }));
        sw.sent += len;
        sw.parts += 1;
        self.stats
            .parts_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// At flush (lock held): if the file is being streamed, send the tail, wait for every
    /// part and commit under `cond`. `None` when the file is not streamed (or streaming had to
    /// be given up) and the caller uploads the staged file whole.
    pub(crate) async fn stream_commit(
        &self,
        sw: &mut StreamWrite,
        file: &std::fs::File,
        size: u64,
        pm: &PutMeta,
        cond: &Precondition,
    ) -> Option<Result<PutOutcome, BackendError>> {
        sw.upload.as_ref()?;
        if !sw.eligible
            || sw.seq_end != size
            || sw.meta.as_ref() != Some(&stream_meta(pm))
            || sw.cond.as_ref() != Some(cond)
        {
            self.stream_cancel(sw, "changed since the upload started");
            return None;
        }
        let part = self.cfg.write_part_size as u64;
        while size > sw.sent {
            let len = part.min(size - sw.sent);
            let Some(charge) = self.part_budget(sw, len).await else {
                // No memory and nothing in flight to wait for (or a part failed).
                self.stream_cancel(sw, "no memory for the last parts");
                return None;
            };
            if !self.send_part(sw, file, len, charge).await {
                return None;
            }
        }
        for h in sw.in_flight.drain(..).collect::<Vec<_>>() {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "a part of a streaming upload failed; uploading the file whole");
                    self.stream_cancel(sw, "part upload failed");
                    return None;
                }
                Err(_) => {
                    self.stream_cancel(sw, "part task failed");
                    return None;
                }
            }
        }
        let up = sw.upload.take()?;
        sw.eligible = false; // committed (or failed): later changes upload the file whole
        sw.meta = None;
        sw.cond = None;
        let r = up.complete(cond).await;
        if r.is_ok() {
            self.stats
                .streamed_uploads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(r)
    }
}
