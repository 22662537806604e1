//! An HTTP/1.1 proxy between the daemon and an emulator that records every request
//! (method and path), so tests can count what the mount asks the store, and injects faults
//! on demand (503 answers, dropped connections).
//!
//! It parses only the client side (request head, then a `Content-Length` or chunked body),
//! rewrites `Host` to the emulator's address, and copies responses through untouched; clients do not pipeline, so request boundaries
//! are all it needs. Loopback only; stopped (listener closed, threads told to end) on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct CountingProxy {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
}

/// Faults to inject instead of forwarding the next requests.
#[derive(Default)]
pub struct Faults {
    /// Answer this many requests with 503 Service Unavailable.
    unavailable: AtomicUsize,
    /// Drop the connection on this many requests without answering.
    drops: AtomicUsize,
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
        self.faults.unavailable.store(n, Ordering::SeqCst);
    }

    /// Drop the connection instead of answering the next `n` requests (logged as `DROP ...`).
    pub fn drop_next(&self, n: usize) {
        self.faults.drops.store(n, Ordering::SeqCst);
    }

    pub fn port(&self) -> u16 {
        self.port
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

/// Take one unit of fault `f` if any is left.
fn take(f: &AtomicUsize) -> bool {
    f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
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
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Write);
    });
    let mut r = BufReader::new(client);
    while !stop.load(Ordering::Relaxed) {
        // Decide a request's fate when it arrives, not when the previous one on this
        // connection ended: an idle keep-alive connection would otherwise hold on to a fault
        // meant for the next request, whichever connection that comes on.
        match r.fill_buf() {
            Ok(b) if !b.is_empty() => {}
            _ => break,
        }
        // A fault replaces forwarding: the request is read (into a sink) and answered here.
        let fault = if take(&faults.drops) {
            Some("DROP")
        } else if take(&faults.unavailable) {
            Some("503")
        } else {
            None
        };
        let result = match fault {
            None => forward_request(&mut r, &mut server_w, upstream),
            Some(_) => forward_request(&mut r, &mut std::io::sink(), upstream),
        };
        match (result, fault) {
            (Ok(Some(line)), None) => log.lock().expect("proxy log").push(line),
            (Ok(Some(line)), Some("DROP")) => {
                log.lock().expect("proxy log").push(format!("DROP {line}"));
                let _ = client_fault.shutdown(Shutdown::Both);
                break;
            }
            (Ok(Some(line)), Some(_)) => {
                log.lock().expect("proxy log").push(format!("503 {line}"));
                let _ = client_fault.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 0\r\n\r\n",
                );
            }
            (Ok(None) | Err(_), _) => break,
        }
    }
    let _ = server_w.shutdown(Shutdown::Write);
}

/// Copy one request; returns its `METHOD target`, or `None` at end of stream.
fn forward_request(
    r: &mut BufReader<TcpStream>,
    w: &mut impl Write,
    upstream: u16,
) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut line = String::new();
    let mut content_length = 0u64;
    let mut chunked = false;
    let mut first = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let t = line.trim_end();
        // The emulator sees its own address as the host (fake-gcs routes by it; no store
        // here signs requests strictly enough to notice).
        if t.len() > 5 && t[..5].eq_ignore_ascii_case("host:") {
            head.extend_from_slice(format!("Host: 127.0.0.1:{upstream}\r\n").as_bytes());
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
        if let Some((k, v)) = t.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                content_length = v.parse().unwrap_or(0);
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    w.write_all(&head)?;
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
