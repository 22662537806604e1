//! The ADLS Gen2 (DFS) test endpoint in front of Azurite, driven over HTTP with a Shared
//! Key client of its own (written here independently of the endpoint's verifier): path
//! create/list/rename/delete, conditional headers and their 404/409/412 codes, append and
//! flush, access control, continuation tokens, and one namespace shared with the Blob API.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use blobmount_tests::dfs::DfsEndpoint;
use blobmount_tests::{AZURITE_ACCOUNT, AZURITE_KEY, Emulator, Kind};

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn h(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn code(&self) -> String {
        self.h("x-ms-error-code").unwrap_or("").to_string()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn enc(s: &str, keep_slash: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One Shared-Key-signed request (`path` after the account, unencoded).
fn call(
    port: u16,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: &[u8],
    key: &str,
) -> Resp {
    let raw_path = format!("/{AZURITE_ACCOUNT}/{}", enc(path, true));
    let mut hs: Vec<(String, String)> = vec![
        (
            "x-ms-date".into(),
            httpdate::fmt_http_date(SystemTime::now()),
        ),
        ("x-ms-version".into(), "2021-06-08".into()),
    ];
    hs.extend(
        headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())),
    );
    let get = |n: &str| {
        hs.iter()
            .find(|(k, _)| k == n)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    let mut xms: Vec<&(String, String)> =
        hs.iter().filter(|(k, _)| k.starts_with("x-ms-")).collect();
    xms.sort();
    let mut q: Vec<(String, &str)> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    q.sort();
    let length = if body.is_empty() {
        String::new()
    } else {
        body.len().to_string()
    };
    let sts = format!(
        "{method}\n\n\n{length}\n\n{}\n\n{}\n{}\n{}\n{}\n{}\n{}/{AZURITE_ACCOUNT}{raw_path}{}",
        get("content-type"),
        get("if-modified-since"),
        get("if-match"),
        get("if-none-match"),
        get("if-unmodified-since"),
        get("range"),
        xms.iter()
            .map(|(k, v)| format!("{k}:{v}\n"))
            .collect::<String>(),
        q.iter()
            .map(|(k, v)| format!("\n{k}:{v}"))
            .collect::<String>(),
    );
    let k = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    let sig = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k),
        sts.as_bytes(),
    ));
    let mut target = raw_path.clone();
    if !query.is_empty() {
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v, false)))
            .collect();
        target = format!("{target}?{}", qs.join("&"));
    }
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\n",
        body.len()
    );
    for (k, v) in &hs {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

struct Dfs {
    _az: Emulator,
    ep: DfsEndpoint,
    fs: String,
}

impl Dfs {
    fn start() -> Dfs {
        let az = Emulator::start(Kind::Azure);
        let ep = DfsEndpoint::start(az.port);
        let d = Dfs {
            _az: az,
            ep,
            fs: "dfsfs".into(),
        };
        let r = d.req("PUT", "", &[("resource", "filesystem")], &[], b"");
        assert_eq!(r.status, 201, "{}", r.text());
        d
    }
    fn req(
        &self,
        method: &str,
        path: &str,
        q: &[(&str, &str)],
        h: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let p = if path.is_empty() {
            self.fs.clone()
        } else {
            format!("{}/{path}", self.fs)
        };
        call(self.ep.dfs_port(), method, &p, q, h, body, AZURITE_KEY)
    }
    fn mkdir(&self, path: &str) -> Resp {
        self.req("PUT", path, &[("resource", "directory")], &[], b"")
    }
    /// Create, append, flush: a whole file.
    fn write(&self, path: &str, data: &[u8]) {
        let r = self.req("PUT", path, &[("resource", "file")], &[], b"");
        assert_eq!(r.status, 201, "create {path}: {}", r.text());
        if !data.is_empty() {
            let r = self.req(
                "PATCH",
                path,
                &[("action", "append"), ("position", "0")],
                &[],
                data,
            );
            assert_eq!(r.status, 202, "append {path}: {}", r.text());
        }
        let n = data.len().to_string();
        let r = self.req(
            "PATCH",
            path,
            &[("action", "flush"), ("position", &n)],
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "flush {path}: {}", r.text());
    }
    fn head(&self, path: &str) -> Resp {
        self.req("HEAD", path, &[], &[], b"")
    }
    fn rename(&self, from: &str, to: &str, h: &[(&str, &str)]) -> Resp {
        let src = format!("/{}/{}", self.fs, enc(from, true));
        let mut hs: Vec<(&str, &str)> = vec![("x-ms-rename-source", &src)];
        hs.extend_from_slice(h);
        self.req("PUT", to, &[("mode", "legacy")], &hs, b"")
    }
    /// Every path of a listing, following continuation tokens.
    fn list(
        &self,
        dir: &str,
        recursive: bool,
        max: Option<usize>,
    ) -> (Vec<serde_json::Value>, usize) {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        let max = max.map(|m| m.to_string());
        loop {
            let mut q: Vec<(&str, &str)> = vec![
                ("resource", "filesystem"),
                ("recursive", if recursive { "true" } else { "false" }),
            ];
            if !dir.is_empty() {
                q.push(("directory", dir));
            }
            if let Some(m) = &max {
                q.push(("maxResults", m));
            }
            if let Some(t) = &token {
                q.push(("continuation", t));
            }
            let r = self.req("GET", "", &q, &[], b"");
            assert_eq!(r.status, 200, "{}", r.text());
            pages += 1;
            out.extend(r.json()["paths"].as_array().unwrap().iter().cloned());
            match r.h("x-ms-continuation") {
                Some(t) => token = Some(t.to_string()),
                None => return (out, pages),
            }
        }
    }
    fn names(&self, dir: &str, recursive: bool) -> Vec<String> {
        self.list(dir, recursive, None)
            .0
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    }
    fn read(&self, path: &str) -> Vec<u8> {
        let r = self.req("GET", path, &[], &[], b"");
        assert_eq!(r.status, 200, "read {path}: {}", r.text());
        r.body
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn create_properties_and_errors() {
    let d = Dfs::start();
    let props = format!("color={},size={}", b64("blue"), b64("10"));
    let r = d.req(
        "PUT",
        "dir",
        &[("resource", "directory")],
        &[("x-ms-properties", &props)],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.h("etag").is_some());
    // An existing directory: fine without conditions, 409 PathAlreadyExists with one.
    assert_eq!(d.mkdir("dir").status, 201);
    let r = d.req(
        "PUT",
        "dir",
        &[("resource", "directory")],
        &[("If-None-Match", "*")],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (409, "PathAlreadyExists"));
    assert_eq!(r.json()["error"]["code"], "PathAlreadyExists");
    let h = d.head("dir");
    assert_eq!(h.status, 200);
    assert_eq!(h.h("x-ms-resource-type"), Some("directory"));
    assert_eq!(h.h("x-ms-permissions"), Some("rwxr-x---"));
    assert_eq!(h.h("x-ms-owner"), Some("$superuser"));
    assert_eq!(h.h("x-ms-properties"), Some(props.as_str()));

    let r = d.req(
        "PUT",
        "dir/f",
        &[("resource", "file")],
        &[("If-None-Match", "*")],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = d.req(
        "PUT",
        "dir/f",
        &[("resource", "file")],
        &[("If-None-Match", "*")],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (409, "PathAlreadyExists"));
    let h = d.head("dir/f");
    assert_eq!(h.h("x-ms-resource-type"), Some("file"));
    assert_eq!(h.h("x-ms-permissions"), Some("rw-r-----"));
    assert_eq!(h.h("content-length"), Some("0"));
    // Permissions and umask.
    let r = d.req(
        "PUT",
        "dir/g",
        &[("resource", "file")],
        &[
            ("x-ms-permissions", "0777"),
            ("x-ms-umask", "0022"),
            ("x-ms-owner", "alice"),
        ],
        b"",
    );
    assert_eq!(r.status, 201);
    let h = d.head("dir/g");
    assert_eq!(h.h("x-ms-permissions"), Some("rwxr-xr-x"));
    assert_eq!(h.h("x-ms-owner"), Some("alice"));
    // Path Create makes missing parents real directories (marker blobs in Azurite).
    let r = d.req("PUT", "p1/p2/file", &[("resource", "file")], &[], b"");
    assert_eq!(r.status, 201);
    for parent in ["p1", "p1/p2"] {
        let (s, text) = blobmount_tests::http::azure_signed(
            d._az.port,
            "HEAD",
            &format!("/devstoreaccount1/dfsfs/{parent}"),
            &[],
            &[],
            b"",
        );
        assert_eq!(s, 200, "{parent}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("x-ms-meta-hdi_isfolder: true"),
            "{text}"
        );
        assert_eq!(d.head(parent).h("x-ms-permissions"), Some("rwxr-x---"));
    }
    // A directory over a file, a file under a file, If-Match on a missing path.
    let r = d.mkdir("dir/f");
    assert_eq!((r.status, r.code().as_str()), (409, "PathConflict"));
    let r = d.req("PUT", "dir/f/x", &[("resource", "file")], &[], b"");
    assert_eq!((r.status, r.code().as_str()), (409, "PathConflict"));
    let r = d.req(
        "PUT",
        "nope",
        &[("resource", "file")],
        &[("If-Match", "\"0x1\"")],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (412, "ConditionNotMet"));
    // Missing paths; a bad signature; no credentials.
    let r = d.req("GET", "missing", &[], &[], b"");
    assert_eq!((r.status, r.code().as_str()), (404, "PathNotFound"));
    assert_eq!(r.json()["error"]["code"], "PathNotFound");
    assert_eq!(d.head("missing").status, 404);
    let wrong_key = b64("not the key");
    let r = call(
        d.ep.dfs_port(),
        "HEAD",
        "dfsfs/dir",
        &[],
        &[],
        b"",
        &wrong_key,
    );
    assert_eq!((r.status, r.code().as_str()), (403, "AuthenticationFailed"));
    let (s, _) = blobmount_tests::http::request(
        d.ep.dfs_port(),
        "HEAD",
        "/devstoreaccount1/dfsfs/dir",
        &[],
        b"",
    );
    assert_eq!(s, 401);
    let (s, _) = blobmount_tests::http::request(
        d.ep.dfs_port(),
        "HEAD",
        "/devstoreaccount1/dfsfs/dir",
        &[("Authorization", "Bearer whatever")],
        b"",
    );
    assert_eq!(s, 200, "bearer tokens are accepted unverified");
    // Every DFS request was logged.
    let log = d.ep.requests();
    assert!(
        log.iter()
            .any(|l| l.starts_with("PUT /devstoreaccount1/dfsfs/dir?resource=directory")),
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("HEAD ")).count(),
        9,
        "{log:?}"
    );
}

#[test]
fn append_flush_and_read() {
    let d = Dfs::start();
    assert_eq!(
        d.req("PUT", "f.txt", &[("resource", "file")], &[], b"")
            .status,
        201
    );
    let etag0 = d.head("f.txt").h("etag").unwrap().to_string();
    let r = d.req(
        "PATCH",
        "f.txt",
        &[("action", "append"), ("position", "0")],
        &[],
        b"hello ",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let r = d.req(
        "PATCH",
        "f.txt",
        &[("action", "append"), ("position", "6")],
        &[],
        b"world",
    );
    assert_eq!(r.status, 202);
    // Nothing is visible before the flush.
    assert_eq!(d.head("f.txt").h("content-length"), Some("0"));
    for wrong in ["5", "12", "7"] {
        let r = d.req(
            "PATCH",
            "f.txt",
            &[("action", "flush"), ("position", wrong)],
            &[],
            b"",
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "InvalidFlushPosition"),
            "position {wrong}"
        );
    }
    let r = d.req(
        "PATCH",
        "f.txt",
        &[("action", "flush"), ("position", "11")],
        &[("If-Match", "\"0x8D000\"")],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (412, "ConditionNotMet"));
    let r = d.req(
        "PATCH",
        "f.txt",
        &[("action", "flush"), ("position", "11")],
        &[("If-Match", &etag0)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let etag1 = r.h("etag").unwrap().to_string();
    assert_ne!(etag0, etag1);
    assert_eq!(d.read("f.txt"), b"hello world");
    let r = d.req("GET", "f.txt", &[], &[("Range", "bytes=6-10")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"world");
    // Appending after a flush keeps what was committed.
    d.req(
        "PATCH",
        "f.txt",
        &[("action", "append"), ("position", "11")],
        &[],
        b"!",
    );
    let r = d.req(
        "PATCH",
        "f.txt",
        &[("action", "flush"), ("position", "12"), ("close", "true")],
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(d.read("f.txt"), b"hello world!");
    // The same bytes through Azurite's Blob API.
    assert_eq!(d._az.get_object("dfsfs", "f.txt"), b"hello world!");
    // A blob written with the Blob API (Put Blob, no blocks) can be appended to.
    d._az.put_raw("dfsfs", "blob.bin", b"abc");
    d.req(
        "PATCH",
        "blob.bin",
        &[("action", "append"), ("position", "3")],
        &[],
        b"def",
    );
    let r = d.req(
        "PATCH",
        "blob.bin",
        &[("action", "flush"), ("position", "6")],
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d._az.get_object("dfsfs", "blob.bin"), b"abcdef");
    // Append with flush=true.
    let r = d.req(
        "PATCH",
        "blob.bin",
        &[("action", "append"), ("position", "6"), ("flush", "true")],
        &[],
        b"g",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(d.read("blob.bin"), b"abcdefg");
    // Appending to a missing path.
    let r = d.req(
        "PATCH",
        "nope",
        &[("action", "append"), ("position", "0")],
        &[],
        b"x",
    );
    assert_eq!((r.status, r.code().as_str()), (404, "PathNotFound"));
}

#[test]
fn rename_files_and_directories() {
    let d = Dfs::start();
    d.write("a.txt", b"A");
    d.write("b.txt", b"B");
    // Overwrite a file by default; the source is gone.
    let r = d.rename("a.txt", "b.txt", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(d.read("b.txt"), b"A");
    assert_eq!(d.head("a.txt").status, 404);
    let r = d.rename("a.txt", "c.txt", &[]);
    assert_eq!((r.status, r.code().as_str()), (404, "SourcePathNotFound"));
    let r = d.rename("b.txt", "nodir/c.txt", &[]);
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "RenameDestinationParentPathNotFound")
    );
    d.write("c.txt", b"C");
    let r = d.rename("b.txt", "c.txt", &[("If-None-Match", "*")]);
    assert_eq!((r.status, r.code().as_str()), (409, "PathAlreadyExists"));
    let r = d.rename("b.txt", "c.txt", &[("x-ms-source-if-match", "\"0x1\"")]);
    assert_eq!(
        (r.status, r.code().as_str()),
        (412, "SourceConditionNotMet")
    );
    let r = d.rename("b.txt", "c.txt", &[("If-Match", "\"0x1\"")]);
    assert_eq!((r.status, r.code().as_str()), (412, "ConditionNotMet"));
    let etag = d.head("b.txt").h("etag").unwrap().to_string();
    let r = d.rename("b.txt", "d.txt", &[("x-ms-source-if-match", &etag)]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(d.read("d.txt"), b"A");
    // Properties move with the path, or are replaced by the rename's x-ms-properties.
    let p1 = format!("a={}", b64("1"));
    let r = d.req(
        "PATCH",
        "d.txt",
        &[("action", "setProperties")],
        &[("x-ms-properties", &p1)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(d.rename("d.txt", "e.txt", &[]).status, 201);
    assert_eq!(d.head("e.txt").h("x-ms-properties"), Some(p1.as_str()));
    let p2 = format!("b={}", b64("2"));
    assert_eq!(
        d.rename("e.txt", "d.txt", &[("x-ms-properties", &p2)])
            .status,
        201
    );
    assert_eq!(d.head("d.txt").h("x-ms-properties"), Some(p2.as_str()));

    // A directory with many children, nested, with properties and an ACL on the way.
    assert_eq!(d.mkdir("src/empty").status, 201);
    for i in 0..40 {
        d.write(
            &format!("src/sub{}/f{i:02}", i % 3),
            format!("{i}").as_bytes(),
        );
    }
    let r = d.req(
        "PATCH",
        "src",
        &[("action", "setAccessControl")],
        &[("x-ms-permissions", "0700")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let before = d.names("src", true).len();
    assert_eq!(before, 1 + 3 + 40);
    assert_eq!(d.mkdir("dst").status, 201);
    d.write("dst/x", b"x");
    let r = d.rename("src", "dst", &[]);
    assert_eq!((r.status, r.code().as_str()), (409, "DirectoryNotEmpty"));
    let r = d.rename("src", "d.txt", &[]);
    assert_eq!(r.status, 409, "a directory onto a file");
    for into in ["src/sub0/inner", "src"] {
        let r = d.rename("src", into, &[]);
        assert_eq!(
            (r.status, r.code().as_str()),
            (409, "InvalidRenameSourcePath"),
            "{into}"
        );
    }
    let r = d.rename("src", "dst/moved", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(d.head("src").status, 404);
    let moved = d.names("dst/moved", true);
    assert_eq!(moved.len(), before, "{moved:?}");
    assert!(
        moved.contains(&"dst/moved/sub2/f38".to_string()),
        "{moved:?}"
    );
    assert_eq!(d.read("dst/moved/sub1/f10"), b"10");
    assert_eq!(d.head("dst/moved").h("x-ms-permissions"), Some("rwx------"));
    assert_eq!(
        d.head("dst/moved/empty").h("x-ms-resource-type"),
        Some("directory")
    );
    assert!(d._az.get_object_opt("dfsfs", "src/sub0/f00").is_none());
    // A directory onto an empty directory replaces it.
    assert_eq!(d.mkdir("e1").status, 201);
    d.write("e2/f", b"f");
    let r = d.rename("e2", "e1", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(d.names("e1", false), vec!["e1/f".to_string()]);
    // The source's parent stays.
    d.write("p/only", b"1");
    assert_eq!(d.rename("p/only", "only", &[]).status, 201);
    assert_eq!(d.head("p").h("x-ms-resource-type"), Some("directory"));
}

#[test]
fn directory_rename_is_atomic_to_listings() {
    let d = Arc::new(Dfs::start());
    let n = 120;
    for i in 0..n {
        d.write(&format!("big/f{i:03}"), b"x");
    }
    let done = Arc::new(AtomicBool::new(false));
    // One watcher lists through the DFS API, one through the Blob API forwarder.
    let (d2, done2) = (d.clone(), done.clone());
    let dfs_watcher = std::thread::spawn(move || {
        let mut states = BTreeSet::new();
        while !done2.load(Ordering::SeqCst) {
            let names = d2.names("", true);
            let src = names.iter().filter(|p| p.starts_with("big/")).count();
            let dst = names.iter().filter(|p| p.starts_with("moved/")).count();
            states.insert((src, dst));
        }
        states
    });
    let (d3, done3) = (d.clone(), done.clone());
    let blob_watcher = std::thread::spawn(move || {
        let mut states = BTreeSet::new();
        while !done3.load(Ordering::SeqCst) {
            let (s, text) = blobmount_tests::http::azure_signed(
                d3.ep.blob_port(),
                "GET",
                "/devstoreaccount1/dfsfs",
                &[("comp", "list"), ("restype", "container")],
                &[],
                b"",
            );
            assert_eq!(s, 200, "{text}");
            states.insert((
                text.matches("<Name>big/f").count(),
                text.matches("<Name>moved/f").count(),
            ));
        }
        states
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = std::time::Instant::now();
    let r = d.rename("big", "moved", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    eprintln!("renamed a directory of {n} files in {:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::SeqCst);
    let whole: BTreeSet<(usize, usize)> = [(n, 0), (0, n)].into();
    for (api, w) in [("DFS", dfs_watcher), ("Blob", blob_watcher)] {
        let states = w.join().expect("watcher");
        assert_eq!(
            states, whole,
            "{api} listings must see the directory whole before and whole after, never half-moved"
        );
    }
    assert_eq!(d.names("moved", false).len(), n);
}

#[test]
fn delete_recursive_and_conditional() {
    let d = Dfs::start();
    d.write("dir/a", b"a");
    d.write("dir/sub/b", b"b");
    let r = d.req("DELETE", "dir", &[("recursive", "false")], &[], b"");
    assert_eq!((r.status, r.code().as_str()), (409, "DirectoryNotEmpty"));
    let r = d.req("DELETE", "dir/a", &[], &[("If-Match", "\"0x1\"")], b"");
    assert_eq!((r.status, r.code().as_str()), (412, "ConditionNotMet"));
    // Date conditions: modified since the future / unmodified since the past both fail.
    let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    for (h, v) in [
        ("If-Modified-Since", &future),
        ("If-Unmodified-Since", &past),
    ] {
        let r = d.req("DELETE", "dir/a", &[], &[(h, v)], b"");
        assert_eq!(
            (r.status, r.code().as_str()),
            (412, "ConditionNotMet"),
            "{h}"
        );
    }
    let r = d.req("HEAD", "dir/a", &[], &[("If-Modified-Since", &past)], b"");
    assert_eq!(r.status, 200);
    let etag = d.head("dir/a").h("etag").unwrap().to_string();
    let r = d.req("DELETE", "dir/a", &[], &[("If-Match", &etag)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // Deleting the last file keeps its directory.
    let r = d.req("DELETE", "dir/sub/b", &[], &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(d.head("dir/sub").h("x-ms-resource-type"), Some("directory"));
    let r = d.req("DELETE", "dir/sub", &[("recursive", "false")], &[], b"");
    assert_eq!(
        r.status,
        200,
        "an empty directory goes without recursive: {}",
        r.text()
    );
    d.write("dir/c/d/e", b"e");
    let r = d.req("DELETE", "dir", &[("recursive", "true")], &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.head("dir").status, 404);
    assert_eq!(d.head("dir/c/d/e").status, 404);
    assert!(d.names("", true).is_empty());
    let r = d.req("DELETE", "dir", &[("recursive", "true")], &[], b"");
    assert_eq!((r.status, r.code().as_str()), (404, "PathNotFound"));
}

#[test]
fn access_control() {
    let d = Dfs::start();
    assert_eq!(d.mkdir("d").status, 201);
    let r = d.req(
        "PATCH",
        "d",
        &[("action", "setAccessControl")],
        &[
            ("x-ms-owner", "1001"),
            ("x-ms-group", "2002"),
            ("x-ms-permissions", "rwxr-x--x"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let h = d.req(
        "HEAD",
        "d",
        &[("action", "getAccessControl"), ("upn", "false")],
        &[],
        b"",
    );
    assert_eq!(h.h("x-ms-owner"), Some("1001"));
    assert_eq!(h.h("x-ms-group"), Some("2002"));
    assert_eq!(h.h("x-ms-permissions"), Some("rwxr-x--x"));
    assert_eq!(h.h("x-ms-acl"), Some("user::rwx,group::r-x,other::--x"));
    // An extended ACL: named user, mask, default entries.
    let acl = "user::rwx,user:3003:r--,group::r-x,mask::r--,other::---,default:user::rwx,default:group::r-x,default:other::---";
    let r = d.req(
        "PATCH",
        "d",
        &[("action", "setAccessControl")],
        &[("x-ms-acl", acl)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let h = d.req("HEAD", "d", &[("action", "getAccessControl")], &[], b"");
    assert_eq!(h.h("x-ms-permissions"), Some("rwxr-----+"));
    assert_eq!(h.h("x-ms-acl"), Some(acl));
    // chmod moves the mask, not the owning group's entry.
    let r = d.req(
        "PATCH",
        "d",
        &[("action", "setAccessControl")],
        &[("x-ms-permissions", "0750")],
        b"",
    );
    assert_eq!(r.status, 200);
    let h = d.req("HEAD", "d", &[("action", "getAccessControl")], &[], b"");
    assert_eq!(h.h("x-ms-permissions"), Some("rwxr-x---+"));
    assert!(
        h.h("x-ms-acl").unwrap().contains("mask::r-x"),
        "{:?}",
        h.h("x-ms-acl")
    );
    assert!(h.h("x-ms-acl").unwrap().contains("user:3003:r--"));
    // A new child inherits the default ACL (no umask).
    assert_eq!(
        d.req("PUT", "d/f", &[("resource", "file")], &[], b"")
            .status,
        201
    );
    let h = d.req("HEAD", "d/f", &[("action", "getAccessControl")], &[], b"");
    assert_eq!(h.h("x-ms-acl"), Some("user::rw-,group::r--,other::---"));
    // Bad ACLs and conditions.
    let r = d.req(
        "PATCH",
        "d",
        &[("action", "setAccessControl")],
        &[("x-ms-acl", "user::rwx,bogus")],
        b"",
    );
    assert_eq!(r.status, 400);
    let r = d.req(
        "PATCH",
        "d",
        &[("action", "setAccessControl")],
        &[("x-ms-permissions", "0700"), ("If-Match", "\"0x2\"")],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (412, "ConditionNotMet"));
    // setProperties replaces the user properties and keeps access.
    let props = format!("k={}", b64("v"));
    let r = d.req(
        "PATCH",
        "d",
        &[("action", "setProperties")],
        &[("x-ms-properties", &props)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let h = d.head("d");
    assert_eq!(h.h("x-ms-properties"), Some(props.as_str()));
    assert_eq!(h.h("x-ms-owner"), Some("1001"));
    // The filesystem root has access control too (kept on the container).
    let h = d.req("HEAD", "", &[("action", "getAccessControl")], &[], b"");
    assert_eq!(
        (h.status, h.h("x-ms-permissions")),
        (200, Some("rwxr-x---"))
    );
    let r = d.req(
        "PATCH",
        "",
        &[("action", "setAccessControl")],
        &[("x-ms-permissions", "0755"), ("x-ms-owner", "root-owner")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let h = d.req("HEAD", "", &[("action", "getAccessControl")], &[], b"");
    assert_eq!(h.h("x-ms-permissions"), Some("rwxr-xr-x"));
    assert_eq!(h.h("x-ms-owner"), Some("root-owner"));
    assert_eq!(h.h("x-ms-resource-type"), Some("directory"));
    // The listing shows owner, group, permissions.
    let (paths, _) = d.list("", false, None);
    let p = paths.iter().find(|p| p["name"] == "d").expect("d listed");
    assert_eq!(p["owner"], "1001");
    assert_eq!(p["permissions"], "rwxr-x---+");
    assert_eq!(p["isDirectory"], "true");
}

#[test]
fn listing_pages_with_continuation() {
    let d = Dfs::start();
    let n = 130;
    for i in 0..n {
        let r = d.req(
            "PUT",
            &format!("big/f{i:03}"),
            &[("resource", "file")],
            &[],
            b"",
        );
        assert_eq!(r.status, 201);
    }
    for i in 0..5 {
        assert_eq!(d.mkdir(&format!("big/d{i}/inner")).status, 201);
    }
    let (paths, pages) = d.list("big", false, Some(25));
    assert_eq!(paths.len(), n + 5);
    assert_eq!(pages, (n + 5).div_ceil(25));
    let names: Vec<&str> = paths.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "no entry twice");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(paths.iter().filter(|p| p["isDirectory"] == "true").count() == 5);
    assert!(
        paths
            .iter()
            .filter(|p| p.get("isDirectory").is_none())
            .all(|p| p["contentLength"] == "0")
    );
    let (all, pages) = d.list("big", true, Some(40));
    assert_eq!(all.len(), n + 10);
    assert_eq!(pages, (n + 10).div_ceil(40));
    let (root, _) = d.list("", false, Some(1));
    assert_eq!(root.len(), 1);
    let r = d.req(
        "GET",
        "",
        &[
            ("resource", "filesystem"),
            ("recursive", "false"),
            ("directory", "nope"),
        ],
        &[],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (404, "PathNotFound"));
}

#[test]
fn one_namespace_with_the_blob_api() {
    let d = Dfs::start();
    d.write("viadfs/file.txt", b"written through DFS");
    assert_eq!(
        d._az.get_object("dfsfs", "viadfs/file.txt"),
        b"written through DFS"
    );
    // A DFS directory is an hdi_isfolder blob over the Blob API.
    assert_eq!(d.mkdir("emptydir").status, 201);
    let (s, text) = blobmount_tests::http::azure_signed(
        d.ep.blob_port(),
        "HEAD",
        "/devstoreaccount1/dfsfs/emptydir",
        &[],
        &[],
        b"",
    );
    assert_eq!(s, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-ms-meta-hdi_isfolder: true"),
        "{text}"
    );
    // A blob written through the Blob API (via the forwarder) shows up with its parents.
    let (s, text) = blobmount_tests::http::azure_signed(
        d.ep.blob_port(),
        "PUT",
        "/devstoreaccount1/dfsfs/x/y/z.txt",
        &[],
        &[("x-ms-blob-type", "BlockBlob")],
        b"via blob",
    );
    assert_eq!(s, 201, "{text}");
    assert!(
        d.ep.blob_requests()
            .iter()
            .any(|l| l.starts_with("PUT /devstoreaccount1/dfsfs/x/y/z.txt"))
    );
    let root = d.names("", false);
    assert_eq!(root, vec!["emptydir", "viadfs", "x"]);
    let all = d.names("", true);
    assert_eq!(
        all,
        vec![
            "emptydir",
            "viadfs",
            "viadfs/file.txt",
            "x",
            "x/y",
            "x/y/z.txt"
        ]
    );
    let h = d.head("x/y");
    assert_eq!(h.status, 200);
    assert_eq!(h.h("x-ms-resource-type"), Some("directory"));
    assert_eq!(d.read("x/y/z.txt"), b"via blob");
    assert_eq!(d.head("x/y/z.txt").h("x-ms-permissions"), Some("rw-r-----"));
    // Get Account Information on the blob port says hierarchical namespace.
    let (s, text) = blobmount_tests::http::azure_signed(
        d.ep.blob_port(),
        "GET",
        "/devstoreaccount1/",
        &[("comp", "properties"), ("restype", "account")],
        &[],
        b"",
    );
    assert_eq!(s, 200);
    assert!(
        text.to_ascii_lowercase()
            .contains("x-ms-is-hns-enabled: true"),
        "{text}"
    );
    // As on an HNS account, the Blob write made its parents real directories (marker
    // blobs), and a Blob delete of a directory's last child leaves the directory.
    let (s, text) = blobmount_tests::http::azure_signed(
        d._az.port,
        "HEAD",
        "/devstoreaccount1/dfsfs/x/y",
        &[],
        &[],
        b"",
    );
    assert_eq!(s, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-ms-meta-hdi_isfolder: true"),
        "{text}"
    );
    d._az.put_raw("dfsfs", "lone/dir/file", b"1");
    assert_eq!(d.head("lone/dir").status, 200);
    let (s, text) = blobmount_tests::http::azure_signed(
        d.ep.blob_port(),
        "DELETE",
        "/devstoreaccount1/dfsfs/lone/dir/file",
        &[],
        &[],
        b"",
    );
    assert_eq!(s, 202, "{text}");
    assert_eq!(
        d.head("lone/dir").h("x-ms-resource-type"),
        Some("directory")
    );
    assert_eq!(d.names("lone", true), vec!["lone/dir"]);
    // Renaming a directory moves its marker and everything under it.
    assert_eq!(d.rename("x", "xx", &[]).status, 201);
    assert_eq!(d._az.get_object("dfsfs", "xx/y/z.txt"), b"via blob");
    assert!(d._az.get_object_opt("dfsfs", "x/y/z.txt").is_none());
}

/// Requests signed the way blobmount's backend signs them (its `Rest` with object_store's
/// Azure SharedKey authorizer) pass the endpoint's verification, including paths that
/// need percent-encoding, and a wrong key does not.
#[test]
fn blobmount_rest_signer_is_accepted() {
    use blobmount_backend::rest::{Rest, Signer};
    use object_store::azure::{AzureAccessKey, AzureCredential};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let d = Dfs::start();
    let rest = |key: &str| {
        let cred = AzureCredential::AccessKey(AzureAccessKey::try_new(key).unwrap());
        Rest::new(
            Default::default(),
            Signer::Azure {
                creds: Arc::new(object_store::StaticCredentialProvider::new(cred)),
                account: AZURITE_ACCOUNT.into(),
            },
        )
        .unwrap()
    };
    let good = rest(AZURITE_KEY);
    let bad = rest(&b64("some other key"));
    let base = format!("{}/dfsfs", d.ep.dfs_endpoint());
    let url = |p: &str, q: &str| format!("{base}/{}?{q}", enc(p, true));
    blobmount_tests::block_on(async {
        use reqwest::Method;
        let send = |r: &Rest,
                    m: Method,
                    u: String,
                    h: Vec<(&'static str, String)>,
                    body: &'static [u8]| {
            let r = r.clone();
            async move {
                let resp = r
                    .send_once(m, &u, &h, bytes::Bytes::from_static(body))
                    .await
                    .unwrap_or_else(|_| panic!("send {u}"));
                (
                    resp.status().as_u16(),
                    resp.headers().clone(),
                    resp.bytes().await.unwrap(),
                )
            }
        };
        let name = "dir with space/ünï+code.txt";
        let (s, _, b) = send(&good, Method::PUT, url(name, "resource=file"), vec![], b"").await;
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
        let (s, _, _) = send(
            &good,
            Method::PATCH,
            url(name, "action=append&position=0"),
            // As on Azure, the signed Content-Length is the caller's to set.
            vec![("content-length", "4".into())],
            b"data",
        )
        .await;
        assert_eq!(s, 202);
        let (s, _, _) = send(
            &good,
            Method::PATCH,
            url(name, "action=flush&position=4"),
            vec![],
            b"",
        )
        .await;
        assert_eq!(s, 200);
        let (s, h, _) = send(
            &good,
            Method::HEAD,
            url(name, "action=getStatus"),
            vec![],
            b"",
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(h["content-length"], "4");
        let (s, _, b) = send(
            &good,
            Method::GET,
            format!(
                "{base}?resource=filesystem&recursive=true&directory={}",
                enc("dir with space", false)
            ),
            vec![],
            b"",
        )
        .await;
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["paths"][0]["name"], name);
        let (s, _, _) = send(
            &good,
            Method::GET,
            url(name, ""),
            vec![("range", "bytes=1-2".into())],
            b"",
        )
        .await;
        assert_eq!(s, 206);
        let (s, h, _) = send(
            &bad,
            Method::HEAD,
            url(name, "action=getStatus"),
            vec![],
            b"",
        )
        .await;
        assert_eq!(s, 403);
        assert_eq!(h["x-ms-error-code"], "AuthenticationFailed");
    });
    assert_eq!(
        d._az.get_object("dfsfs", "dir with space/ünï+code.txt"),
        b"data"
    );
}

/// A real blobmount mount (today's Blob backend) through the endpoint's Blob forwarder: what
/// it writes is what the DFS API lists and reads, and what the DFS API writes the mount
/// reads. Checks the forwarder under a real client.
#[test]
fn real_mount_through_the_blob_forwarder() {
    let d = Dfs::start();
    let mut spec = blobmount_tests::MountSpec::for_emulator(&d._az, &d.fs);
    spec.endpoint = Some(d.ep.blob_endpoint());
    let m = blobmount_tests::Mount::start(&spec);
    std::fs::create_dir_all(m.p("a/b")).unwrap();
    std::fs::write(m.p("a/b/one.txt"), b"one from the mount").unwrap();
    std::fs::write(m.p("top.txt"), vec![7u8; 3 << 20]).unwrap();
    std::fs::rename(m.p("top.txt"), m.p("a/top.txt")).unwrap();
    let all = d.names("", true);
    for want in ["a", "a/b", "a/b/one.txt", "a/top.txt"] {
        assert!(all.iter().any(|n| n == want), "{want} not in {all:?}");
    }
    assert!(!all.iter().any(|n| n == "top.txt"), "{all:?}");
    assert_eq!(d.read("a/b/one.txt"), b"one from the mount");
    assert_eq!(d.read("a/top.txt"), vec![7u8; 3 << 20]);
    d.write("a/from-dfs.txt", b"written through DFS");
    // The mount trusts its listing of `a` for a second or so (cache TTLs).
    let t = std::time::Instant::now();
    let seen = loop {
        match std::fs::read(m.p("a/from-dfs.txt")) {
            Ok(b) => break b,
            Err(e) if t.elapsed() > Duration::from_secs(10) => panic!("never appeared: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!(seen, b"written through DFS");
    assert!(
        d.ep.blob_requests().len() > 5,
        "the mount went through the forwarder"
    );
}

/// The `dfs-endpoint` binary serves the same endpoint by hand: it prints its two ports and
/// they answer (DFS: a filesystem created and listed; Blob: the HNS account information).
#[test]
fn the_binary_prints_its_ports_and_serves() {
    use std::io::BufRead;
    let az = Emulator::start(Kind::Azure);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dfs-endpoint"))
        .arg(az.port.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dfs-endpoint");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut port = |name: &str| -> u16 {
        let l = lines.next().expect("a line").unwrap();
        l.strip_prefix(&format!("{name}="))
            .unwrap_or_else(|| panic!("{l:?} is not {name}=PORT"))
            .parse()
            .unwrap()
    };
    let (dfs_port, blob_port) = (port("dfs_port"), port("blob_port"));
    let r = call(
        dfs_port,
        "PUT",
        "binfs",
        &[("resource", "filesystem")],
        &[],
        b"",
        AZURITE_KEY,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = call(
        dfs_port,
        "PUT",
        "binfs/d",
        &[("resource", "directory")],
        &[],
        b"",
        AZURITE_KEY,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = call(
        dfs_port,
        "GET",
        "binfs",
        &[("recursive", "true"), ("resource", "filesystem")],
        &[],
        b"",
        AZURITE_KEY,
    );
    assert_eq!(r.json()["paths"][0]["name"], "d");
    let (s, text) = blobmount_tests::http::request(
        blob_port,
        "GET",
        "/devstoreaccount1/?restype=account&comp=properties",
        &[],
        b"",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(s, 200);
    assert!(
        text.to_ascii_lowercase()
            .contains("x-ms-is-hns-enabled: true"),
        "{text}"
    );
}
