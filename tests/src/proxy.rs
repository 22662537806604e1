//! An HTTP/1.1 proxy between the daemon and an emulator that records every request
//! (method and path), so tests can count what the mount asks the store.
//!
//! It parses only the client side (request head, then a `Content-Length` or chunked body),
//! rewrites `Host` to the emulator's address, and copies responses through untouched; clients do not pipeline, so request boundaries
//! are all it needs. Loopback only; stopped (listener closed, threads told to end) on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct CountingProxy {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    pub fn start(upstream: u16) -> CountingProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (l, s) = (l.clone(), s.clone());
                        std::thread::spawn(move || serve(client, upstream, l, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingProxy { port, log, stop }
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

fn serve(client: TcpStream, upstream: u16, log: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (Ok(mut server_w), Ok(mut client_w)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let mut server_r = server;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Write);
    });
    let mut r = BufReader::new(client);
    while !stop.load(Ordering::Relaxed) {
        match forward_request(&mut r, &mut server_w, upstream) {
            Ok(Some(line)) => log.lock().expect("proxy log").push(line),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = server_w.shutdown(Shutdown::Write);
}

/// Copy one request; returns its `METHOD target`, or `None` at end of stream.
fn forward_request(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
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
