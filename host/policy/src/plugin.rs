//! Loading one component for one hook, and the pool of ready instances calls run on.
//!
//! Why a pool: instantiating costs tens of microseconds plus the plugin's `init`, far too much
//! for a FUSE lookup, so instances are created at load time (`prewarm`) and reused; a call
//! borrows one, runs under a fresh fuel budget and epoch deadline, and returns it. Calls that
//! overlap get another instance (created on demand, then kept), up to `max-instances`; past
//! that a call waits for a free one, at most until its own deadline (then it fails with
//! [`CallError::Busy`]), so a slow plugin costs bounded memory and bounded time. An instance
//! that trapped may hold broken state, so it is dropped and replaced by a fresh one.
//!
//! Why [`offload`]: the core calls the synchronous `Policy` trait from async code. A call
//! that burns its deadline would hold a tokio worker for that long; with every worker inside
//! plugin calls nothing else on the runtime moves. On a multi-thread runtime the call runs
//! under `tokio::task::block_in_place`, which hands the worker's other tasks to a new worker
//! first. On a current-thread runtime (the core's deterministic tests) that is not allowed,
//! and the call runs in place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder};

use crate::bindings::{HostState, WIT_VERSION, World};
use crate::breaker::{Admit, Breaker};
use crate::config::{
    BREAKER_SECS_RANGE, Hook, MAX_COMPONENT_BYTES, MAX_INSTANCES_RANGE, PluginConfig,
};
use crate::engine::{TICK_MS, compile};
use crate::error::{CallError, LoadError};

/// Counters for one plugin (exported as metrics by the daemon).
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub cache_hits: AtomicU64,
    pub failures: AtomicU64,
    pub instantiations: AtomicU64,
    /// Wall time of calls, waiting for an instance included, in microseconds.
    pub call_micros: AtomicU64,
    /// Fuel the calls consumed (about one WebAssembly instruction each).
    pub fuel_used: AtomicU64,
    /// Failures by kind, in the order of [`FAILURE_KINDS`].
    pub failures_by_kind: [AtomicU64; FAILURE_KINDS.len()],
}

/// The kinds of failed calls counted apart (`CallError::kind`; a breaker refusal is not a
/// call and is counted by the breaker).
pub const FAILURE_KINDS: [&str; 7] = [
    "out-of-fuel",
    "deadline",
    "memory",
    "trap",
    "bad-return",
    "instantiate",
    "busy",
];

/// A point-in-time copy of a plugin's counters and breaker state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub calls: u64,
    pub cache_hits: u64,
    pub failures: u64,
    pub instantiations: u64,
    /// The circuit breaker keeps the plugin out now.
    pub breaker_open: bool,
    /// Times the breaker opened.
    pub breaker_trips: u64,
    /// Calls answered by the failure mode without the plugin because the breaker was open.
    pub breaker_skipped: u64,
    /// Wall time of calls, in microseconds.
    pub call_micros: u64,
    /// Fuel consumed by calls.
    pub fuel_used: u64,
    /// Failures by kind, in the order of [`FAILURE_KINDS`].
    pub failures_by_kind: [u64; FAILURE_KINDS.len()],
}

/// Run `f`, a blocking plugin call, without holding a tokio worker: under
/// `block_in_place` on a multi-thread runtime, in place anywhere else (no runtime, a
/// current-thread runtime, a blocking-pool thread).
fn offload<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The instances of one plugin: the free ones, and how many exist (free or in a call).
struct Pool<W> {
    free: Vec<Slot<W>>,
    live: usize,
}

struct Slot<W> {
    store: Store<HostState>,
    world: W,
}

/// One loaded plugin with its instance pool.
pub(crate) struct Loaded<W: World> {
    pub(crate) hook: Hook,
    pub(crate) path: PathBuf,
    /// The component's file name without `.wasm`: tags its log lines.
    name: String,
    engine: Engine,
    pre: W::Pre,
    params: Vec<(String, String)>,
    fuel: u64,
    deadline: Duration,
    memory_bytes: usize,
    /// The component imports WASI: its instances get a deny-all WASI context.
    wasi: bool,
    /// Free instances and the count of existing ones (std mutex, never held across a call).
    pool: Mutex<Pool<W>>,
    /// Signalled when an instance is returned or dropped.
    freed: Condvar,
    max_instances: usize,
    pub(crate) stats: PluginStats,
    pub(crate) breaker: Breaker,
    logged: AtomicU32,
    /// Time the first instance took to create and `init` (for reports and benchmarks).
    pub(crate) first_instantiate: std::time::Duration,
}

