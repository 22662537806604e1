//! An Azure Data Lake Storage Gen2 (DFS REST API) test endpoint in front of Azurite.
//!
//! No emulator serves the DFS API, so this one translates it onto Azurite's Blob API: both
//! APIs see ONE namespace, the data lives in Azurite. [`DfsEndpoint::start`] opens two
//! loopback listeners:
//!
//! - `dfs_port()`: the DFS API at `http://127.0.0.1:{dfs_port}/devstoreaccount1/{fs}/{path}`
//!   (path-style, account first): Filesystem Create/Delete/Get Properties, Path Create
//!   (file, directory, rename of files and whole directories), Path Delete (recursive or
//!   not), Path Get Properties (plain, `getStatus`, `getAccessControl`), Path Update
//!   (`append`, `flush`, `setProperties`, `setAccessControl`), Path Read (ranges) and Path
//!   List (recursive or not, `maxResults`, `x-ms-continuation`), with the REST reference's
//!   conditional headers, status codes and `{"error":{"code","message"}}` bodies.
//! - `blob_port()`: the Blob API, forwarded to Azurite untouched, except Get Account
//!   Information (`GET /devstoreaccount1/?restype=account&comp=properties`), answered here
//!   with `x-ms-is-hns-enabled: true` so clients detect a hierarchical namespace.
//!
//! Storage layout in Azurite (what a real HNS account shows over the Blob API): a file is a
//! block blob; a directory is a zero-length blob with metadata `hdi_isfolder=true`, and
//! every parent of a blob is a directory even without one (Path Create, and the Blob
//! forwarder after a Blob write, put markers for missing parents; a delete keeps the
//! parent as a marker). Owner, group, permission bits
//! (four octal digits) and an extended ACL are the blob metadata `dfs_owner`, `dfs_group`,
//! `dfs_permissions`, `dfs_acl`; these and `hdi_isfolder` are hidden from
//! `x-ms-properties` (the other metadata, base64 in that header). Without them a path is
//! `$superuser:$superuser`, `rw-r-----` (file) or `rwxr-x---` (directory). The filesystem
//! root keeps them in the container's metadata.
//!
//! Atomicity: one endpoint-wide lock. DFS changes hold it for writing (a directory rename
//! is a Copy Blob + Delete Blob of every blob under it), DFS reads and every forwarded Blob
//! request hold it for reading, so nobody going through the endpoint sees a half-moved
//! directory. Writes straight to Azurite bypass it.
//!
//! Auth: a `SharedKey devstoreaccount1:SIG` signature is verified (the Blob service's
//! string-to-sign; 403 `AuthenticationFailed` when wrong, 401 without credentials);
//! `Authorization: Bearer ...` and SAS query strings are accepted WITHOUT verification.
//! Requests to Azurite are signed with the well-known Azurite key.
//!
//! Not implemented: leases, `setAccessControlRecursive`, Filesystem List and Set
//! Properties, paginated (`continuation`) delete and rename (both finish in one call),
//! encryption scopes, expiry, `retainUncommittedData`, user delegation; the SAS signature
//! and bearer tokens are not checked. Property values must be printable ASCII.

mod acl;
mod auth;
mod blob;
mod data;
mod list;
mod mount;
mod ns;
mod ops;
mod server;
mod wire;

use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use mount::{adls_mount_config, adls_mount_spec};

use auth::Verdict;
use ns::{R, error_response, fail};
use server::Shared;
use wire::{Request, Response, decode};

