//! An HTTP/1.1 proxy between the daemon and an emulator that records every request
//! (method and path), so tests can count what the mount asks the store, and injects faults
//! on demand: 503 and 429 (with `Retry-After`) answers, dropped connections, latency on
//! every request, stalls (a request held back longer than the client waits, then sent
//! anyway), truncated response bodies, and lost responses (the store carried the request
//! out, the client never hears so: "commit landed, response lost"). A fault can be limited
//! to requests whose `METHOD target` line contains a given text.
//!
//! It can also make loopback look like a store farther away, for benchmarks
//! (`src/bin/shaping-proxy.rs`): a latency added to every request, and a bandwidth cap per
//! direction shared by all connections (a [`Link`]: one virtual clock per direction on which
//! every chunk reserves its transmission time, so N connections share the rate fairly).
//!
//! It parses only the client side (request head, then a `Content-Length` or chunked body),
//! rewrites `Host` to the emulator's address, and copies responses through untouched; clients do not pipeline, so request boundaries
//! are all it needs. It reads a whole request before forwarding it, so it answers
//! `Expect: 100-continue` itself (after the latency: the round trip a store's interim answer
//! costs) and drops that header upstream; otherwise curl, the AWS SDKs, rclone and s3fs would
//! wait their 1 s expect timeout on every upload request. Loopback only; stopped (listener
//! closed, threads told to end) on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct CountingProxy {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
}

/// What happens to a request a fault rule picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `503 Service Unavailable` (not forwarded).
    Unavailable,
    /// Answer `429 Too Many Requests` with `Retry-After: 1` (not forwarded).
    Throttle,
    /// Close the connection without an answer (not forwarded).
    Drop,
    /// Hold the request this long, then forward it (the client has usually given up and
    /// retried by then: the store may see it twice).
    Stall(Duration),
    /// Hold the request this long, then close the connection without forwarding it (the
    /// store never sees it): a daemon killed meanwhile died with the request in flight.
    Hold(Duration),
    /// Forward it, and give the client the response head and half its body, then close.
    Truncate,
    /// Forward it and wait for the store's answer, then close the client's connection
    /// without it.
    LoseResponse,
    /// Forward it with the byte in the middle of its body flipped (a request without a body
    /// goes through untouched): bytes damaged on the way to the store.
    CorruptRequest,
    /// Forward it, and give the client the whole answer with one byte in the middle of its
    /// body flipped, then close: bytes damaged on the way back.
    CorruptResponse,
}

struct Rule {
    fault: Fault,
    /// Only requests whose `METHOD target` contains this.
    matching: Option<String>,
    /// Matching requests to let through before the fault applies.
    skip: usize,
    left: usize,
}

/// Faults to inject, latency and bandwidth.
#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    /// Added before forwarding each request, in milliseconds.
    latency_ms: AtomicU64,
    /// Requests and their bodies towards the store.
    up: Link,
    /// Responses towards the client.
    down: Link,
    /// Forward the client's `Host` header as it is (signed requests: S3 SigV4 signs it)
    /// instead of the emulator's address.
    keep_host: AtomicBool,
}

/// One direction of a link with a bandwidth cap (0: none), shared by every connection.
#[derive(Default)]
pub struct Link {
    bytes_per_sec: AtomicU64,
    /// When the link is next free (a virtual clock: each chunk sent reserves its time).
    free_at: Mutex<Option<std::time::Instant>>,
}

/// Bytes sent in one go through a capped link (small enough that connections interleave).
const CHUNK: usize = 64 * 1024;

impl Link {
    /// Wait until `n` bytes may be sent, as a link of the configured rate would let them.
    fn pass(&self, n: usize) {
        let rate = self.bytes_per_sec.load(Ordering::Relaxed);
        if rate == 0 || n == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(n as f64 / rate as f64);
        let now = std::time::Instant::now();
        let done = {
            let mut free = self.free_at.lock().expect("link clock");
            // An idle link does not bank time: at most one chunk's worth of burst.
            let start = free.map_or(now, |f| f.max(now));
            let done = start + cost;
            *free = Some(done);
            done
        };
        let wait = done.saturating_duration_since(now);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Copy `r` to `w` through this link until `r` ends.
    fn copy(&self, r: &mut impl Read, w: &mut impl Write) -> std::io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.pass(n);
            w.write_all(&buf[..n])?;
        }
    }

    /// Write all of `data` through this link.
    fn write_all(&self, w: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
        for c in data.chunks(CHUNK) {
            self.pass(c.len());
            w.write_all(c)?;
        }
        Ok(())
    }
}

impl Faults {
    /// The fault for a request, if a rule with some left matches it (first rule first).
    fn take(&self, line: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().expect("fault rules");
        let rule = rules
            .iter_mut()
            .find(|r| r.left > 0 && r.matching.as_deref().is_none_or(|m| line.contains(m)))?;
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        rule.left -= 1;
        Some(rule.fault)
    }
}

