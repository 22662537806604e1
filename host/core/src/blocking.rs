//! Blocking file-system work from async code, without holding a tokio worker.
//!
//! Why: the core's operations are async and run on the mount's multi-thread runtime, but
//! the cache directory is reached with blocking `std::fs` calls. Most are cheap metadata
//! calls or page-cache writes of one request's bytes; a few are not: `fsync` of staged
//! data and journals, copies into `conflicts/`, whole parts read back from a staging file,
//! download chunks written to disk, whole-file checksums. While one of those runs, the
//! worker cannot poll anything else, and with every worker inside one the mount (and
//! anything else on the runtime) stops. [`run`] moves the calling task off the worker for
//! the duration: `tokio::task::block_in_place` on a multi-thread runtime, a plain call
//! anywhere else. `block_in_place` is not allowed on a current-thread runtime, which the
//! core's deterministic interleaving tests use; there a plain call is what they expect.
//!
//! `spawn_blocking` would also work, but needs owned (`'static`) data; the heavy calls here
//! borrow open files and paths from locked state, so `block_in_place` fits them.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run blocking `f` without holding a multi-thread runtime's worker (see the module doc).
pub(crate) fn run<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// On a multi-thread runtime with one worker, a task stuck in blocking work under
    /// [`run`] does not stop another task from running.
    #[test]
    fn a_blocked_task_leaves_the_worker_free() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let stuck = tokio::spawn(async move {
                super::run(|| rx.recv_timeout(Duration::from_secs(10)).is_ok())
            });
            // Give the blocked task time to take the only worker.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let other = tokio::spawn(async { 7 });
            let got = tokio::time::timeout(Duration::from_secs(2), other).await;
            assert_eq!(got.ok().and_then(|r| r.ok()), Some(7));
            tx.send(()).unwrap();
            assert!(stuck.await.unwrap());
        });
    }

    /// On a current-thread runtime it simply runs (block_in_place would panic there).
    #[test]
    fn runs_in_place_on_a_current_thread_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(async { super::run(|| 3) }), 3);
        assert_eq!(super::run(|| 4), 4);
    }
}
