//! The hierarchical namespace as the DFS endpoint sees it in Azurite: what a path is (file,
//! explicit directory = a zero-length blob with `hdi_isfolder=true`, implicit directory =
//! a prefix of other blobs), the DFS error answer, conditional headers, and the metadata
//! keys that hold owner, group, permissions and ACL.

use std::collections::BTreeMap;

use super::blob::{Azurite, Blob, FOLDER_KEY};
use super::wire::{Request, Response};

/// Blob metadata key holding the owner.
pub const OWNER_KEY: &str = "dfs_owner";
/// Blob metadata key holding the owning group.
pub const GROUP_KEY: &str = "dfs_group";
/// Blob metadata key holding the permission bits, four octal digits (sticky bit first).
pub const PERMS_KEY: &str = "dfs_permissions";
/// Blob metadata key holding the whole ACL (access and default entries) when it has more
/// than the three base entries.
pub const ACL_KEY: &str = "dfs_acl";

/// Metadata keys that are not user properties (hidden from `x-ms-properties`).
pub fn hidden(key: &str) -> bool {
    matches!(
        key,
        FOLDER_KEY | OWNER_KEY | GROUP_KEY | PERMS_KEY | ACL_KEY
    )
}

/// A failed DFS operation: status, `x-ms-error-code`, message.
#[derive(Debug)]
pub struct Fail {
    pub status: u16,
    pub code: String,
    pub message: String,
}

pub type R<T> = Result<T, Fail>;

pub fn fail(status: u16, code: &str, message: &str) -> Fail {
    Fail {
        status,
        code: code.to_string(),
        message: message.to_string(),
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        fail(502, "UpstreamUnreachable", &format!("Azurite: {e}"))
    }
}

/// A failed Azurite answer as the DFS API would report it.
pub fn upstream(r: &Response) -> Fail {
    let code = r.error_code();
    match code.as_str() {
        "ContainerNotFound" => fail(
            404,
            "FilesystemNotFound",
            "The specified filesystem does not exist.",
        ),
        "ContainerAlreadyExists" => fail(
            409,
            "FilesystemAlreadyExists",
            "The specified filesystem already exists.",
        ),
        "BlobNotFound" => fail(404, "PathNotFound", "The specified path does not exist."),
        "ConditionNotMet" => fail(
            412,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        ),
        _ => fail(r.status, &code, &String::from_utf8_lossy(&r.body)),
    }
}

/// Check an Azurite answer's status is one of `ok`.
pub fn expect(r: Response, ok: &[u16]) -> R<Response> {
    if ok.contains(&r.status) {
        Ok(r)
    } else {
        Err(upstream(&r))
    }
}

/// The DFS error answer: JSON body and `x-ms-error-code`.
pub fn error_response(f: &Fail) -> Response {
    let body = serde_json::json!({"error": {"code": f.code, "message": f.message}});
    Response::new(f.status)
        .with("x-ms-error-code", f.code.clone())
        .with("Content-Type", "application/json;charset=utf-8")
        .with_body(body.to_string().into_bytes())
}

impl Response {
    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// One existing path.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub key: String,
    /// The file's blob or the directory's marker; `None` for an implicit directory (and
    /// the root).
    pub blob: Option<Blob>,
    /// For an implicit directory: a child's Last-Modified.
    pub child_modified: String,
}

impl Node {
    pub fn etag(&self) -> String {
        match &self.blob {
            Some(b) => b.etag.clone(),
            None => implicit_etag(&self.key),
        }
    }

    pub fn last_modified(&self) -> String {
        match &self.blob {
            Some(b) => b.last_modified.clone(),
            None if self.child_modified.is_empty() => epoch(),
            None => self.child_modified.clone(),
        }
    }

    pub fn len(&self) -> u64 {
        match (&self.blob, self.kind) {
            (Some(b), Kind::File) => b.len,
            _ => 0,
        }
    }

    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.blob
            .as_ref()
            .map(|b| b.metadata.clone())
            .unwrap_or_default()
    }
}

/// The Last-Modified of a directory nothing dates (the root, an implicit directory seen
/// only as a listing prefix).
pub fn epoch() -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH)
}

/// An ETag for a directory that has no marker blob (stable per path).
pub fn implicit_etag(key: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("0x{h:016X}")
}

/// What `key` is in `fs`: `None` when nothing is there.
pub fn stat(az: &Azurite, fs: &str, key: &str) -> R<Option<Node>> {
    if key.is_empty() {
        // The root's owner, group, permissions and ACL are the container's metadata.
        let b = az.container_props(fs)?.map_err(|r| upstream(&r))?;
        return Ok(Some(Node {
            kind: Kind::Dir,
            key: String::new(),
            blob: Some(b),
            child_modified: String::new(),
        }));
    }
    match az.head(fs, key)? {
        Err(r) => return Err(upstream(&r)),
        Ok(Some(b)) => {
            let kind = if b.is_folder() { Kind::Dir } else { Kind::File };
            return Ok(Some(Node {
                kind,
                key: key.to_string(),
                blob: Some(b),
                child_modified: String::new(),
            }));
        }
        Ok(None) => {}
    }
    let page = az
        .list_page(fs, &format!("{key}/"), false, None, Some(1))?
        .map_err(|r| upstream(&r))?;
    Ok(page.blobs.first().map(|child| Node {
        kind: Kind::Dir,
        key: key.to_string(),
        blob: None,
        child_modified: child.last_modified.clone(),
    }))
}

