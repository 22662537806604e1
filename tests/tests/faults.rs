//! Faults between the mount and the store, injected by the proxy on each emulator: latency,
//! throttling (429 with Retry-After), stalled requests, truncated response bodies, and
//! commits that landed but whose response was lost. Each test ends by checking that the
//! store and the mount agree byte for byte, and that nothing was taken for a conflict.

use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

use blobmount_tests::proxy::{CountingProxy, Fault};
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, per_backend};

const MIB: usize = 1024 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 3) % 253) as u8 ^ seed).collect()
}

fn close(fd: i32) -> std::io::Result<()> {
    // SAFETY: the caller owns `fd` and gives it up here.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Write `data` to `path` and close it, reporting the close's result.
fn write_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    close(f.into_raw_fd())
}

fn kept_in(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache.join("conflicts"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A mount through a fault-injecting proxy, with short backoffs and request timeouts.
fn mount_via_proxy(emu: &Emulator, bucket: &str) -> (CountingProxy, Mount) {
    let proxy = CountingProxy::start(emu.port());
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    for (k, v) in [
        ("BLOBMOUNT_STORE__RETRY__INITIAL_BACKOFF_MS", "20"),
        ("BLOBMOUNT_STORE__RETRY__MAX_BACKOFF_MS", "200"),
        ("BLOBMOUNT_STORE__RETRY__REQUEST_TIMEOUT_SECS", "3"),
    ] {
        spec.env.push((k.into(), v.into()));
    }
    let m = Mount::start(&spec);
    (proxy, m)
}

/// Every file the test wrote is in the store as written, reads back the same through the
/// mount, and nothing went to `conflicts/`.
fn agree(emu: &Emulator, bucket: &str, m: &Mount, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        assert!(
            emu.get_object(bucket, name) == *data,
            "{name}: the store differs from what was written"
        );
        assert!(
            std::fs::read(m.p(name)).unwrap() == *data,
            "{name}: the mount reads back other bytes"
        );
    }
    assert!(
        kept_in(&m.cache).is_empty(),
        "something was kept as a conflict"
    );
}

/// A store 30 ms away that throttles: small and streamed writes and reads all succeed.
fn latency_and_throttling_lose_nothing(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let (proxy, m) = mount_via_proxy(&emu, &bucket);
    proxy.set_latency_ms(30);
    proxy.inject(Fault::Throttle, None, 3);
    let files = [
        ("small.txt", b"a small file".to_vec()),
        ("big.bin", pattern(20 * MIB + 17, 1)),
    ];
    for (name, data) in &files {
        write_file(&m.p(name), data).expect("write and close through a slow, throttling store");
    }
    assert_eq!(proxy.pending(Fault::Throttle), 0, "the throttling was met");
    let log = proxy.take();
    assert!(log.iter().any(|l| l.starts_with("429 ")), "{log:?}");
    agree(&emu, &bucket, &m, &files);
}

/// A request held back past the client's timeout (then sent anyway) is retried, and the
/// late duplicate changes nothing.
fn stalled_requests_are_retried(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let (proxy, m) = mount_via_proxy(&emu, &bucket);
    proxy.inject(Fault::Stall(Duration::from_secs(5)), Some("PUT "), 1);
    proxy.inject(Fault::Stall(Duration::from_secs(5)), Some("POST "), 1);
    let files = [("stalled.txt", b"written while the store stalled".to_vec())];
    let t = Instant::now();
    if let Err(e) = write_file(&m.p("stalled.txt"), &files[0].1) {
        panic!("write and close past a stall: {e}\n{}", m.log_text());
    }
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_secs(5)); // let the held-back request land
    agree(&emu, &bucket, &m, &files);
}

/// Response bodies cut short are never served as data: a read gives the right bytes (after
/// a retry) or an error, and the next read the right bytes.
fn truncated_bodies_are_never_served(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let data = pattern(3 * MIB + 5, 2);
    emu.put_object(&bucket, "data.bin", &data);
    let (proxy, m) = mount_via_proxy(&emu, &bucket);
    proxy.inject(Fault::Truncate, Some("GET "), 2);
    match std::fs::read(m.p("data.bin")) {
        Ok(got) => assert!(got == data, "a truncated body was served as data"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    let log = proxy.take();
    assert!(log.iter().any(|l| l.starts_with("TRUNC ")), "{log:?}");
    agree(&emu, &bucket, &m, &[("data.bin", data)]);
}

/// The request that commits a file (single PUT, block list, multipart completion, last
/// resumable chunk) reaches the store, but its response is lost: the client retries or
/// gives up, and either way the close succeeds, as the upload landed.
fn a_commit_whose_response_is_lost_succeeds(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let (proxy, m) = mount_via_proxy(&emu, &bucket);
    // Which request commits an object, per store.
    // (GCS resumable chunks go to the session URL the emulator hands out, its own address,
    // past the proxy: only its single-request upload is tested here.)
    let (small_commit, big_commit) = match kind {
        Kind::Azure => ("PUT ", Some("comp=blocklist")),
        Kind::S3 => ("PUT ", Some("POST ")),
        Kind::Gcs => ("uploadType=multipart", None),
    };
    let small = ("small.bin", pattern(1000, 3));
    proxy.inject(Fault::LoseResponse, Some(small_commit), 1);
    write_file(&m.p(small.0), &small.1).expect("close after a lost response");
    let log = proxy.take();
    assert!(log.iter().any(|l| l.starts_with("LOST ")), "{log:?}");

    let Some(big_commit) = big_commit else {
        agree(&emu, &bucket, &m, &[small]);
        return;
    };
    let big = ("big.bin", pattern(12 * MIB + 9, 4));
    proxy.inject(Fault::LoseResponse, Some(big_commit), 1);
    write_file(&m.p(big.0), &big.1).expect("close after a lost commit response");
    let log = proxy.take();
    let lost: Vec<_> = log.iter().filter(|l| l.starts_with("LOST ")).collect();
    assert_eq!(lost.len(), 1, "{log:?}");
    agree(&emu, &bucket, &m, &[small, big]);
}

per_backend!(
    latency_and_throttling_lose_nothing,
    stalled_requests_are_retried,
    truncated_bodies_are_never_served,
    a_commit_whose_response_is_lost_succeeds,
);
