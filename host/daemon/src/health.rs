//! The health and metrics endpoint (`/healthz`, `/readyz`, `/metrics`, `/status`, and
//! `POST /refresh`, served by [`crate::refresh`]) and the registry through which
//! `blobmount status`, `health` and `refresh` find a mount's daemon.
//!
//! Why probes go through the kernel: a FUSE daemon can be alive while its session is stuck;
//! `/healthz` asks the kernel for `statfs` of the mount point (always forwarded to the
//! daemon) from a separate thread with a deadline, so a hung loop shows as unhealthy
//! instead of hanging the probe. `/readyz` adds a call to the store with the configured
//! credentials. The server listens on loopback by default (an ephemeral port recorded in the
//! registry); set `health.listen` to a fixed address for HTTP probes from outside.
//!
//! The server runs on its own thread and single-threaded runtime ([`start`]), not on the
//! mount's runtime, so it answers while the mount's workers are busy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blobmount_backend::metered::BackendStats;
use blobmount_core::{Fs, PreloadProgress};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::policy::MountPolicy;

use crate::metrics;
use crate::opstats::FuseStats;

/// `f_type` of a FUSE file system in `statfs(2)`.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
const FUSE_PROBE_DEADLINE: Duration = Duration::from_secs(2);
const STORE_PROBE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a store check answers `/readyz` before the store is asked again.
const READY_CACHE: Duration = Duration::from_secs(2);

/// The mount being reported on.
pub struct Target {
    pub mountpoint: PathBuf,
    /// The mount as seen from here, probed with `statfs` (none in fd mode without a path).
    pub probe_dir: Option<PathBuf>,
    /// Cleared when the FUSE session ends.
    pub session_alive: Arc<AtomicBool>,
    /// The kernel's caches of this mount (`POST /refresh`).
    pub kernel: Arc<crate::refresh::Kernel>,
}

/// The mount's counters that the core does not hold: the FUSE adapter's, the backend's
/// calls, and the policy whose plugins are counted. Owned by the mount, read as snapshots.
pub struct Counters {
    pub fuse: Arc<FuseStats>,
    pub backend: Arc<BackendStats>,
    /// Store requests sent again (`crate::logging::Retries`).
    pub retries: crate::logging::Retries,
    pub policy: Option<Arc<MountPolicy>>,
}