/// What is wrong with the file's header, if anything: checked before handing the bytes to
/// the compiler, for a clearer message than the compiler's.
pub(crate) fn header_problem(bytes: &[u8]) -> Option<&'static str> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => None,
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Some("a core wasm module, not a component"),
        Some([0, b'a', b's', b'm', ..]) => Some("an unknown WebAssembly version"),
        _ => Some("not WebAssembly at all"),
    }
}

fn check_header(hook: Hook, path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    match header_problem(bytes) {
        None => Ok(()),
        Some(what) => Err(LoadError::NotAComponent {
            hook,
            path: path.to_path_buf(),
            what,
        }),
    }
}

/// The hooks whose interface `component` exports (by name, any WIT version), and every
/// export name, so `plugin check|run|test` without `--hook` can pick the world from the
/// component itself, or say exactly why it cannot. The world is then checked in full by
/// [`Loaded::load`], as for a mount.
pub(crate) fn exported_hooks(engine: &Engine, component: &Component) -> (Vec<Hook>, Vec<String>) {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    let hooks = Hook::ALL
        .into_iter()
        .filter(|h| {
            exports.iter().any(|e| {
                e.split('@').next() == Some(format!("blobmount:policy/{}", h.name()).as_str())
            })
        })
        .collect();
    (hooks, exports)
}

/// Check imports and exports by name, so a wrong component gets a precise message.
fn check_interface<W: World>(
    engine: &Engine,
    hook: Hook,
    path: &Path,
    component: &Component,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    let foreign: Vec<&str> = ty
        .imports(engine)
        .map(|(n, _)| n)
        .filter(|n| !n.starts_with("blobmount:policy/") && !n.starts_with("wasi:"))
        .collect();
    if !foreign.is_empty() {
        return Err(LoadError::ForbiddenImports {
            hook,
            path: path.to_path_buf(),
            imports: foreign.join(", "),
        });
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
    for want in W::EXPORTS {
        let found = exports.iter().find(|e| e.split('@').next() == Some(want));
        let reason = match found {
            None => format!(
                "it does not export {want}@{WIT_VERSION} (it exports: {})",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ),
            Some(e) if *e != format!("{want}@{WIT_VERSION}") => {
                format!("it exports {e}, built against another version of the WIT package")
            }
            Some(_) => continue,
        };
        return Err(LoadError::WrongWorld {
            hook,
            path: path.to_path_buf(),
            world: hook.world(),
            version: WIT_VERSION,
            reason,
        });
    }
    Ok(())
}

/// The plugin's limits and parameter table, before anything is read or compiled.
fn check_limits(hook: Hook, cfg: &PluginConfig) -> Result<(), LoadError> {
    if cfg.fuel == 0 || cfg.deadline_ms == 0 || cfg.memory_mib == 0 {
        return Err(LoadError::Limits {
            hook,
            reason: "fuel, deadline-ms and memory-mib must be above zero".into(),
        });
    }
    if !MAX_INSTANCES_RANGE.contains(&cfg.max_instances) {
        return Err(LoadError::Limits {
            hook,
            reason: format!(
                "max-instances is {}; it must be {} to {}",
                cfg.max_instances,
                MAX_INSTANCES_RANGE.start(),
                MAX_INSTANCES_RANGE.end()
            ),
        });
    }
    if !BREAKER_SECS_RANGE.contains(&cfg.breaker_secs) {
        return Err(LoadError::Limits {
            hook,
            reason: format!(
                "breaker-secs is {}; it must be {} to {}",
                cfg.breaker_secs,
                BREAKER_SECS_RANGE.start(),
                BREAKER_SECS_RANGE.end()
            ),
        });
    }
    cfg.check_params()
        .map_err(|reason| LoadError::Limits { hook, reason })?;
    Ok(())
}

/// The component matches its `sha256` pin, if it has one.
fn check_digest(hook: Hook, cfg: &PluginConfig, bytes: &[u8]) -> Result<(), LoadError> {
    cfg.check_pin()
        .map_err(|reason| LoadError::Limits { hook, reason })?;
    let Some(expected) = &cfg.sha256 else {
        return Ok(());
    };
    let actual = crate::engine::sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(LoadError::Pinned {
            hook,
            path: cfg.path.clone(),
            expected: expected.to_ascii_lowercase(),
            actual,
        })
    }
}

