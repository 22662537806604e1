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
