//! The two listeners' plumbing: accept loop, one thread per connection, keep-alive request
//! loop that notices the endpoint stopping, and the request log. Also the Blob forwarder
//! (copy each request to Azurite and its answer back, holding the endpoint lock for reading
//! so a DFS rename or recursive delete is never seen half done) with its one local answer,
//! Get Account Information saying the account has a hierarchical namespace.

use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::blob::Azurite;
use super::wire::{Request, Response, read_request, write_response};

/// What both listeners share.
pub struct Shared {
    pub az: Azurite,
    pub stop: AtomicBool,
    /// Write-held by DFS changes, read-held by DFS reads and every forwarded Blob request.
    pub lock: RwLock<()>,
    pub dfs_log: Mutex<Vec<String>>,
    pub blob_log: Mutex<Vec<String>>,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(az: Azurite) -> Shared {
        Shared {
            az,
            stop: AtomicBool::new(false),
            lock: RwLock::new(()),
            dfs_log: Mutex::new(Vec::new()),
            blob_log: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Headers every answer carries.
    pub fn finish(&self, resp: &mut Response) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        resp.set(
            "x-ms-request-id",
            format!("00000000-0000-0000-0000-{id:012}"),
        );
        resp.set("x-ms-version", "2021-06-08");
        resp.set(
            "Date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        resp.set("Server", "blobmount-dfs-endpoint");
    }
}

pub type Handler = fn(&Shared, Request) -> Response;

/// Bind a loopback listener and serve it with `handler` until `shared.stop`.
pub fn listen(shared: Arc<Shared>, handler: Handler) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("dfs endpoint bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let t = std::thread::spawn(move || {
        while !shared.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((client, _)) => {
                    let s = shared.clone();
                    std::thread::spawn(move || connection(client, &s, handler));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, t)
}

fn connection(client: TcpStream, shared: &Shared, handler: Handler) {
    let _ = client.set_nonblocking(false);
    let Ok(mut w) = client.try_clone() else {
        return;
    };
    let mut r = BufReader::new(client);
    loop {
        // Wait for the next request, looking up now and then to see whether to stop.
        let _ = r
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let mut one = [0u8; 1];
            match r.get_ref().peek(&mut one) {
                Ok(0) => return,
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        let _ = r.get_ref().set_read_timeout(Some(Duration::from_secs(60)));
        let req = match read_request(&mut r) {
            Ok(Some(req)) => req,
            _ => return,
        };
        let head = req.method == "HEAD";
        let close = req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let mut resp = handler(shared, req);
        shared.finish(&mut resp);
        if write_response(&mut w, &resp, head).is_err() || close {
            return;
        }
    }
}

/// The Blob listener's handler.
pub fn forward(shared: &Shared, mut req: Request) -> Response {
    shared.blob_log.lock().expect("blob log").push(req.line());
    let q = req.query();
    let has = |k: &str, v: &str| q.iter().any(|(a, b)| a == k && b == v);
    if req.method == "GET" && has("restype", "account") && has("comp", "properties") {
        return Response::new(200)
            .with("x-ms-sku-name", "Standard_LRS")
            .with("x-ms-account-kind", "StorageV2")
            .with("x-ms-is-hns-enabled", "true");
    }
    req.headers.retain(|(k, _)| k != "expect");
    let _guard = shared.lock.read().expect("endpoint lock");
    match shared.az.send_raw(&req) {
        Ok(mut resp) => {
            hns_effects(shared, &req, &q, resp.status);
            // Azurite's own request id and version stay; ours are added on top.
            resp.headers.retain(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "x-ms-request-id" | "x-ms-version" | "date" | "server"
                )
            });
            resp
        }
        Err(e) => Response::new(502).with_body(format!("Azurite: {e}").into_bytes()),
    }
}

/// What a hierarchical namespace does around a Blob API change, done after Azurite's
/// answer (which goes back untouched): a blob written under new directories makes them
/// real (marker blobs), and deleting a directory's last child leaves the directory.
fn hns_effects(shared: &Shared, req: &Request, q: &[(String, String)], status: u16) {
    if q.iter().any(|(k, _)| k == "restype") {
        return;
    }
    let path = req.raw_path().trim_start_matches('/');
    let mut segs = path.splitn(3, '/');
    let (_, Some(fs), Some(key)) = (segs.next(), segs.next(), segs.next()) else {
        return;
    };
    let (fs, key) = (super::wire::decode(fs), super::wire::decode(key));
    let key = key.trim_matches('/');
    if key.is_empty() {
        return;
    }
    let comp = q.iter().find(|(k, _)| k == "comp").map(|(_, v)| v.as_str());
    let created = req.method == "PUT"
        && matches!(status, 201 | 202)
        && (req.header("x-ms-blob-type").is_some()
            || req.header("x-ms-copy-source").is_some()
            || comp == Some("blocklist"));
    let deleted = req.method == "DELETE" && status == 202;
    // Best effort: the client's own request already succeeded.
    if created {
        let _ = super::ns::ensure_ancestors(&shared.az, &fs, key);
    } else if deleted {
        let _ = super::ns::keep_parent(&shared.az, &fs, key);
    }
}
