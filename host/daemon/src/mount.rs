//! The mount, in stages: where it goes ([`mountpoint`](crate::mountpoint)), the settings
//! ([`fsconfig`](crate::fsconfig)), logging, the runtime and signal handlers
//! ([`shutdown`](crate::shutdown)), the store and crash recovery ([`store`](crate::store)),
//! the health endpoint, the FUSE session ([`session`](crate::session)), then serving until
//! a signal or an unmount and the orderly shutdown.
//!
//! Why stages: each one either hands the next what it needs or fails with an exit code and
//! one message ([`Failure`]); nothing is mounted before the store has answered and the
//! health port is bound, so a failed start leaves nothing behind.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use blobmount_core::PreloadProgress;
use tracing::{error, info, warn};

use crate::background;
use crate::config::Config;
use crate::exit::Failure;
use crate::fsconfig::{default_cache_dir, fs_config};
use crate::fuse::FuseAdapter;
use crate::health;
use crate::logging::Retries;
use crate::mountpoint::Place;
use crate::opstats::FuseStats;
use crate::policy::{MountPolicy, Reloader, Source};
use crate::shutdown::{Signals, Stop};
use crate::store::Store;

pub use crate::background::{READY_ENV, daemonize};
pub use crate::mountpoint::{list, unmount};

/// Report a failed mount: in the log, and on stderr when the log goes elsewhere.
fn fail(f: Failure) -> ExitCode {
    // One line on stderr: the log already goes there unless it goes to a file.
    if !crate::logging::logs_to_stderr() {
        eprintln!("blobmount: {}", f.msg);
    }
    error!("{}", f.msg);
    ExitCode::from(f.code)
}

/// Mount and serve until unmounted or signalled.
/// `source` is where the settings came from, read again at `SIGHUP` to reload the policy.
pub fn run(cfg: Config, source: Source) -> ExitCode {
    match mount_and_serve(cfg, source) {
        Ok(code) => ExitCode::from(code),
        Err(f) => fail(f),
    }
}

fn mount_and_serve(mut cfg: Config, source: Source) -> Result<u8, Failure> {
    let place = Place::from_config(&cfg)?;
    let cache_dir = cfg
        .cache
        .dir
        .clone()
        .unwrap_or_else(|| default_cache_dir(&place.id(&cfg)));
    let retries = init_logging(&mut cfg, &cache_dir)?;
    blobmount_backend::install_crypto_provider();
    place.prepare()?;
    let fs_cfg = fs_config(&cfg, cache_dir).map_err(Failure::config)?;
    // Plugins are compiled and instantiated here, before anything is mounted: a bad plugin
    // fails the mount with a message naming it, and no instantiation happens in the FUSE
    // request path.
    let policy = crate::policy::load(&cfg, &fs_cfg).map_err(Failure::config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("blobmount-io")
        .build()
        .map_err(|e| Failure::runtime(format!("tokio runtime: {e}")))?;
    let signals = Signals::install(&rt)?;
    let reload_cfg = fs_cfg.clone();
    let store = rt.block_on(crate::store::open(&cfg, fs_cfg, policy.clone()))?;
    let reloader = Arc::new(Reloader::new(
        source,
        reload_cfg,
        policy.clone(),
        store.fs.clone(),
    ));
    if cfg.plugins.watch_secs > 0 {
        reloader.watch(std::time::Duration::from_secs(cfg.plugins.watch_secs));
    }
    // The store client holds what it needs; the config keeps no secret for the mount's life.
    cfg.store.forget_secrets();
    let m = Mount {
        source: source_name(&store),
        place,
        store,
        policy,
        fuse_stats: Arc::new(FuseStats::default()),
        retries,
        preload: (!cfg.read.preload.is_empty()).then(|| Arc::new(PreloadProgress::default())),
        alive: Arc::new(AtomicBool::new(true)),
        kernel: crate::refresh::Kernel::new(),
    };
    let health_addr = start_health(&cfg, &m)?;
    crate::monitor::start(
        &cfg.monitor,
        &m.store.fs.config().cache_dir,
        crate::monitor::Sources {
            fs: m.store.fs.clone(),
            fuse: m.fuse_stats.clone(),
            backend: m.store.backend_stats.clone(),
        },
    )
    .map_err(Failure::config)?;
    let adapter = FuseAdapter::new(
        m.store.fs.clone(),
        rt.handle().clone(),
        m.fuse_stats.clone(),
    );
    let running = crate::session::start(
        adapter,
        &cfg,
        &m.place,
        &m.source,
        m.alive.clone(),
        &m.kernel,
    )?;
    info!(store = %m.source, mountpoint = %m.place.mp.display(), "mounted");
    after_mount(&rt, &cfg, &m);
    crate::poll::spawn(
        rt.handle(),
        m.store.fs.clone(),
        m.kernel.clone(),
        m.alive.clone(),
    );
    let registered = announce(&cfg, &m, health_addr);
    let stop = Stop {
        fs: &m.store.fs,
        unmount: (!m.place.fd_mode()).then_some(m.place.mp.as_path()),
        grace_secs: cfg.mount.shutdown_grace_secs,
        reload: &reloader,
    };
    let code = rt.block_on(crate::shutdown::serve_until_stopped(
        signals,
        running.done,
        stop,
    ));
    if let Some(f) = registered {
        let _ = std::fs::remove_file(f);
    }
    // In fd mode the session lasts until the mounter detaches the mount; do not wait for it.
    if code == 0 && !m.place.fd_mode() {
        let _ = running.joiner.join();
        info!("exited cleanly");
    }
    Ok(code)
}

/// What the stages up to the store have produced, for the ones after.
struct Mount {
    place: Place,
    store: Store,
    /// The mount's source as shown in `/proc/mounts`, the log and `/status`.
    source: String,
    policy: Arc<MountPolicy>,
    /// The FUSE adapter's counters (read by the health endpoint).
    fuse_stats: Arc<FuseStats>,
    /// Store requests sent again (counted by the log subscriber).
    retries: Retries,
    preload: Option<Arc<PreloadProgress>>,
    /// Cleared when the FUSE session ends.
    alive: Arc<AtomicBool>,
    /// The kernel's caches, reached once the session exists (`blobmount refresh`).
    kernel: Arc<crate::refresh::Kernel>,
}

/// Once mounted: the kernel's read-ahead, and the preload asked for.
fn after_mount(rt: &tokio::runtime::Runtime, cfg: &Config, m: &Mount) {
    if cfg.mount.kernel_read_ahead_kib > 0 && !m.place.fd_mode() {
        crate::mountpoint::set_kernel_read_ahead(&m.place.mp, cfg.mount.kernel_read_ahead_kib);
    }
    if let Some(p) = &m.preload {
        crate::preload::spawn_for_mount(
            rt.handle(),
            m.store.fs.clone(),
            cfg.read.preload.clone(),
            cfg.read.preload_jobs,
            p.clone(),
        );
    }
}

/// Start logging. A background daemon must not write into the terminal it was started
/// from: unless `logging.file` says otherwise, its log goes to the cache directory (fatal
/// start-up errors still reach stderr).
fn init_logging(cfg: &mut Config, cache_dir: &Path) -> Result<Retries, Failure> {
    if background::is_child() && cfg.logging.file.is_none() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir)
            .map_err(|e| {
                Failure::config(format!("cache directory {}: {e}", cache_dir.display()))
            })?;
        cfg.logging.file = Some(cache_dir.join("blobmount.log"));
    }
    crate::logging::init(&cfg.logging).map_err(Failure::config)
}

