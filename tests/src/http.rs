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

/// Create a container on Azurite (path-style account) with SharedKey auth.
pub fn azure_create_container(port: u16, name: &str) -> (u16, String) {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let version = "2021-08-06";
    let resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container");
    let string_to_sign =
        format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .expect("key");
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let sig = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&k, string_to_sign.as_bytes()).as_ref());
    let auth = format!("SharedKey {AZURITE_ACCOUNT}:{sig}");
    request(
        port,
        "PUT",
        &format!("/{AZURITE_ACCOUNT}/{name}?restype=container"),
        &[
            ("x-ms-date", &date),
            ("x-ms-version", version),
            ("Authorization", &auth),
        ],
        b"",
    )
}
