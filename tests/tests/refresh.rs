//! `blobmount refresh` on real mounts: with attributes, listings and absent names trusted for
//! an hour (so no TTL can explain the result), an object changed behind the mount's back is
//! still served old before the refresh (asserted, so each test would fail without it) and
//! new right after: new bytes and size at the next read, an added object in `ls`, a deleted
//! one gone (ENOENT).

use std::time::Duration;

use std::io::Write;

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, block_on, free_port, http, run_cli};

const HOUR: &str = "3600";

fn setup(kind: Kind) -> (Emulator, String, Mount) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "d/f", b"old content");
    emu.put_object(&bucket, "d/a", b"a");
    emu.put_object(&bucket, "d/gone", b"soon gone");
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--attr-timeout".into(), HOUR.into()];
    for (k, v) in [
        ("BLOBMOUNT_CACHE__LIST_TTL_SECS", HOUR),
        ("BLOBMOUNT_CACHE__NEGATIVE_TTL_SECS", HOUR),
    ] {
        spec.env.push((k.into(), v.into()));
    }
    let m = Mount::start(&spec);
    (emu, bucket, m)
}

fn refresh(args: &[&str]) -> String {
    let mut all = vec!["refresh"];
    all.extend_from_slice(args);
    let r = run_cli(&all, &[], Duration::from_secs(30));
    assert_eq!(
        r.code,
        Some(0),
        "refresh {args:?}: {}{}",
        r.stdout,
        r.stderr
    );
    r.stdout
}

fn ls(m: &Mount, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(m.p(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn a_changed_file_reads_new_bytes_after_refresh(kind: Kind) {
    let (emu, bucket, m) = setup(kind);
    let f = m.p("d/f");
    assert_eq!(std::fs::read(&f).unwrap(), b"old content");
    // A second open keeps the kernel's pages (same version), and they are what is read.
    assert_eq!(std::fs::read(&f).unwrap(), b"old content");
    let new = b"new, longer content written by another tool";
    emu.put_object(&bucket, "d/f", new);
    assert_eq!(
        std::fs::read(&f).unwrap(),
        b"old content",
        "without a refresh the kernel and the daemon serve the cached version"
    );
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 11);

    let out = refresh(&[f.to_str().unwrap()]);
    assert!(out.contains("refreshed"), "{out}");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), new.len() as u64);
    assert_eq!(std::fs::read(&f).unwrap(), new);
}

fn a_refreshed_directory_shows_added_and_drops_deleted(kind: Kind) {
    let (emu, bucket, m) = setup(kind);
    assert_eq!(ls(&m, "d"), ["a", "f", "gone"]);
    assert!(std::fs::metadata(m.p("d/gone")).is_ok());
    let absent = std::fs::metadata(m.p("d/new")).unwrap_err();
    assert_eq!(absent.raw_os_error(), Some(libc::ENOENT));
    emu.put_object(&bucket, "d/new", b"added");
    let backend = emu.backend(&bucket);
    block_on(backend.delete("d/gone")).unwrap();
    // Without a refresh: the cached listing, the kernel's entry and the negative entry.
    assert_eq!(ls(&m, "d"), ["a", "f", "gone"]);
    assert!(std::fs::metadata(m.p("d/gone")).is_ok());
    assert!(std::fs::metadata(m.p("d/new")).is_err());

    refresh(&[m.p("d").to_str().unwrap()]);
    assert_eq!(ls(&m, "d"), ["a", "f", "new"]);
    let gone = std::fs::metadata(m.p("d/gone")).unwrap_err();
    assert_eq!(gone.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(std::fs::read(m.p("d/new")).unwrap(), b"added");
}

/// Through `POST /refresh` (what the command sends): a test process spawning the command
/// would flush the open file itself (the forked child closes its copy of the descriptor).
fn an_open_file_with_local_changes_is_skipped(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let port = free_port();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--health-listen".into(), format!("127.0.0.1:{port}")];
    let m = Mount::start(&spec);
    let mut w = std::fs::File::create(m.p("mine")).unwrap();
    w.write_all(b"not uploaded yet").unwrap();
    let body = br#"{"paths": ["", "mine"], "recursive": true}"#;
    let (code, answer) = http::request(port, "POST", "/refresh", &[], body);
    assert_eq!(code, 200, "{answer}");
    let json = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        v["results"][0]["skipped"],
        serde_json::json!(["mine"]),
        "{answer}"
    );
    assert_eq!(
        v["results"][1]["skipped"],
        serde_json::json!(["mine"]),
        "{answer}"
    );
    w.write_all(b", still open").unwrap();
    drop(w);
    assert_eq!(
        emu.get_object(&bucket, "mine"),
        b"not uploaded yet, still open"
    );
    let (code, answer) = http::request(port, "POST", "/refresh", &[], b"{}");
    assert_eq!(code, 400, "{answer}");
    let (code, answer) = http::request(port, "POST", "/refresh", &[], br#"{"paths": ["../x"]}"#);
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("\"error\": \""), "{answer}");
}

blobmount_tests::per_backend_and_adls!(
    a_changed_file_reads_new_bytes_after_refresh,
    a_refreshed_directory_shows_added_and_drops_deleted,
    an_open_file_with_local_changes_is_skipped,
);

#[test]
fn a_path_outside_every_mount_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_cli(
        &["refresh", dir.path().to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("not inside a running blobmount mount"),
        "{}",
        r.stderr
    );
    let r = run_cli(&["refresh"], &[], Duration::from_secs(10));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
}