/// The mount's source as shown in `/proc/mounts`, the log and `/status`.
fn source_name(store: &Store) -> String {
    let prefix = &store.fs.config().prefix;
    if prefix.is_empty() {
        store.fs.backend().describe()
    } else {
        format!("{}/{prefix}", store.fs.backend().describe())
    }
}

/// Bind the health endpoint (unless `health.listen` is empty) before mounting, so a taken
/// port is a clear error and not a half-started mount. Returns the bound address. The
/// endpoint has its own thread and runtime (see [`health::start`]).
fn start_health(cfg: &Config, m: &Mount) -> Result<Option<String>, Failure> {
    if cfg.health.listen.is_empty() {
        return Ok(None);
    }
    let state = health::State::new(
        m.store.fs.clone(),
        health::Counters {
            fuse: m.fuse_stats.clone(),
            backend: m.store.backend_stats.clone(),
            retries: m.retries.clone(),
            policy: Some(m.policy.clone()),
        },
        health::Target {
            mountpoint: m.place.mp.clone(),
            probe_dir: m.place.probe_dir.clone(),
            session_alive: m.alive.clone(),
            kernel: m.kernel.clone(),
        },
        m.source.clone(),
        blobmount_core::ReadMode::from(cfg.read.mode).name(),
        m.preload.clone(),
    );
    match health::start(&cfg.health.listen, state) {
        Ok(a) => Ok(Some(a.to_string())),
        Err(e) => Err(Failure::config(format!(
            "health.listen {:?}: {e}",
            cfg.health.listen
        ))),
    }
}

/// Record the mount for `blobmount status`/`health` and, in a background daemon, tell the
/// starting command that the mount is up. Returns the registry file to remove at exit.
fn announce(cfg: &Config, m: &Mount, health_addr: Option<String>) -> Option<PathBuf> {
    let (mp, source) = (&m.place.mp, &m.source);
    let registered = health::register(&health::Registration {
        // As `blobmount health` and `status` look it up (a relative path works too).
        mountpoint: health::canonical_parent(mp).unwrap_or_else(|| mp.clone()),
        pid: std::process::id(),
        health: health_addr.clone(),
        store: source.clone(),
        cache_dir: m.store.fs.config().cache_dir.clone(),
    });
    match (&registered, &health_addr) {
        (Ok(_), Some(a)) => {
            info!(address = %a, "health endpoint: /healthz /readyz /metrics /status")
        }
        (Ok(_), None) => {}
        (Err(e), _) => warn!(error = %e, "cannot record this mount for `blobmount status`"),
    }
    if background::is_child() {
        let log = crate::logging::destination(&cfg.logging);
        background::signal_ready(
            &format!("mounted {source} on {} (log: {log})", mp.display(),),
            cfg.logging.file.as_deref(),
        );
    }
    registered.ok()
}
