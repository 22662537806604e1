//! The memory budget: one bound, in bytes, on the buffers the core holds for data in
//! flight, shared by every reader (read-ahead blocks) and writer (streaming upload parts).
//!
//! Why a module of its own: reads and writes draw on the same bytes of RAM, so they must
//! draw on one budget (`read-memory-mib`); a part or a block that cannot get budget falls
//! back to a slower path that needs none, so memory stays bounded by configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) const KIB: u64 = 1024;

/// The global byte budget for blocks held or in flight, shared by all readers.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Permits are KiB.
    sem: Arc<Semaphore>,
    in_use: AtomicU64,
    peak: AtomicU64,
    total: u64,
}

/// Budget held by one block; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    budget: Arc<MemoryBudget>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Arc<Self> {
        let kib = (bytes / KIB).max(1);
        Arc::new(MemoryBudget {
            sem: Arc::new(Semaphore::new(kib as usize)),
            in_use: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            total: kib * KIB,
        })
    }

    /// Take `bytes` if that much is free now.
    pub fn try_take(self: &Arc<Self>, bytes: u64) -> Option<Charge> {
        let kib = u32::try_from(bytes.div_ceil(KIB)).ok()?;
        let permit = self.sem.clone().try_acquire_many_owned(kib).ok()?;
        let charged = u64::from(kib) * KIB;
        let now = self.in_use.fetch_add(charged, Ordering::AcqRel) + charged;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Some(Charge {
            _permit: permit,
            bytes: charged,
            budget: self.clone(),
        })
    }

    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Acquire)
    }

    /// Most ever in use at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}