/// What the endpoint reports on.
pub struct State {
    pub fs: Arc<Fs>,
    pub counters: Counters,
    pub mountpoint: PathBuf,
    /// The mount as seen from here (none when serving a descriptor whose mount is not
    /// visible to this process).
    pub probe_dir: Option<PathBuf>,
    pub session_alive: Arc<AtomicBool>,
    pub kernel: Arc<crate::refresh::Kernel>,
    pub store: String,
    pub read_mode: &'static str,
    pub started: Instant,
    pub preload: Option<Arc<PreloadProgress>>,
    probe: Arc<tokio::sync::Mutex<()>>,
    ready: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl State {
    pub fn new(
        fs: Arc<Fs>,
        counters: Counters,
        target: Target,
        store: String,
        read_mode: &'static str,
        preload: Option<Arc<PreloadProgress>>,
    ) -> Arc<Self> {
        Arc::new(State {
            fs,
            counters,
            mountpoint: target.mountpoint,
            probe_dir: target.probe_dir,
            session_alive: target.session_alive,
            kernel: target.kernel,
            store,
            read_mode,
            started: Instant::now(),
            preload,
            probe: Arc::new(tokio::sync::Mutex::new(())),
            ready: Mutex::new(None),
        })
    }

    /// Does the kernel get an answer from this daemon for the mount point? One probe runs
    /// at a time; a probe that hangs keeps the others out until the kernel answers it, so
    /// a stuck mount costs one thread, not one per request.
    async fn fuse_answers(&self) -> Result<(), String> {
        if !self.session_alive.load(Ordering::Acquire) {
            return Err("the FUSE session has ended".into());
        }
        let Some(mp) = self.probe_dir.clone() else {
            return Ok(());
        };
        let Ok(guard) =
            tokio::time::timeout(FUSE_PROBE_DEADLINE, self.probe.clone().lock_owned()).await
        else {
            return Err("an earlier FUSE probe is still waiting for an answer".into());
        };
        let probe = tokio::task::spawn_blocking(move || {
            let r = statfs_type(&mp);
            drop(guard);
            r
        });
        match tokio::time::timeout(FUSE_PROBE_DEADLINE, probe).await {
            Err(_) => Err(format!(
                "statfs of the mount point got no answer within {FUSE_PROBE_DEADLINE:?}"
            )),
            Ok(Err(e)) => Err(format!("probe task: {e}")),
            Ok(Ok(Err(e))) => Err(format!("statfs {}: {e}", self.mountpoint.display())),
            Ok(Ok(Ok(t))) if t == FUSE_SUPER_MAGIC => Ok(()),
            Ok(Ok(Ok(_))) => Err(format!(
                "{} is no longer mounted",
                self.mountpoint.display()
            )),
        }
    }

    async fn store_answers(&self) -> Result<(), String> {
        if let Some((at, r)) = &*lock(&self.ready)
            && at.elapsed() < READY_CACHE
        {
            return r.clone();
        }
        let r = match tokio::time::timeout(STORE_PROBE_DEADLINE, self.fs.check_store()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("store: {e}")),
            Err(_) => Err(format!(
                "store did not answer within {STORE_PROBE_DEADLINE:?}"
            )),
        };
        *lock(&self.ready) = Some((Instant::now(), r.clone()));
        r
    }

