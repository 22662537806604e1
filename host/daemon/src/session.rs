//! The FUSE session (stage 6 of a mount): mount options, the session on a fresh mount or on
//! a descriptor from the mounter, and the thread that reports when the session ends.
//!
//! Why the session's mount guard is never dropped: fuser 0.18 unmounts the mount point again
//! when its session is dropped, and its "already unmounted?" check is inverted (it treats
//! POLLERR on /dev/fuse as mounted), so after `blobmount unmount` or our own unmount it would
//! unmount whatever is now at that path: the volume underneath a sidecar mount, or the next
//! mount there. The shutdown stage unmounts; the /dev/fuse descriptor closes when the
//! process exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use fuser::{MountOption, SessionACL};
use tracing::{error, warn};

use crate::config::Config;
use crate::exit::Failure;
use crate::fuse::FuseAdapter;
use crate::mountpoint::{FSNAME_PREFIX, Place};

/// A running FUSE session.
pub struct Running {
    /// Fires when the session has ended (unmounted, by us or by someone else).
    pub done: tokio::sync::oneshot::Receiver<()>,
    /// The thread waiting for the session; it ends right after `done` fires.
    pub joiner: JoinHandle<()>,
}

/// fuser's settings for this mount.
fn fuser_config(cfg: &Config, place: &Place, source: &str) -> fuser::Config {
    let mut options = vec![
        MountOption::FSName(format!("{FSNAME_PREFIX}{source}")),
        MountOption::Subtype("blobmount".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if cfg.mount.read_only {
        options.push(MountOption::RO);
    }
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = options;
    fcfg.acl = if cfg.mount.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fcfg.n_threads = Some(cfg.mount.threads);
    // Cloning the channel opens /dev/fuse again, which an unprivileged daemon serving a
    // passed descriptor may not do.
    fcfg.clone_fd = cfg.mount.threads > 1 && !place.fd_mode();
    fcfg
}

/// Mount (or take the mounter's descriptor) and start serving `adapter`. `alive` is cleared
/// when the session ends; `kernel` gets the session's notifier (`blobmount refresh`).
pub fn start(
    adapter: FuseAdapter,
    cfg: &Config,
    place: &Place,
    source: &str,
    alive: Arc<AtomicBool>,
    kernel: &crate::refresh::Kernel,
) -> Result<Running, Failure> {
    let fcfg = fuser_config(cfg, place, source);
    let session = if place.fd_mode() {
        let acl = fcfg.acl;
        place
            .descriptor()
            .and_then(|fd| {
                fuser::Session::from_fd(adapter, fd, acl, fcfg)
                    .map_err(|e| format!("FUSE handshake on the received descriptor: {e}"))
            })
            .map_err(Failure::mount)?
    } else {
        fuser::Session::new(adapter, &place.mp, &fcfg)
            .map_err(|e| Failure::mount(format!("mounting on {}: {e}", place.mp.display())))?
    };
    let bg = session
        .spawn()
        .map_err(|e| Failure::mount(format!("starting FUSE session: {e}")))?;
    kernel.attach(bg.notifier());
    // See the module doc: the session's mount guard must never be dropped.
    let bg = std::mem::ManuallyDrop::new(bg);
    // SAFETY: `bg` is never dropped or used again, so the handle read out of it is the only
    // owner of the session thread's JoinHandle.
    let session_thread = unsafe { std::ptr::read(&bg.guard) };
    let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
    let joiner = std::thread::spawn(move || {
        match session_thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "FUSE session ended with an error"),
            Err(_) => error!("FUSE session thread panicked"),
        }
        alive.store(false, Ordering::Release);
        let _ = done_tx.send(());
    });
    Ok(Running { done, joiner })
}
