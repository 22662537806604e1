//! BlobFuse v1 users switch by changing the command name to `blobmount mountv1`: a v1
//! connection file (key auth) pointed at Azurite mounts (in the background, as v1) and serves
//! reads and writes; `--convert-config-only` writes a native file that validates and mounts;
//! a bad file stops before anything is mounted with an error naming the key and no secret;
//! `gen-config` output validates in every mode and mounts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use blobmount_tests::{
    AZURITE_KEY, Emulator, Kind, Mount, MountSpec, is_mounted, lazy_unmount, run_cli,
};

const LIMIT: Duration = Duration::from_secs(60);

/// A v1 `fuse_connection.cfg` with key auth for `container` on Azurite.
fn connection(emu: &Emulator, container: &str) -> String {
    format!(
        "# BlobFuse v1 connection file\naccountName devstoreaccount1\naccountKey {AZURITE_KEY}\nauthType Key\ncontainerName {container}\nblobEndpoint {}\n",
        emu.endpoint().trim_start_matches("http://")
    )
}

/// Unmounts (lazily) whatever is left at the mount point when the test ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            lazy_unmount(&self.0);
        }
    }
}

fn data() -> Vec<u8> {
    (0..2_500_000u32).map(|i| (i * 13 % 251) as u8).collect()
}

