//! Integrity through a real mount on each emulator: what the mount uploads carries an MD5,
//! so the store reports the file's own MD5 afterwards (Azure `Content-MD5`, GCS `md5Hash`,
//! S3 the ETag: the MD5 of a single PUT, the MD5 of the parts' MD5s for a multipart upload);
//! bytes damaged on the way up (by the proxy) are refused or caught and sent once more, and
//! damaged twice fail the close; bytes damaged on the way down fail the read at the end of
//! the file (EIO) instead of being served as good.

use blobmount_backend::checksum::{ChecksumKind, StoredSum, crc32c, md5, md5_hex};
use blobmount_tests::proxy::{CountingProxy, Fault};
use blobmount_tests::{
    AZURITE_ACCOUNT, Emulator, Kind, Mount, MountSpec, block_on, free_port, http_get, metric,
    per_backend,
};

const MIB: usize = 1 << 20;
const PART: usize = 5 * MIB;

fn mount(emu: &Emulator, bucket: &str, proxy: &CountingProxy) -> (Mount, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("blobmount.yaml");
    std::fs::write(&cfg, "write:\n  part-size-mib: 5\n").unwrap();
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    spec.args = vec!["--config".into(), cfg.to_string_lossy().into_owned()];
    (Mount::start(&spec), dir)
}

