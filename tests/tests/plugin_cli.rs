//! `blobmount plugin check|run` through the real binary, with the real example components
//! built by plugins/build.sh (tests/run-all.sh builds them first).

use std::path::PathBuf;
use std::time::Duration;

use blobmount_tests::run_cli;

const LIMIT: Duration = Duration::from_secs(60);

fn component(name: &str) -> String {
    let dir = std::env::var_os("BLOBMOUNT_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist"));
    let p = dir.join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run `bash plugins/build.sh` first (tests/run-all.sh does)",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

#[test]
fn check_accepts_a_filter_and_rejects_the_wrong_hook() {
    let f = component("glob-filter");
    let r = run_cli(
        &[
            "plugin",
            "check",
            &f,
            "--hook",
            "filter",
            "-p",
            "exclude=*.tmp",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout.contains("blobmount:policy/filter-plugin@0.1.0"),
        "{}",
        r.stdout
    );

    let r = run_cli(&["plugin", "check", &f, "--hook", "acl"], &[], LIMIT);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr
            .contains("does not implement world blobmount:policy/acl-plugin"),
        "{}",
        r.stderr
    );
}

#[test]
fn check_rejects_malformed_files_and_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"hello").unwrap();
    let r = run_cli(
        &[
            "plugin",
            "check",
            junk.to_str().unwrap(),
            "--hook",
            "filter",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("not a WebAssembly component"),
        "{}",
        r.stderr
    );

    let f = component("glob-filter");
    let r = run_cli(
        &[
            "plugin",
            "check",
            &f,
            "--hook",
            "filter",
            "-p",
            "max-size=big",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("refused its parameters") && r.stderr.contains("max-size"),
        "{}",
        r.stderr
    );

    let r = run_cli(&["plugin", "check", &f, "--hook", "nope"], &[], LIMIT);
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[test]
fn run_prints_filter_verdicts_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sample.json");
    std::fs::write(
        &input,
        r#"{"now-secs": 1000, "objects": [
            {"key": "data/a.csv", "size": 10, "mtime-secs": 900},
            {"key": "data/a.tmp", "size": 10},
            {"key": "archive/old.csv", "size": 10, "mtime-secs": 990}
        ]}"#,
    )
    .unwrap();
    let r = run_cli(
        &[
            "plugin",
            "run",
            &component("glob-filter"),
            "--hook",
            "filter",
            "--input",
            input.to_str().unwrap(),
            "-p",
            "exclude=*.tmp",
            "-p",
            "read-only=archive/**",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON output");
    let verdicts: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["visible", "hidden", "visible-read-only"]);
}

#[test]
fn run_other_hooks_and_report_failures() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("c.json");
    std::fs::write(&input, r#"[{"key": "datasets/x.bin"}, {"key": "logs/"}]"#).unwrap();
    let r = run_cli(
        &[
            "plugin",
            "run",
            &component("prefix-consistency"),
            "--hook",
            "consistency",
            "--input",
            input.to_str().unwrap(),
            "-p",
            "immutable=datasets/",
            "-p",
            "revalidate=logs/",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["data-ttl"], "forever");
    assert_eq!(v[1]["revalidate-on-open"], true);

    // A plugin that loops forever: the call fails (exit 1) promptly, with the reason.
    let obj = dir.path().join("o.json");
    std::fs::write(&obj, r#"{"key": "a"}"#).unwrap();
    let r = run_cli(
        &[
            "plugin",
            "run",
            &component("misbehave"),
            "--hook",
            "filter",
            "--input",
            obj.to_str().unwrap(),
            "-p",
            "mode=loop",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("ran out of fuel"), "{}", r.stderr);

    std::fs::write(&obj, "{not json").unwrap();
    let r = run_cli(
        &[
            "plugin",
            "run",
            &component("glob-filter"),
            "--hook",
            "filter",
            "--input",
            obj.to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("bad input"), "{}", r.stderr);
}
