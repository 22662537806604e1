//! `shaping-proxy --upstream PORT [--latency-ms MS] [--mbit MBIT] [--port PORT]`: the tests'
//! HTTP proxy ([`blobmount_tests::proxy::CountingProxy`]) run on its own, so a benchmark can
//! put a remote-like store (a latency on every request, a bandwidth cap per direction) in
//! front of an emulator on loopback, for every client it compares alike.
//!
//! Prints `port=N` once listening, then every `--report-secs` (default 10) and at the end
//! (SIGTERM/SIGINT, or stdin closed) the requests seen by method, so a benchmark can also
//! count requests. Loopback only.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blobmount_tests::proxy::CountingProxy;

fn main() {
    let mut upstream = None;
    let (mut latency, mut mbit, mut report) = (0u64, 0u64, 10u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| -> u64 {
            let v = args.next().unwrap_or_default();
            v.parse().unwrap_or_else(|_| {
                eprintln!("shaping-proxy: {name} needs a number, got {v:?}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--upstream" => upstream = Some(val("--upstream") as u16),
            "--latency-ms" => latency = val("--latency-ms"),
            "--mbit" => mbit = val("--mbit"),
            "--report-secs" => report = val("--report-secs").max(1),
            "-h" | "--help" => {
                println!(
                    "shaping-proxy --upstream PORT [--latency-ms MS] [--mbit MBIT] [--report-secs S]"
                );
                return;
            }
            other => {
                eprintln!("shaping-proxy: unknown argument {other:?} (see --help)");
                std::process::exit(2);
            }
        }
    }
    let Some(upstream) = upstream else {
        eprintln!("shaping-proxy: --upstream PORT is required");
        std::process::exit(2);
    };
    let proxy = CountingProxy::start(upstream);
    proxy.set_latency_ms(latency);
    // Clients sign requests over their Host (S3 SigV4); the servers benchmarked route by path.
    proxy.keep_host(true);
    let rate = mbit * 1_000_000 / 8;
    proxy.set_bandwidth(rate, rate);
    println!("port={}", proxy.port());
    let _ = std::io::stdout().flush();
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for line in proxy.take() {
            let method = line.split_whitespace().next().unwrap_or("?").to_string();
            *counts.entry(method).or_default() += 1;
        }
        let stop = STOP.load(Ordering::SeqCst);
        if stop || last.elapsed() >= Duration::from_secs(report) {
            let total: u64 = counts.values().sum();
            println!("requests total={total} {counts:?}");
            let _ = std::io::stdout().flush();
            last = Instant::now();
        }
        if stop {
            break;
        }
    }
}
