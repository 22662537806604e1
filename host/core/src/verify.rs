//! Checking what the `direct` and `block-cache` read paths serve against the checksum the
//! store reports (the kind it prefers: CRC32C on GCS, MD5 elsewhere), for a handle that reads
//! its object from the first byte to the last in order (the common case: training data, `cp`,
//! `cat`).
//!
//! Why a wrapper and not part of each path: both paths hand out the bytes a read returns, and
//! the check only needs those bytes in order; one wrapper ([`Verified`]) hashes them as they
//! pass (no second read, no copy) with the one kind of checksum the store says it prefers
//! ([`blobmount_backend::Backend::checksum_kind`], asked before the first byte, no I/O) and,
//! when the last byte has passed, asks the store for that checksum once
//! ([`blobmount_backend::Backend::content_checksum`], pinned to the ETag the handle reads)
//! and compares. A mismatch fails that last read with `ChecksumMismatch` (EIO), so a program
//! that reads to the end learns its bytes were damaged instead of using them silently. A
//! handle that skips bytes (random or partial reads) cannot be checked: the bytes are served
//! as they come and the handle stops hashing. The file cache checks its own downloads
//! (`filecache.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use blobmount_backend::BackendError;
use blobmount_backend::checksum::{ChecksumKind, RunningSum, StoredSum};
use bytes::Bytes;

use crate::blockpool::Source;
use crate::readpath::ReadPath;
use crate::types::FsStats;

/// Reads that arrived ahead of the hashing position are kept (they are slices of blocks
/// held anyway) up to this many, for readers whose requests the kernel hands over slightly
/// out of order; past it the handle gives up checking.
const MAX_AHEAD: usize = 16;

enum State {
    /// Every byte before `upto` went into `hash`.
    Hashing {
        upto: u64,
        hash: RunningSum,
        ahead: BTreeMap<u64, Bytes>,
    },
    /// The handle skipped bytes, or the check is done: bytes pass unchecked.
    Off,
    /// The bytes did not match: every later read fails too.
    Failed,
}

/// A read path whose handle's in-order reads are checked against the store's checksum.
pub(crate) struct Verified {
    inner: Box<dyn ReadPath>,
    checks: Arc<FsStats>,
    etag: Option<String>,
    state: State,
    /// Smaller objects are not checked (their one extra request would double a small-file
    /// workload's requests).
    min_size: u64,
}

impl Verified {
    pub(crate) fn new(inner: Box<dyn ReadPath>, checks: Arc<FsStats>, min_size: u64) -> Self {
        Verified {
            inner,
            checks,
            etag: None,
            state: State::Off,
            min_size,
        }
    }

    fn start(&mut self, etag: Option<&str>, size: u64, kind: ChecksumKind) {
        self.etag = etag.map(str::to_string);
        self.state = match etag {
            _ if size < self.min_size => State::Off,
            Some(_) => State::Hashing {
                upto: 0,
                hash: RunningSum::new(kind),
                ahead: BTreeMap::new(),
            },
            // Without an ETag the checksum could belong to another version.
            None => State::Off,
        };
    }

    /// Feed the bytes `data` read at `offset`; returns the position hashed up to, or `None`
    /// once the handle stopped hashing.
    fn feed(&mut self, offset: u64, data: &Bytes) -> Option<u64> {
        let State::Hashing { upto, hash, ahead } = &mut self.state else {
            return None;
        };
        let end = offset + data.len() as u64;
        if offset > *upto {
            if ahead.len() >= MAX_AHEAD {
                tracing::debug!("reads skip bytes: this handle's bytes are not checked");
                self.state = State::Off;
                return None;
            }
            ahead.insert(offset, data.clone());
            return Some(*upto);
        }
        if end > *upto {
            hash.update(&data[(*upto - offset) as usize..]);
            *upto = end;
        }
        // Reads kept aside that now follow on.
        while let Some((&o, _)) = ahead.first_key_value() {
            if o > *upto {
                break;
            }
            if let Some((o, d)) = ahead.pop_first() {
                let e = o + d.len() as u64;
                if e > *upto {
                    hash.update(&d[(*upto - o) as usize..]);
                    *upto = e;
                }
            }
        }
        Some(*upto)
    }

    /// Every byte has been hashed: compare with the store's checksum of the same kind.
    async fn finish(&mut self, src: &Source<'_>) -> Result<(), BackendError> {
        let State::Hashing { hash, .. } = std::mem::replace(&mut self.state, State::Off) else {
            return Ok(());
        };
        let (Some(etag), got) = (src.etag, hash.finish()) else {
            return Ok(());
        };
        self.checks
            .read_verify_requests
            .fetch_add(1, Ordering::Relaxed);
        let kind = got.kind();
        match src.backend.content_checksum(src.key, etag, kind).await {
            Ok(Some(want)) if want == got => {
                self.checks.reads_verified.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    key = src.key,
                    kind = kind.name(),
                    "read: bytes match the store's checksum"
                );
                Ok(())
            }
            Ok(Some(want)) if want.kind() == kind => {
                self.checks
                    .read_checksum_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.state = State::Failed;
                mismatch(src.key, &want, &got);
                Err(BackendError::ChecksumMismatch {
                    key: src.key.to_string(),
                })
            }
            // None of that kind (a store answers only the kind asked for; another would be a
            // bug of its own, not a damaged read).
            Ok(Some(_) | None) => {
                self.checks.reads_unchecked.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    key = src.key,
                    kind = kind.name(),
                    "read: the store reports no checksum of this kind; not checked"
                );
                Ok(())
            }
            // The version read is gone: the reader must not take its bytes for current.
            Err(e @ (BackendError::PreconditionFailed { .. } | BackendError::NotFound { .. })) => {
                Err(e)
            }
            Err(e) => {
                self.checks.reads_unchecked.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = src.key, error = %e, kind = kind.name(), "read: could not ask the store for its checksum; bytes not checked");
                Ok(())
            }
        }
    }
}

fn mismatch(key: &str, want: &StoredSum, got: &StoredSum) {
    tracing::error!(
        key,
        stored = %want,
        read = %got,
        "read: the bytes read do not match the {} the store reports; the read fails (EIO)",
        want.kind().name()
    );
}

#[async_trait]
impl ReadPath for Verified {
    async fn opened(&mut self, src: &Source<'_>) {
        self.start(src.etag, src.size, src.backend.checksum_kind());
        self.inner.opened(src).await;
    }

    async fn read(
        &mut self,
        src: &Source<'_>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, BackendError> {
        if self.etag.as_deref() != src.etag {
            self.start(src.etag, src.size, src.backend.checksum_kind());
        }
        // Once the bytes failed their check, every read of the handle fails: the kernel
        // reads a page again after a failed read-ahead, and that read (anywhere in the file)
        // must not hand out what failed.
        if matches!(self.state, State::Failed) {
            return Err(BackendError::ChecksumMismatch {
                key: src.key.to_string(),
            });
        }
        let data = self.inner.read(src, offset, len).await?;
        if self.feed(offset, &data) == Some(src.size) && src.size > 0 {
            self.finish(src).await?;
        }
        Ok(data)
    }
}
