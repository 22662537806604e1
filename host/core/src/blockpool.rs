//! Blocks held or in flight for any reader, shared between handles that read the same
//! version of the same object (one fetch, one copy), each charged to the memory budget;
//! and [`Source`], what every read path needs to fetch bytes of one object version.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use blobmount_backend::{Backend, BackendError};
use bytes::Bytes;
use tokio::sync::watch;

use crate::budget::{Charge, MemoryBudget};

/// Which version's block: blocks are only shared when the ETag is known.
type BlockId = (String, String, u64);

/// Blocks held or in flight for any handle, found by object, ETag and index, so that
/// handles reading the same version of an object share one fetch and one copy.
#[derive(Debug)]
pub struct BlockPool {
    budget: Arc<MemoryBudget>,
    live: Mutex<HashMap<BlockId, Weak<Shared>>>,
    /// Blocks one handle got from a fetch another handle had started.
    pub shared_hits: AtomicU64,
}

/// One block, shared by the handles that hold it; its budget is given back (and a fetch
/// still running is cancelled) when the last holder lets go.
#[derive(Debug)]
pub(crate) struct Shared {
    id: Option<BlockId>,
    rx: watch::Receiver<Option<Result<Bytes, BackendError>>>,
    task: tokio::task::AbortHandle,
    _charge: Charge,
    pool: Weak<BlockPool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.task.abort();
        if let (Some(id), Some(pool)) = (&self.id, self.pool.upgrade()) {
            let mut live = pool.lock_live();
            if live.get(id).is_some_and(|w| w.strong_count() == 0) {
                live.remove(id);
            }
        }
    }
}

impl Shared {
    pub(crate) async fn bytes(&self) -> Result<Bytes, BackendError> {
        let mut rx = self.rx.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => match &*v {
                Some(r) => r.clone(),
                None => Err(BackendError::Other("read-ahead block missing".into())),
            },
            Err(_) => Err(BackendError::Other("read-ahead fetch cancelled".into())),
        }
    }
}

impl BlockPool {
    pub fn new(budget: Arc<MemoryBudget>) -> Arc<Self> {
        Arc::new(BlockPool {
            budget,
            live: Mutex::new(HashMap::new()),
            shared_hits: AtomicU64::new(0),
        })
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<BlockId, Weak<Shared>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The block `range` (index `idx`) of the source: one another handle holds, or a new
    /// fetch if budget for it is free now; `None` when there is no budget.
    pub(crate) fn block(
        self: &Arc<Self>,
        src: &Source<'_>,
        idx: u64,
        range: Range<u64>,
    ) -> Option<Arc<Shared>> {
        let id = src.etag.map(|e| (src.key.to_string(), e.to_string(), idx));
        let mut live = self.lock_live();
        if let Some(b) = id
            .as_ref()
            .and_then(|id| live.get(id))
            .and_then(Weak::upgrade)
        {
            self.shared_hits.fetch_add(1, Ordering::Relaxed);
            return Some(b);
        }
        let charge = self.budget.try_take(range.end - range.start)?;
        let (tx, rx) = watch::channel(None);
        let (backend, key, etag) = (
            src.backend.clone(),
            src.key.to_string(),
            src.etag.map(str::to_string),
        );
        let task = tokio::spawn(async move {
            let r = backend.get_range(&key, range, etag.as_deref()).await;
            let _ = tx.send(Some(r));
        })
        .abort_handle();
        let b = Arc::new(Shared {
            id: id.clone(),
            rx,
            task,
            _charge: charge,
            pool: Arc::downgrade(self),
        });
        if let Some(id) = id {
            live.insert(id, Arc::downgrade(&b));
        }
        Some(b)
    }

    /// Stop handing out a block whose fetch failed (the next reader fetches it again).
    pub(crate) fn forget(&self, b: &Shared) {
        if let Some(id) = &b.id {
            self.lock_live().remove(id);
        }
    }

    /// Blocks currently held or in flight (for tests and metrics).
    pub fn live_blocks(&self) -> usize {
        self.lock_live()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// What a read needs to fetch bytes of the object.
pub struct Source<'a> {
    pub backend: &'a Arc<dyn Backend>,
    pub key: &'a str,
    pub etag: Option<&'a str>,
    pub size: u64,
    pub pool: &'a Arc<BlockPool>,
}

impl Source<'_> {
    pub(crate) fn budget(&self) -> &Arc<MemoryBudget> {
        &self.pool.budget
    }

    /// Fetch exactly `range`, pinned to the ETag.
    pub(crate) async fn get(&self, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.backend.get_range(self.key, range, self.etag).await
    }
}
