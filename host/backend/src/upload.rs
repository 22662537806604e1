//! Uploads in parts that become visible only when completed (S3 multipart, Azure Put Block /
//! Put Block List, GCS resumable sessions): the sizes every store uses, and the one loop that
//! sends a local file through any [`PartUpload`] (large `put_file`s, appends).
//!
//! Why a separate seam from `put_file`: a file written sequentially (a checkpoint) can be
//! uploaded while it is still being written, so that `close` only sends the last part and
//! commits. The core decides what to send and when; the store only has to accept parts in
//! order and commit them conditionally. GCS uses a resumable session (its emulator lacks XML
//! multipart), which takes the condition when it opens. Local directories return `None` from
//! [`crate::Backend::start_upload`] and the core uploads the whole file at close instead.

use std::path::Path;

use bytes::Bytes;

pub use crate::api::PartUpload;
use crate::api::{Precondition, PutOutcome, Result};
use crate::config::PartSizes;

/// Objects at most this large are uploaded in one request; larger ones in parts.
pub(crate) const SINGLE_PUT_MAX: u64 = 32 * 1024 * 1024;

/// Send `head` and then the bytes of `file` from offset `from` to its end through `up`, in
/// parts of `part` bytes with up to `in_flight` parts in flight, and commit them under
/// `cond`. A failed part discards the upload (nothing becomes visible). Bytes of `file`
/// before `from` are never read.
pub(crate) async fn send_file_in_parts(
    mut up: Box<dyn PartUpload>,
    key: &str,
    (file, from, head): (&Path, u64, Bytes),
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

/// Upload `file` through `up` in parts of `parts.size` bytes, `parts.in_flight` at a time,
/// and commit it conditional on `cond`; a failed part discards the upload.
pub(crate) async fn upload_in_parts(
    up: Box<dyn PartUpload>,
    key: &str,
    file: &Path,
    parts: PartSizes,
    cond: &Precondition,
) -> Result<PutOutcome> {
    send_file_in_parts(
        up,
        key,
        (file, 0, Bytes::new()),
        (parts.size, parts.in_flight),
        cond,
    )
    .await
}
