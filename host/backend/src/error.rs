//! The one error type of the storage layer. Every store-specific failure is classified here
//! so the core can map it to an errno with an exhaustive match.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BackendError {
    #[error("object not found: {key}")]
    NotFound { key: String },
    #[error("object already exists: {key}")]
    AlreadyExists { key: String },
    #[error("precondition failed (object changed remotely): {key}")]
    PreconditionFailed { key: String },
    #[error("permission denied by the store: {0}")]
    PermissionDenied(String),
    #[error("authentication failed (check credentials): {0}")]
    Unauthenticated(String),
    #[error("key cannot be represented by this store client: {key}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("not supported by this store: {0}")]
    NotSupported(String),
    #[error("store unreachable or timed out: {0}")]
    Unavailable(String),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("local I/O error: {0}")]
    LocalIo(String),
    #[error("store error: {0}")]
    Other(String),
}

impl BackendError {
    /// True for errors that say something about the object (as opposed to the connection).
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::LocalIo(e.to_string())
    }
}
