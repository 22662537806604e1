//! The read engine through a real FUSE mount of the real daemon, on each emulator: the
//! file cache (served from disk, kept under its cap), preload (from the daemon and from
//! `blobmount preload`), and consistency (a remote change is seen after the TTL; a read in
//! progress when it happens fails with ESTALE instead of mixing versions).

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use blobmount_tests::proxy::CountingProxy;
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, free_port, http_get, metric, run_cli};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 4099) % 251) as u8 ^ seed)
        .collect()
}

/// Data GETs (no query string) among the requests a proxy saw.
fn data_gets(log: &[String]) -> usize {
    log.iter()
        .filter(|r| r.starts_with("GET ") && !r.contains('?'))
        .count()
}

fn drop_page_cache() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop the page cache (needs root)");
}

fn cache_files(cache: &Path) -> (usize, u64) {
    std::fs::read_dir(cache.join("files"))
        .map(|rd| {
            rd.flatten().fold((0, 0), |(n, b), e| {
                (n + 1, b + e.metadata().map(|m| m.len()).unwrap_or(0))
            })
        })
        .unwrap_or((0, 0))
}

fn spec_via(
    emu: &Emulator,
    bucket: &str,
    proxy: &CountingProxy,
    env: &[(&str, &str)],
) -> MountSpec {
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    for (k, v) in env {
        spec.env.push((k.to_string(), v.to_string()));
    }
    spec
}

fn file_cache_serves_from_disk_under_its_cap(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    const MIB: usize = 1 << 20;
    for i in 0..5u8 {
        emu.put_object(&bucket, &format!("d/f{i}"), &pattern(MIB, i));
    }
    let proxy = CountingProxy::start(emu.port());
    let mut spec = spec_via(
        &emu,
        &bucket,
        &proxy,
        &[
            ("BLOBMOUNT_CACHE__FILE_CACHE_MAX_MIB", "3"),
            ("BLOBMOUNT_MOUNT__ATTR_TIMEOUT_SECS", "60"),
            ("BLOBMOUNT_CACHE__LIST_TTL_SECS", "60"),
            ("RUST_LOG", "info,blobmount_core::filecache=debug"),
        ],
    );
    spec.args = vec!["--read-mode".into(), "file-cache".into()];
    let m = Mount::start(&spec);
    for i in 0..5u8 {
        assert!(
            std::fs::read(m.p(&format!("d/f{i}"))).unwrap() == pattern(MIB, i),
            "d/f{i} differs"
        );
        let (_, bytes) = cache_files(&m.cache);
        assert!(
            bytes <= 3 * MIB as u64,
            "cache holds {bytes} bytes, cap is 3 MiB"
        );
    }
    assert_eq!(cache_files(&m.cache).0, 3, "{}", m.log_text());
    // The three most recent come from local disk, even with the page cache dropped.
    drop_page_cache();
    proxy.take();
    for i in 2..5u8 {
        assert!(
            std::fs::read(m.p(&format!("d/f{i}"))).unwrap() == pattern(MIB, i),
            "d/f{i} differs"
        );
    }
    let warm = proxy.take();
    assert_eq!(data_gets(&warm), 0, "cached files fetched again: {warm:?}");
    // The least recently used one was evicted: reading it goes to the store again.
    assert!(
        std::fs::read(m.p("d/f0")).unwrap() == pattern(MIB, 0),
        "d/f0 differs"
    );
    assert!(
        data_gets(&proxy.take()) > 0,
        "an evicted file was not fetched"
    );
    assert!(cache_files(&m.cache).1 <= 3 * MIB as u64);
    // Every download was checked against the checksum the store reports (the check of the last
    // one may finish just after its read returned).
    let t = Instant::now();
    while m
        .log_text()
        .matches("copy matches the store's checksum")
        .count()
        < 6
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = m.log_text();
    assert_eq!(
        log.matches("copy matches the store's checksum").count(),
        6,
        "{log}"
    );
}