    fn status(&self, fuse: &Result<(), String>, store: &Result<(), String>) -> Status {
        let (ops, op_errors, read_bytes, written_bytes) = self.counters.fuse.snapshot().totals();
        let fc = self.fs.file_cache.as_ref();
        let plugins = self
            .counters
            .policy
            .as_ref()
            .map(|p| metrics::plugin_snapshot(&p.current()))
            .unwrap_or_default();
        Status {
            mountpoint: self.mountpoint.display().to_string(),
            store: self.store.clone(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            healthy: fuse.is_ok(),
            ready: fuse.is_ok() && store.is_ok(),
            problems: [fuse, store]
                .iter()
                .filter_map(|r| r.as_ref().err().cloned())
                .collect(),
            read_mode: self.read_mode.to_string(),
            ops,
            op_errors,
            read_bytes,
            written_bytes,
            backend_read_bytes: self.counters.backend.bytes_read(),
            read_memory_bytes: self.fs.budget.in_use(),
            read_memory_limit_bytes: self.fs.budget.total(),
            file_cache_bytes: fc.map(|c| c.used_bytes()),
            file_cache_limit_bytes: fc.map(|c| c.config().max_bytes),
            file_cache_objects: fc.map(|c| c.len() as u64),
            upload_conflicts: self.fs.stats.upload_conflicts.load(Ordering::Relaxed),
            upload_errors: self.fs.stats.upload_errors.load(Ordering::Relaxed),
            breakers_open: plugins
                .iter()
                .filter(|(_, s)| s.breaker_open)
                .map(|(h, _)| h.name().to_string())
                .collect(),
            plugins: plugins
                .iter()
                .map(|(h, s)| PluginStatus::from_snapshot(*h, s))
                .collect(),
            preload: self.preload.as_ref().map(|p| {
                let (files_done, files_total, bytes_done, bytes_total) = p.snapshot();
                PreloadStatus {
                    files_done,
                    files_total,
                    bytes_done,
                    bytes_total,
                    failed: p.failed.load(Ordering::Relaxed),
                    finished: p.finished.load(Ordering::Acquire),
                }
            }),
        }
    }
}

impl State {
    /// The `/metrics` page from a snapshot of the counters now.
    fn metrics(&self) -> String {
        let c = &self.counters;
        let plugins = c
            .policy
            .as_ref()
            .map(|p| metrics::plugin_snapshot(&p.current()));
        metrics::render(&metrics::Sources {
            fuse: &c.fuse.snapshot(),
            backend: &c.backend,
            retries: c.retries.load(std::sync::atomic::Ordering::Relaxed),
            fs: &self.fs,
            preload: self.preload.as_deref(),
            plugins: plugins.as_deref(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn statfs_type(p: &Path) -> std::io::Result<i64> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// `/status` as JSON (also what `blobmount status` prints).
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub mountpoint: String,
    pub store: String,
    pub pid: u32,
    pub uptime_secs: f64,
    pub healthy: bool,
    pub ready: bool,
    pub problems: Vec<String>,
    pub read_mode: String,
    pub ops: u64,
    pub op_errors: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub backend_read_bytes: u64,
    pub read_memory_bytes: u64,
    pub read_memory_limit_bytes: u64,
    pub file_cache_bytes: Option<u64>,
    pub file_cache_limit_bytes: Option<u64>,
    pub file_cache_objects: Option<u64>,
    pub upload_conflicts: u64,
    pub upload_errors: u64,
    pub preload: Option<PreloadStatus>,
    /// Plugins whose circuit breaker is open now, by hook name (absent from older daemons).
    #[serde(default)]
    pub breakers_open: Vec<String>,
    /// Each configured plugin's counters (absent from older daemons).
    #[serde(default)]
    pub plugins: Vec<PluginStatus>,
}

/// One plugin's counters in `/status` (`blobmount status`).
#[derive(Debug, Serialize, Deserialize)]
pub struct PluginStatus {
    pub hook: String,
    pub calls: u64,
    pub cache_hits: u64,
    /// Failed calls, each answered by the failure mode.
    pub failures: u64,
    /// Questions answered by the failure mode: failed calls and breaker refusals.
    pub fallbacks: u64,
    /// Mean wall time per call, in milliseconds (0 without calls).
    pub mean_call_ms: f64,
    pub fuel_used: u64,
    pub breaker_open: bool,
}

impl PluginStatus {
    fn from_snapshot(hook: blobmount_policy::Hook, s: &blobmount_policy::StatsSnapshot) -> Self {
        PluginStatus {
            hook: hook.name().to_string(),
            calls: s.calls,
            cache_hits: s.cache_hits,
            failures: s.failures,
            fallbacks: s.failures + s.breaker_skipped,
            mean_call_ms: if s.calls == 0 {
                0.0
            } else {
                s.call_micros as f64 / s.calls as f64 / 1e3
            },
            fuel_used: s.fuel_used,
            breaker_open: s.breaker_open,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreloadStatus {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub failed: u64,
    pub finished: bool,
}

fn reply(code: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn verdict(r: Result<(), String>) -> Response<Full<Bytes>> {
    match r {
        Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

/// `POST /refresh`: read the body (bounded), then drop caches and notify the kernel on a
/// blocking thread (notifications write to `/dev/fuse` and wait for the kernel).
async fn refresh(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let body = match http_body_util::Limited::new(req.into_body(), crate::refresh::MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("request body: {e}\n"),
            );
        }
    };
    let served =
        tokio::task::spawn_blocking(move || crate::refresh::serve(&state.fs, &state.kernel, &body))
            .await;
    match served {
        Ok((200, json)) => reply(StatusCode::OK, "application/json", json),
        Ok((code, text)) => reply(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "text/plain",
            text,
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("refresh task: {e}\n"),
        ),
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == hyper::Method::POST && req.uri().path() == "/refresh" {
        return Ok(refresh(state, req).await);
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only (POST for /refresh)\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/healthz" => verdict(state.fuse_answers().await),
        "/readyz" => {
            let fuse = state.fuse_answers().await;
            verdict(match fuse {
                Ok(()) => state.store_answers().await,
                Err(e) => Err(e),
            })
        }
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", state.metrics()),
        "/status" => {
            let fuse = state.fuse_answers().await;
            let store = state.store_answers().await;
            let s = state.status(&fuse, &store);
            match serde_json::to_string_pretty(&s) {
                Ok(j) => reply(StatusCode::OK, "application/json", j + "\n"),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "endpoints: /healthz /readyz /metrics /status, POST /refresh\n".into(),
        ),
    })
}

/// Bind `listen` and serve on a thread of its own with its own single-threaded runtime;
/// returns the bound address.
///
/// Why not a task on the mount's runtime: its workers may all be busy inside slow policy
/// calls or disk work, and the probes must answer whatever the mount is doing (`/healthz`
/// probes `statfs`, which the FUSE adapter answers inline on the session thread).
pub fn start(listen: &str, state: Arc<State>) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _in = rt.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    std::thread::Builder::new()
        .name("blobmount-health".into())
        .spawn(move || rt.block_on(accept_loop(listener, state)))?;
    Ok(addr)
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "health endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "health endpoint: connection ended");
            }
        });
    }
}

/// Where a running daemon is found: one JSON file per mount point.
#[derive(Debug, Serialize, Deserialize)]
pub struct Registration {
    pub mountpoint: PathBuf,
    pub pid: u32,
    pub health: Option<String>,
    pub store: String,
    pub cache_dir: PathBuf,
}

/// The registry directory: `/run/blobmount` for root, else `$XDG_RUNTIME_DIR/blobmount`,
/// else `/tmp/blobmount-<uid>`.
pub fn registry_dir() -> PathBuf {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        return PathBuf::from("/run/blobmount");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("blobmount"),
        _ => PathBuf::from(format!("/tmp/blobmount-{uid}")),
    }
}

fn registry_file(mountpoint: &Path) -> PathBuf {
    let h = blobmount_core::names::fnv1a(mountpoint.as_os_str().as_encoded_bytes());
    registry_dir().join(format!("{h:016x}.json"))
}

/// Record this daemon for its mount point; returns the file to remove at exit.
pub fn register(r: &Registration) -> std::io::Result<PathBuf> {
    let dir = registry_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let path = registry_file(&r.mountpoint);
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Every registered mount (entries whose daemon is gone are reported as such by callers).
pub fn registrations() -> Vec<Registration> {
    let Ok(rd) = std::fs::read_dir(registry_dir()) else {
        return Vec::new();
    };
    let mut v: Vec<Registration> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    v.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    v
}

/// `p` with its parent directory canonicalised. The last component is left alone: resolving
/// it would ask the FUSE daemon for the attributes of the mount's root, and a probe must not
/// hang before its deadline starts when the daemon does not answer.
pub fn canonical_parent(p: &Path) -> Option<PathBuf> {
    let name = p.file_name()?;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(parent).ok()?.join(name))
}

/// The registration for `mountpoint` (its parent canonicalised when possible).
pub fn registration_for(mountpoint: &Path) -> Option<Registration> {
    let want = canonical_parent(mountpoint).unwrap_or_else(|| mountpoint.to_path_buf());
    registrations()
        .into_iter()
        .find(|r| r.mountpoint == want || r.mountpoint == mountpoint)
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// A blocking GET with a deadline (the CLI side; FUSE-side hangs must not hang it).
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    request(addr, "GET", path, None, timeout)
}

/// A blocking request with an optional JSON body and a deadline (the CLI side).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad health address {addr}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut s = std::net::TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("cannot reach the daemon at {addr}: {e}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no answer from the daemon within {timeout:?}: {e}")),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no complete answer from the daemon within {timeout:?}"
            ));
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from {addr}"))?;
    Ok((code, body.to_string()))
}