/// The component's bytes, refused above [`MAX_COMPONENT_BYTES`] before they are read.
fn read_component(hook: Hook, path: &Path) -> Result<Vec<u8>, LoadError> {
    let read_err = |source| LoadError::Read {
        hook,
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_COMPONENT_BYTES {
        return Err(LoadError::Limits {
            hook,
            reason: format!(
                "{} is {size} bytes (at most {MAX_COMPONENT_BYTES})",
                path.display()
            ),
        });
    }
    std::fs::read(path).map_err(read_err)
}

impl<W: World> Loaded<W> {
    /// Read, compile (or fetch from the cache), check and pre-instantiate a plugin.
    pub(crate) fn load(
        engine: &Engine,
        hook: Hook,
        cfg: &PluginConfig,
        cache_dir: Option<&Path>,
    ) -> Result<Loaded<W>, LoadError> {
        let path = cfg.path.clone();
        check_limits(hook, cfg)?;
        let bytes = read_component(hook, &path)?;
        check_digest(hook, cfg, &bytes)?;
        check_header(hook, &path, &bytes)?;
        let component = compile(engine, hook, &path, &bytes, cache_dir)?;
        check_interface::<W>(engine, hook, &path, &component)?;

        let mut linker: Linker<HostState> = Linker::new(engine);
        W::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let wasi = crate::wasi::imports_wasi(engine, &component);
        if wasi {
            crate::wasi::add_to_linker(&mut linker)
                .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        }
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            hook,
            path: path.clone(),
            world: hook.world(),
            version: WIT_VERSION,
            reason: format!("{e:#}"),
        };
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = W::pre(pre).map_err(wrong_world)?;
        let memory_bytes =
            usize::try_from(cfg.memory_mib.saturating_mul(1 << 20)).map_err(|_| {
                LoadError::Limits {
                    hook,
                    reason: "memory-mib is too large".into(),
                }
            })?;
        let mut loaded = Loaded {
            hook,
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.clone(),
            engine: engine.clone(),
            pre,
            params: cfg.param_list(),
            fuel: cfg.fuel,
            deadline: Duration::from_millis(cfg.deadline_ms),
            memory_bytes,
            wasi,
            pool: Mutex::new(Pool {
                free: Vec::new(),
                live: 0,
            }),
            freed: Condvar::new(),
            max_instances: cfg.max_instances,
            stats: PluginStats::default(),
            breaker: Breaker::new(
                hook,
                cfg.breaker_failures,
                Duration::from_secs(cfg.breaker_secs),
            ),
            logged: AtomicU32::new(0),
            first_instantiate: std::time::Duration::ZERO,
        };
        let t = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..cfg.prewarm.clamp(1, cfg.max_instances) {
            let slot = loaded.new_slot().map_err(|e| match e {
                SlotError::Init(message) => LoadError::InitRejected {
                    hook,
                    path: path.clone(),
                    message,
                },
                SlotError::Call(e) => LoadError::Instantiate {
                    hook,
                    path: path.clone(),
                    reason: e.to_string(),
                },
            })?;
            if slots.is_empty() {
                loaded.first_instantiate = t.elapsed();
            }
            slots.push(slot);
        }
        loaded.pool = Mutex::new(Pool {
            live: slots.len(),
            free: slots,
        });
        tracing::info!(
            hook = hook.name(),
            path = %path.display(),
            instantiate_us = loaded.first_instantiate.as_micros() as u64,
            "policy plugin loaded"
        );
        Ok(loaded)
    }

    /// Arm `store` for one call: `scale` times the fuel, and an epoch deadline `left` from
    /// now (rounded up to the epoch tick).
    fn arm(
        &self,
        store: &mut Store<HostState>,
        scale: u64,
        left: Duration,
    ) -> Result<(), CallError> {
        store
            .set_fuel(self.fuel.saturating_mul(scale.max(1)))
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        store.set_epoch_deadline(ms.div_ceil(TICK_MS).saturating_add(1));
        Ok(())
    }

    /// A fresh instance with `init` already run.
    fn new_slot(&self) -> Result<Slot<W>, SlotError> {
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory_bytes)
            .instances(32)
            .tables(16)
            .memories(8)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                limits,
                wasi: self
                    .wasi
                    .then(|| Box::new(crate::wasi::WasiParts::deny_all())),
                hook: self.hook.name(),
                plugin: self.name.clone(),
                log_lines: 0,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        self.arm(&mut store, 1, self.deadline)
            .map_err(SlotError::Call)?;
        let world = W::instantiate(&self.pre, &mut store)
            .map_err(|e| SlotError::Call(CallError::from_wasmtime(&e)))?;
        self.arm(&mut store, 1, self.deadline)
            .map_err(SlotError::Call)?;
        let init = world.init(&mut store, &self.params);
        store.data_mut().drain_output();
        match init {
            Ok(Ok(())) => Ok(Slot { store, world }),
            Ok(Err(msg)) => Err(SlotError::Init(msg)),
            Err(e) => Err(SlotError::Call(CallError::from_wasmtime(&e))),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool<W>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free instance, or a new one while fewer than `max-instances` exist, or wait for
    /// one to be returned until `deadline` ([`CallError::Busy`] then).
    fn take_slot(&self, deadline: Instant) -> Result<Slot<W>, CallError> {
        let mut p = self.pool();
        loop {
            if let Some(s) = p.free.pop() {
                return Ok(s);
            }
            if p.live < self.max_instances {
                p.live += 1;
                drop(p);
                return self.new_slot().map_err(|e| {
                    self.discard();
                    match e {
                        SlotError::Init(m) => CallError::Instantiate(format!("init refused: {m}")),
                        SlotError::Call(e) => CallError::Instantiate(e.to_string()),
                    }
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CallError::Busy(self.max_instances));
            }
            p = match self.freed.wait_timeout(p, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Give an instance back after a successful call.
    fn put_back(&self, slot: Slot<W>) {
        self.pool().free.push(slot);
        self.freed.notify_one();
    }

    /// An instance was dropped (it failed, or could not be created): make room for another.
    fn discard(&self) {
        let mut p = self.pool();
        p.live = p.live.saturating_sub(1);
        drop(p);
        self.freed.notify_one();
    }

    /// Run `f` on a pooled instance under the call limits (`scale` multiplies the fuel, for
    /// batch calls), off the async workers (see [`offload`]). The deadline covers waiting
    /// for an instance and the call itself. While the breaker is open nothing runs and the
    /// answer is [`CallError::BreakerOpen`]. On error the instance is dropped; the next call
    /// gets a fresh one.
    pub(crate) fn call<R>(
        &self,
        scale: u64,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        match self.breaker.admit() {
            Admit::Refuse => return Err(CallError::BreakerOpen),
            Admit::Call | Admit::Trial => {}
        }
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let deadline = start + self.deadline;
        let out = offload(|| {
            let mut slot = self.take_slot(deadline)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let armed = self.fuel.saturating_mul(scale.max(1));
            let out = self.arm(&mut slot.store, scale, left).and_then(|()| {
                f(&slot.world, &mut slot.store).map_err(|e| CallError::from_wasmtime(&e))
            });
            slot.store.data_mut().drain_output();
            let left_fuel = slot.store.get_fuel().unwrap_or(0);
            self.stats
                .fuel_used
                .fetch_add(armed.saturating_sub(left_fuel), Ordering::Relaxed);
            match out {
                Ok(v) => {
                    self.put_back(slot);
                    Ok(v)
                }
                Err(e) => {
                    drop(slot);
                    self.discard();
                    Err(e)
                }
            }
        });
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.call_micros.fetch_add(micros, Ordering::Relaxed);
        out
    }

    /// The counters and the breaker's state now.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            calls: s.calls.load(Ordering::Relaxed),
            cache_hits: s.cache_hits.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            instantiations: s.instantiations.load(Ordering::Relaxed),
            breaker_open: self.breaker.is_open(),
            breaker_trips: self.breaker.trips.load(Ordering::Relaxed),
            breaker_skipped: self.breaker.skipped.load(Ordering::Relaxed),
            call_micros: s.call_micros.load(Ordering::Relaxed),
            fuel_used: s.fuel_used.load(Ordering::Relaxed),
            failures_by_kind: std::array::from_fn(|i| {
                s.failures_by_kind[i].load(Ordering::Relaxed)
            }),
        }
    }

    /// A call's answer was usable: the breaker's run of failures ends.
    pub(crate) fn note_success(&self) {
        self.breaker.success();
    }

    /// Count a failure and log it: the first failure of each kind at `warn`, later ones at
    /// `debug` (a misbehaving plugin must not flood the log).
    /// Calls refused by the open breaker are not failures of the plugin (they are counted
    /// by the breaker).
    pub(crate) fn note_failure(&self, e: &CallError) {
        if *e == CallError::BreakerOpen {
            return;
        }
        self.breaker.failure();
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = FAILURE_KINDS.iter().position(|k| *k == e.kind()) {
            self.stats.failures_by_kind[i].fetch_add(1, Ordering::Relaxed);
        }
        let bit = match e {
            CallError::BreakerOpen => 0,
            CallError::Busy(_) => 64,
            CallError::OutOfFuel => 1,
            CallError::Deadline => 2,
            CallError::Memory => 4,
            CallError::Trap(_) => 8,
            CallError::BadReturn(_) => 16,
            CallError::Instantiate(_) => 32,
        };
        let first = self.logged.fetch_or(bit, Ordering::Relaxed) & bit == 0;
        if first {
            tracing::warn!(
                hook = self.hook.name(),
                path = %self.path.display(),
                kind = e.kind(),
                "policy plugin call failed: {e}; answering with the failure mode (logged once per kind)"
            );
        } else {
            tracing::debug!(
                hook = self.hook.name(),
                kind = e.kind(),
                "policy plugin call failed: {e}"
            );
        }
    }
}

enum SlotError {
    Init(String),
    Call(CallError),
}
