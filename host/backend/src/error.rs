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
    #[error("bytes do not match their checksum (damaged in transfer or in the store): {key}")]
    ChecksumMismatch { key: String },
    #[error("local I/O error: {0}")]
    LocalIo(String),
    #[error("no space left on the local disk: {0}")]
    LocalNoSpace(String),
    #[error("object too large for this store: {key} ({size} bytes; the limit is {limit})")]
    TooLarge { key: String, size: u64, limit: u64 },
    #[error("directory not empty: {key}")]
    NotEmpty { key: String },
    #[error("a file where a directory is meant, or the reverse: {key}")]
    KindMismatch { key: String },
    #[error("store error: {0}")]
    Other(String),
}

impl BackendError {
    /// True for errors that say something about the object (as opposed to the connection).
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

/// Store error codes (in a lower-cased message) saying the credentials were refused.
pub(crate) fn names_auth_failure(lower: &str) -> bool {
    [
        "authenticationfailed",
        "authorizationfailure",
        "signaturedoesnotmatch",
        "invalidaccesskeyid",
    ]
    .iter()
    .any(|c| lower.contains(c))
}

/// Store error codes (in a lower-cased message) saying the container or bucket is missing.
pub(crate) fn names_missing_container(lower: &str) -> bool {
    ["nosuchbucket", "containernotfound", "bucket not found"]
        .iter()
        .any(|c| lower.contains(c))
}

/// Query parameters and connection-string fields whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "sig=",
    "x-amz-signature=",
    "x-amz-security-token=",
    "x-amz-credential=",
    "access_token=",
    "accountkey=",
    "sharedaccesssignature=",
];

/// Remove secret values from a message before it can reach a log or a terminal: HTTP client
/// errors quote the request URL, and with a SAS token that URL carries its signature.
pub fn redact(msg: &str) -> String {
    let lower = msg.to_ascii_lowercase();
    let mut out = String::with_capacity(msg.len());
    let mut i = 0;
    while i < msg.len() {
        let hit = SECRET_PARAMS.iter().find(|p| {
            lower[i..].starts_with(*p)
                && (i == 0 || !lower.as_bytes()[i - 1].is_ascii_alphanumeric())
        });
        match hit {
            Some(p) => {
                out.push_str(&msg[i..i + p.len()]);
                i += p.len();
                let end = msg[i..]
                    .find(|c: char| {
                        matches!(c, '&' | ';' | ')' | '"' | '\'' | '<' | '>') || c.is_whitespace()
                    })
                    .map_or(msg.len(), |n| i + n);
                if end > i {
                    out.push_str("REDACTED");
                }
                i = end;
            }
            None => {
                let c = msg[i..].chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        if is_no_space(&e) {
            BackendError::LocalNoSpace(e.to_string())
        } else {
            BackendError::LocalIo(e.to_string())
        }
    }
}

/// A local write failed because the disk (or the user's quota) is full: programs expect
/// ENOSPC for that, not EIO.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secrets_are_redacted() {
        let m = "error sending request for url (http://h/acct/c?restype=container&sp=rl&sig=TOP%2BSECRET&se=x)";
        let r = redact(m);
        assert!(!r.contains("TOP"), "{r}");
        assert!(r.contains("sig=REDACTED&se=x"), "{r}");
        assert_eq!(
            redact("AccountName=a;AccountKey=k3y==;BlobEndpoint=x"),
            "AccountName=a;AccountKey=REDACTED;BlobEndpoint=x"
        );
        assert_eq!(redact("design=ok ünï"), "design=ok ünï");
    }
}
