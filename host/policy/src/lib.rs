//! WASM policy plugins for blobmount: the only crate that links wasmtime.
//!
//! Why it is separate: wasmtime is big and slow to compile, and a plugin is untrusted code.
//! This crate turns the `plugins:` config ([`PluginsConfig`]) into a [`WasmPolicy`], an
//! implementation of `blobmount_policy_api::Policy` the core calls like any other policy:
//!
//! - each configured hook gets a component compiled once (optionally cached on disk as a
//!   `.cwasm`), checked against its WIT world, and a pool of pre-instantiated instances;
//! - every call runs under a fuel budget, an epoch (wall-clock) deadline and a memory cap, and
//!   the plugin can import nothing but `blobmount:policy/host` (logging) and, for components
//!   that import it (Python, JS with WASI features), WASI with a deny-all context ([`wasi`]):
//!   no files, sockets or environment; stdout/stderr go to the log;
//! - pure answers (filter, consistency, acl) are cached, bounded;
//! - a call that traps, runs out of budget or returns garbage is answered by the hook's
//!   failure mode (`deny` or `allow`), counted, logged once per kind, and the instance is
//!   replaced; the mount keeps serving;
//! - instances per plugin are capped (`max-instances`), calls run off the async workers, and
//!   a circuit breaker stops calling a plugin that keeps failing (`breaker-failures`,
//!   `breaker-secs`), so a slow plugin cannot take the mount's runtime with it.
//!
//! Hooks without a plugin use `blobmount_policy_api::Builtin`.
//! [`tool`] holds the JSON input/output behind `blobmount plugin check|run`.

mod bindings;
mod breaker;
mod cache;
mod config;
mod engine;
mod error;
mod plugin;
mod policy;
pub mod tool;
mod wasi;

pub use bindings::WIT_VERSION;
pub use config::{
    BREAKER_SECS_RANGE, DEFAULT_WATCH_SECS, FailureMode, Hook, MAX_INSTANCES_RANGE, ParamValue,
    PluginConfig, PluginsConfig, WATCH_SECS_RANGE,
};
pub use error::{CallError, LoadError};
pub use plugin::{FAILURE_KINDS, PluginStats, StatsSnapshot};
pub use policy::WasmPolicy;
