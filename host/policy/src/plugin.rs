//! Loading one component for one hook, and the pool of ready instances calls run on.
//!
//! Why a pool: instantiating costs tens of microseconds plus the plugin's `init`, far too much
//! for a FUSE lookup, so instances are created at load time (`prewarm`) and reused; a call
//! borrows one, runs under a fresh fuel budget and epoch deadline, and returns it. Calls that
//! overlap get another instance (created on demand, then kept). An instance that trapped may
//! hold broken state, so it is dropped and replaced by a fresh one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder};

use crate::bindings::{HostState, WIT_VERSION, World};
use crate::config::{Hook, PluginConfig};
use crate::engine::{TICK_MS, compile};
use crate::error::{CallError, LoadError};

/// Counters for one plugin (exported as metrics by the daemon).
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub cache_hits: AtomicU64,
    pub failures: AtomicU64,
    pub instantiations: AtomicU64,
}

/// A point-in-time copy of [`PluginStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub calls: u64,
    pub cache_hits: u64,
    pub failures: u64,
    pub instantiations: u64,
}

impl PluginStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            instantiations: self.instantiations.load(Ordering::Relaxed),
        }
    }
}

struct Slot<W> {
    store: Store<HostState>,
    world: W,
}

/// One loaded plugin with its instance pool.
pub(crate) struct Loaded<W: World> {
    pub(crate) hook: Hook,
    pub(crate) path: PathBuf,
    engine: Engine,
    pre: W::Pre,
    params: Vec<(String, String)>,
    fuel: u64,
    deadline_ticks: u64,
    memory_bytes: usize,
    free: Mutex<Vec<Slot<W>>>,
    pub(crate) stats: PluginStats,
    logged: AtomicU32,
    /// Time the first instance took to create and `init` (for reports and benchmarks).
    pub(crate) first_instantiate: std::time::Duration,
}

/// Check the file's header before handing it to the compiler, for a clearer message.
fn check_header(hook: Hook, path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let what = match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => return Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => "a core wasm module, not a component",
        Some([0, b'a', b's', b'm', ..]) => "an unknown WebAssembly version",
        _ => "not WebAssembly at all",
    };
    Err(LoadError::NotAComponent {
        hook,
        path: path.to_path_buf(),
        what,
    })
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
        .filter(|n| !n.starts_with("blobmount:policy/"))
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

impl<W: World> Loaded<W> {
    /// Read, compile (or fetch from the cache), check and pre-instantiate a plugin.
    pub(crate) fn load(
        engine: &Engine,
        hook: Hook,
        cfg: &PluginConfig,
        cache_dir: Option<&Path>,
    ) -> Result<Loaded<W>, LoadError> {
        let path = cfg.path.clone();
        if cfg.fuel == 0 || cfg.deadline_ms == 0 || cfg.memory_mib == 0 {
            return Err(LoadError::Limits {
                hook,
                reason: "fuel, deadline-ms and memory-mib must be above zero".into(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
            hook,
            path: path.clone(),
            source,
        })?;
        check_header(hook, &path, &bytes)?;
        let component = compile(engine, hook, &path, &bytes, cache_dir)?;
        check_interface::<W>(engine, hook, &path, &component)?;

        let mut linker: Linker<HostState> = Linker::new(engine);
        W::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
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
            path: path.clone(),
            engine: engine.clone(),
            pre,
            params: cfg.param_list(),
            fuel: cfg.fuel,
            deadline_ticks: cfg.deadline_ms.div_ceil(TICK_MS) + 1,
            memory_bytes,
            free: Mutex::new(Vec::new()),
            stats: PluginStats::default(),
            logged: AtomicU32::new(0),
            first_instantiate: std::time::Duration::ZERO,
        };
        let t = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..cfg.prewarm.max(1) {
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
        loaded.free = Mutex::new(slots);
        tracing::info!(
            hook = hook.name(),
            path = %path.display(),
            instantiate_us = loaded.first_instantiate.as_micros() as u64,
            "policy plugin loaded"
        );
        Ok(loaded)
    }

    fn arm(&self, store: &mut Store<HostState>, scale: u64) -> Result<(), CallError> {
        store
            .set_fuel(self.fuel.saturating_mul(scale.max(1)))
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        store.set_epoch_deadline(self.deadline_ticks);
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
                hook: self.hook.name(),
                log_lines: 0,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        self.arm(&mut store, 1).map_err(SlotError::Call)?;
        let world = W::instantiate(&self.pre, &mut store)
            .map_err(|e| SlotError::Call(CallError::from_wasmtime(&e)))?;
        self.arm(&mut store, 1).map_err(SlotError::Call)?;
        match world.init(&mut store, &self.params) {
            Ok(Ok(())) => Ok(Slot { store, world }),
            Ok(Err(msg)) => Err(SlotError::Init(msg)),
            Err(e) => Err(SlotError::Call(CallError::from_wasmtime(&e))),
        }
    }

    /// Run `f` on a pooled instance under the call limits (`scale` multiplies the fuel, for
    /// batch calls). On error the instance is dropped; the next call gets a fresh one.
    pub(crate) fn call<R>(
        &self,
        scale: u64,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let pooled = self.free.lock().ok().and_then(|mut v| v.pop());
        let mut slot = match pooled {
            Some(s) => s,
            None => self.new_slot().map_err(|e| match e {
                SlotError::Init(m) => CallError::Instantiate(format!("init refused: {m}")),
                SlotError::Call(e) => CallError::Instantiate(e.to_string()),
            })?,
        };
        self.arm(&mut slot.store, scale)?;
        let out = f(&slot.world, &mut slot.store).map_err(|e| CallError::from_wasmtime(&e))?;
        if let Ok(mut v) = self.free.lock() {
            v.push(slot);
        }
        Ok(out)
    }

    /// Count a failure and log it: the first failure of each kind at `warn`, later ones at
    /// `debug` (a misbehaving plugin must not flood the log).
    pub(crate) fn note_failure(&self, e: &CallError) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let bit = match e {
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