impl CountingProxy {
    pub fn start(upstream: u16) -> CountingProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(Faults::default());
        let (l, s, f) = (log.clone(), stop.clone(), faults.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (l, s, f) = (l.clone(), s.clone(), f.clone());
                        std::thread::spawn(move || serve(client, upstream, l, s, f));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingProxy {
            port,
            log,
            stop,
            faults,
        }
    }

    /// Answer the next `n` requests with `503 Service Unavailable` (logged as `503 ...`).
    pub fn fail_next(&self, n: usize) {
        self.inject(Fault::Unavailable, None, n);
    }

    /// Drop the connection instead of answering the next `n` requests (logged as `DROP ...`).
    pub fn drop_next(&self, n: usize) {
        self.inject(Fault::Drop, None, n);
    }

    /// Apply `fault` to the next `n` requests whose `METHOD target` contains `matching` (any
    /// request with `None`). Logged as `503`, `429`, `DROP`, `HOLD`, `STALL`, `TRUNC` or `LOST`
    /// before the request line.
    pub fn inject(&self, fault: Fault, matching: Option<&str>, n: usize) {
        self.inject_after(fault, matching, 0, n);
    }

    /// [`CountingProxy::inject`], letting the first `skip` matching requests through.
    pub fn inject_after(&self, fault: Fault, matching: Option<&str>, skip: usize, n: usize) {
        self.faults.rules.lock().expect("fault rules").push(Rule {
            fault,
            matching: matching.map(str::to_string),
            skip,
            left: n,
        });
    }

    /// Requests a rule of `fault` is still waiting for.
    pub fn pending(&self, fault: Fault) -> usize {
        self.faults
            .rules
            .lock()
            .expect("fault rules")
            .iter()
            .filter(|r| r.fault == fault)
            .map(|r| r.left)
            .sum()
    }

