//! Bad input through the real binary: every case must end promptly with a clear message and
//! the documented exit code (1 runtime, 2 config/usage, 3 auth, 4 unreachable, 5 mount), and
//! must never leave a mount behind or print a secret.

use std::time::Duration;

use blobmount_tests::{AZURITE_ACCOUNT, Emulator, Kind, free_port, is_mounted, run_cli};

const LIMIT: Duration = Duration::from_secs(60);

fn mountpoint() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bm-cli-")
        .tempdir()
        .unwrap()
}

#[test]
fn bad_url_is_a_config_error() {
    let mp = mountpoint();
    for url in [
        "foo://bucket",
        "s3://",
        "az://account-only",
        "file://relative/path",
        "not a url",
    ] {
        let r = run_cli(
            &["mount", url, mp.path().to_str().unwrap(), "--foreground"],
            &[],
            LIMIT,
        );
        assert_eq!(r.code, Some(2), "{url}: {r:?}");
        assert!(
            r.stderr.contains("store"),
            "{url}: message should name the store url: {}",
            r.stderr
        );
        assert!(!is_mounted(mp.path()));
    }
}

#[test]
fn unreachable_endpoint_fails_fast_with_exit_4() {
    let mp = mountpoint();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let env = [
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_REGION", "us-east-1"),
        ("BLOBMOUNT_STORE__RETRY__MAX_RETRIES", "2"),
    ];
    let r = run_cli(
        &[
            "mount",
            "s3://bkt",
            mp.path().to_str().unwrap(),
            "--endpoint",
            &endpoint,
            "--foreground",
        ],
        &env,
        LIMIT,
    );
    assert_eq!(r.code, Some(4), "{r:?}");
    assert!(r.stderr.contains("unreachable"), "{}", r.stderr);
    assert!(!is_mounted(mp.path()));
    // The same through the background (daemonizing) path: the parent reports the child's failure.
    let r = run_cli(
        &[
            "mount",
            "s3://bkt",
            mp.path().to_str().unwrap(),
            "--endpoint",
            &endpoint,
        ],
        &env,
        LIMIT,
    );
    assert_eq!(r.code, Some(4), "{r:?}");
    assert!(!is_mounted(mp.path()));
}

#[test]
fn wrong_azure_key_is_an_auth_error_and_is_not_printed() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let mp = mountpoint();
    // Valid base64, wrong key.
    let wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=";
    let url = format!("az://{AZURITE_ACCOUNT}/{bucket}");
    let r = run_cli(
        &[
            "mount",
            &url,
            mp.path().to_str().unwrap(),
            "--endpoint",
            &emu.endpoint(),
            "--foreground",
            "--log-level",
            "debug",
        ],
        &[("AZURE_STORAGE_ACCOUNT_KEY", wrong)],
        LIMIT,
    );
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stderr.contains("authentication failed"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(wrong) && !r.stdout.contains(wrong),
        "the key was printed"
    );
    assert!(!is_mounted(mp.path()));
}