/// A running DFS endpoint (see the module doc). Stopped on drop.
pub struct DfsEndpoint {
    dfs_port: u16,
    blob_port: u16,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DfsEndpoint {
    /// Start both listeners in front of Azurite's Blob API on `azurite_port`.
    pub fn start(azurite_port: u16) -> DfsEndpoint {
        let shared = Arc::new(Shared::new(blob::Azurite { port: azurite_port }));
        let (dfs_port, t1) = server::listen(shared.clone(), handle);
        let (blob_port, t2) = server::listen(shared.clone(), server::forward);
        DfsEndpoint {
            dfs_port,
            blob_port,
            shared,
            threads: vec![t1, t2],
        }
    }

    /// The DFS API's port.
    pub fn dfs_port(&self) -> u16 {
        self.dfs_port
    }

    /// The Blob API forwarder's port.
    pub fn blob_port(&self) -> u16 {
        self.blob_port
    }

    /// `http://127.0.0.1:{dfs_port}/devstoreaccount1`.
    pub fn dfs_endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.dfs_port,
            crate::AZURITE_ACCOUNT
        )
    }

    /// `http://127.0.0.1:{blob_port}/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.blob_port,
            crate::AZURITE_ACCOUNT
        )
    }

    /// DFS requests so far, as `METHOD target`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.dfs_log.lock().expect("dfs log").clone()
    }

    /// DFS requests since the last call (the log is emptied).
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.dfs_log.lock().expect("dfs log"))
    }

    /// Blob API requests the forwarder saw so far, as `METHOD target`.
    pub fn blob_requests(&self) -> Vec<String> {
        self.shared.blob_log.lock().expect("blob log").clone()
    }
}

impl Drop for DfsEndpoint {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The DFS listener's handler.
fn handle(shared: &Shared, req: Request) -> Response {
    shared.dfs_log.lock().expect("dfs log").push(req.line());
    match route(shared, &req) {
        Ok(r) => r,
        Err(f) => error_response(&f),
    }
}

fn route(shared: &Shared, req: &Request) -> R<Response> {
    match auth::verify(req) {
        Verdict::SharedKey | Verdict::Unverified => {}
        Verdict::Bad => {
            return Err(fail(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            ));
        }
        Verdict::Missing => {
            return Err(fail(
                401,
                "NoAuthenticationInformation",
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
            ));
        }
    }
    let path = req.raw_path().trim_start_matches('/');
    let mut segs = path.splitn(3, '/');
    let account = segs.next().unwrap_or("");
    if account != crate::AZURITE_ACCOUNT {
        return Err(fail(
            400,
            "InvalidUri",
            "the path must start with /devstoreaccount1",
        ));
    }
    let fs = decode(segs.next().unwrap_or(""));
    if fs.is_empty() {
        return Err(fail(
            400,
            "InvalidUri",
            "no filesystem in the path (account operations are not implemented)",
        ));
    }
    let key = decode(segs.next().unwrap_or(""))
        .trim_matches('/')
        .to_string();
    let az = &shared.az;
    let resource = req.q("resource");
    let write = || shared.lock.write().expect("endpoint lock");
    let read = || shared.lock.read().expect("endpoint lock");
    if key.is_empty() && resource.as_deref() == Some("filesystem") {
        if req.method == "GET" {
            let _g = read();
            return list::list(az, &fs, req);
        }
        let _g = write();
        return ops::filesystem(az, &fs, req);
    }
    match req.method.as_str() {
        "PUT" if req.header("x-ms-rename-source").is_some() => {
            let _g = write();
            ops::rename(az, &fs, &key, req)
        }
        "PUT" => {
            let _g = write();
            ops::create(az, &fs, &key, req)
        }
        "DELETE" => {
            let _g = write();
            ops::delete(az, &fs, &key, req)
        }
        "HEAD" => {
            let _g = read();
            ops::properties(az, &fs, &key, req)
        }
        "GET" => {
            let _g = read();
            data::read(az, &fs, &key, req)
        }
        "PATCH" => {
            let _g = write();
            match req.q("action").as_deref() {
                Some("append") => data::append(az, &fs, &key, req),
                Some("flush") => data::flush(az, &fs, &key, req),
                Some("setProperties") => ops::update_meta(az, &fs, &key, req, false),
                Some("setAccessControl") => ops::update_meta(az, &fs, &key, req, true),
                other => Err(fail(
                    400,
                    "InvalidQueryParameterValue",
                    &format!("action {other:?} is not implemented"),
                )),
            }
        }
        m => Err(fail(
            405,
            "UnsupportedHttpVerb",
            &format!("{m} is not supported"),
        )),
    }
}
