//! Mount lifecycle: prepare the mount point (detaching a stale one), connect to the store
//! and fail fast with a clear message, mount through fuser, detach into the background
//! once mounted, and unmount cleanly (lazily when busy) on SIGTERM/SIGINT.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use blobmount_backend::metered::Metered;
use blobmount_core::{Fs, FsConfig, PreloadProgress};
use fuser::{MountOption, SessionACL};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::exit::{EXIT_CONFIG, EXIT_MOUNT, EXIT_RUNTIME, EXIT_UNREACHABLE, classify};
use crate::fuse::FuseAdapter;
use crate::health;

/// Set in the environment of the background child; it reports readiness on stdout.
pub const READY_ENV: &str = "BLOBMOUNT_DAEMON_CHILD";
/// Mount source prefix: identifies our mounts in /proc/mounts (the kernel type is `fuse`
/// when root mounts directly).
const FSNAME_PREFIX: &str = "blobmount:";
const READY_LINE: &str = "BLOBMOUNT-READY";
/// How long the store may take to answer the first request at mount time.
/// How long a daemon in fd mode waits for the mounter's descriptor.
const FD_WAIT: Duration = Duration::from_secs(120);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    // One line on stderr: the log already goes there unless it goes to a file.
    if !crate::logging::logs_to_stderr() {
        eprintln!("blobmount: {msg}");
    }
    error!("{msg}");
    ExitCode::from(code)
}

/// Start a background copy of this command and return once it has mounted (or failed).
pub fn daemonize() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot find own executable: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and only detaches the child from our session.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot start background daemon: {e}")),
    };
    let Some(stdout) = child.stdout.take() else {
        return fail(EXIT_RUNTIME, "no pipe to daemon");
    };
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    if let Some(message) = line.trim_end().strip_prefix(READY_LINE) {
        eprintln!("blobmount: {}", message.trim());
        return ExitCode::SUCCESS;
    }
    match child.wait() {
        Ok(st) => ExitCode::from(st.code().unwrap_or(EXIT_RUNTIME as i32) as u8),
        Err(e) => fail(EXIT_RUNTIME, format!("background daemon: {e}")),
    }
}

fn default_cache_dir(id: &str) -> PathBuf {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/blobmount").join(id);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("blobmount").join(id)
}

/// The kernel answers ENOTCONN on a mount whose daemon died: detach it so we can mount.
/// `statfs` is asked, not `stat`: for up to the attribute timeout after a crash the kernel
/// still answers `stat` of the mount point from its cache.
fn clear_stale_mount(mp: &Path) {
    if let Err(e) = nix::sys::statfs::statfs(mp)
        && e == nix::errno::Errno::ENOTCONN
    {
        warn!(mountpoint = %mp.display(), "stale FUSE mount (ENOTCONN) found; detaching it");
        if let Err(e) = umount(mp, true) {
            warn!(error = %e, "could not detach the stale mount");
        }
    }
}

fn umount(mp: &Path, lazy: bool) -> Result<(), String> {
    let c = CString::new(mp.as_os_str().as_bytes())
        .map_err(|_| "mount point contains NUL".to_string())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EPERM) {
        // Not root: fusermount3 is setuid and may unmount our own mounts.
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        let st = cmd
            .arg(mp)
            .status()
            .map_err(|e| format!("fusermount3: {e}"))?;
        return if st.success() {
            Ok(())
        } else {
            Err(format!("fusermount3 -u {} failed", mp.display()))
        };
    }
    Err(format!("umount {}: {err}", mp.display()))
}

/// `blobmount unmount`.
pub fn unmount(mp: &Path, lazy: bool) -> Result<(), String> {
    match umount(mp, lazy) {
        Err(e) if !lazy && e.contains("busy") => Err(format!(
            "{e} (files are open; use --lazy to detach now and finish when they close)"
        )),
        r => r,
    }
}

