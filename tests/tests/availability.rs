//! Availability is isolated from policy and store work (issue 19): the health endpoint
//! answers within 100 ms while every operation of the mount is stuck in a plugin that burns
//! its whole deadline, or in a store that does not answer; a plugin that keeps failing is
//! kept out by its circuit breaker, so creating files stays fast.
//!
//! The plugin is plugins/test-plugins/misbehave in mode `loop` with fuel to spare: every
//! call runs until its wall-clock deadline stops it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blobmount_tests::plugin_component as component;
use blobmount_tests::proxy::{CountingProxy, Fault};
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, free_port, http_get, metric, run_cli};

/// What `/healthz` must stay under while the mount is busy.
const HEALTHZ_LIMIT: Duration = Duration::from_millis(100);

/// A config with the looping filter plugin and `extra` plugin settings. The fuel is the
/// highest allowed (seconds of work), so every call ends at its deadline instead.
fn loop_plugin_config(extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("blobmount.yaml");
    let yaml = format!(
        "plugins:\n  filter:\n    path: {}\n    on-failure: allow\n    fuel: 10000000000\n    \
         cache-entries: 0\n    params:\n      mode: loop\n{extra}",
        component("misbehave")
    );
    std::fs::write(&p, yaml).expect("write config");
    let s = p.to_string_lossy().into_owned();
    (dir, s)
}

/// One GET, timed, with a limit (a probe that took longer counts as the limit).
fn timed_get_within(port: u16, path: &str, limit: Duration) -> (Duration, Option<u16>) {
    let t = Instant::now();
    let code = (|| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(limit)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split_whitespace().nth(1)?.parse().ok()
    })();
    (t.elapsed().min(limit), code)
}

/// [`timed_get_within`] 2 s.
fn timed_get(port: u16, path: &str) -> (Duration, Option<u16>) {
    timed_get_within(port, path, Duration::from_secs(2))
}

/// Poll `/healthz` `n` times, 100 ms apart; the latencies, sorted, and the codes seen.
fn poll_healthz(port: u16, n: usize) -> (Vec<Duration>, Vec<Option<u16>>) {
    let mut lat = Vec::new();
    let mut codes = Vec::new();
    for _ in 0..n {
        let (d, c) = timed_get(port, "/healthz");
        lat.push(d);
        codes.push(c);
        std::thread::sleep(Duration::from_millis(100));
    }
    lat.sort();
    (lat, codes)
}

/// The 95th percentile of sorted `lat`.
fn p95(lat: &[Duration]) -> Duration {
    lat[(lat.len() * 95 / 100).min(lat.len() - 1)]
}

/// `threads` loops of `ls -l dir` (a listing, then a lookup per entry) until `stop`.
fn ls_loops(
    dir: &Path,
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<usize>> {
    (0..threads)
        .map(|_| {
            let (dir, stop) = (dir.to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::process::Command::new("ls")
                        .arg("-l")
                        .arg(&dir)
                        .output();
                    rounds += 1;
                }
                rounds
            })
        })
        .collect()
}

fn mount(
    emu: &Emulator,
    bucket: &str,
    cfg: &str,
    endpoint: Option<String>,
    env: &[(&str, &str)],
) -> (Mount, u16) {
    let port = free_port();
    let mut spec = MountSpec::for_emulator(emu, bucket);
    if let Some(e) = endpoint {
        spec.endpoint = Some(e);
    }
    spec.args = vec![
        "--config".into(),
        cfg.into(),
        "--health-listen".into(),
        format!("127.0.0.1:{port}"),
        // Every `ls -l` asks again: nothing is served from the kernel's caches.
        "--attr-timeout".into(),
        "0".into(),
    ];
    for (k, v) in env {
        spec.env.push((k.to_string(), v.to_string()));
    }
    (Mount::start(&spec), port)
}

/// 7 parallel `ls -l` loops over a directory whose every lookup waits 200 ms for the
/// plugin (and the breaker never opens): `/healthz` answers within 100 ms (95th percentile
/// of 30 polls). Before the health server had its own thread, the same load made it take
/// 11 s and then time out.
#[test]
fn healthz_answers_while_a_slow_plugin_keeps_every_operation_busy() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    for i in 0..12 {
        emu.put_object(&bucket, &format!("d/f{i:02}"), b"x");
    }
    let (_g, cfg) = loop_plugin_config("    deadline-ms: 200\n    breaker-failures: 0\n");
    let (m, port) = mount(&emu, &bucket, &cfg, None, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let loops = ls_loops(&m.p("d"), 7, &stop);
    // Let the loops fill the runtime with plugin calls.
    std::thread::sleep(Duration::from_secs(2));
    let (lat, codes) = poll_healthz(port, 30);
    let calls = metric(
        &http_get(port, "/metrics").1,
        "blobmount_plugin_calls_total{hook=\"filter\"}",
    );
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.join().expect("ls loop");
    }
    eprintln!(
        "healthz under load: p50 {:?} p95 {:?} max {:?}; plugin calls {calls}",
        lat[lat.len() / 2],
        p95(&lat),
        lat[lat.len() - 1]
    );
    assert!(
        calls >= 7.0,
        "the load did not reach the plugin ({calls} calls)"
    );
    assert!(
        codes.iter().all(|c| *c == Some(200)),
        "healthz answers: {codes:?}"
    );
    assert!(
        p95(&lat) < HEALTHZ_LIMIT,
        "healthz latencies under load: {lat:?}"
    );
}

