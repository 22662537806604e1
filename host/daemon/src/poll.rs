//! Runs the core's background poller (`cache.poll-secs`) and hands what it found to the
//! kernel.
//!
//! Why a task of its own: a round lists directories and asks about files, which takes
//! store round trips; it must neither hold a FUSE request nor pile up behind a slow store
//! (the next round starts `poll-secs` after the previous one ended, so a struggling store
//! sees at most one round at a time). Kernel notifications write to `/dev/fuse` and may
//! block while the kernel drops pages, so they run on the blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use blobmount_core::Fs;
use tracing::{Instrument, debug, info, info_span};

use crate::refresh::Kernel;

/// Start the poller on `rt` when the mount's configuration turns it on; it ends when
/// `alive` is cleared (the FUSE session ended).
pub fn spawn(
    rt: &tokio::runtime::Handle,
    fs: Arc<Fs>,
    kernel: Arc<Kernel>,
    alive: Arc<AtomicBool>,
) {
    let every = fs.config().poll.interval;
    if every.is_zero() {
        return;
    }
    info!(every_secs = every.as_secs_f64(), "background poller on");
    rt.spawn(
        async move {
            loop {
                tokio::time::sleep(every).await;
                if !alive.load(Ordering::Acquire) {
                    break;
                }
                let r = fs.poll().await;
                debug!(
                    dirs = r.dirs,
                    files = r.files,
                    changed = r.changed.len(),
                    "poll round"
                );
                if r.invalidations.is_empty() {
                    continue;
                }
                let k = kernel.clone();
                let invs = r.invalidations;
                // Wait for it: the next round must not race the kernel dropping these.
                let _ = tokio::task::spawn_blocking(move || k.forget(&invs)).await;
            }
        }
        .instrument(info_span!("poller")),
    );
}
