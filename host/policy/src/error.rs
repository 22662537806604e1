//! Errors: [`LoadError`] when a plugin cannot be used at all (the mount must not start), and
//! [`CallError`] for one failed call (answered by the failure mode; the mount keeps going).

use std::path::PathBuf;

use crate::config::Hook;

/// Why a plugin could not be loaded. Every message names the file and the hook.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{hook} plugin {path}: cannot read the file: {source}")]
    Read {
        hook: Hook,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{hook} plugin {path}: not a WebAssembly component ({what}); build it as a component \
         (plugins/build.sh, wasm-component-ld or `wasm-tools component new`)"
    )]
    NotAComponent {
        hook: Hook,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{hook} plugin {path}: malformed component: {reason}")]
    Malformed {
        hook: Hook,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{hook} plugin {path}: imports {imports}, which blobmount does not provide \
         (plugins may import only blobmount:policy/host and WASI, which is linked with nothing granted)"
    )]
    ForbiddenImports {
        hook: Hook,
        path: PathBuf,
        imports: String,
    },
    #[error(
        "{hook} plugin {path}: does not implement world blobmount:policy/{world}@{version}: {reason}"
    )]
    WrongWorld {
        hook: Hook,
        path: PathBuf,
        world: &'static str,
        version: &'static str,
        reason: String,
    },
    #[error("{hook} plugin {path}: refused its parameters: {message}")]
    InitRejected {
        hook: Hook,
        path: PathBuf,
        message: String,
    },
    #[error("{hook} plugin {path}: failed while starting: {reason}")]
    Instantiate {
        hook: Hook,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin cache directory {dir}: {source}")]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{hook} plugin {path}: its SHA-256 is {actual}, not the pinned {expected}; \
         refusing to run it (update sha256 if the new file is the one you want)"
    )]
    Pinned {
        hook: Hook,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{hook} plugin: bad limits: {reason}")]
    Limits { hook: Hook, reason: String },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// Why one call did not produce a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("ran out of fuel (call budget)")]
    OutOfFuel,
    #[error("exceeded its wall-clock deadline")]
    Deadline,
    #[error("exceeded its memory cap")]
    Memory,
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned a bad answer: {0}")]
    BadReturn(String),
    #[error("could not be re-instantiated: {0}")]
    Instantiate(String),
    #[error("found none of its {0} instances free within its deadline")]
    Busy(usize),
    #[error("is kept out by its circuit breaker after failing repeatedly")]
    BreakerOpen,
}

impl CallError {
    /// A short stable name for metrics and log-once bookkeeping.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::OutOfFuel => "out-of-fuel",
            CallError::Deadline => "deadline",
            CallError::Memory => "memory",
            CallError::Trap(_) => "trap",
            CallError::BadReturn(_) => "bad-return",
            CallError::Instantiate(_) => "instantiate",
            CallError::Busy(_) => "busy",
            CallError::BreakerOpen => "breaker-open",
        }
    }

    /// Classify an error returned by wasmtime for a call.
    pub(crate) fn from_wasmtime(e: &wasmtime::Error) -> CallError {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::OutOfFuel) => CallError::OutOfFuel,
            Some(wasmtime::Trap::Interrupt) => CallError::Deadline,
            _ => {
                let msg = format!("{e:#}");
                if msg.contains("forcing trap when growing memory") {
                    CallError::Memory
                } else {
                    CallError::Trap(msg.lines().next().unwrap_or("").to_string())
                }
            }
        }
    }
}