/// The store stops answering (every request held by the proxy) while `ls` is in flight:
/// `/healthz` still answers within 100 ms, and `/readyz` answers within its deadline.
#[test]
fn healthz_answers_while_the_store_is_stalled() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    for i in 0..5 {
        emu.put_object(&bucket, &format!("s{i}/f"), b"x");
    }
    let proxy = CountingProxy::start(emu.port());
    let (_g, cfg) = {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("blobmount.yaml");
        std::fs::write(&p, "{}\n").expect("write config");
        let s = p.to_string_lossy().into_owned();
        (dir, s)
    };
    let (m, port) = mount(
        &emu,
        &bucket,
        &cfg,
        Some(emu.endpoint_on(proxy.port())),
        &[
            ("BLOBMOUNT_STORE__RETRY__REQUEST_TIMEOUT_SECS", "60"),
            ("BLOBMOUNT_STORE__RETRY__MAX_RETRIES", "0"),
        ],
    );
    assert_eq!(http_get(port, "/readyz").0, 200);
    proxy.inject(Fault::Hold(Duration::from_secs(30)), None, 10_000);
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..5)
        .flat_map(|i| ls_loops(&m.p(&format!("s{i}")), 2, &stop))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (lat, codes) = poll_healthz(port, 20);
    let t = Instant::now();
    let (_, ready) = timed_get_within(port, "/readyz", Duration::from_secs(10));
    let ready_took = t.elapsed();
    eprintln!(
        "healthz with a stalled store: p95 {:?} max {:?}; readyz {ready:?} in {ready_took:?}",
        p95(&lat),
        lat[lat.len() - 1]
    );
    assert!(codes.iter().all(|c| *c == Some(200)), "{codes:?}");
    assert!(p95(&lat) < HEALTHZ_LIMIT, "healthz latencies: {lat:?}");
    // `/readyz` asks the store (5 s deadline): it answers by then, whatever the store does.
    assert!(ready.is_some(), "no /readyz answer within 10 s");
    assert!(
        ready_took < Duration::from_secs(7),
        "/readyz took {ready_took:?}"
    );
    stop.store(true, Ordering::Relaxed);
    drop(proxy);
    for l in loops {
        let _ = l.join();
    }
    drop(m);
}

/// A plugin that fails every call is kept out after `breaker-failures` failures: the
/// breaker shows on `/metrics`, `/status` and `blobmount status`, calls stop reaching the
/// plugin, and creating 50 files takes seconds, not the 50 x several x 200 ms of asking it.
#[test]
fn the_breaker_keeps_a_failing_plugin_out_and_creates_stay_fast() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "a.txt", b"a");
    let (_g, cfg) = loop_plugin_config(
        "    deadline-ms: 200\n    breaker-failures: 3\n    breaker-secs: 600\n",
    );
    let (m, port) = mount(&emu, &bucket, &cfg, None, &[]);
    let mp = m.path().to_str().expect("utf-8 mount point").to_string();
    let t = Instant::now();
    for i in 0..50 {
        std::fs::write(m.p(&format!("new{i:02}.txt")), b"data").expect("create");
    }
    let took = t.elapsed();
    let page = http_get(port, "/metrics").1;
    let open = metric(&page, "blobmount_plugin_breaker_open{hook=\"filter\"}");
    let trips = metric(
        &page,
        "blobmount_plugin_breaker_trips_total{hook=\"filter\"}",
    );
    let calls = metric(&page, "blobmount_plugin_calls_total{hook=\"filter\"}");
    eprintln!("50 creates with the breaker: {took:?}; plugin calls {calls}");
    assert_eq!(open, 1.0, "{page}");
    assert_eq!(trips, 1.0);
    assert!(calls <= 4.0, "{calls} calls reached the failing plugin");
    assert!(took < Duration::from_secs(30), "50 creates took {took:?}");
    // More operations: answered by the failure mode (allow: visible), not by the plugin.
    let listed = std::fs::read_dir(m.path()).expect("ls").count();
    assert_eq!(listed, 51);
    let page = http_get(port, "/metrics").1;
    assert_eq!(
        metric(&page, "blobmount_plugin_calls_total{hook=\"filter\"}"),
        calls,
        "calls reached the plugin while its breaker was open"
    );
    assert!(
        metric(
            &page,
            "blobmount_plugin_breaker_skipped_total{hook=\"filter\"}"
        ) >= 1.0
    );
    let (code, status) = http_get(port, "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(
        v["breakers_open"],
        serde_json::json!(["filter"]),
        "{status}"
    );
    let r = run_cli(&["status", &mp], &[], Duration::from_secs(20));
    assert!(
        r.stdout.contains("circuit breaker open") && r.stdout.contains("filter"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        m.log_text().contains("circuit breaker open"),
        "no log line for the trip"
    );
}

/// For the record: 50 creates with the same plugin and no breaker, every question paying
/// the 200 ms deadline. Bounded by how few questions a create asks (see the core's
/// `policy_calls` test).
#[test]
fn creates_with_a_deadline_burning_plugin_and_no_breaker_finish_in_bounded_time() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let (_g, cfg) = loop_plugin_config("    deadline-ms: 200\n    breaker-failures: 0\n");
    let (m, port) = mount(&emu, &bucket, &cfg, None, &[]);
    let t = Instant::now();
    for i in 0..50 {
        std::fs::write(m.p(&format!("new{i:02}.txt")), b"data").expect("create");
    }
    let took = t.elapsed();
    let calls = metric(
        &http_get(port, "/metrics").1,
        "blobmount_plugin_calls_total{hook=\"filter\"}",
    );
    eprintln!("50 creates without the breaker: {took:?}; plugin calls {calls}");
    // Each call costs 200 ms: at most two per create.
    assert!(calls <= 100.0, "{calls} plugin calls for 50 creates");
    assert!(took < Duration::from_secs(60), "50 creates took {took:?}");
}