/// `blobmount mount list`: (source, mount point) of each blobmount mount.
pub fn list() -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| format!("/proc/self/mounts: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ours = f.len() >= 3
                && (f[2] == "fuse.blobmount"
                    || (f[2] == "fuse" && f[0].starts_with(FSNAME_PREFIX)));
            ours.then(|| {
                (
                    unescape(f[0].trim_start_matches(FSNAME_PREFIX)),
                    unescape(f[1]),
                )
            })
        })
        .collect())
}

/// The store of a live blobmount mount at `mp`, if there is one (mounting again would stack
/// a second daemon on top of the first).
fn existing_mount(mp: &Path) -> Option<String> {
    let want = std::fs::canonicalize(mp).ok()?;
    list()
        .ok()?
        .into_iter()
        .find(|(_, at)| Path::new(at) == want)
        .map(|(source, _)| source)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Mount and serve until unmounted or signalled.
pub fn run(mut cfg: Config) -> ExitCode {
    // fd mode: serve a descriptor someone else mounted (`/dev/fd/N`, or one received on
    // `mount.fuse-fd-socket`); the daemon then never mounts or unmounts.
    let fd_number = cfg
        .mount
        .mountpoint
        .as_deref()
        .and_then(crate::fdpass::fd_number);
    let fd_socket = cfg.mount.fuse_fd_socket.clone();
    let fd_mode = fd_number.is_some() || fd_socket.is_some();
    let mp = match (cfg.mount.mountpoint.clone(), &fd_socket) {
        (Some(m), _) => m,
        (None, Some(s)) => PathBuf::from(format!("fd-socket:{}", s.display())),
        (None, None) => return fail(EXIT_CONFIG, "no mount point"),
    };
    // Where the mount can be seen from here, for health probes.
    let probe_dir = (fd_number.is_none() && cfg.mount.mountpoint.is_some()).then(|| mp.clone());
    let id = format!(
        "{:016x}",
        blobmount_core::names::fnv1a(
            format!(
                "{}|{}",
                cfg.store.url.as_deref().unwrap_or(""),
                mp.display()
            )
            .as_bytes()
        )
    );
    let cache_dir = cfg
        .cache
        .dir
        .clone()
        .unwrap_or_else(|| default_cache_dir(&id));
    let background = std::env::var_os(READY_ENV).is_some();
    if background && cfg.logging.file.is_none() {
        // A background daemon must not write into the terminal it was started from: its
        // log goes to the cache directory (fatal start-up errors still reach stderr).
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cache_dir)
        {
            return fail(
                EXIT_CONFIG,
                format!("cache directory {}: {e}", cache_dir.display()),
            );
        }
        cfg.logging.file = Some(cache_dir.join("blobmount.log"));
    }
    if let Err(e) = crate::logging::init(&cfg.logging) {
        return fail(EXIT_CONFIG, e);
    }
    blobmount_backend::install_crypto_provider();
    if !fd_mode {
        clear_stale_mount(&mp);
    }
    if !fd_mode && let Some(source) = existing_mount(&mp) {
        return fail(
            EXIT_MOUNT,
            format!(
                "{} is already a blobmount mount of {source}; unmount it first (blobmount unmount {})",
                mp.display(),
                mp.display()
            ),
        );
    }
    match std::fs::metadata(&mp) {
        _ if fd_mode => {}
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return fail(
                EXIT_CONFIG,
                format!("mount point {} is not a directory", mp.display()),
            );
        }
        Err(e) => return fail(EXIT_CONFIG, format!("mount point {}: {e}", mp.display())),
    }
    let url = match cfg.store.parsed_url() {
        Ok(u) => u,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let mut prefix = url.prefix.clone();
    if let Some(sub) = cfg
        .mount
        .subdirectory
        .as_deref()
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty())
    {
        prefix = if prefix.is_empty() {
            sub.to_string()
        } else {
            format!("{prefix}/{sub}")
        };
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fs_cfg = FsConfig {
        prefix: prefix.clone(),
        read_only: cfg.mount.read_only,
        uid: cfg.mount.uid.unwrap_or(uid),
        gid: cfg.mount.gid.unwrap_or(gid),
        file_mode: cfg.mount.file_mode,
        dir_mode: cfg.mount.dir_mode,
        attr_ttl: cfg.attr_timeout(),
        list_ttl: Duration::from_secs_f64(cfg.cache.list_ttl_secs.max(0.0)),
        negative_ttl: Duration::from_secs_f64(cfg.cache.negative_ttl_secs.max(0.0)),
        list_cache_max_entries: cfg.cache.list_cache_max_entries,
        cache_dir,
        rename_dir_limit: cfg.mount.rename_dir_limit,
        list_page_size: cfg.cache.list_page_size,
        read_ahead_max: cfg.cache.read_ahead_max_mib * 1024 * 1024,
        read_block: cfg.cache.read_block_mib * 1024 * 1024,
        read_memory: cfg.cache.read_memory_mib * 1024 * 1024,
        read_mode: cfg.read.mode.into(),
        file_cache_max: cfg.cache.file_cache_max_mib * 1024 * 1024,
        file_cache_min_free: cfg.cache.file_cache_min_free_mib * 1024 * 1024,
        file_cache_range_reads: cfg.cache.file_cache_range_reads,
        write_streaming: cfg.write.streaming,
        write_part_size: cfg.write.part_size_mib * 1024 * 1024,
        write_parts_in_flight: cfg.write.parts_in_flight,
    };
    // Plugins are compiled and instantiated here, before anything is mounted: a bad plugin
    // fails the mount with a message naming it, and no instantiation happens in the FUSE
    // request path.
    let policy = match crate::policy::load(&cfg, &fs_cfg) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("blobmount-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_RUNTIME, format!("tokio runtime: {e}")),
    };
    // Signal handlers before anything is mounted: a SIGTERM that arrives right after the
    // mount appears (an orchestrator stopping a sidecar that just started) must unmount
    // cleanly, not kill the process with the default action and leave a dead mount.
    let (mut term, mut int) = {
        let _rt = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                return fail(EXIT_RUNTIME, format!("installing signal handlers: {e}"));
            }
        }
    };
    let fs = rt.block_on(async {
        let backend = blobmount_backend::open(&cfg.store)
            .await
            .map_err(|e| (classify(&e), e.to_string()))?;
        let (backend, backend_stats) = Metered::wrap(backend);
        let fs = Fs::with_policy(backend, fs_cfg, policy)
            .map_err(|e| (EXIT_CONFIG, format!("cache directory: {e}")))?;
        match tokio::time::timeout(STARTUP_TIMEOUT, fs.check_store()).await {
            Ok(Ok(())) => {
                // Before serving: finish or keep what a killed daemon left staged.
                let report = fs.recover(cfg.write.recovery.into()).await;
                for key in &report.uploaded {
                    info!(key, "unfinished write of a previous daemon uploaded");
                }
                Ok((Arc::new(fs), backend_stats))
            }
            Ok(Err(e)) => Err((
                classify(&e),
                format!("cannot use store {}: {e}", fs.backend().describe()),
            )),
            Err(_) => Err((
                EXIT_UNREACHABLE,
                format!(
                    "store {} did not answer within {STARTUP_TIMEOUT:?}",
                    fs.backend().describe()
                ),
            )),
        }
    });
    let (fs, backend_stats) = match fs {
        Ok(f) => f,
        Err((code, msg)) => return fail(code, msg),
    };
    let source = if prefix.is_empty() {
        fs.backend().describe()
    } else {
        format!("{}/{prefix}", fs.backend().describe())
    };
    let preload = (!cfg.read.preload.is_empty()).then(|| Arc::new(PreloadProgress::default()));
    let session_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Bound before mounting, so a taken port is a clear error and not a half-started mount.
    let health_addr = if cfg.health.listen.is_empty() {
        None
    } else {
        let state = health::State::new(
            fs.clone(),
            backend_stats,
            health::Target {
                mountpoint: mp.clone(),
                probe_dir: probe_dir.clone(),
                session_alive: session_alive.clone(),
            },
            source.clone(),
            blobmount_core::ReadMode::from(cfg.read.mode).name(),
            preload.clone(),
        );
        match rt.block_on(health::serve(&cfg.health.listen, state)) {
            Ok(a) => Some(a.to_string()),
            Err(e) => {
                return fail(
                    EXIT_CONFIG,
                    format!("health.listen {:?}: {e}", cfg.health.listen),
                );
            }
        }
    };
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
    fcfg.clone_fd = cfg.mount.threads > 1 && !fd_mode;
    let adapter = FuseAdapter::new(fs.clone(), rt.handle().clone());
    let session = if fd_mode {
        let fd = match (fd_number, &fd_socket) {
            (Some(Ok(n)), _) => crate::fdpass::inherited(n),
            (Some(Err(e)), _) => Err(e),
            (None, Some(sock)) => crate::fdpass::receive(sock, FD_WAIT),
            (None, None) => Err("no FUSE descriptor".into()),
        };
        let acl = fcfg.acl;
        match fd.and_then(|fd| {
            fuser::Session::from_fd(adapter, fd, acl, fcfg)
                .map_err(|e| format!("FUSE handshake on the received descriptor: {e}"))
        }) {
            Ok(s) => s,
            Err(e) => return fail(EXIT_MOUNT, e),
        }
    } else {
        match fuser::Session::new(adapter, &mp, &fcfg) {
            Ok(s) => s,
            Err(e) => return fail(EXIT_MOUNT, format!("mounting on {}: {e}", mp.display())),
        }
    };
    let bg = match session.spawn() {
        Ok(b) => b,
        Err(e) => return fail(EXIT_MOUNT, format!("starting FUSE session: {e}")),
    };
    info!(store = %source, mountpoint = %mp.display(), "mounted");
    if cfg.mount.kernel_read_ahead_kib > 0 && !fd_mode {
        set_kernel_read_ahead(&mp, cfg.mount.kernel_read_ahead_kib);
    }
    if let Some(p) = &preload {
        crate::preload::spawn_for_mount(
            rt.handle(),
            fs.clone(),
            cfg.read.preload.clone(),
            cfg.read.preload_jobs,
            p.clone(),
        );
    }
    let registered = health::register(&health::Registration {
        // As `blobmount health` and `status` look it up (a relative path works too).
        mountpoint: health::canonical_parent(&mp).unwrap_or_else(|| mp.clone()),
        pid: std::process::id(),
        health: health_addr.clone(),
        store: source.clone(),
        cache_dir: fs.config().cache_dir.clone(),
    });
    match (&registered, &health_addr) {
        (Ok(_), Some(a)) => {
            info!(address = %a, "health endpoint: /healthz /readyz /metrics /status")
        }
        (Ok(_), None) => {}
        (Err(e), _) => warn!(error = %e, "cannot record this mount for `blobmount status`"),
    }
    if background {
        let log = cfg.logging.file.as_deref().unwrap_or(Path::new("stderr"));
        signal_ready(
            &format!(
                "mounted {source} on {} (log: {})",
                mp.display(),
                log.display()
            ),
            cfg.logging.file.as_deref(),
        );
    }
    // fuser 0.18 unmounts the mount point again when its session is dropped, and its
    // "already unmounted?" check is inverted (it treats POLLERR on /dev/fuse as mounted), so
    // after `blobmount unmount` or our own unmount it would unmount whatever is now at that
    // path: the volume underneath a sidecar mount, or the next mount there. We unmount
    // ourselves, so the session's mount guard is never dropped; its /dev/fuse descriptor
    // closes when the process exits.
    let bg = std::mem::ManuallyDrop::new(bg);
    // SAFETY: `bg` is never dropped or used again, so the handle read out of it is the only
    // owner of the session thread's JoinHandle.
    let session_thread = unsafe { std::ptr::read(&bg.guard) };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let alive = session_alive.clone();
    let joiner = std::thread::spawn(move || {
        match session_thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "FUSE session ended with an error"),
            Err(_) => error!("FUSE session thread panicked"),
        }
        alive.store(false, std::sync::atomic::Ordering::Release);
        let _ = done_tx.send(());
    });
    let (fs_for_signal, grace_secs) = (fs.clone(), cfg.mount.shutdown_grace_secs);
    let code = rt.block_on(async {
        let mut done_rx = done_rx;
        tokio::select! {
            _ = &mut done_rx => { info!("unmounted externally"); return 0; }
            _ = term.recv() => info!("SIGTERM: unmounting"),
            _ = int.recv() => info!("SIGINT: unmounting"),
        }
        // Pending writes first: open files with changes are uploaded (or kept in
        // conflicts/) before the mount goes away.
        let grace = Duration::from_secs_f64(grace_secs.max(0.0));
        match tokio::time::timeout(grace, fs_for_signal.flush_for_shutdown()).await {
            Ok((0, 0)) => {}
            Ok((up, 0)) => info!(files = up, "uploaded open files before unmounting"),
            Ok((up, kept)) => error!(uploaded = up, kept_in_conflicts = kept, "some open files could not be uploaded before unmounting; their data is in the cache's conflicts/"),
            Err(_) => error!(grace_secs, "uploads still running when the shutdown grace time ran out; unmounting anyway (open files upload when closed)"),
        }
        if fd_mode {
            // The mounter owns the mount; closing our descriptor at exit ends the session.
            info!("fd mode: leaving the unmount to the mounter");
            return 0;
        }
        match umount(&mp, false) {
            Ok(()) => {}
            Err(e) => {
                warn!(error = %e, "mount busy; detaching lazily, serving open files until they are closed");
                if let Err(e) = umount(&mp, true) {
                    error!(error = %e, "could not unmount");
                    return EXIT_RUNTIME;
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(60), done_rx).await {
            Ok(_) => 0,
            Err(_) => {
                error!("FUSE session did not end within 60 s after unmount");
                EXIT_RUNTIME
            }
        }
    });
    if let Ok(f) = registered {
        let _ = std::fs::remove_file(f);
    }
    // In fd mode the session lasts until the mounter detaches the mount; do not wait for it.
    if code == 0 && !fd_mode {
        let _ = joiner.join();
        info!("exited cleanly");
    }
    ExitCode::from(code)
}

/// Raise the kernel's read-ahead for this mount (its BDI is named after the mount's device
/// number). Best effort: without the right to write sysfs the default stays.
fn set_kernel_read_ahead(mp: &Path, kib: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(mp) else {
        return;
    };
    let dev = m.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let path = format!("/sys/class/bdi/{maj}:{min}/read_ahead_kb");
    match std::fs::write(&path, kib.to_string()) {
        Ok(()) => debug!(path, kib, "kernel read-ahead set"),
        Err(e) => debug!(path, error = %e, "kernel read-ahead left at its default"),
    }
}

/// Tell the foreground parent we are mounted (and what to print), then stop using the pipe,
/// and the stderr inherited from whoever started us: a caller reading our output to its end
/// (`blobmount mount ... 2>&1 | tail`, `$(...)`) would otherwise wait as long as the mount
/// lives. What still reaches stderr (a panic message) goes to the log file.
fn signal_ready(message: &str, log: Option<&Path>) {
    use std::os::fd::AsRawFd;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY_LINE} {message}");
    let _ = out.flush();
    let open = |p: &Path| std::fs::OpenOptions::new().append(true).open(p);
    if let Ok(null) = open(Path::new("/dev/null")) {
        // SAFETY: both descriptors are valid; replacing stdout with /dev/null.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    if let Ok(f) = log.map_or_else(|| open(Path::new("/dev/null")), open) {
        // SAFETY: both descriptors are valid; replacing stderr.
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
}
