//! Uploads in parts that become visible only when completed (S3 multipart, Azure Put Block /
//! Put Block List), for the core's streaming writes.
//!
//! Why a separate seam from `put_file`: a file written sequentially (a checkpoint) can be
//! uploaded while it is still being written, so that `close` only sends the last part and
//! commits. The core decides what to send and when; the store only has to accept parts in
//! order and commit them conditionally. GCS uses a resumable session (its emulator lacks XML
//! multipart), which takes the condition when it opens. Local directories return `None` from
//! [`crate::Backend::start_upload`] and the core uploads the whole file at close instead.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::{Precondition, PutOutcome, Result};

/// One upload in progress. Parts are numbered in the order `put_part` is called; all but
/// the last must have the same size (at least 5 MiB on S3).
#[async_trait]
pub trait PartUpload: Send + Debug {
    /// Send the next part. The returned future runs independently of the upload (parts may
    /// be in flight concurrently) and must complete before [`PartUpload::complete`].
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'static, Result<()>>;

    /// Commit all parts as the object, conditional on `cond`. Where the store cannot check
    /// the condition atomically with the commit, it is checked just before.
    async fn complete(self: Box<Self>, cond: &Precondition) -> Result<PutOutcome>;

    /// Discard the parts; nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Send `head` and then the bytes of `file` from offset `from` to its end through `up`, in
/// parts of `part` bytes with up to `in_flight` parts in flight, and commit them under
/// `cond`. A failed part discards the upload (nothing becomes visible). Bytes of `file`
/// before `from` are never read.
pub(crate) async fn send_file_in_parts(
    mut up: Box<dyn PartUpload>,
    key: &str,
    (file, from, head): (&std::path::Path, u64, Bytes),
    (part, in_flight): (usize, usize),
    cond: &Precondition,
) -> Result<PutOutcome> {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let part = part.max(1);
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(from)).await?;
    let mut head = head;
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut failed = None;
    loop {
        let mut buf = Vec::with_capacity(part);
        let take = head.len().min(part);
        buf.extend_from_slice(&head.split_to(take));
        let mut filled = buf.len();
        buf.resize(part, 0);
        while filled < part {
            let n = f.read(&mut buf[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        while inflight.len() >= in_flight.max(1) && failed.is_none() {
            if let Some(Err(e)) = inflight.next().await {
                failed = Some(e);
            }
        }
        if failed.is_some() {
            break;
        }
        inflight.push(up.put_part(Bytes::from(buf)));
        if filled < part {
            break;
        }
    }
    while let Some(r) = inflight.next().await {
        if let (Err(e), None) = (r, &failed) {
            failed = Some(e);
        }
    }
    if let Some(e) = failed {
        if let Err(a) = up.abort().await {
            tracing::warn!(key, error = %a, "could not discard a failed upload's parts");
        }
        return Err(e);
    }
    up.complete(cond).await
}
