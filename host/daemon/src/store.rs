//! Opening the store for a mount (stage 4): the backend from `store:`, the file-system core
//! over it, a first request with a deadline so a wrong account or a dead endpoint fails the
//! mount with a clear message and exit code, and crash recovery of what a killed daemon left
//! staged in the cache directory.
//!
//! Why before the FUSE session: nothing is mounted until the store has answered, so a
//! failing start never leaves a mount behind that answers EIO.

use std::sync::Arc;
use std::time::Duration;

use blobmount_backend::metered::{BackendStats, Metered};
use blobmount_core::{Fs, FsConfig};
use blobmount_policy_api::Policy;
use tracing::info;

use crate::config::Config;
use crate::exit::{EXIT_UNREACHABLE, Failure};

/// How long the store may take to answer the first request at mount time.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The opened store: the core and the counters of its backend calls.
pub struct Store {
    pub fs: Arc<Fs>,
    pub backend_stats: Arc<BackendStats>,
}

/// Open the backend, build the core, check the store answers, then recover unfinished
/// writes of a previous daemon.
pub async fn open(
    cfg: &Config,
    fs_cfg: FsConfig,
    policy: Arc<dyn Policy>,
) -> Result<Store, Failure> {
    // One part-size setting: whole-file uploads in parts use the streamed parts' size.
    let mut store_cfg = cfg.store.clone();
    store_cfg.parts = blobmount_backend::PartSizes {
        size: fs_cfg.write_part_size,
        in_flight: fs_cfg.write_parts_in_flight,
    }
    .or_default();
    store_cfg.unchecked_uploads = !cfg.write.checksums;
    let backend = blobmount_backend::open(&store_cfg)
        .await
        .map_err(|e| Failure::store(&e, &e))?;
    let (backend, backend_stats) = Metered::wrap(backend);
    let fs = Fs::with_policy(backend, fs_cfg, policy)
        .map_err(|e| Failure::config(format!("cache directory: {e}")))?;
    match tokio::time::timeout(STARTUP_TIMEOUT, fs.check_store()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Failure::store(
                &e,
                format!("cannot use store {}: {e}", fs.backend().describe()),
            ));
        }
        Err(_) => {
            return Err(Failure::new(
                EXIT_UNREACHABLE,
                format!(
                    "store {} did not answer within {STARTUP_TIMEOUT:?}",
                    fs.backend().describe()
                ),
            ));
        }
    }
    // Before serving: finish or keep what a killed daemon left staged.
    let report = fs.recover(cfg.write.recovery.into()).await;
    for key in &report.uploaded {
        info!(key, "unfinished write of a previous daemon uploaded");
    }
    Ok(Store {
        fs: Arc::new(fs),
        backend_stats,
    })
}
