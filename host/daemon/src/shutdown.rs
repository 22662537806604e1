//! Signals and shutdown (stages 3 and 7 of a mount): SIGTERM/SIGINT/SIGHUP handlers
//! installed before anything is mounted, and the orderly stop: upload pending writes
//! within the grace time, unmount (lazily when busy), wait for the FUSE session to end.
//! SIGHUP does not stop anything: it runs [`on_hangup`] (reopen the log file) and the mount
//! goes on serving.
//!
//! Why the handlers come first: a SIGTERM that arrives right after the mount appears (an
//! orchestrator stopping a sidecar that just started) must unmount cleanly, not kill the
//! process with the default action and leave a dead mount; SIGHUP's default action would
//! kill it too.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blobmount_core::Fs;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

use crate::exit::{EXIT_RUNTIME, Failure};
use crate::mountpoint::umount;
use crate::policy::Reloader;

/// How long the session may take to end once the mount point is unmounted.
const SESSION_END: Duration = Duration::from_secs(60);

/// The mount's signal handlers.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Install the handlers (needs the runtime's context).
    pub fn install(rt: &tokio::runtime::Runtime) -> Result<Signals, Failure> {
        let _rt = rt.enter();
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Ok(Signals { term, int, hup }),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                Err(Failure::runtime(format!("installing signal handlers: {e}")))
            }
        }
    }
}

/// What the shutdown needs to know about the mount.
pub struct Stop<'a> {
    pub fs: &'a Fs,
    /// The mount point to unmount; `None` in fd mode (the mounter owns the mount).
    pub unmount: Option<&'a Path>,
    pub grace_secs: f64,
    /// What `SIGHUP` reloads besides the log file.
    pub reload: &'a Arc<Reloader>,
}

/// Serve until the session ends by itself or a signal asks to stop; then stop in order.
/// Returns the exit code.
pub async fn serve_until_stopped(
    mut signals: Signals,
    mut done: tokio::sync::oneshot::Receiver<()>,
    stop: Stop<'_>,
) -> u8 {
    loop {
        tokio::select! {
            _ = &mut done => { info!("unmounted externally"); return 0; }
            _ = signals.term.recv() => { info!("SIGTERM: unmounting"); break; }
            _ = signals.int.recv() => { info!("SIGINT: unmounting"); break; }
            _ = signals.hup.recv() => on_hangup(stop.reload),
        }
    }
    upload_pending(stop.fs, stop.grace_secs).await;
    let Some(mp) = stop.unmount else {
        // The mounter owns the mount; closing our descriptor at exit ends the session.
        info!("fd mode: leaving the unmount to the mounter");
        return 0;
    };
    if let Err(e) = umount(mp, false) {
        warn!(error = %e, "mount busy; detaching lazily, serving open files until they are closed");
        if let Err(e) = umount(mp, true) {
            error!(error = %e, "could not unmount");
            return EXIT_RUNTIME;
        }
    }
    match tokio::time::timeout(SESSION_END, done).await {
        Ok(_) => 0,
        Err(_) => {
            error!("FUSE session did not end within 60 s after unmount");
            EXIT_RUNTIME
        }
    }
}

/// SIGHUP: reopen the log file at its configured path (logrotate's `create` mode moved it
/// away), then read the settings again and reload the policy and its plugins, off the
/// async workers (compiling a plugin can take seconds).
pub fn on_hangup(reload: &Arc<Reloader>) {
    match crate::logging::reopen() {
        Ok(Some(path)) => info!(path = %path.display(), "SIGHUP: log file reopened"),
        Ok(None) => info!("SIGHUP: no log file to reopen"),
        Err(e) => error!(error = %e, "SIGHUP: still logging to the old file"),
    }
    let reload = reload.clone();
    // Not awaited: serving and the stop signals go on while the plugins compile.
    drop(tokio::task::spawn_blocking(move || reload.reload("SIGHUP")));
}

/// Pending writes first: open files with changes are uploaded (or kept in conflicts/)
/// before the mount goes away.
async fn upload_pending(fs: &Fs, grace_secs: f64) {
    let grace = Duration::from_secs_f64(grace_secs.max(0.0));
    match tokio::time::timeout(grace, fs.flush_for_shutdown()).await {
        Ok((0, 0)) => {}
        Ok((up, 0)) => info!(files = up, "uploaded open files before unmounting"),
        Ok((up, kept)) => error!(
            uploaded = up,
            kept_in_conflicts = kept,
            "some open files could not be uploaded before unmounting; their data is in the cache's conflicts/"
        ),
        Err(_) => error!(
            grace_secs,
            "uploads still running when the shutdown grace time ran out; unmounting anyway (open files upload when closed)"
        ),
    }
}