fn random(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// What the store reports about `key`: its ETag and the MD5 it reports (`None`: none).
fn stored_md5(emu: &Emulator, bucket: &str, key: &str) -> (String, Option<[u8; 16]>) {
    let b = emu.backend(bucket);
    let info = block_on(b.head(key)).unwrap();
    let etag = info.etag.unwrap();
    let sum = block_on(b.content_md5(key, &etag)).unwrap();
    (etag, sum)
}

/// The ETag S3 gives an object uploaded in parts of `part` bytes.
fn multipart_etag(data: &[u8], part: usize) -> String {
    let mut all = Vec::new();
    let chunks: Vec<&[u8]> = data.chunks(part).collect();
    for c in &chunks {
        all.extend_from_slice(&md5(c));
    }
    format!("\"{}-{}\"", md5_hex(&md5(&all)), chunks.len())
}

/// The request line of the upload of a small file `key`.
fn put_line(kind: Kind, bucket: &str, key: &str) -> String {
    match kind {
        Kind::Azure => format!("PUT /{AZURITE_ACCOUNT}/{bucket}/{key}"),
        Kind::S3 => format!("PUT /{bucket}/{key}"),
        Kind::Gcs => format!("POST /upload/storage/v1/b/{bucket}/o?uploadType=multipart"),
    }
}

/// The request line of a download of a key starting with `key` (object_store spells `.` as
/// `%2E` on GCS).
fn get_line(kind: Kind, bucket: &str, key: &str) -> String {
    match kind {
        Kind::Azure => format!("GET /{AZURITE_ACCOUNT}/{bucket}/{key}"),
        Kind::S3 | Kind::Gcs => format!("GET /{bucket}/{key}"),
    }
}

fn the_store_reports_the_files_own_checksum(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let proxy = CountingProxy::start(emu.port());
    let (m, _cfg) = mount(&emu, &bucket, &proxy);
    let small = random(1000);
    let big = random(20 * MIB + 12345);
    std::fs::write(m.p("small.bin"), &small).unwrap();
    std::fs::write(m.p("big.bin"), &big).unwrap();
    let sent = proxy.take();
    let in_parts = match kind {
        Kind::Azure => "comp=block&",
        Kind::S3 => "uploadId=",
        Kind::Gcs => "uploadType=multipart",
    };
    assert!(
        sent.iter().any(|r| r.contains(in_parts)),
        "the big file's upload path: {sent:?}"
    );
    let (_, sum) = stored_md5(&emu, &bucket, "small.bin");
    assert_eq!(sum, Some(md5(&small)), "{kind:?}: small file");
    let (etag, sum) = stored_md5(&emu, &bucket, "big.bin");
    match kind {
        // A multipart object's ETag is the MD5 of its parts' MD5s (and no MD5 of the whole).
        Kind::S3 => assert_eq!(etag, multipart_etag(&big, PART)),
        Kind::Azure | Kind::Gcs => assert_eq!(sum, Some(md5(&big)), "{kind:?}: big file"),
    }
    if kind == Kind::Gcs {
        // Past one request's size: a resumable session, its MD5 sent with the last chunk.
        let huge = random(36 * MIB + 7);
        std::fs::write(m.p("huge.bin"), &huge).unwrap();
        assert!(
            proxy
                .take()
                .iter()
                .any(|r| r.contains("uploadType=resumable"))
        );
        assert_eq!(stored_md5(&emu, &bucket, "huge.bin").1, Some(md5(&huge)));
    }
}

fn damaged_uploads_are_sent_again_or_fail_the_close(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let proxy = CountingProxy::start(emu.port());
    let (m, _cfg) = mount(&emu, &bucket, &proxy);
    // Damaged once: caught (refused by the store, or its checksum differs) and sent again.
    let data = random(4000);
    proxy.inject(
        Fault::CorruptRequest,
        Some(&put_line(kind, &bucket, "once.bin")),
        1,
    );
    std::fs::write(m.p("once.bin"), &data).unwrap();
    assert_eq!(emu.get_object(&bucket, "once.bin"), data, "{kind:?}");
    assert_eq!(proxy.pending(Fault::CorruptRequest), 0);
    assert!(
        m.log_text().contains("sending them once more"),
        "{}",
        m.log_text()
    );
    // Damaged every time: fsync reports the error (nothing is acknowledged), the data stays
    // staged, and the next close sends it again (the link is good again by then).
    let data = random(4000);
    proxy.inject(
        Fault::CorruptRequest,
        Some(&put_line(kind, &bucket, "twice.bin")),
        2,
    );
    let mut f = std::fs::File::create(m.p("twice.bin")).unwrap();
    std::io::Write::write_all(&mut f, &data).unwrap();
    let e = f.sync_all().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{kind:?}: {e}");
    assert_eq!(proxy.pending(Fault::CorruptRequest), 0);
    assert!(m.log_text().contains("refused the upload's bytes twice"));
    // Nothing damaged stays visible: refused by a store that checks (Azure), removed again
    // where the store kept it (moto and fake-gcs-server do not check what they are sent).
    assert!(
        emu.get_object_opt(&bucket, "twice.bin").is_none(),
        "{kind:?}: damaged bytes in the store"
    );
    drop(f);
    assert_eq!(emu.get_object(&bucket, "twice.bin"), data, "{kind:?}");
}

fn a_download_damaged_on_the_way_fails_at_the_end(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let data = random(3 * MIB + 99);
    emu.put_object(&bucket, "rd.bin", &data);
    emu.put_object(&bucket, "rd2.bin", &data);
    emu.put_object(&bucket, "small.bin", &data[..MIB]);
    let proxy = CountingProxy::start(emu.port());
    let health = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("blobmount.yaml");
    // Objects from 2 MiB up are checked; smaller ones cost no request of their own.
    std::fs::write(
        &cfg,
        "write:\n  part-size-mib: 5\nread:\n  verify-min-mib: 2\n",
    )
    .unwrap();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    spec.args = vec![
        "--config".into(),
        cfg.to_string_lossy().into_owned(),
        "--health-listen".into(),
        format!("127.0.0.1:{health}"),
    ];
    let m = Mount::start(&spec);
    let metrics = || {
        let (code, page) = http_get(health, "/metrics");
        assert_eq!(code, 200);
        let v = |name: &str| metric(&page, &format!("{name} ")) as u64;
        (
            v("blobmount_read_checksums_verified_total"),
            v("blobmount_checksum_failures_total"),
            v("blobmount_read_checksum_requests_total"),
        )
    };
    // Below read.verify-min-mib: not checked, no request.
    assert_eq!(std::fs::read(m.p("small.bin")).unwrap(), &data[..MIB]);
    assert_eq!(
        metrics(),
        (0, 0, 0),
        "{kind:?}: a small file is not checked"
    );
    // Intact: read and checked, with one request for the store's MD5.
    assert_eq!(std::fs::read(m.p("rd.bin")).unwrap(), data);
    assert_eq!(metrics(), (1, 0, 1), "{kind:?}: verified, failed, requests");
    proxy.inject(
        Fault::CorruptResponse,
        Some(&get_line(kind, &bucket, "rd2")),
        1,
    );
    let r = std::fs::read(m.p("rd2.bin"));
    let e = match r {
        Ok(b) => panic!(
            "{kind:?}: read {} bytes (same: {}); requests {:?}; log {}",
            b.len(),
            b == data,
            proxy.take(),
            m.log_text()
        ),
        Err(e) => e,
    };
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{kind:?}: {e}");
    assert_eq!(proxy.pending(Fault::CorruptResponse), 0);
    assert_eq!(metrics(), (1, 1, 2), "{kind:?}: verified, failed, requests");
    let named = match kind {
        Kind::Gcs => "do not match the CRC32C the store reports",
        Kind::Azure | Kind::S3 => "do not match the MD5 the store reports",
    };
    assert!(m.log_text().contains(named), "{}", m.log_text());
}

/// The checksum of kind `want` the store reports for `key` (`None`: none of that kind).
fn stored_sum(emu: &Emulator, bucket: &str, key: &str, want: ChecksumKind) -> Option<StoredSum> {
    let b = emu.backend(bucket);
    let etag = block_on(b.head(key)).unwrap().etag.unwrap();
    block_on(b.content_checksum(key, &etag, want)).unwrap()
}

/// A 20 MiB file read whole is verified with the checksum the store prefers, and only with
/// it: CRC32C on GCS (no byte goes through MD5; fake-gcs-server reports a CRC32C for what
/// the mount uploads and for its own API's uploads), MD5 on the others.
fn reads_are_verified_with_the_stores_preferred_checksum(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let data = random(20 * MIB + 77);
    emu.put_object(&bucket, "api.bin", &data);
    let health = free_port();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--health-listen".into(), format!("127.0.0.1:{health}")];
    {
        // Written through a mount of its own, so the reads below are not served from the
        // writer's page cache.
        let w = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
        std::fs::write(w.p("mount.bin"), &data).unwrap();
    }
    let preferred = match kind {
        Kind::Gcs => ChecksumKind::Crc32c,
        Kind::Azure | Kind::S3 => ChecksumKind::Md5,
    };
    for key in ["api.bin", "mount.bin"] {
        let crc = stored_sum(&emu, &bucket, key, ChecksumKind::Crc32c);
        match kind {
            Kind::Gcs => assert_eq!(crc, Some(StoredSum::Crc32c(crc32c(&data))), "{key}"),
            Kind::Azure | Kind::S3 => assert_eq!(crc, None, "{kind:?} {key}"),
        }
    }
    let m = Mount::start(&spec);
    let metrics = || {
        let (code, page) = http_get(health, "/metrics");
        assert_eq!(code, 200);
        let v = |line: &str| metric(&page, line) as u64;
        (
            v("blobmount_read_checksums_verified_total "),
            v("blobmount_read_checksum_bytes_total{kind=\"md5\"} "),
            v("blobmount_read_checksum_bytes_total{kind=\"crc32c\"} "),
        )
    };
    assert_eq!(metrics(), (0, 0, 0));
    let n = data.len() as u64;
    assert_eq!(std::fs::read(m.p("api.bin")).unwrap(), data);
    assert_eq!(std::fs::read(m.p("mount.bin")).unwrap(), data);
    let want = match (kind, preferred) {
        (_, ChecksumKind::Crc32c) => (2, 0, 2 * n),
        // The mount uploaded its copy in parts: S3 keeps no MD5 of it (hashed, not checked).
        (Kind::S3, ChecksumKind::Md5) => (1, 2 * n, 0),
        (_, ChecksumKind::Md5) => (2, 2 * n, 0),
    };
    assert_eq!(
        metrics(),
        want,
        "{kind:?}: verified, MD5 bytes, CRC32C bytes"
    );
    // The xattr still shows the MD5, whichever kind reads are checked by.
    let shown = blobmount_tests::sh(
        m.path(),
        "getfattr --only-values -n user.blobmount.content_md5 api.bin",
    );
    assert_eq!(shown.trim(), md5_hex(&md5(&data)), "{kind:?}");
}

per_backend!(
    the_store_reports_the_files_own_checksum,
    damaged_uploads_are_sent_again_or_fail_the_close,
    a_download_damaged_on_the_way_fails_at_the_end,
    reads_are_verified_with_the_stores_preferred_checksum,
);

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Not a test: what the checksums cost on a 1 GiB write through a mount on Azurite (wall
/// time and the daemon's CPU time), with `write.checksums` on and off, in one run
/// (`--run-ignored ignored-only --no-capture cost_of`).
#[test]
#[ignore]
fn cost_of_a_1gib_write() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    for on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("blobmount.yaml");
        std::fs::write(&cfg, format!("write:\n  checksums: {on}\n")).unwrap();
        let mut spec = MountSpec::for_emulator(&emu, &bucket);
        spec.args = vec!["--config".into(), cfg.to_string_lossy().into_owned()];
        let m = Mount::start(&spec);
        let pid = m.pid().unwrap();
        let cpu0 = cpu_secs(pid);
        let t0 = std::time::Instant::now();
        blobmount_tests::sh(
            m.path(),
            &format!("dd if=/dev/zero of=big{on} bs=1M count=1024 status=none conv=fsync"),
        );
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs(pid) - cpu0;
        let info = block_on(emu.backend(&bucket).head(&format!("big{on}"))).unwrap();
        assert_eq!(info.size, 1 << 30);
        println!("1 GiB write, checksums {on}: wall {wall:.1} s, daemon CPU {cpu:.1} s");
        std::fs::remove_file(m.p(&format!("big{on}"))).unwrap();
    }
}