/// With `cache.file-cache-range-reads: false`, a reader that starts in the middle of a file
/// gets its bytes without the object being downloaded; a reader from the start downloads it.
fn range_reads_skip_the_download_when_configured(kind: Kind) {
    use std::io::{Seek, SeekFrom};
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    const MIB: usize = 1 << 20;
    let data = pattern(6 * MIB + 7, 3);
    emu.put_object(&bucket, "table.parquet", &data);
    let proxy = CountingProxy::start(emu.port());
    let mut spec = spec_via(
        &emu,
        &bucket,
        &proxy,
        &[("BLOBMOUNT_CACHE__FILE_CACHE_RANGE_READS", "false")],
    );
    let port = free_port();
    spec.args = vec![
        "--read-mode".into(),
        "file-cache".into(),
        "--health-listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    let m = Mount::start(&spec);
    drop_page_cache();
    proxy.take();
    let mut f = std::fs::File::open(m.p("table.parquet")).unwrap();
    let tail = data.len() - 8192;
    f.seek(SeekFrom::Start(tail as u64)).unwrap();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    assert!(buf[..] == data[tail..], "footer bytes differ");
    drop(f);
    assert_eq!(
        cache_files(&m.cache).0,
        0,
        "a range read downloaded the object"
    );
    let reqs = proxy.take();
    assert!(
        data_gets(&reqs) <= 2,
        "a footer read made more than its ranged GETs: {reqs:?}"
    );
    // A reader from the start downloads it.
    assert!(
        std::fs::read(m.p("table.parquet")).unwrap() == data,
        "file differs"
    );
    assert_eq!(cache_files(&m.cache), (1, data.len() as u64));
    let page = http_get(port, "/metrics").1;
    assert_eq!(metric(&page, "blobmount_file_cache_range_reads_total"), 1.0);
}

fn preload_fills_the_cache_and_reports_progress(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let mut total = 0;
    for i in 0..20u8 {
        let len = 50_000 + 3000 * i as usize;
        total += len;
        emu.put_object(&bucket, &format!("data/s{}/f{i}", i % 4), &pattern(len, i));
    }
    emu.put_object(&bucket, "other/x", b"elsewhere");
    let proxy = CountingProxy::start(emu.port());
    let mut spec = spec_via(
        &emu,
        &bucket,
        &proxy,
        &[
            ("BLOBMOUNT_MOUNT__ATTR_TIMEOUT_SECS", "60"),
            ("BLOBMOUNT_CACHE__LIST_TTL_SECS", "60"),
        ],
    );
    spec.args = ["--read-mode", "file-cache", "--preload", "data"]
        .map(String::from)
        .to_vec();
    let m = Mount::start(&spec);
    let t = Instant::now();
    let done = "preload: 20/20 files";
    while !(m.log_text().contains(done) && m.log_text().contains("(done)")) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "preload did not finish: {}",
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = m.log_text();
    assert!(log.contains("0 failed"), "{log}");
    let (n, bytes) = cache_files(&m.cache);
    assert_eq!((n, bytes), (20, total as u64), "{log}");
    // Everything preloaded is read without fetching data again.
    drop_page_cache();
    proxy.take();
    for i in 0..20u8 {
        let len = 50_000 + 3000 * i as usize;
        let got = std::fs::read(m.p(&format!("data/s{}/f{i}", i % 4))).unwrap();
        assert!(got == pattern(len, i), "data file {i} differs");
    }
    let reads = proxy.take();
    assert_eq!(data_gets(&reads), 0, "{reads:?}");
    // `blobmount preload` on the running mount reads through it and says how it went.
    let other = m.p("other");
    let r = run_cli(
        &["preload", other.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("preload: 1/1 files") && r.stderr.contains("0 failed"),
        "{}",
        r.stderr
    );
    assert_eq!(cache_files(&m.cache).0, 21);
    let r = run_cli(
        &["preload", m.p("nope").to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("No such file or directory"),
        "{}",
        r.stderr
    );
}

/// Another client replaces a file: the mount sees the new bytes after the TTL, and a read
/// that was in progress fails with ESTALE rather than returning a mix of both versions.
fn remote_change_is_seen_and_midread_is_estale(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    const MIB: usize = 1 << 20;
    let (old, new) = (pattern(24 * MIB, 1), pattern(24 * MIB, 2));
    emu.put_object(&bucket, "big", &old);
    emu.put_object(&bucket, "small", b"version 1");
    for mode in ["direct", "block-cache", "file-cache"] {
        let mut spec = MountSpec::for_emulator(&emu, &bucket);
        spec.args = vec!["--read-mode".into(), mode.into()];
        spec.env
            .push(("BLOBMOUNT_MOUNT__ATTR_TIMEOUT_SECS".into(), "1".into()));
        spec.env
            .push(("BLOBMOUNT_CACHE__LIST_TTL_SECS".into(), "1".into()));
        // Little read-ahead, slow downloads: most of the file is fetched after the change.
        spec.env
            .push(("BLOBMOUNT_CACHE__READ_AHEAD_MAX_MIB".into(), "2".into()));
        spec.env
            .push(("BLOBMOUNT_CACHE__READ_BLOCK_MIB".into(), "1".into()));
        spec.env.push((
            "BLOBMOUNT_MOUNT__KERNEL_READ_AHEAD_KIB".into(),
            "128".into(),
        ));
        let m = Mount::start(&spec);
        let current = emu.get_object(&bucket, "big");
        let mut f = std::fs::File::open(m.p("big")).unwrap();
        let mut buf = vec![0u8; MIB];
        f.read_exact(&mut buf).unwrap();
        assert!(buf[..] == current[..MIB], "{mode}: first MiB wrong");
        let replacement = if current == old { &new } else { &old };
        emu.put_object(&bucket, "big", replacement);
        let mut off = MIB;
        let err = loop {
            match f.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    assert!(
                        buf[..n] == current[off..off + n],
                        "{mode}: bytes of the new version mixed into an old read at {off}"
                    );
                    off += n;
                }
                Err(e) => break Some(e),
            }
        };
        // The file cache may have finished the whole old version before the change; then
        // the read is consistent to the end. Every other path must notice.
        match err {
            Some(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{mode}: {e}"),
            None => assert!(
                mode == "file-cache" && off == current.len(),
                "{mode}: read ran to {off} without noticing the change"
            ),
        }
        drop(f);
        // A new open after the TTL reads the new version whole.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(std::fs::read(m.p("big")).unwrap() == *replacement, "{mode}");
        let before = std::fs::read(m.p("small")).unwrap();
        emu.put_object(&bucket, "small", format!("{mode} wrote this").as_bytes());
        std::thread::sleep(Duration::from_millis(1500));
        let after = std::fs::read(m.p("small")).unwrap();
        assert_ne!(before, after, "{mode}: change not seen after the TTL");
        assert_eq!(after, format!("{mode} wrote this").into_bytes());
    }
}

blobmount_tests::per_backend_and_adls!(
    file_cache_serves_from_disk_under_its_cap,
    range_reads_skip_the_download_when_configured,
    preload_fills_the_cache_and_reports_progress,
    remote_change_is_seen_and_midread_is_estale,
);