#[test]
fn missing_bucket_is_a_config_error() {
    let emu = Emulator::start(Kind::S3);
    let mp = mountpoint();
    let env = [
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_REGION", "us-east-1"),
    ];
    let r = run_cli(
        &[
            "mount",
            "s3://no-such-bucket",
            mp.path().to_str().unwrap(),
            "--endpoint",
            &emu.endpoint(),
            "--foreground",
        ],
        &env,
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
}

#[test]
fn bad_mountpoint_and_flags() {
    let r = run_cli(
        &[
            "mount",
            "mem://",
            "/nonexistent/blobmount/dir",
            "--foreground",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("/nonexistent/blobmount/dir"),
        "{}",
        r.stderr
    );
    let mp = mountpoint();
    let r = run_cli(
        &[
            "mount",
            "mem://",
            mp.path().to_str().unwrap(),
            "--attr-timeout",
            "soon",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--attr-timeout"), "{}", r.stderr);
    let r = run_cli(
        &[
            "mount",
            "mem://",
            mp.path().to_str().unwrap(),
            "--file-mode",
            "999",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    let r = run_cli(&["frobnicate"], &[], LIMIT);
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[test]
fn config_validate_names_the_key_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("store:\n  url: s3://b\n  bogus: 1\n", "store.bogus"),
        (
            "store:\n  url: az://a/c\n  azure:\n    account-key: SUPERSECRET-123\nmount:\n  read-only: maybe\n",
            "mount.read-only",
        ),
        (
            "store:\n  url: s3://b\ncache:\n  dir: [1, 2]\n",
            "cache.dir",
        ),
        ("store:\n  url: ftp://b\n", "store.url"),
        ("store: [unclosed\n", "line"),
    ];
    for (i, (yaml, key)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        let r = run_cli(&["config", "validate", f.to_str().unwrap()], &[], LIMIT);
        assert_eq!(r.code, Some(2), "{yaml}: {r:?}");
        assert!(
            r.stderr.contains(key),
            "{yaml}: expected {key} in: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("SUPERSECRET") && !r.stdout.contains("SUPERSECRET"));
    }
    // A valid file passes and the printed effective config redacts the key.
    let f = dir.path().join("ok.yaml");
    std::fs::write(
        &f,
        "store:\n  url: az://acct/cont\n  azure:\n    account-key: SUPERSECRET-123\n",
    )
    .unwrap();
    let r = run_cli(&["config", "validate", f.to_str().unwrap()], &[], LIMIT);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        !r.stderr.contains("SUPERSECRET") && !r.stdout.contains("SUPERSECRET"),
        "{r:?}"
    );
    // Environment overrides are validated with the same key names.
    let r = run_cli(
        &["config", "validate", f.to_str().unwrap()],
        &[("BLOBMOUNT_MOUNT__UID", "root")],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("mount.uid"), "{}", r.stderr);
    let r = run_cli(
        &[
            "config",
            "validate",
            dir.path().join("missing.yaml").to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[test]
fn schema_and_version() {
    let r = run_cli(&["config", "schema"], &[], LIMIT);
    assert_eq!(r.code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("schema is JSON");
    let props = &v["properties"];
    for section in ["store", "mount", "cache", "logging"] {
        assert!(
            props.get(section).is_some(),
            "schema lacks {section}: {}",
            r.stdout
        );
    }
    let r = run_cli(&["version"], &[], LIMIT);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", r.stdout);
}

#[test]
fn sas_signature_is_not_printed_when_the_store_is_unreachable() {
    let mp = mountpoint();
    let endpoint = format!("http://127.0.0.1:{}/acct", free_port());
    let sas = "sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig=TOPSECRETSIGNATURE";
    let r = run_cli(
        &[
            "mount",
            "az://acct/cont",
            mp.path().to_str().unwrap(),
            "--endpoint",
            &endpoint,
            "--foreground",
            "--log-level",
            "debug",
        ],
        &[
            ("AZURE_STORAGE_SAS_TOKEN", sas),
            ("BLOBMOUNT_STORE__RETRY__MAX_RETRIES", "0"),
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(4), "{r:?}");
    assert!(
        !r.stderr.contains("TOPSECRET") && !r.stdout.contains("TOPSECRET"),
        "the SAS signature was printed: {}",
        r.stderr
    );
}

/// A setting out of its range is refused the same way whichever way it is given (flag,
/// `-o`, environment, YAML file; `mount` and `config validate`): exit 2, a message naming
/// the key, the value and the range, and nothing mounted.
#[test]
fn out_of_range_setting_is_refused_however_it_is_given() {
    let mp = mountpoint();
    let mpath = mp.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("c.yaml");
    std::fs::write(&yaml, "mount:\n  attr-timeout-secs: 86401\n").unwrap();
    let msg = "mount.attr-timeout-secs: 86401.0 is out of range (0 to 86400)";
    let env = [("BLOBMOUNT_MOUNT__ATTR_TIMEOUT_SECS", "86401")];
    let base: [&str; 4] = ["mount", "mem://", mpath, "--foreground"];
    let with = |more: &[&'static str]| -> Vec<&str> { base.iter().chain(more).copied().collect() };
    type Case<'a> = (Vec<&'a str>, &'a [(&'a str, &'a str)]);
    let cases: [Case; 5] = [
        (with(&["--attr-timeout", "86401"]), &[]),
        (with(&["-o", "attr_timeout=86401"]), &[]),
        (base.to_vec(), &env),
        ([&base[..], &["-c", yaml.to_str().unwrap()]].concat(), &[]),
        (vec!["config", "validate", yaml.to_str().unwrap()], &[]),
    ];
    for (args, env) in cases {
        let r = run_cli(&args, env, LIMIT);
        assert_eq!(r.code, Some(2), "{args:?}: {r:?}");
        assert!(r.stderr.contains(msg), "{args:?}: {}", r.stderr);
        assert!(!is_mounted(mp.path()), "{args:?}");
    }
    // The maximum itself is accepted.
    std::fs::write(&yaml, "mount:\n  attr-timeout-secs: 86400\n").unwrap();
    let r = run_cli(&["config", "validate", yaml.to_str().unwrap()], &[], LIMIT);
    assert_eq!(r.code, Some(0), "{r:?}");
}
