//! The DFS endpoint of an ADLS Gen2 account with a hierarchical namespace
//! (`https://ACCOUNT.dfs.core.windows.net`): what only it does, following Microsoft's "Azure
//! Data Lake Storage Gen2 REST API" reference. Data reads and writes stay on the Blob API
//! (multi-protocol access), through the rest of [`crate::azure`].
//!
//! Why a module of its own: these calls share nothing with the Blob API but the signer
//! (Shared Key with the Blob service's string-to-sign, SAS or bearer token, through the
//! shared [`Rest`] client) and need the DFS error codes mapped to [`BackendError`] with an
//! exhaustive match ([`DfsCode`]). The requests, exactly:
//! - rename: `PUT {fs}/{to}` with `x-ms-rename-source: /{filesystem}/{from}`, and
//!   `If-None-Match: *` (no replace) / `x-ms-source-if-match: ETAG` when asked; repeated with
//!   `?continuation=` while the answer carries `x-ms-continuation`.
//! - create a directory: `PUT {fs}/{path}?resource=directory` with `If-None-Match: *`,
//!   `x-ms-permissions: 0750` and `x-ms-umask: 0000` (so the mode is the one asked).
//! - delete a directory: `DELETE {fs}/{path}?recursive=true|false`, repeated with
//!   `&continuation=` likewise.
//! - get access: `HEAD {fs}/{path}?action=getAccessControl&upn=false`, answered in
//!   `x-ms-owner`, `x-ms-group`, `x-ms-permissions`, `x-ms-acl`.
//! - set access: `PATCH {fs}/{path}?action=setAccessControl` with `x-ms-owner`,
//!   `x-ms-group`, and `x-ms-permissions` or `x-ms-acl`.
//! - detection (Blob endpoint): `GET {account}/?restype=account&comp=properties`, header
//!   `x-ms-is-hns-enabled`.

use bytes::Bytes;
use http::Method;

use crate::api::{AccessUpdate, PathAccess, PutOutcome, RenameCond, Result};
use crate::error::{BackendError, redact};
use crate::rest::{Rest, encode_segment, header, transient_status};

/// The DFS error codes this client acts on (the `x-ms-error-code` header, or `error.code` of
/// the JSON body), each given its meaning in [`DfsCode::error`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DfsCode {
    PathNotFound,
    SourcePathNotFound,
    RenameDestinationParentPathNotFound,
    ParentNotFound,
    FilesystemNotFound,
    PathAlreadyExists,
    DirectoryNotEmpty,
    ConditionNotMet,
    SourceConditionNotMet,
    InvalidFlushPosition,
    AuthorizationPermissionMismatch,
    AuthorizationFailure,
    AuthenticationFailed,
    InvalidRenameSourcePath,
    ResourceTypeMismatch,
    InvalidSourceOrDestinationResourceType,
    PathIsBeingDeleted,
    SourcePathIsBeingDeleted,
    DestinationPathIsBeingDeleted,
    LeaseIdMissing,
    LeaseIdMismatch,
    ServerBusy,
    InternalError,
    OperationTimedOut,
    /// A code not listed here (or none): classified by its HTTP status.
    Other(String),
}

impl DfsCode {
    pub fn parse(code: &str) -> DfsCode {
        match code {
            "PathNotFound" => DfsCode::PathNotFound,
            "SourcePathNotFound" => DfsCode::SourcePathNotFound,
            "RenameDestinationParentPathNotFound" => DfsCode::RenameDestinationParentPathNotFound,
            "ParentNotFound" => DfsCode::ParentNotFound,
            "FilesystemNotFound" => DfsCode::FilesystemNotFound,
            "PathAlreadyExists" => DfsCode::PathAlreadyExists,
            "DirectoryNotEmpty" => DfsCode::DirectoryNotEmpty,
            "ConditionNotMet" => DfsCode::ConditionNotMet,
            "SourceConditionNotMet" => DfsCode::SourceConditionNotMet,
            "InvalidFlushPosition" => DfsCode::InvalidFlushPosition,
            "AuthorizationPermissionMismatch" => DfsCode::AuthorizationPermissionMismatch,
            "AuthorizationFailure" => DfsCode::AuthorizationFailure,
            "AuthenticationFailed" => DfsCode::AuthenticationFailed,
            "InvalidRenameSourcePath" => DfsCode::InvalidRenameSourcePath,
            "ResourceTypeMismatch" => DfsCode::ResourceTypeMismatch,
            "InvalidSourceOrDestinationResourceType" => {
                DfsCode::InvalidSourceOrDestinationResourceType
            }
            "PathIsBeingDeleted" => DfsCode::PathIsBeingDeleted,
            "SourcePathIsBeingDeleted" => DfsCode::SourcePathIsBeingDeleted,
            "DestinationPathIsBeingDeleted" => DfsCode::DestinationPathIsBeingDeleted,
            "LeaseIdMissing" => DfsCode::LeaseIdMissing,
            "LeaseIdMismatch" => DfsCode::LeaseIdMismatch,
            "ServerBusy" => DfsCode::ServerBusy,
            "InternalError" => DfsCode::InternalError,
            "OperationTimedOut" => DfsCode::OperationTimedOut,
            other => DfsCode::Other(other.to_string()),
        }
    }

