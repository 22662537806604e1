//! A local double of an HTTP credential endpoint for the credential chains' tests (answers
//! each request with a handler and records what it was sent), and the small helpers those
//! tests share: an environment from pairs, and form fields of a request body.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request the double saw.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// An answer with headers of its own (for doubles of store endpoints).
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A credential endpoint on 127.0.0.1 answering with `handler` and recording requests.
pub(crate) struct Double {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Double {
    pub fn start(handler: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Double {
        Self::start_full(move |s| {
            let (status, body) = handler(s);
            Reply {
                status,
                headers: Vec::new(),
                body,
            }
        })
    }

    /// [`Double::start`] with answers that carry headers.
    pub fn start_full(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Double {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s2, h): (_, Arc<Handler>) = (seen.clone(), Arc::new(handler));
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let seen = Seen {
                    method,
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let reply = h(&seen);
                let head = seen.method == "HEAD";
                s2.lock().unwrap().push(seen);
                let extra: String = (reply.headers.iter())
                    .map(|(k, v)| format!("{k}: {v}\r\n"))
                    .collect();
                let body = if head { "" } else { reply.body.as_str() };
                let _ = write!(
                    c,
                    "HTTP/1.1 {} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    reply.status,
                    reply.body.len()
                );
            }
        });
        Double { port, seen }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An environment (for the chains' `Env`) holding just `pairs`.
pub(crate) fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |k| m.get(k).cloned()
}

/// Field `key` of a form-encoded `body`, decoded.
pub(crate) fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

/// Percent-decoding of a form or query value.
pub(crate) fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