/// Not a test: what the read check costs on a cold 1 GiB read through a GCS mount
/// (fake-gcs-server, loopback): wall time, the daemon's and the server's CPU, with the check
/// on and off (`read.verify-min-mib` above the size), two runs each, for the binary in
/// `BLOBMOUNT_BIN` (`--run-ignored ignored-only --no-capture cost_of_a_cold`). Run it with a
/// binary from before CRC32C (it checks by MD5) and one from after to compare.
#[test]
#[ignore]
fn cost_of_a_cold_1gib_read_on_gcs() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let mut data = vec![0u8; 1 << 30];
    rand::fill(&mut data[..]);
    emu.put_object(&bucket, "big.bin", &data);
    drop(data);
    let server = emu.pid().unwrap();
    for round in 0..3 {
        for check in [true, false] {
            let mut spec = MountSpec::for_emulator(&emu, &bucket);
            let health = free_port();
            spec.args = vec!["--health-listen".into(), format!("127.0.0.1:{health}")];
            if !check {
                spec.env
                    .push(("BLOBMOUNT_READ__VERIFY_MIN_MIB".into(), "1048576".into()));
            }
            let m = Mount::start(&spec);
            let pid = m.pid().unwrap();
            let (cpu0, srv0) = (cpu_secs(pid), cpu_secs(server));
            let t0 = std::time::Instant::now();
            blobmount_tests::sh(m.path(), "dd if=big.bin of=/dev/null bs=1M status=none");
            let wall = t0.elapsed().as_secs_f64();
            let (cpu, srv) = (cpu_secs(pid) - cpu0, cpu_secs(server) - srv0);
            let (_, page) = http_get(health, "/metrics");
            println!(
                "round {round}, check {check}: {:.0} MB/s (wall {wall:.2} s), daemon CPU {cpu:.2} s, fake-gcs-server CPU {srv:.2} s, reads verified {}",
                (1u64 << 30) as f64 / wall / 1e6,
                metric(&page, "blobmount_read_checksums_verified_total "),
            );
        }
    }
}

/// `write.checksums: false` sends no MD5: bytes damaged on the way land as they are (what
/// the setting gives up), on the one emulator that would otherwise refuse them.
#[test]
fn without_checksums_damaged_bytes_land() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let proxy = CountingProxy::start(emu.port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("blobmount.yaml");
    std::fs::write(&cfg, "write:\n  checksums: false\n").unwrap();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    spec.args = vec!["--config".into(), cfg.to_string_lossy().into_owned()];
    let m = Mount::start(&spec);
    let data = random(4000);
    proxy.inject(
        Fault::CorruptRequest,
        Some(&put_line(Kind::Azure, &bucket, "plain.bin")),
        1,
    );
    let mut f = std::fs::File::create(m.p("plain.bin")).unwrap();
    std::io::Write::write_all(&mut f, &data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(proxy.pending(Fault::CorruptRequest), 0);
    let stored = emu.get_object(&bucket, "plain.bin");
    assert_eq!(stored.len(), data.len());
    assert!(stored != data, "the damaged bytes landed unnoticed");
}
