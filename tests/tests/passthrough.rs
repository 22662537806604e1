//! Kernel passthrough of cached files through a real FUSE mount (Azurite; the feature is
//! the same on every store): a file complete in the file cache is read by the kernel
//! without the daemon (no FUSE read reaches it, even with the page cache dropped, and
//! `mmap` works), writers get ETXTBSY while it is open that way instead of the kernel's EIO,
//! and a `close` followed at once by an open for writing never trips over the release still
//! on its way.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, free_port, http_get, metric};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 13 + i / 1021) % 249) as u8 ^ seed)
        .collect()
}

fn drop_page_cache() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop the page cache (needs root)");
}

struct Probe(u16);

impl Probe {
    fn page(&self) -> String {
        http_get(self.0, "/metrics").1
    }
    fn passthrough_opens(&self) -> f64 {
        metric(
            &self.page(),
            "blobmount_file_cache_passthrough_opens_total ",
        )
    }
    fn fuse_reads(&self) -> f64 {
        let page = self.page();
        page.lines()
            .find(|l| l.starts_with("blobmount_fuse_op_duration_seconds_count{op=\"read\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

fn mount(emu: &Emulator, bucket: &str, args: &[&str], env: &[(&str, &str)]) -> (Mount, Probe) {
    let mut spec = MountSpec::for_emulator(emu, bucket);
    let port = free_port();
    spec.args = ["--read-mode", "file-cache", "--health-listen"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("127.0.0.1:{port}")])
        .chain(args.iter().map(|s| s.to_string()))
        .collect();
    for (k, v) in env {
        spec.env.push((k.to_string(), v.to_string()));
    }
    spec.env
        .push(("BLOBMOUNT_MOUNT__ATTR_TIMEOUT_SECS".into(), "60".into()));
    (Mount::start(&spec), Probe(port))
}

/// Read a file whole once and wait until its copy is complete and checked.
fn fill_cache(m: &Mount, probe: &Probe, rel: &str, want: &[u8]) {
    assert!(std::fs::read(m.p(rel)).unwrap() == want, "{rel} differs");
    let t = Instant::now();
    let verified = |p: &Probe| metric(&p.page(), "blobmount_file_cache_verified_total ");
    while verified(probe) < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(20), "copy never checked");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn read_only_mount_reads_cached_files_without_the_daemon() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let data = pattern(24 << 20, 1);
    emu.put_object(&bucket, "d/data.bin", &data);
    let (m, probe) = mount(&emu, &bucket, &["--read-only"], &[]);
    fill_cache(&m, &probe, "d/data.bin", &data);
    let opens = probe.passthrough_opens();
    drop_page_cache();
    let reads = probe.fuse_reads();
    // A whole read, a read at an offset, and a mapping: all from the cached copy.
    assert!(
        std::fs::read(m.p("d/data.bin")).unwrap() == data,
        "passthrough read differs"
    );
    let f = std::fs::File::open(m.p("d/data.bin")).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 5_000_000).unwrap();
    assert!(buf[..] == data[5_000_000..5_004_096]);
    let len = data.len();
    // SAFETY: a read-only private mapping of an open file, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
    // SAFETY: `map` is a live mapping of `len` bytes.
    let mapped = unsafe { std::slice::from_raw_parts(map as *const u8, len) };
    assert!(mapped == &data[..], "mapped bytes differ");
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(map, len) };
    drop(f);
    assert_eq!(
        probe.fuse_reads(),
        reads,
        "reads of a cached file reached the daemon"
    );
    assert_eq!(probe.passthrough_opens() - opens, 2.0);
    // Many readers at once share it.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let p = m.p("d/data.bin");
            let want = data.clone();
            std::thread::spawn(move || assert!(std::fs::read(p).unwrap() == want))
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(probe.fuse_reads(), reads);
    assert!(
        !m.log_text().contains("passthrough off"),
        "{}",
        m.log_text()
    );
}

#[test]
fn writers_of_a_file_open_through_passthrough_get_etxtbsy_not_eio() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let data = pattern(3 << 20, 2);
    emu.put_object(&bucket, "f.bin", &data);
    let (m, probe) = mount(
        &emu,
        &bucket,
        &[],
        &[("BLOBMOUNT_CACHE__FILE_CACHE_PASSTHROUGH", "always")],
    );
    fill_cache(&m, &probe, "f.bin", &data);
    let opens = probe.passthrough_opens();
    let mut reader = std::fs::File::open(m.p("f.bin")).unwrap();
    assert_eq!(probe.passthrough_opens() - opens, 1.0);
    let t = Instant::now();
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(m.p("f.bin"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(900));
    let e = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("f.bin"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{e}");
    // The reader was not disturbed.
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert!(got == data);
    drop(reader);
    // Close then write at once (the release reaches the daemon after close returns): the
    // writer waits for it instead of failing. Again and again, as `cat f; echo x >> f` does.
    for i in 0..10 {
        let mut r = std::fs::File::open(m.p("f.bin")).unwrap();
        let mut b = [0u8; 16];
        r.read_exact(&mut b).unwrap();
        drop(r);
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(m.p("f.bin"))
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
        w.write_all(b"x").unwrap();
        drop(w);
    }
    let mut want = data.clone();
    want.extend_from_slice(b"xxxxxxxxxx");
    assert!(std::fs::read(m.p("f.bin")).unwrap() == want);
    assert!(emu.get_object(&bucket, "f.bin") == want, "store differs");
}

/// `auto` (the default) leaves read-write mounts alone: no open is passthrough.
#[test]
fn read_write_mounts_do_not_use_passthrough_by_default() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let data = pattern(1 << 20, 3);
    emu.put_object(&bucket, "f.bin", &data);
    let (m, probe) = mount(&emu, &bucket, &[], &[]);
    fill_cache(&m, &probe, "f.bin", &data);
    assert!(std::fs::read(m.p("f.bin")).unwrap() == data);
    assert_eq!(probe.passthrough_opens(), 0.0);
}
