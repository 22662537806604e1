//! Exit codes of every `blobmount` command, and the failure value that carries one.
//!
//! Why a module of its own: the codes are part of the CLI contract (scripts and
//! orchestrators branch on them), and both the command dispatch (`cli`) and the mount stages
//! (`mount`) produce them; keeping them here lets neither import the other.
//!
//! 0 success, 1 runtime failure, 2 bad usage or configuration, 3 the store refused the
//! credentials, 4 the store is unreachable, 5 the kernel mount failed.

use std::fmt::Display;
use std::process::ExitCode;

use blobmount_backend::BackendError;

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_AUTH: u8 = 3;
pub const EXIT_UNREACHABLE: u8 = 4;
pub const EXIT_MOUNT: u8 = 5;

/// Why a command (or a mount stage) stopped: the exit code and the one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub msg: String,
}

impl Failure {
    pub fn new(code: u8, msg: impl Display) -> Self {
        Failure {
            code,
            msg: msg.to_string(),
        }
    }

    pub fn runtime(msg: impl Display) -> Self {
        Failure::new(EXIT_RUNTIME, msg)
    }

    pub fn config(msg: impl Display) -> Self {
        Failure::new(EXIT_CONFIG, msg)
    }

    pub fn mount(msg: impl Display) -> Self {
        Failure::new(EXIT_MOUNT, msg)
    }

    /// A failure talking to the store, with the code its kind of error calls for.
    pub fn store(e: &BackendError, msg: impl Display) -> Self {
        Failure::new(classify(e), msg)
    }
}

/// The exit code for a store error met while mounting.
pub fn classify(e: &BackendError) -> u8 {
    match e {
        BackendError::Unauthenticated(_) | BackendError::PermissionDenied(_) => EXIT_AUTH,
        BackendError::Unavailable(_) => EXIT_UNREACHABLE,
        BackendError::Config(_) | BackendError::InvalidKey { .. } => EXIT_CONFIG,
        BackendError::NotFound { .. } => EXIT_CONFIG,
        BackendError::AlreadyExists { .. }
        | BackendError::PreconditionFailed { .. }
        | BackendError::NotSupported(_)
        | BackendError::ChecksumMismatch { .. }
        | BackendError::LocalIo(_)
        | BackendError::LocalNoSpace(_)
        | BackendError::TooLarge { .. }
        | BackendError::NotEmpty { .. }
        | BackendError::KindMismatch { .. }
        | BackendError::Other(_) => EXIT_RUNTIME,
    }
}

/// Print `blobmount: MSG` on stderr and give `code` (commands that do not log).
pub fn fail(code: u8, msg: impl Display) -> ExitCode {
    eprintln!("blobmount: {msg}");
    ExitCode::from(code)
}
