//! The three read paths behind one trait, chosen by `read.mode`.
//!
//! Why a trait: the open-file code must not care how bytes arrive. `direct` issues ranged
//! GETs with a growing window, `block-cache` streams fixed blocks in parallel from a shared
//! memory pool ([`crate::readahead`]), `file-cache` downloads whole objects to local disk
//! ([`crate::filecache`]). Every path reads the version pinned at open (If-Match), so a
//! remote change mid-read is `PreconditionFailed` (ESTALE), never mixed data.

use async_trait::async_trait;
use blobmount_backend::BackendError;
use bytes::Bytes;

use std::sync::Arc;

use crate::blockpool::Source;
use crate::filecache::Cached;

/// Which read path handles get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// Ranged GETs with sequential detection and a doubling prefetch window.
    Direct,
    /// Fixed-size blocks prefetched in parallel from a shared, budgeted memory pool.
    #[default]
    BlockCache,
    /// Whole objects downloaded to the local cache directory (LRU, size cap).
    FileCache,
}

impl ReadMode {
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Direct => "direct",
            ReadMode::BlockCache => "block-cache",
            ReadMode::FileCache => "file-cache",
        }
    }
}

/// The read state of one open handle.
#[async_trait]
pub(crate) trait ReadPath: Send {
    /// The handle was opened on `src` (the file cache starts its download here).
    async fn opened(&mut self, _src: &Source<'_>) {}

    /// The complete, checked local copy of the version this handle reads, if the path keeps
    /// one (the file cache): the kernel may read it directly (`passthrough.rs`).
    fn complete_copy(&self) -> Option<Arc<Cached>> {
        None
    }

    /// Up to `len` bytes at `offset`, clipped to the object's size.
    async fn read(
        &mut self,
        src: &Source<'_>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, BackendError>;
}
