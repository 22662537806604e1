//! The health monitor on a real mount (Azurite): with `--monitor` at a 1 s interval the
//! daemon appends JSON lines whose counters follow what the mount did (bytes to and from
//! the store, FUSE operations, the file cache filling), its memory is reported, the
//! disabled parts are left out, and `/metrics` carries the same process figures.

use std::path::Path;
use std::time::{Duration, Instant};

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, free_port, http_get, metric};
use serde_json::Value;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Wait until the report has more than `n` lines and return them.
fn more_than(path: &Path, n: usize, m: &Mount) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let l = lines(path);
        if l.len() > n {
            return l;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no new report line in {} after 20 s:\n{}",
            path.display(),
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn n(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {v}"))
}

#[test]
fn the_monitor_reports_what_the_mount_does() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "seed.bin", &vec![7u8; 1_000_000]);
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("reports/monitor_{pid}.jsonl");
    let port = free_port();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec![
        "--read-mode".into(),
        "file-cache".into(),
        "--monitor".into(),
        "--health-listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    spec.env.extend([
        ("BLOBMOUNT_MONITOR__INTERVAL_SECS".into(), "1".into()),
        (
            "BLOBMOUNT_MONITOR__OUTPUT".into(),
            report.display().to_string(),
        ),
    ]);
    let m = Mount::start(&spec);
    let file = work
        .path()
        .join(format!("reports/monitor_{}.jsonl", m.pid().unwrap()));
    let before = more_than(&file, 0, &m);
    let first = before.last().unwrap().clone();
    // Some work: a write (sent to the store) and a read (received, into the file cache).
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(m.p("new.bin"), &data).unwrap();
    assert_eq!(std::fs::read(m.p("seed.bin")).unwrap().len(), 1_000_000);
    let after = more_than(&file, before.len() + 1, &m);
    let last = after.last().unwrap();
    assert_eq!(n(last, "/pid"), f64::from(m.pid().unwrap()));
    assert!(n(last, "/memory/rss_bytes") > 1_000_000.0, "{last}");
    assert!(n(last, "/cpu/seconds") > 0.0, "{last}");
    assert!(
        n(last, "/network/bytes_sent") >= n(&first, "/network/bytes_sent") + 2_000_000.0,
        "the upload is counted: {first}\n{last}"
    );
    assert!(
        n(last, "/network/bytes_received") >= n(&first, "/network/bytes_received") + 1_000_000.0,
        "the download is counted: {first}\n{last}"
    );
    assert!(n(last, "/ops/total") > n(&first, "/ops/total"), "{last}");
    assert!(n(last, "/ops/by_op/write") >= 1.0, "{last}");
    assert!(n(last, "/ops/by_op/read") >= 1.0, "{last}");
    assert!(n(last, "/ops/written_bytes") >= 2_000_000.0, "{last}");
    assert!(n(last, "/file_cache/bytes") >= 1_000_000.0, "{last}");
    assert!(n(last, "/file_cache/files") >= 1.0, "{last}");
    assert!(
        n(last, "/file_cache/misses") >= 1.0,
        "the read downloaded: {last}"
    );
    // Every line covers about one interval, the first one too.
    for l in &after {
        let secs = n(l, "/interval_secs");
        assert!((0.5..5.0).contains(&secs), "{l}");
    }
    assert!(n(last, "/file_cache/limit_bytes") > 0.0, "{last}");
    assert!(n(last, "/block_cache/limit_bytes") > 0.0, "{last}");
    // One line per interval, with a time stamp each.
    for l in &after {
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    // /metrics has the same process figures.
    let (code, page) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(metric(&page, "process_resident_memory_bytes ") > 1_000_000.0);
    assert!(metric(&page, "process_cpu_seconds_total ") > 0.0);
    assert!(metric(&page, "blobmount_backend_written_bytes_total ") >= 2_000_000.0);
    drop(m);

    // Disabled parts are left out; the default file is in the cache directory.
    let cache = work.path().join("cache2");
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.cache = Some(cache.clone());
    spec.args = vec!["--monitor".into()];
    spec.env.extend([
        ("BLOBMOUNT_MONITOR__INTERVAL_SECS".into(), "1".into()),
        ("BLOBMOUNT_MONITOR__MAX_SIZE_MIB".into(), "1".into()),
    ]);
    // Memory and CPU stay, operations and the network go.
    let cfg = work.path().join("m.yaml");
    std::fs::write(&cfg, "monitor:\n  disable: [ops, network]\n").unwrap();
    spec.args
        .extend(["--config".into(), cfg.display().to_string()]);
    let m = Mount::start(&spec);
    let l = more_than(&cache.join("monitor.jsonl"), 0, &m);
    assert!(l[0]["file_cache"].is_null(), "block-cache mode: {}", l[0]);
    assert!(
        l[0]["memory"].is_object() && l[0]["cpu"].is_object(),
        "{}",
        l[0]
    );
    assert!(
        l[0].get("ops").is_none() && l[0].get("network").is_none(),
        "{}",
        l[0]
    );
}

#[test]
fn a_bad_monitor_part_is_refused_before_mounting() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("m.yaml");
    std::fs::write(&f, "monitor:\n  enabled: true\n  disable: [cpu, disks]\n").unwrap();
    let r = blobmount_tests::run_cli(
        &["config", "validate", f.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("monitor.disable") && r.stderr.contains("\"disks\""),
        "{}",
        r.stderr
    );
}
