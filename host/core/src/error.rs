//! The file-system error type and the one place where errors become errno values.
//!
//! Every failure in the core is an [`FsError`]; the FUSE adapter calls [`FsError::errno`] and
//! nothing else decides an errno. The matches are exhaustive on purpose: a new variant (here
//! or in `BackendError`) must be given an errno explicitly.

use blobmount_backend::BackendError;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("read-only mount")]
    ReadOnly,
    #[error("permission denied: {0}")]
    AccessDenied(&'static str),
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("not implemented: {0}")]
    NoSys(&'static str),
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("bad file handle")]
    BadHandle,
    #[error("object changed remotely; local data kept in {saved_to}")]
    Conflict { saved_to: String },
    #[error("object changed remotely while reading")]
    Stale,
    #[error("directory too large to rename here ({0} objects); copy it instead")]
    RenameTooLarge(usize),
    #[error("local cache I/O: {0}")]
    LocalIo(String),
    #[error("no space left in the cache directory: {0}")]
    NoSpace(String),
    #[error("file too large for this store (the limit is {0} bytes)")]
    TooLarge(u64),
    #[error(
        "cache directory {dir} is in use by another blobmount (pid {holder}); give each mount its own cache.dir"
    )]
    CacheInUse { dir: String, holder: String },
    #[error("no such extended attribute")]
    NoAttr,
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    #[error("argument list too long: {0}")]
    TooBig(&'static str),
    #[error("result does not fit the buffer given")]
    BufferTooSmall,
    #[error(
        "file is open for reading through kernel passthrough; it cannot be changed until those opens close"
    )]
    TextBusy,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl FsError {
    /// The errno reported to the kernel.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::ReadOnly => libc::EROFS,
            FsError::AccessDenied(_) => libc::EACCES,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::NoSys(_) => libc::ENOSYS,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::BadHandle => libc::EBADF,
            FsError::Conflict { .. } | FsError::Stale => libc::ESTALE,
            // EXDEV makes `mv` fall back to copy + delete, which is what we want.
            FsError::RenameTooLarge(_) => libc::EXDEV,
            FsError::LocalIo(_) => libc::EIO,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::TooLarge(_) => libc::EFBIG,
            FsError::CacheInUse { .. } => libc::EBUSY,
            FsError::NoAttr => libc::ENODATA,
            FsError::NotSupported(_) => libc::ENOTSUP,
            FsError::TooBig(_) => libc::E2BIG,
            FsError::BufferTooSmall => libc::ERANGE,
            FsError::TextBusy => libc::ETXTBSY,
            FsError::Backend(b) => match b {
                BackendError::NotFound { .. } => libc::ENOENT,
                BackendError::AlreadyExists { .. } => libc::EEXIST,
                BackendError::PreconditionFailed { .. } => libc::ESTALE,
                BackendError::PermissionDenied(_) | BackendError::Unauthenticated(_) => {
                    libc::EACCES
                }
                BackendError::InvalidKey { .. } => libc::EINVAL,
                BackendError::NotSupported(_) => libc::ENOTSUP,
                BackendError::LocalNoSpace(_) => libc::ENOSPC,
                BackendError::TooLarge { .. } => libc::EFBIG,
                BackendError::NotEmpty { .. } => libc::ENOTEMPTY,
                // Path - Delete of a file as a directory (ResourceTypeMismatch).
                BackendError::KindMismatch { .. } => libc::ENOTDIR,
                BackendError::Unavailable(_)
                | BackendError::ChecksumMismatch { .. }
                | BackendError::Config(_)
                | BackendError::LocalIo(_)
                | BackendError::Other(_) => libc::EIO,
            },
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        if blobmount_backend::error::is_no_space(&e) {
            FsError::NoSpace(e.to_string())
        } else {
            FsError::LocalIo(e.to_string())
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

pub(crate) fn ignore_missing(r: Result<(), BackendError>) -> FsResult<()> {
    match r {
        Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The error of a read pinned to the version a file was opened at: that version replaced
/// or deleted by someone else is ESTALE (the handle's file is gone), not ENOENT.
pub(crate) fn stale(e: BackendError) -> FsError {
    match e {
        BackendError::PreconditionFailed { .. } | BackendError::NotFound { .. } => FsError::Stale,
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precondition_is_estale_and_missing_is_enoent() {
        let e: FsError = BackendError::PreconditionFailed { key: "k".into() }.into();
        assert_eq!(e.errno(), libc::ESTALE);
        let e: FsError = BackendError::NotFound { key: "k".into() }.into();
        assert_eq!(e.errno(), libc::ENOENT);
        assert_eq!(FsError::RenameTooLarge(5).errno(), libc::EXDEV);
    }

    #[test]
    fn a_full_disk_is_enospc_not_eio() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(FsError::from(full).errno(), libc::ENOSPC);
        let quota = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert_eq!(FsError::from(quota).errno(), libc::ENOSPC);
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(
            FsError::from(BackendError::from(full)).errno(),
            libc::ENOSPC
        );
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(FsError::from(other).errno(), libc::EIO);
    }
}