#[test]
fn a_v1_connection_file_mounts_through_mountv1_and_serves_reads_and_writes() {
    let emu = Emulator::start(Kind::Azure);
    let container = emu.create_bucket();
    emu.put_object(&container, "from-sdk.txt", b"written by the SDK");
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("fuse_connection.cfg");
    std::fs::write(&cfg, connection(&emu, &container)).unwrap();
    let (mnt, tmp) = (work.path().join("mnt"), work.path().join("blobfusetmp"));
    std::fs::create_dir_all(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    // v1's own command line: no foreground flag, so it detaches once mounted.
    let r = run_cli(
        &[
            "mountv1",
            mnt.to_str().unwrap(),
            &format!("--tmp-path={}", tmp.display()),
            &format!("--config-file={}", cfg.display()),
            "--use-https=false",
            "--file-cache-timeout-in-seconds=120",
            "--log-level=LOG_WARNING",
            "-o",
            "attr_timeout=240,entry_timeout=240,negative_timeout=120",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(is_mounted(&mnt), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "--file-cache-timeout-in-seconds (BlobFuse2 file_cache.timeout-sec): ignored"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(AZURITE_KEY) && !r.stdout.contains(AZURITE_KEY));
    assert_eq!(
        std::fs::read(mnt.join("from-sdk.txt")).unwrap(),
        b"written by the SDK"
    );
    let d = data();
    std::fs::write(mnt.join("v1.bin"), &d).unwrap();
    assert_eq!(emu.get_object(&container, "v1.bin"), d);
    assert_eq!(std::fs::read(mnt.join("v1.bin")).unwrap(), d);
    // v1 caches files on disk: the file cache in --tmp-path holds what was read.
    let cached: u64 = walk(&tmp).iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(
        cached >= d.len() as u64,
        "{cached} bytes cached in {}",
        tmp.display()
    );
    let r = run_cli(&["unmount", mnt.to_str().unwrap()], &[], LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!is_mounted(&mnt));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn convert_config_only_writes_a_native_file_that_validates_and_mounts() {
    let emu = Emulator::start(Kind::Azure);
    let container = emu.create_bucket();
    emu.put_object(&container, "hello.txt", b"converted");
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("fuse_connection.cfg");
    std::fs::write(&cfg, connection(&emu, &container)).unwrap();
    let out = work.path().join("blobmount.yaml");
    let r = run_cli(
        &[
            "mountv1",
            &format!("--config-file={}", cfg.display()),
            "--use-https=false",
            "--streaming=true",
            "--block-size-mb=4",
            "--convert-config-only=true",
            &format!("--output-file={}", out.display()),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("mode: block-cache"), "{text}");
    assert!(text.contains("converted from a BlobFuse v1"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600,
        "the file holds the account key"
    );
    let v = run_cli(&["config", "validate", out.to_str().unwrap()], &[], LIMIT);
    assert_eq!(v.code, Some(0), "{}", v.stderr);
    assert!(v.stdout.contains(&container), "{}", v.stdout);
    let m = Mount::start(&MountSpec {
        url: String::new(),
        endpoint: None,
        env: vec![],
        args: vec![format!("--config={}", out.display())],
        cache: None,
        mountpoint: None,
    });
    assert_eq!(std::fs::read(m.p("hello.txt")).unwrap(), b"converted");
    std::fs::write(m.p("back.txt"), b"through the converted file").unwrap();
    assert_eq!(
        emu.get_object(&container, "back.txt"),
        b"through the converted file"
    );
}

#[test]
fn a_bad_v1_file_stops_with_an_error_naming_the_key() {
    let emu = Emulator::start(Kind::Azure);
    let container = emu.create_bucket();
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    for (bad, says) in [
        (
            connection(&emu, &container).replace("authType Key", "authType Kerberos"),
            "authType",
        ),
        (
            connection(&emu, &container).replace("accountName", "acountName"),
            "\"acountName\"",
        ),
        (
            connection(&emu, &container).replace(&format!("containerName {container}\n"), ""),
            "containerName is missing",
        ),
    ] {
        let cfg = work.path().join("bad.cfg");
        std::fs::write(&cfg, bad).unwrap();
        let r = run_cli(
            &[
                "mountv1",
                mnt.to_str().unwrap(),
                &format!("--config-file={}", cfg.display()),
                "--use-https=false",
                "-f",
            ],
            &[],
            LIMIT,
        );
        assert_eq!(r.code, Some(2), "{}", r.stderr);
        assert!(r.stderr.contains(says), "{says}: {}", r.stderr);
        assert!(!r.stderr.contains(AZURITE_KEY));
        assert!(!is_mounted(&mnt));
    }
}

#[test]
fn gen_config_output_validates_in_every_mode_and_mounts() {
    let emu = Emulator::start(Kind::Azure);
    let container = emu.create_bucket();
    emu.put_object(&container, "g.txt", b"generated");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("fc");
    let modes: [(&str, Vec<String>); 3] = [
        ("block-cache", vec!["--block-cache".into()]),
        (
            "file-cache",
            vec![format!("--tmp-path={}", cache.display()), "--ro".into()],
        ),
        ("direct", vec!["--direct-io".into()]),
    ];
    for (mode, flags) in modes {
        let out = work.path().join(format!("{mode}.yaml"));
        let mut args: Vec<&str> = vec!["gen-config"];
        args.extend(flags.iter().map(String::as_str));
        let o = format!("--o={}", out.display());
        args.push(&o);
        let r = run_cli(&args, &[], LIMIT);
        assert_eq!(r.code, Some(0), "{mode}: {}", r.stderr);
        assert!(r.stdout.contains("Generated config file"), "{}", r.stdout);
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains(&format!("mode: {mode}")), "{text}");
        let v = run_cli(&["config", "validate", out.to_str().unwrap()], &[], LIMIT);
        assert_eq!(v.code, Some(0), "{mode}: {}\n{text}", v.stderr);
        // Filled in with a store, it mounts.
        let mut spec = MountSpec::for_emulator(&emu, &container);
        spec.args = vec![format!("--config={}", out.display())];
        let m = Mount::start(&spec);
        assert_eq!(std::fs::read(m.p("g.txt")).unwrap(), b"generated", "{mode}");
    }
    // `console` prints it; no flag at all for the file cache is an error saying what to give.
    let r = run_cli(
        &["gen-config", "--block-cache", "--o", "console"],
        &[],
        LIMIT,
    );
    assert!(r.stdout.contains("mode: block-cache"), "{}", r.stdout);
    let r = run_cli(&["gen-config"], &[], LIMIT);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("--tmp-path"), "{}", r.stderr);
}
