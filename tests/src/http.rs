//! Minimal HTTP/1.1 over loopback for emulator set-up calls (bucket creation), including
//! Azure SharedKey signing for Azurite. Not used by the product.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use base64::Engine;

use crate::{AZURITE_ACCOUNT, AZURITE_KEY};

pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A request to Azurite (path-style account) signed with SharedKey. `path` is sent as is
/// (already percent-encoded); `query` pairs must not need encoding. `x_ms` are extra `x-ms-*`
/// headers (lower-case names).
pub fn azure_signed(
    port: u16,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    x_ms: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let version = "2021-08-06";
    let mut headers: Vec<(String, String)> = vec![
        ("x-ms-date".into(), date.clone()),
        ("x-ms-version".into(), version.into()),
    ];
    headers.extend(x_ms.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    headers.sort();
    let canon_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut q: Vec<(&str, &str)> = query.to_vec();
    q.sort();
    let canon_query: String = q.iter().map(|(k, v)| format!("\n{k}:{v}")).collect();
    let length = if body.is_empty() {
        String::new()
    } else {
        body.len().to_string()
    };
    let string_to_sign = format!(
        "{method}\n\n\n{length}\n\n\n\n\n\n\n\n\n{canon_headers}/{AZURITE_ACCOUNT}{path}{canon_query}"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .expect("key");
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let sig = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&k, string_to_sign.as_bytes()).as_ref());
    let auth = format!("SharedKey {AZURITE_ACCOUNT}:{sig}");
    let mut url = path.to_string();
    if !q.is_empty() {
        let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        url = format!("{url}?{}", qs.join("&"));
    }
    let mut all: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.push(("Authorization", &auth));
    request(port, method, &url, &all, body)
}

/// Create a container on Azurite (path-style account) with SharedKey auth.
pub fn azure_create_container(port: u16, name: &str) -> (u16, String) {
    azure_signed(
        port,
        "PUT",
        &format!("/{AZURITE_ACCOUNT}/{name}"),
        &[("restype", "container")],
        &[],
        b"",
    )
}

/// Percent-encode each segment of an object key (keeping `/`), and `.`/`..` segments too,
/// so no layer on the way normalises them away.
pub fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|seg| match seg {
            "." => "%2E".to_string(),
            ".." => "%2E%2E".to_string(),
            s => blobmount_backend::gcs::encode_segment(s),
        })
        .collect::<Vec<_>>()
        .join("/")
}