    /// Delay every request by `ms` milliseconds before forwarding it (a store farther away
    /// than loopback).
    pub fn set_latency_ms(&self, ms: u64) {
        self.faults.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Cap the bandwidth towards the store (`up`) and back (`down`), in bytes per second,
    /// shared by all connections; 0: no cap.
    pub fn set_bandwidth(&self, up: u64, down: u64) {
        self.faults.up.bytes_per_sec.store(up, Ordering::SeqCst);
        self.faults.down.bytes_per_sec.store(down, Ordering::SeqCst);
    }

    /// Forward `Host` as the client sent it (for servers that check signatures over it).
    pub fn keep_host(&self, keep: bool) {
        self.faults.keep_host.store(keep, Ordering::SeqCst);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Wait until the log holds an entry starting with `prefix` (for instance `HOLD `: a
    /// request is being held); false after `limit`.
    pub fn wait_for(&self, prefix: &str, limit: Duration) -> bool {
        let t = std::time::Instant::now();
        while t.elapsed() < limit {
            if self
                .log
                .lock()
                .expect("proxy log")
                .iter()
                .any(|l| l.starts_with(prefix))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Requests seen since the last call, as `METHOD path?query`.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().expect("proxy log"))
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    client: TcpStream,
    upstream: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (Ok(mut server_w), Ok(mut client_w)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let Ok(mut client_fault) = client.try_clone() else {
        return;
    };
    let mut server_r = server;
    let f = faults.clone();
    std::thread::spawn(move || {
        let _ = f.down.copy(&mut server_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Write);
    });
    let mut r = BufReader::new(client);
    let note = |what: &str, line: &str| {
        let entry = if what.is_empty() {
            line.to_string()
        } else {
            format!("{what} {line}")
        };
        log.lock().expect("proxy log").push(entry);
    };
    while !stop.load(Ordering::Relaxed) {
        match r.fill_buf() {
            Ok(b) if !b.is_empty() => {}
            _ => break,
        }
        // The whole request, then its fate (decided as it arrives: an idle keep-alive
        // connection must not hold on to a fault meant for whichever request comes next).
        let mut raw = Vec::new();
        let host = (!faults.keep_host.load(Ordering::SeqCst)).then_some(upstream);
        let latency = Duration::from_millis(faults.latency_ms.load(Ordering::SeqCst));
        let line = match forward_request(&mut r, &mut raw, host, latency) {
            Ok(Some(line)) => line,
            Ok(None) | Err(_) => break,
        };
        let latency = faults.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            std::thread::sleep(Duration::from_millis(latency));
        }
        match faults.take(&line) {
            None => {
                note("", &line);
                if faults.up.write_all(&mut server_w, &raw).is_err() {
                    break;
                }
            }
            Some(Fault::Drop) => {
                note("DROP", &line);
                let _ = client_fault.shutdown(Shutdown::Both);
                break;
            }
            Some(Fault::Unavailable) => {
                note("503", &line);
                let _ = client_fault.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 0\r\n\r\n",
                );
            }
            Some(Fault::Throttle) => {
                note("429", &line);
                let _ = client_fault.write_all(
                    b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n",
                );
            }
            Some(Fault::Hold(d)) => {
                note("HOLD", &line);
                std::thread::sleep(d);
                let _ = client_fault.shutdown(Shutdown::Both);
                break;
            }
            Some(Fault::Stall(d)) => {
                note("STALL", &line);
                std::thread::sleep(d);
                if server_w.write_all(&raw).is_err() {
                    break;
                }
            }
            Some(Fault::CorruptRequest) => {
                note("CORRUPT", &line);
                let body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
                if let Some(p) = body_at
                    && p < raw.len()
                {
                    let mid = p + (raw.len() - p) / 2;
                    raw[mid] ^= 0xff;
                }
                if server_w.write_all(&raw).is_err() {
                    break;
                }
            }
            Some(Fault::CorruptResponse) => {
                let answer = TcpStream::connect(("127.0.0.1", upstream)).and_then(|mut up| {
                    up.write_all(&raw)?;
                    read_response(&mut BufReader::new(up), line.starts_with("HEAD "))
                });
                if let Ok((head, mut body)) = answer {
                    note("CORRUPT-ANSWER", &line);
                    if !body.is_empty() {
                        let mid = body.len() / 2;
                        body[mid] ^= 0xff;
                    }
                    let _ = client_fault.write_all(&head);
                    let _ = client_fault.write_all(&body);
                }
                let _ = client_fault.shutdown(Shutdown::Both);
                break;
            }
            Some(f @ (Fault::Truncate | Fault::LoseResponse)) => {
                // On a connection of its own, so the answer can be read here.
                let answer = TcpStream::connect(("127.0.0.1", upstream)).and_then(|mut up| {
                    up.write_all(&raw)?;
                    read_response(&mut BufReader::new(up), line.starts_with("HEAD "))
                });
                if f == Fault::Truncate
                    && let Ok((head, body)) = &answer
                {
                    note("TRUNC", &line);
                    let _ = client_fault.write_all(head);
                    let _ = client_fault.write_all(&body[..body.len() / 2]);
                } else {
                    note("LOST", &line);
                }
                let _ = client_fault.shutdown(Shutdown::Both);
                break;
            }
        }
    }
    let _ = server_w.shutdown(Shutdown::Write);
}

/// Read one response: its head (status line and headers, as received) and its body
/// (de-chunked if it was chunked; then the head still says chunked, which only a
/// truncated answer, cut anyway, is given).
fn read_response(
    r: &mut BufReader<TcpStream>,
    head_request: bool,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut head = Vec::new();
    let mut line = String::new();
    let mut content_length = 0u64;
    let mut chunked = false;
    let mut status = 0u16;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(line.as_bytes());
        let t = line.trim_end();
        if status == 0 {
            status = t
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            continue;
        }
        if t.is_empty() {
            break;
        }
        note_framing(t, &mut content_length, &mut chunked);
    }
    let mut body = Vec::new();
    if head_request || status == 204 || status == 304 {
        return Ok((head, body));
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size =
                u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            r.by_ref().take(size).read_to_end(&mut body)?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else {
        r.by_ref().take(content_length).read_to_end(&mut body)?;
    }
    Ok((head, body))
}

/// What a header line says about how the body that follows is framed.
fn note_framing(line: &str, content_length: &mut u64, chunked: &mut bool) {
    if let Some((k, v)) = line.split_once(':') {
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            *content_length = v.parse().unwrap_or(0);
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            *chunked = true;
        }
    }
}

/// Copy one request, with `Host` naming 127.0.0.1:`host` when given; returns its
/// `METHOD target`, or `None` at end of stream. A request that expects `100 Continue` gets it
/// from here, `latency` after its head, and goes upstream without the `Expect` header.
fn forward_request(
    r: &mut BufReader<TcpStream>,
    w: &mut impl Write,
    host: Option<u16>,
    latency: Duration,
) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut line = String::new();
    let mut content_length = 0u64;
    let mut chunked = false;
    let mut first = None;
    let mut expects_continue = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let t = line.trim_end();
        // The emulator sees its own address as the host (fake-gcs routes by it; no store
        // here signs requests strictly enough to notice).
        if let Some(upstream) = host
            && t.len() > 5
            && t[..5].eq_ignore_ascii_case("host:")
        {
            head.extend_from_slice(format!("Host: 127.0.0.1:{upstream}\r\n").as_bytes());
        } else if first.is_some()
            && t.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("expect")
                    && v.trim().eq_ignore_ascii_case("100-continue")
            })
        {
            expects_continue = true;
        } else {
            head.extend_from_slice(line.as_bytes());
        }
        if first.is_none() {
            first = Some(t.rsplit_once(' ').map_or(t, |(a, _)| a).to_string());
            continue;
        }
        if t.is_empty() {
            break;
        }
        note_framing(t, &mut content_length, &mut chunked);
    }
    w.write_all(&head)?;
    if expects_continue && (chunked || content_length > 0) {
        std::thread::sleep(latency);
        r.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            w.write_all(line.as_bytes())?;
            let size =
                u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                // Trailer lines up to the empty line.
                loop {
                    line.clear();
                    r.read_line(&mut line)?;
                    w.write_all(line.as_bytes())?;
                    if line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            std::io::copy(&mut r.by_ref().take(size + 2), w)?;
        }
    } else if content_length > 0 {
        std::io::copy(&mut r.by_ref().take(content_length), w)?;
    }
    Ok(first)
}
