//! The health and metrics endpoint of a real mount, and the `status` / `health` commands
//! that find it through the registry: probes turn unready when the store goes away, the
//! metrics count what was done, a stopped daemon fails the probe within its timeout.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, free_port, http_get, metric, run_cli};

#[test]
fn endpoints_commands_and_readiness_follow_the_store() {
    let mut emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "d/f.bin", &vec![5u8; 300_000]);
    let port = free_port();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--health-listen".into(), format!("127.0.0.1:{port}")];
    spec.env
        .push(("BLOBMOUNT_STORE__RETRY__MAX_RETRIES".into(), "0".into()));
    let mut m = Mount::start(&spec);
    let mp = m.path().to_str().unwrap().to_string();
    assert_eq!(http_get(port, "/healthz").0, 200);
    assert_eq!(http_get(port, "/readyz"), (200, "ok\n".to_string()));
    assert_eq!(std::fs::read(m.p("d/f.bin")).unwrap().len(), 300_000);
    // An operation is counted just after its reply went to the kernel: give the last read a
    // moment to be counted.
    let t = Instant::now();
    let (code, page) = loop {
        let (code, page) = http_get(port, "/metrics");
        let read = "blobmount_fuse_op_duration_seconds_count{op=\"read\"}";
        if code != 200 || page.contains(read) || t.elapsed() > Duration::from_secs(5) {
            break (code, page);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 200);
    assert!(
        metric(
            &page,
            "blobmount_fuse_op_duration_seconds_count{op=\"read\"}"
        ) >= 1.0
    );
    assert_eq!(metric(&page, "blobmount_read_bytes_total"), 300_000.0);
    assert!(metric(&page, "blobmount_backend_read_bytes_total") >= 300_000.0);
    assert!(metric(&page, "blobmount_backend_requests_total{call=\"get\"}") >= 1.0);
    let (code, status) = http_get(port, "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["ready"], true, "{status}");
    assert_eq!(v["read_bytes"], 300_000);

    let r = run_cli(&["status", &mp], &[], Duration::from_secs(20));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("ready") && r.stdout.contains(&mp),
        "{}",
        r.stdout
    );
    let r = run_cli(&["health", &mp], &[], Duration::from_secs(20));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);

    // The store goes away: still live, no longer ready.
    emu.kill();
    let t = Instant::now();
    loop {
        let (code, body) = http_get(port, "/readyz");
        if code == 503 {
            assert!(body.contains("store"), "{body}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "still ready without a store"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(http_get(port, "/healthz").0, 200);
    let r = run_cli(&["health", &mp], &[], Duration::from_secs(30));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("not ready"), "{}", r.stdout);
    let r = run_cli(&["health", "--live", &mp], &[], Duration::from_secs(30));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run_cli(&["status", &mp], &[], Duration::from_secs(30));
    assert_eq!(r.code, Some(1));
    assert!(r.stdout.contains("NOT READY"), "{}", r.stdout);

    assert_eq!(m.stop(), Some(0));
    let r = run_cli(&["health", &mp], &[], Duration::from_secs(20));
    assert_eq!(
        r.code,
        Some(2),
        "the registry entry must go with the daemon"
    );
}

#[test]
fn a_stopped_daemon_fails_the_probe_within_its_timeout() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let port = free_port();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    // Attributes expire at once: resolving the mount point would now ask the stopped daemon,
    // so the probe must find the daemon without touching the mount itself.
    spec.args = vec![
        "--health-listen".into(),
        format!("127.0.0.1:{port}"),
        "--attr-timeout".into(),
        "0.1".into(),
    ];
    let m = Mount::start(&spec);
    let mp = m.path().to_str().unwrap().to_string();
    assert_eq!(
        run_cli(&["health", &mp], &[], Duration::from_secs(20)).code,
        Some(0)
    );
    let pid = m.pid().expect("daemon pid");
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(300));
    let r = run_cli(
        &["health", "--timeout", "2", &mp],
        &[],
        Duration::from_secs(20),
    );
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.elapsed < Duration::from_secs(6), "took {:?}", r.elapsed);
    assert_eq!(
        run_cli(&["health", &mp], &[], Duration::from_secs(20)).code,
        Some(0)
    );
}

#[test]
fn a_taken_health_port_is_a_clear_error_before_mounting() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--health-listen".into(), format!("127.0.0.1:{port}")];
    let err = match Mount::try_start(&spec) {
        Ok(_) => panic!("mounted although the health port is taken"),
        Err(e) => e,
    };
    assert!(err.contains("exited (exit status: 2)"), "{err}");
    assert!(
        err.contains("health.listen") && err.contains("in use"),
        "{err}"
    );
}

/// 16 readers at once (four per file) through a real mount with a small memory budget: every
/// reader gets the right bytes, and the read-ahead memory the daemon reports never went over
/// `cache.read-memory-mib`; a streamed write meanwhile shares the same budget.
fn sixteen_readers_stay_within_the_memory_budget(kind: Kind) {
    const MIB: usize = 1024 * 1024;
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let files: Vec<Vec<u8>> = (0..4u8)
        .map(|s| {
            (0..12 * MIB)
                .map(|i| ((i * 31 + i / 4099) % 251) as u8 ^ s)
                .collect()
        })
        .collect();
    for (i, f) in files.iter().enumerate() {
        emu.put_object(&bucket, &format!("r{i}.bin"), f);
    }
    let port = free_port();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--health-listen".into(), format!("127.0.0.1:{port}")];
    for (k, v) in [
        ("BLOBMOUNT_CACHE__READ_MEMORY_MIB", "16"),
        ("BLOBMOUNT_CACHE__READ_BLOCK_MIB", "1"),
        ("BLOBMOUNT_CACHE__READ_AHEAD_MAX_MIB", "8"),
        ("BLOBMOUNT_WRITE__PART_SIZE_MIB", "5"),
    ] {
        spec.env.push((k.into(), v.into()));
    }
    let m = Mount::start(&spec);
    let files = std::sync::Arc::new(files);
    let writer = {
        let p = m.p("out.bin");
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(p).unwrap();
            for i in 0..24u8 {
                f.write_all(&vec![i; 1024 * 1024]).unwrap();
            }
            f.sync_all().unwrap();
        })
    };
    let readers: Vec<_> = (0..16)
        .map(|r| {
            let (files, p) = (files.clone(), m.p(&format!("r{}.bin", r % 4)));
            std::thread::spawn(move || {
                let mut got = Vec::new();
                std::fs::File::open(p)
                    .unwrap()
                    .read_to_end(&mut got)
                    .unwrap();
                got == files[r % 4]
            })
        })
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        assert!(r.join().unwrap(), "reader {i} got wrong bytes");
    }
    writer.join().unwrap();
    let (_, page) = http_get(port, "/metrics");
    let limit = metric(&page, "blobmount_read_memory_limit_bytes");
    let peak = metric(&page, "blobmount_read_memory_peak_bytes");
    assert_eq!(limit, 16.0 * MIB as f64);
    assert!(
        peak > 0.0 && peak <= limit,
        "peak {peak} over limit {limit}"
    );
    assert!(metric(&page, "blobmount_backend_written_bytes_total") >= 24.0 * MIB as f64);
}

#[test]
fn sixteen_readers_azurite() {
    sixteen_readers_stay_within_the_memory_budget(Kind::Azure)
}

#[test]
fn sixteen_readers_fake_gcs() {
    sixteen_readers_stay_within_the_memory_budget(Kind::Gcs)
}