    /// The error of a failed DFS request on `key` with this code, HTTP `status` and message
    /// `msg`. Exhaustive: a new code must be given its meaning here.
    pub fn error(self, status: u16, key: &str, msg: String) -> BackendError {
        let key = key.to_string();
        match self {
            DfsCode::PathNotFound
            | DfsCode::SourcePathNotFound
            | DfsCode::RenameDestinationParentPathNotFound
            | DfsCode::ParentNotFound
            | DfsCode::PathIsBeingDeleted
            | DfsCode::SourcePathIsBeingDeleted => BackendError::NotFound { key },
            DfsCode::FilesystemNotFound => {
                BackendError::Config(format!("container/filesystem does not exist: {msg}"))
            }
            DfsCode::PathAlreadyExists | DfsCode::DestinationPathIsBeingDeleted => {
                BackendError::AlreadyExists { key }
            }
            DfsCode::DirectoryNotEmpty => BackendError::NotEmpty { key },
            // The file's length is not the position we flushed at: someone else wrote it.
            DfsCode::ConditionNotMet
            | DfsCode::SourceConditionNotMet
            | DfsCode::InvalidFlushPosition => BackendError::PreconditionFailed { key },
            DfsCode::AuthorizationPermissionMismatch
            | DfsCode::AuthorizationFailure
            | DfsCode::LeaseIdMissing
            | DfsCode::LeaseIdMismatch => BackendError::PermissionDenied(msg),
            DfsCode::AuthenticationFailed => BackendError::Unauthenticated(msg),
            DfsCode::InvalidRenameSourcePath => BackendError::InvalidKey {
                key,
                reason: "a directory cannot move into itself".into(),
            },
            DfsCode::ResourceTypeMismatch | DfsCode::InvalidSourceOrDestinationResourceType => {
                BackendError::KindMismatch { key }
            }
            DfsCode::ServerBusy | DfsCode::InternalError | DfsCode::OperationTimedOut => {
                BackendError::Unavailable(msg)
            }
            DfsCode::Other(_) => by_status(status, key, msg),
        }
    }
}

/// A failure without a code this client knows, by its HTTP status.
fn by_status(status: u16, key: String, msg: String) -> BackendError {
    match status {
        404 => BackendError::NotFound { key },
        409 => BackendError::AlreadyExists { key },
        412 => BackendError::PreconditionFailed { key },
        401 => BackendError::Unauthenticated(msg),
        403 => BackendError::PermissionDenied(msg),
        501 => BackendError::NotSupported(msg),
        s if http::StatusCode::from_u16(s)
            .is_ok_and(|s| transient_status(s) || s.is_server_error()) =>
        {
            BackendError::Unavailable(msg)
        }
        _ => BackendError::Other(msg),
    }
}

/// Classify a failed DFS reply.
async fn dfs_error(what: &str, key: &str, r: reqwest::Response) -> BackendError {
    let status = r.status().as_u16();
    let head_code = header(&r, "x-ms-error-code");
    let body = r.text().await.unwrap_or_default();
    let code = head_code.or_else(|| {
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
    });
    let short: String = body.chars().take(300).collect();
    let msg = redact(&format!(
        "{what} {key}: {status} {}: {short}",
        code.as_deref().unwrap_or("")
    ));
    DfsCode::parse(code.as_deref().unwrap_or("")).error(status, key, msg)
}

/// One filesystem (container) of the DFS endpoint.
#[derive(Clone)]
pub struct Dfs {
    rest: Rest,
    /// `{dfs endpoint}/{filesystem}`.
    fs_url: String,
    filesystem: String,
}

impl std::fmt::Debug for Dfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dfs").field("fs_url", &self.fs_url).finish()
    }
}

