//! Locking of the core's `std` mutexes.
//!
//! Why: every piece of shared state is behind a `std::sync::Mutex` held for a few
//! statements, never across an `.await` (the lock order is in `namespace/mod.rs`). A
//! poisoned lock means a panic elsewhere; the daemon keeps serving with the data as it is
//! rather than turning one panic into a dead mount.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the data is still usable for serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
