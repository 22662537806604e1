//! Every basic file operation through a real FUSE mount of the real daemon, against each
//! emulator. One body per behaviour; `per_backend!` runs it on Azurite, moto and
//! fake-gcs-server.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use blobmount_tests::proxy::CountingProxy;
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, free_port, http_get, metric, sh};

fn setup(kind: Kind) -> (Emulator, String, Mount) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    (emu, bucket, m)
}

fn sdk_get(emu: &Emulator, bucket: &str, key: &str) -> Vec<u8> {
    emu.get_object(bucket, key)
}

fn sdk_put(emu: &Emulator, bucket: &str, key: &str, data: &[u8]) {
    emu.put_object(bucket, key, data)
}

fn file_ops(kind: Kind) {
    let (emu, bucket, m) = setup(kind);
    let d = m.path();
    std::fs::write(m.p("hello.txt"), b"hello").unwrap();
    assert_eq!(std::fs::read(m.p("hello.txt")).unwrap(), b"hello");
    assert_eq!(sdk_get(&emu, &bucket, "hello.txt"), b"hello");
    sh(
        d,
        "echo ' world' >> hello.txt; printf XY | dd of=hello.txt bs=1 seek=1 conv=notrunc status=none",
    );
    assert_eq!(std::fs::read(m.p("hello.txt")).unwrap(), b"hXYlo world\n");
    sh(d, "truncate -s 4 hello.txt");
    assert_eq!(sdk_get(&emu, &bucket, "hello.txt"), b"hXYl");
    sh(d, "truncate -s 6 hello.txt");
    assert_eq!(std::fs::read(m.p("hello.txt")).unwrap(), b"hXYl\0\0");

    sh(d, "mkdir -p a/b && echo x > a/b/f && mkdir empty");
    let e = std::fs::remove_dir(m.p("a")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    sh(
        d,
        "rm a/b/f && rmdir a/b a && rmdir empty && test ! -e empty && test ! -e a",
    );

    sh(
        d,
        "mkdir -p src/sub && echo 1 > src/one && echo 2 > src/sub/two && mv src dst && mv hello.txt dst/greeting",
    );
    assert_eq!(sh(d, "cat dst/one dst/sub/two; ls"), "1\n2\ndst\n");
    assert_eq!(sdk_get(&emu, &bucket, "dst/greeting"), b"hXYl\0\0");

    std::os::unix::fs::symlink("dst/one", m.p("link")).unwrap();
    assert_eq!(
        std::fs::read_link(m.p("link")).unwrap(),
        Path::new("dst/one")
    );
    assert_eq!(std::fs::read(m.p("link")).unwrap(), b"1\n");

    std::fs::set_permissions(m.p("dst/one"), std::fs::Permissions::from_mode(0o600)).unwrap();
    sh(d, "touch -m -d @1600000000 dst/one");
    let md = std::fs::metadata(m.p("dst/one")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o600, 1_600_000_000));

    let e = std::fs::hard_link(m.p("dst/one"), m.p("hard")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    let fifo = std::ffi::CString::new(m.p("fifo").to_str().unwrap()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSYS)
    );
    assert!(sh(d, "stat -f -c %l .").trim().parse::<u64>().unwrap() >= 255);

    std::fs::remove_file(m.p("dst/one")).unwrap();
    assert_eq!(
        std::fs::metadata(m.p("dst/one"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
}

fn checksums(root: &Path) -> BTreeMap<String, String> {
    sh(
        root,
        "find . -type f -print0 | sort -z | xargs -0 sha256sum",
    )
    .lines()
    .map(|l| {
        let (h, p) = l.split_once("  ").unwrap();
        (p.to_string(), h.to_string())
    })
    .collect()
}

fn tree_roundtrip(kind: Kind) {
    let (emu, bucket, mut m) = setup(kind);
    let src = tempfile::tempdir().unwrap();
    for i in 0..200 {
        let dir = src.path().join(format!("d{}/s{}", i % 20, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..(i * 97 % 5000)).map(|_| rand::random::<u8>()).collect();
        std::fs::write(dir.join(format!("f{i}.bin")), data).unwrap();
    }
    let want = checksums(src.path());
    assert_eq!(want.len(), 200);
    sh(m.path(), &format!("cp -r {}/. tree", src.path().display()));
    let out = tempfile::tempdir().unwrap();
    sh(m.path(), &format!("cp -r tree/. {}", out.path().display()));
    assert_eq!(checksums(out.path()), want);
    m.stop();
    let m2 = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    assert_eq!(checksums(&m2.p("tree")), want);
}

fn git_commit(kind: Kind) {
    let (_emu, _bucket, m) = setup(kind);
    let out = sh(
        m.path(),
        "git init -q repo && cd repo && git config user.email t@example.com && git config user.name t \
         && mkdir -p src && echo 'fn main() {}' > src/main.rs && echo '# r' > README.md \
         && git add -A && git commit -qm first && echo more >> README.md && git commit -qam second \
         && git log --oneline | wc -l && git status --porcelain | wc -l && git fsck --no-progress --strict",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.get(..2), Some(&["2", "0"][..]), "{out}");
}

fn persisted_after_remount(kind: Kind) {
    let (emu, bucket, mut m) = setup(kind);
    sh(
        m.path(),
        "echo data > f && chmod 640 f && touch -m -d @1500000000 f && ln -s f ln && mkdir -m 700 emptydir && mkdir d && touch d/x && chmod 711 d",
    );
    m.stop();
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    let f = std::fs::metadata(m.p("f")).unwrap();
    assert_eq!(
        (f.mode() & 0o7777, f.mtime(), f.len()),
        (0o640, 1_500_000_000, 5)
    );
    assert_eq!(std::fs::read_link(m.p("ln")).unwrap(), Path::new("f"));
    assert!(
        std::fs::symlink_metadata(m.p("ln"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let e = std::fs::metadata(m.p("emptydir")).unwrap();
    assert!(e.is_dir());
    assert_eq!(e.mode() & 0o7777, 0o700);
    assert_eq!(std::fs::metadata(m.p("d")).unwrap().mode() & 0o7777, 0o711);
    let ls = sh(m.path(), "ls -l");
    assert!(
        ls.contains("-rw-r----- ") && ls.contains("lrwxrwxrwx") && ls.contains("drwx------"),
        "{ls}"
    );
}

fn external_objects(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let long = "L".repeat(255);
    let unicode = "ünï cødé 文件.txt";
    for (k, v) in [
        ("ext/a/b.txt".to_string(), "deep"),
        ("ext/c.txt".into(), "top"),
        ("ext/foo".into(), "file-foo"),
        ("ext/foo/bar".into(), "in-dir-foo"),
        (format!("ext/{long}"), "long"),
        (format!("ext/{unicode}"), "uni"),
    ] {
        sdk_put(&emu, &bucket, &k, v.as_bytes());
    }
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    let ls = sh(m.path(), "ls -1 ext");
    let names: Vec<&str> = ls.lines().collect();
    let mut want = vec!["a", "c.txt", "foo", "foo.~file", long.as_str(), unicode];
    want.sort();
    assert_eq!(names, want);
    assert!(std::fs::metadata(m.p("ext/a")).unwrap().is_dir());
    assert_eq!(std::fs::read_to_string(m.p("ext/a/b.txt")).unwrap(), "deep");
    assert_eq!(
        std::fs::read_to_string(m.p("ext/foo/bar")).unwrap(),
        "in-dir-foo"
    );
    assert_eq!(
        std::fs::read_to_string(m.p("ext/foo.~file")).unwrap(),
        "file-foo"
    );
    assert_eq!(
        std::fs::read_to_string(m.p(&format!("ext/{long}"))).unwrap(),
        "long"
    );
    assert_eq!(
        std::fs::read_to_string(m.p(&format!("ext/{unicode}"))).unwrap(),
        "uni"
    );
    let too_long = m.p(&format!("ext/{long}x"));
    assert_eq!(
        std::fs::write(too_long, b"x").unwrap_err().raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );
    // A name written through the mount is visible to the SDK at once.
    std::fs::write(m.p("ext/a/new.txt"), b"fresh").unwrap();
    assert_eq!(sdk_get(&emu, &bucket, "ext/a/new.txt"), b"fresh");
}

/// Keys no SDK path type accepts, written by another tool: the directory holding them still
/// lists, each gets a stand-in name, and `a//b` (an empty segment) stays readable.
fn odd_keys(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    for (k, v) in [
        ("odd/a//b", "empty-segment"),
        ("odd/dot/./c", "dot-segment"),
        ("odd/m", "file-m"),
        ("odd/m/", ""),
        ("odd/ok.txt", "ok"),
    ] {
        emu.put_raw(&bucket, k, v.as_bytes());
    }
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    assert_eq!(
        sh(m.path(), "ls -1 odd"),
        "a\ndot\nm\nm.~file\nok.txt\n",
        "{}",
        m.log_text()
    );
    assert_eq!(std::fs::read_to_string(m.p("odd/ok.txt")).unwrap(), "ok");
    assert_eq!(
        std::fs::read_to_string(m.p("odd/m.~file")).unwrap(),
        "file-m"
    );
    assert!(std::fs::metadata(m.p("odd/m")).unwrap().is_dir());
    assert_eq!(sh(m.path(), "ls -1 odd/m"), "");
    assert_eq!(sh(m.path(), "ls -1 odd/a"), "~empty\n");
    assert_eq!(
        std::fs::read_to_string(m.p("odd/a/~empty/b")).unwrap(),
        "empty-segment"
    );
    assert_eq!(sh(m.path(), "ls -1 odd/dot"), "~dot\n");
    assert_eq!(sh(m.path(), "ls -1 odd/dot/~dot"), "c\n");
    // Documented limit: the read path refuses `.` segments; it says so instead of guessing.
    assert_eq!(
        std::fs::metadata(m.p("odd/dot/~dot/c"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EINVAL)
    );
    // `find` walks the whole tree without an error.
    assert_eq!(sh(m.path(), "find odd -type f | wc -l").trim(), "4");
}

/// The metadata caches, observed at the store: requests are counted by a proxy between
/// the mount and the emulator.
fn metadata_caches_save_requests(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    for k in ["d/a.txt", "d/b.txt", "d/sub/c.txt"] {
        sdk_put(&emu, &bucket, k, b"data");
    }
    let proxy = CountingProxy::start(emu.port());
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    for (k, v) in [
        ("BLOBMOUNT_CACHE__LIST_TTL_SECS", "3"),
        ("BLOBMOUNT_CACHE__NEGATIVE_TTL_SECS", "3"),
        ("BLOBMOUNT_MOUNT__ATTR_TIMEOUT_SECS", "3"),
    ] {
        spec.env.push((k.into(), v.into()));
    }
    let m = Mount::start(&spec);
    let first = sh(m.path(), "ls -l d");
    let cold = proxy.take();
    assert!(!cold.is_empty());
    if kind == Kind::Azure {
        // Azure listings carry size, ETag and metadata: `ls -l` needs no HEAD per file
        // (directories are still probed).
        let heads: Vec<&String> = cold
            .iter()
            .filter(|r| r.starts_with("HEAD ") && r.ends_with(".txt"))
            .collect();
        assert!(heads.is_empty(), "HEADs for a listed directory: {heads:?}");
    }
    // Within the TTLs: the same listing, a missing name, and the files' attributes cost
    // nothing at the store.
    assert_eq!(sh(m.path(), "ls -l d"), first);
    let missing = std::fs::metadata(m.p("d/missing.txt")).unwrap_err();
    assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(std::fs::read_to_string(m.p("d/a.txt")).unwrap(), "data");
    let warm: Vec<String> = proxy
        .take()
        .into_iter()
        // Data GETs (no query string) are expected: there is no data cache yet.
        .filter(|r| !r.starts_with("GET ") || r.contains('?'))
        .collect();
    assert!(
        warm.is_empty(),
        "metadata requests within the TTL: {warm:?}"
    );
    // A local change is seen at once, with no stale cache in the way.
    std::fs::write(m.p("d/new.txt"), b"n").unwrap();
    assert!(sh(m.path(), "ls d").contains("new.txt"));
    // After the TTL the store is asked again and changes by others are seen.
    sdk_put(&emu, &bucket, "d/other.txt", b"o");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    proxy.take();
    assert!(sh(m.path(), "ls d").contains("other.txt"));
    assert!(
        !proxy.take().is_empty(),
        "an expired listing must be fetched again"
    );
}

/// Throttling (503) and dropped connections between the mount and the store are retried:
/// reads and writes still succeed and nothing is lost.
fn transient_faults_are_retried(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    sdk_put(&emu, &bucket, "d/in.txt", b"hello");
    let proxy = CountingProxy::start(emu.port());
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    for (k, v) in [
        ("BLOBMOUNT_STORE__RETRY__INITIAL_BACKOFF_MS", "10"),
        ("BLOBMOUNT_STORE__RETRY__MAX_BACKOFF_MS", "100"),
    ] {
        spec.env.push((k.into(), v.into()));
    }
    let port = free_port();
    spec.args = vec!["--health-listen".into(), format!("127.0.0.1:{port}")];
    let m = Mount::start(&spec);
    let retries = || {
        metric(
            &http_get(port, "/metrics").1,
            "blobmount_backend_retries_total",
        )
    };
    let before = retries();
    proxy.fail_next(2);
    assert_eq!(std::fs::read_to_string(m.p("d/in.txt")).unwrap(), "hello");
    proxy.drop_next(1);
    proxy.fail_next(1);
    std::fs::write(m.p("d/out.txt"), b"written").unwrap();
    assert_eq!(sdk_get(&emu, &bucket, "d/out.txt"), b"written");
    let log = proxy.take();
    assert!(
        log.iter().filter(|l| l.starts_with("503 ")).count() == 3
            && log.iter().any(|l| l.starts_with("DROP ")),
        "faults not all injected: {log:?}"
    );
    // Every failed attempt was sent again, and counted.
    assert_eq!(retries() - before, 4.0, "{log:?}");
}

fn failed_upload_is_an_error(kind: Kind) {
    let mut emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.env
        .push(("BLOBMOUNT_STORE__RETRY__MAX_RETRIES".into(), "1".into()));
    spec.env.push((
        "BLOBMOUNT_STORE__RETRY__RETRY_TIMEOUT_SECS".into(),
        "3".into(),
    ));
    spec.env.push((
        "BLOBMOUNT_STORE__RETRY__REQUEST_TIMEOUT_SECS".into(),
        "5".into(),
    ));
    let m = Mount::start(&spec);
    let mut f = std::fs::File::create(m.p("doomed.bin")).unwrap();
    f.write_all(&vec![7u8; 100_000]).unwrap();
    emu.kill();
    assert!(f.sync_all().is_err(), "fsync must report the failed upload");
    let fd = f.into_raw_fd();
    // SAFETY: we own fd; close(2) reports the flush result.
    let rc = unsafe { libc::close(fd) };
    assert_eq!(rc, -1, "close must report the failed upload");
    // The data was not dropped: it is kept in the cache's conflicts directory.
    let kept = blobmount_tests::kept_within(&m.cache, std::time::Duration::from_secs(30));
    assert_eq!(kept.len(), 1, "{}", m.log_text());
    assert_eq!(std::fs::metadata(&kept[0]).unwrap().len(), 100_000);
}

blobmount_tests::per_backend_and_adls!(
    file_ops,
    tree_roundtrip,
    git_commit,
    persisted_after_remount,
    external_objects,
    odd_keys,
    metadata_caches_save_requests,
    transient_faults_are_retried,
    failed_upload_is_an_error
);
