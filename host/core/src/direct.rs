//! The `direct` read path: ranged GETs straight from the store, with sequential detection
//! and one prefetch window ahead that doubles while the reader stays sequential.
//!
//! Why it exists next to the block cache: it keeps at most two windows per handle and no
//! shared state, which suits stores with cheap requests, many small files, or users who
//! want the simplest behaviour to compare against. Windows are charged to the same global
//! [`MemoryBudget`](crate::budget::MemoryBudget); without free budget a read fetches
//! just its own bytes.

use std::ops::Range;

use async_trait::async_trait;
use blobmount_backend::BackendError;
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::blockpool::Source;
use crate::budget::Charge;
use crate::readpath::ReadPath;

/// Smallest window a sequential reader gets (the kernel asks for 128 KiB at a time).
const MIN_WINDOW: u64 = 256 * 1024;

struct Window {
    start: u64,
    data: Bytes,
    _charge: Option<Charge>,
}

struct Pending {
    range: Range<u64>,
    task: JoinHandle<Result<Bytes, BackendError>>,
    charge: Charge,
}

/// Per-handle state of the direct path.
pub(crate) struct Direct {
    max_window: u64,
    window: u64,
    cur: Option<Window>,
    ahead: Option<Pending>,
    next: u64,
    etag: Option<String>,
}

impl Drop for Direct {
    fn drop(&mut self) {
        if let Some(p) = &self.ahead {
            p.task.abort();
        }
    }
}

impl Direct {
    pub(crate) fn new(max_window: u64) -> Self {
        Direct {
            max_window,
            window: 0,
            cur: None,
            ahead: None,
            next: 0,
            etag: None,
        }
    }

    fn reset(&mut self) {
        if let Some(p) = self.ahead.take() {
            p.task.abort();
        }
        self.cur = None;
        self.window = 0;
    }

    fn in_window(&self, offset: u64, end: u64) -> Option<Bytes> {
        let w = self.cur.as_ref()?;
        let wend = w.start + w.data.len() as u64;
        (offset >= w.start && end <= wend).then(|| {
            w.data
                .slice((offset - w.start) as usize..(end - w.start) as usize)
        })
    }

    /// Start fetching the window after the current one.
    fn prefetch(&mut self, src: &Source<'_>) {
        if self.ahead.is_some() || self.max_window == 0 {
            return;
        }
        let Some(w) = &self.cur else { return };
        let start = w.start + w.data.len() as u64;
        let end = (start + self.window).min(src.size);
        if start >= end {
            return;
        }
        let Some(charge) = src.budget().try_take(end - start) else {
            return;
        };
        let (backend, key, etag) = (
            src.backend.clone(),
            src.key.to_string(),
            src.etag.map(str::to_string),
        );
        let range = start..end;
        let r = range.clone();
        let task = tokio::spawn(async move { backend.get_range(&key, r, etag.as_deref()).await });
        self.ahead = Some(Pending {
            range,
            task,
            charge,
        });
    }
}

#[async_trait]
impl ReadPath for Direct {
    async fn read(
        &mut self,
        src: &Source<'_>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, BackendError> {
        if self.etag.as_deref() != src.etag {
            self.reset();
            self.etag = src.etag.map(str::to_string);
        }
        let end = (offset + len).min(src.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        if let Some(b) = self.in_window(offset, end) {
            self.next = end;
            self.prefetch(src);
            return Ok(b);
        }
        let sequential = offset == self.next;
        self.next = end;
        if !sequential || self.max_window == 0 {
            self.reset();
            return src.get(offset..end).await;
        }
        // The window ahead, if it starts where this read does, becomes the current one.
        if let Some(p) = self.ahead.take() {
            if p.range.start <= offset && offset < p.range.end {
                let data = match p.task.await {
                    Ok(r) => r?,
                    Err(e) => return Err(BackendError::Other(format!("prefetch task: {e}"))),
                };
                if (data.len() as u64) < p.range.end - p.range.start {
                    return Err(BackendError::PreconditionFailed {
                        key: src.key.to_string(),
                    });
                }
                let mut out = BytesMut::new();
                let start = p.range.start;
                self.cur = Some(Window {
                    start,
                    data,
                    _charge: Some(p.charge),
                });
                if let Some(b) = self.in_window(offset, end) {
                    self.window = (self.window * 2).clamp(MIN_WINDOW, self.max_window);
                    self.prefetch(src);
                    return Ok(b);
                }
                // The read runs past the window: take its tail and fetch the rest.
                let wend = p.range.end;
                if let Some(head) = self.in_window(offset, wend) {
                    out.extend_from_slice(&head);
                    out.extend_from_slice(&src.get(wend..end).await?);
                    return Ok(out.freeze());
                }
            } else {
                p.task.abort();
            }
        }
        // Fetch a window starting here: the read plus what the window says is coming.
        self.window = (self.window * 2).clamp(MIN_WINDOW, self.max_window.max(MIN_WINDOW));
        let wend = (offset + self.window.max(end - offset)).min(src.size);
        let charge = src.budget().try_take(wend - offset);
        let fetch_end = if charge.is_some() { wend } else { end };
        let data = src.get(offset..fetch_end).await?;
        if (data.len() as u64) < end - offset {
            return Err(BackendError::PreconditionFailed {
                key: src.key.to_string(),
            });
        }
        let out = data.slice(..(end - offset) as usize);
        self.cur = Some(Window {
            start: offset,
            data,
            _charge: charge,
        });
        self.prefetch(src);
        Ok(out)
    }
}