/// Path segments of a key, each percent-encoded (`/` between them kept).
fn encode_path(key: &str) -> String {
    key.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

impl Dfs {
    /// `endpoint` is the DFS endpoint of the account (`https://ACCOUNT.dfs.core.windows.net`,
    /// or `http://HOST:PORT/ACCOUNT` for an emulator-style endpoint).
    pub fn new(rest: Rest, endpoint: &str, filesystem: &str) -> Dfs {
        Dfs {
            rest,
            fs_url: format!(
                "{}/{}",
                endpoint.trim_end_matches('/'),
                encode_segment(filesystem)
            ),
            filesystem: filesystem.to_string(),
        }
    }

    fn url(&self, key: &str, query: &str) -> String {
        match query.is_empty() {
            true => format!("{}/{}", self.fs_url, encode_path(key)),
            false => format!("{}/{}?{query}", self.fs_url, encode_path(key)),
        }
    }

    /// Path - Create with `x-ms-rename-source` (see the module doc).
    pub async fn rename(&self, from: &str, to: &str, cond: &RenameCond) -> Result<PutOutcome> {
        let what = "Path - Create (rename)";
        let source = format!(
            "/{}/{}",
            encode_segment(&self.filesystem),
            encode_path(from)
        );
        let mut continuation: Option<String> = None;
        loop {
            let mut headers = vec![("x-ms-rename-source", source.clone())];
            if cond.no_replace {
                headers.push(("If-None-Match", "*".to_string()));
            }
            if let Some(e) = &cond.source_etag {
                headers.push(("x-ms-source-if-match", e.clone()));
            }
            let query = continuation
                .as_deref()
                .map(|c| format!("continuation={}", encode_segment(c)))
                .unwrap_or_default();
            let r = self
                .rest
                .send(
                    what,
                    Method::PUT,
                    &self.url(to, &query),
                    &headers,
                    Bytes::new(),
                )
                .await?;
            if !r.status().is_success() {
                // `If-None-Match: *` failing is about the destination (ConditionNotMet, or a
                // bare 412): it exists. The source's ETag failing is SourceConditionNotMet.
                let source_failed =
                    header(&r, "x-ms-error-code").as_deref() == Some("SourceConditionNotMet");
                let e = dfs_error(what, to, r).await;
                return Err(match e {
                    BackendError::PreconditionFailed { .. }
                        if cond.no_replace && !source_failed =>
                    {
                        BackendError::AlreadyExists { key: to.into() }
                    }
                    e => e,
                });
            }
            continuation = header(&r, "x-ms-continuation").filter(|c| !c.is_empty());
            if continuation.is_none() {
                return Ok(PutOutcome {
                    etag: header(&r, "etag"),
                });
            }
        }
    }

    /// Path - Create `resource=directory`, conditional on absence.
    pub async fn create_dir(&self, key: &str, mode: Option<u16>) -> Result<()> {
        let what = "Path - Create (directory)";
        let mut headers = vec![("If-None-Match", "*".to_string())];
        if let Some(m) = mode {
            headers.push(("x-ms-permissions", format!("{:04o}", m & 0o7777)));
            headers.push(("x-ms-umask", "0000".to_string()));
        }
        let r = self
            .rest
            .send(
                what,
                Method::PUT,
                &self.url(key, "resource=directory"),
                &headers,
                Bytes::new(),
            )
            .await?;
        match r.status().as_u16() {
            200..=299 => Ok(()),
            // If-None-Match: * failed: something is there.
            412 => Err(BackendError::AlreadyExists { key: key.into() }),
            _ => Err(dfs_error(what, key, r).await),
        }
    }

    /// Path - Delete, `recursive` as given.
    pub async fn delete_dir(&self, key: &str, recursive: bool) -> Result<()> {
        let what = "Path - Delete";
        let mut continuation: Option<String> = None;
        loop {
            let mut query = format!("recursive={recursive}");
            if let Some(c) = &continuation {
                query.push_str(&format!("&continuation={}", encode_segment(c)));
            }
            let r = self
                .rest
                .send(
                    what,
                    Method::DELETE,
                    &self.url(key, &query),
                    &[],
                    Bytes::new(),
                )
                .await?;
            if !r.status().is_success() {
                return Err(dfs_error(what, key, r).await);
            }
            continuation = header(&r, "x-ms-continuation").filter(|c| !c.is_empty());
            if continuation.is_none() {
                return Ok(());
            }
        }
    }

    /// Path - Get Properties `action=getAccessControl`.
    pub async fn get_access(&self, key: &str) -> Result<PathAccess> {
        let what = "Path - Get Properties (getAccessControl)";
        let r = self
            .rest
            .send(
                what,
                Method::HEAD,
                &self.url(key, "action=getAccessControl&upn=false"),
                &[],
                Bytes::new(),
            )
            .await?;
        if !r.status().is_success() {
            return Err(dfs_error(what, key, r).await);
        }
        let h = |n: &str| header(&r, n).unwrap_or_default();
        Ok(PathAccess {
            owner: h("x-ms-owner"),
            group: h("x-ms-group"),
            permissions: h("x-ms-permissions"),
            acl: h("x-ms-acl"),
        })
    }

    /// Path - Update `action=setAccessControl`.
    pub async fn set_access(&self, key: &str, u: &AccessUpdate) -> Result<Option<String>> {
        let what = "Path - Update (setAccessControl)";
        if u.permissions.is_some() && u.acl.is_some() {
            return Err(BackendError::InvalidKey {
                key: key.into(),
                reason: "permissions and an ACL cannot be set in one request".into(),
            });
        }
        let mut headers = Vec::new();
        for (name, v) in [
            ("x-ms-owner", &u.owner),
            ("x-ms-group", &u.group),
            ("x-ms-permissions", &u.permissions),
            ("x-ms-acl", &u.acl),
        ] {
            if let Some(v) = v {
                headers.push((name, v.clone()));
            }
        }
        let r = self
            .rest
            .send(
                what,
                Method::PATCH,
                &self.url(key, "action=setAccessControl"),
                &headers,
                Bytes::new(),
            )
            .await?;
        if !r.status().is_success() {
            return Err(dfs_error(what, key, r).await);
        }
        Ok(r.headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }
}

/// Longest the namespace detection may take at mount.
const DETECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Get Account Information on the Blob endpoint `account_url`: `Some(true)` when the
/// account has a hierarchical namespace, `Some(false)` when it says it has none, `None`
/// when the header is missing (an emulator) or the request failed.
pub async fn detect_hns(rest: &Rest, account_url: &str) -> Option<bool> {
    let url = format!(
        "{}/?restype=account&comp=properties",
        account_url.trim_end_matches('/')
    );
    // Bounded: a store that does not answer fails the mount's own first request with its
    // clear error, not this one after the whole retry budget.
    let ask = rest.send(
        "Get Account Information",
        Method::GET,
        &url,
        &[],
        Bytes::new(),
    );
    let r = tokio::time::timeout(DETECT_TIMEOUT, ask).await.ok()?.ok()?;
    if !r.status().is_success() {
        return None;
    }
    header(&r, "x-ms-is-hns-enabled").map(|v| v.eq_ignore_ascii_case("true"))
}

/// The DFS endpoint of an account whose Blob endpoint is `blob` (`https://A.blob.HOST` ->
/// `https://A.dfs.HOST`); `None` for other forms (an emulator's `http://IP:PORT/ACCOUNT`),
/// where it must be configured.
pub fn dfs_endpoint_of(blob: &str) -> Option<String> {
    let (scheme, rest) = blob.trim_end_matches('/').split_once("://")?;
    let (account, host) = rest.split_once('.')?;
    let host = host.strip_prefix("blob.")?;
    if host.contains('/') {
        return None;
    }
    Some(format!("{scheme}://{account}.dfs.{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_errno_class() {
        let e = |c: &str, s: u16| DfsCode::parse(c).error(s, "k", "m".into());
        assert!(matches!(
            e("PathNotFound", 404),
            BackendError::NotFound { .. }
        ));
        assert!(matches!(
            e("RenameDestinationParentPathNotFound", 404),
            BackendError::NotFound { .. }
        ));
        assert!(matches!(
            e("PathAlreadyExists", 409),
            BackendError::AlreadyExists { .. }
        ));
        assert!(matches!(
            e("DirectoryNotEmpty", 409),
            BackendError::NotEmpty { .. }
        ));
        assert!(matches!(
            e("SourceConditionNotMet", 412),
            BackendError::PreconditionFailed { .. }
        ));
        assert!(matches!(
            e("AuthorizationPermissionMismatch", 403),
            BackendError::PermissionDenied(_)
        ));
        assert!(matches!(
            e("ResourceTypeMismatch", 409),
            BackendError::KindMismatch { .. }
        ));
        assert!(matches!(e("Whatever", 404), BackendError::NotFound { .. }));
        assert!(matches!(e("", 503), BackendError::Unavailable(_)));
        assert!(matches!(e("", 400), BackendError::Other(_)));
    }

    #[test]
    fn the_dfs_endpoint_follows_the_blob_endpoint() {
        assert_eq!(
            dfs_endpoint_of("https://acct.blob.core.windows.net/").as_deref(),
            Some("https://acct.dfs.core.windows.net")
        );
        assert_eq!(
            dfs_endpoint_of("https://acct.blob.core.chinacloudapi.cn").as_deref(),
            Some("https://acct.dfs.core.chinacloudapi.cn")
        );
        assert_eq!(
            dfs_endpoint_of("http://127.0.0.1:10000/devstoreaccount1"),
            None
        );
    }
}

#[cfg(test)]
#[path = "adls_tests.rs"]
mod client_tests;
