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