/// The parent of `key` (`""` for a top-level path).
pub fn parent(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Why a set of conditional headers failed.
#[derive(Debug, PartialEq, Eq)]
pub enum CondFail {
    /// `If-None-Match: *` and the path exists.
    Exists,
    NotMet,
}

/// Conditional headers (`prefix` "" for `If-Match` and friends, "x-ms-source-" for the
/// rename source's).
pub fn check(req: &Request, prefix: &str, node: Option<&Node>) -> Result<(), CondFail> {
    let h = |n: &str| req.header(&format!("{prefix}{n}")).map(str::trim);
    let etag = node.map(|n| n.etag());
    let same = |want: &str| {
        etag.as_deref()
            .is_some_and(|e| want.split(',').any(|w| w.trim().trim_matches('"') == e))
    };
    if let Some(m) = h("if-match")
        && (node.is_none() || (m != "*" && !same(m)))
    {
        return Err(CondFail::NotMet);
    }
    if let Some(m) = h("if-none-match") {
        if m == "*" && node.is_some() {
            return Err(CondFail::Exists);
        }
        if m != "*" && same(m) {
            return Err(CondFail::NotMet);
        }
    }
    let modified = node.and_then(|n| httpdate::parse_http_date(&n.last_modified()).ok());
    let date = |n: &str| h(n).and_then(|d| httpdate::parse_http_date(d).ok());
    if let Some(d) = date("if-modified-since")
        && modified.is_none_or(|m| m <= d)
    {
        return Err(CondFail::NotMet);
    }
    if let Some(d) = date("if-unmodified-since")
        && modified.is_none_or(|m| m > d)
    {
        return Err(CondFail::NotMet);
    }
    Ok(())
}

/// [`check`] for an operation on the path itself: every failure is 412 `ConditionNotMet`.
pub fn check_plain(req: &Request, node: Option<&Node>) -> R<()> {
    check(req, "", node).map_err(|_| condition_not_met())
}

pub fn condition_not_met() -> Fail {
    fail(
        412,
        "ConditionNotMet",
        "The condition specified using HTTP conditional header(s) is not met.",
    )
}

pub fn path_not_found() -> Fail {
    fail(404, "PathNotFound", "The specified path does not exist.")
}

/// Put a directory marker at `key` unless a blob is there already (a directory that
/// existed only implicitly becomes explicit, as on an HNS account it always was).
pub fn materialize(az: &Azurite, fs: &str, key: &str) -> R<Blob> {
    if let Some(b) = az.head(fs, key)?.map_err(|r| upstream(&r))? {
        return Ok(b);
    }
    let mut meta = BTreeMap::new();
    meta.insert(FOLDER_KEY.to_string(), "true".to_string());
    expect(az.put(fs, key, Vec::new(), "", &meta)?, &[201])?;
    az.head(fs, key)?
        .map_err(|r| upstream(&r))?
        .ok_or_else(path_not_found)
}

/// Give every ancestor of `key` without a blob a directory marker, up to the first one that
/// has a blob (what a hierarchical namespace shows after a Blob API write under new
/// directories).
pub fn ensure_ancestors(az: &Azurite, fs: &str, key: &str) -> R<()> {
    let mut missing = Vec::new();
    let mut p = parent(key);
    while !p.is_empty() {
        if az.head(fs, p)?.map_err(|r| upstream(&r))?.is_some() {
            break;
        }
        missing.push(p.to_string());
        p = parent(p);
    }
    for dir in missing.iter().rev() {
        materialize(az, fs, dir)?;
    }
    Ok(())
}

/// Keep `key`'s parent directory in existence when `key` goes away (unless it is the root).
pub fn keep_parent(az: &Azurite, fs: &str, key: &str) -> R<()> {
    let p = parent(key);
    if !p.is_empty() {
        materialize(az, fs, p)?;
    }
    Ok(())
}

/// User properties (`x-ms-properties`, `name=base64,...`) from metadata.
pub fn properties_header(meta: &BTreeMap<String, String>) -> String {
    use base64::Engine;
    meta.iter()
        .filter(|(k, _)| !hidden(k))
        .map(|(k, v)| {
            format!(
                "{k}={}",
                base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parse `x-ms-properties` into metadata pairs (values must decode to printable ASCII,
/// which is what blob metadata can carry).
pub fn parse_properties(h: &str) -> R<BTreeMap<String, String>> {
    use base64::Engine;
    let bad = || {
        fail(
            400,
            "InvalidPropertyName",
            &format!("bad x-ms-properties: {h}"),
        )
    };
    let mut out = BTreeMap::new();
    for part in h.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(bad)?;
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() || hidden(&k) || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|_| bad())?;
        let v = String::from_utf8(raw).map_err(|_| bad())?;
        if !v.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            return Err(bad());
        }
        out.insert(k, v);
    }
    Ok(out)
}
