//! The benchmark's remote-like link (`CountingProxy::set_latency_ms`, `set_bandwidth`,
//! `shaping-proxy`): every request waits the latency, and bytes flow at the capped rate,
//! shared by parallel connections rather than given to each.

use std::time::{Duration, Instant};

use blobmount_tests::proxy::CountingProxy;
use blobmount_tests::{Emulator, Kind, http};

const MIB: usize = 1 << 20;

fn get(port: u16, bucket: &str, key: &str) -> usize {
    let (code, answer) = http::request(
        port,
        "GET",
        &format!("/storage/v1/b/{bucket}/o/{key}?alt=media"),
        &[],
        b"",
    );
    assert_eq!(code, 200);
    answer.len()
}

#[test]
fn latency_and_a_shared_bandwidth_cap_hold() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let data = vec![7u8; 2 * MIB];
    emu.put_object(&bucket, "a", &data);
    emu.put_object(&bucket, "b", &data);
    let proxy = CountingProxy::start(emu.port);

    // Unshaped: loopback speed.
    let t = Instant::now();
    assert!(get(proxy.port(), &bucket, "a") >= 2 * MIB);
    let free = t.elapsed();
    assert!(free < Duration::from_secs(1), "{free:?}");

    proxy.set_latency_ms(300);
    let t = Instant::now();
    get(proxy.port(), &bucket, "a");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    proxy.set_latency_ms(0);

    // 16 Mbit/s = 2 MB/s: one 2 MiB GET takes about 1 s; two in parallel share the link
    // (about 2 s for both), not 1 s each side by side.
    proxy.set_bandwidth(2_000_000, 2_000_000);
    let t = Instant::now();
    get(proxy.port(), &bucket, "a");
    let one = t.elapsed();
    assert!(one >= Duration::from_millis(900), "{one:?}");
    let t = Instant::now();
    let port = proxy.port();
    let (b1, b2) = (bucket.clone(), bucket.clone());
    let h1 = std::thread::spawn(move || get(port, &b1, "a"));
    let h2 = std::thread::spawn(move || get(port, &b2, "b"));
    h1.join().unwrap();
    h2.join().unwrap();
    let two = t.elapsed();
    assert!(two >= Duration::from_millis(1900), "{two:?}");
    assert!(two < Duration::from_secs(6), "{two:?}");
}

/// An upload that asks for `100 Continue` gets it from the proxy one latency after its head
/// (not after the client's expect timeout, 1 s for curl and the AWS SDKs), and the store gets
/// the whole request without the `Expect` header.
#[test]
fn expect_100_continue_is_answered_after_the_latency() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};

    // A one-request upstream: reads the head and its 5-byte body, answers 200, hands back
    // what it read.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = up.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        let (s, _) = up.accept().unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line.trim_end().is_empty() {
                break;
            }
        }
        let mut body = [0u8; 5];
        r.read_exact(&mut body).unwrap();
        r.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        (head, body)
    });
    let proxy = CountingProxy::start(up_port);
    proxy.set_latency_ms(100);

    let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    c.write_all(
        b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let waited = t.elapsed();
    assert!(status.starts_with("HTTP/1.1 100 "), "{status:?}");
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(900),
        "{waited:?}"
    );
    let mut blank = String::new();
    r.read_line(&mut blank).unwrap();
    assert_eq!(blank, "\r\n");

    c.write_all(b"hello").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    let (head, body) = seen.join().unwrap();
    assert_eq!(&body, b"hello");
    assert!(head.starts_with("PUT /b/k HTTP/1.1\r\n"), "{head:?}");
    assert!(!head.to_ascii_lowercase().contains("expect"), "{head:?}");
    assert_eq!(proxy.take(), vec!["PUT /b/k".to_string()]);
}
