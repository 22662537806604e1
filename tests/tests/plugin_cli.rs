//! `blobmount plugin check|run|test` through the real binary, with the real example components
//! built by plugins/build.sh (tests/run-all.sh builds them first).

use std::path::PathBuf;
use std::time::Duration;

use blobmount_tests::plugin_component as component;
use blobmount_tests::run_cli;

const LIMIT: Duration = Duration::from_secs(60);

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

/// The four examples, with the hook each implements.
const EXAMPLES: [(&str, &str, &str); 4] = [
    ("glob-filter", "filter", r#"{"key": "a.tmp"}"#),
    ("tenant-acl", "acl", r#"{"object": {"key": "x"}, "uid": 0}"#),
    ("prefix-consistency", "consistency", r#"{"key": "x"}"#),
    (
        "conflict-resolver",
        "name-conflict",
        r#"{"kind": "invalid-name", "entries": [{"name": "."}]}"#,
    ),
];

fn fixtures(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/examples")
        .join(name)
        .join("fixtures.yaml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn check_and_run_find_the_hook_from_the_exports() {
    let dir = tempfile::tempdir().unwrap();
    for (name, hook, input) in EXAMPLES {
        let c = component(name);
        let r = run_cli(&["plugin", "check", &c], &[], LIMIT);
        assert_eq!(r.code, Some(0), "{name}: {r:?}");
        assert!(
            r.stdout.contains(&format!("(hook {hook})")),
            "{name}: {}",
            r.stdout
        );

        let f = dir.path().join(format!("{name}.json"));
        std::fs::write(&f, input).unwrap();
        let r = run_cli(
            &["plugin", "run", &c, "--input", f.to_str().unwrap()],
            &[],
            LIMIT,
        );
        assert_eq!(r.code, Some(0), "{name}: {r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON output");
        assert_eq!(v.as_array().map(Vec::len), Some(1), "{name}: {v}");
    }

    // A component of another hook, with --hook given: the world error, as before.
    let r = run_cli(
        &[
            "plugin",
            "check",
            &component("tenant-acl"),
            "--hook",
            "filter",
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr
            .contains("does not implement world blobmount:policy/filter-plugin")
            && r.stderr.contains("it exports: blobmount:policy/plugin"),
        "{}",
        r.stderr
    );

    // A component exporting no hook interface: named as such, with what it does export.
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\x00\x01\x00").unwrap();
    let r = run_cli(&["plugin", "check", empty.to_str().unwrap()], &[], LIMIT);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("exports none of the hook interfaces")
            && r.stderr.contains("it exports: nothing"),
        "{}",
        r.stderr
    );
}

#[test]
fn test_passes_the_examples_fixtures() {
    for (name, _, _) in EXAMPLES {
        let r = run_cli(
            &["plugin", "test", &component(name), &fixtures(name)],
            &[],
            LIMIT,
        );
        assert_eq!(r.code, Some(0), "{name}: {r:?}");
        assert!(!r.stdout.contains("FAIL"), "{name}: {}", r.stdout);
        assert!(
            r.stdout.lines().filter(|l| l.starts_with("PASS ")).count() >= 2,
            "{name}: {}",
            r.stdout
        );
        assert!(r.stdout.contains(" passed, 0 failed"), "{}", r.stdout);
    }
}

#[test]
fn test_reports_failing_cases_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.yaml");
    std::fs::write(
        &f,
        r#"
params:
  exclude: "*.tmp"
cases:
  - name: wrong on purpose
    input: {key: "a.tmp"}
    expect: {verdict: visible}
  - input: [{key: "a.csv"}, {key: "b.tmp"}]
    expect: [{verdict: visible}, {verdict: hidden}]
"#,
    )
    .unwrap();
    let r = run_cli(
        &[
            "plugin",
            "test",
            &component("glob-filter"),
            f.to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            r#"FAIL wrong on purpose: expected {"verdict":"visible"}, got {"key":"a.tmp","verdict":"hidden"}"#,
            "PASS case 2",
            "1 passed, 1 failed",
        ],
        "{}",
        r.stdout
    );

    // A call that fails is a FAIL naming the error; the next case still runs.
    std::fs::write(
        &f,
        "params: {mode: trap-once}\ncases:\n  - {name: traps, input: {key: boom}, expect: {verdict: visible}}\n  - {name: recovers, input: {key: a}, expect: {verdict: visible}}\n",
    )
    .unwrap();
    let r = run_cli(
        &[
            "plugin",
            "test",
            &component("misbehave"),
            f.to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains("FAIL traps: the plugin call failed") && r.stdout.contains("1 failed"),
        "{}",
        r.stdout
    );
}

#[test]
fn test_refuses_bad_fixtures_and_the_wrong_hook() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.yaml");
    let glob = component("glob-filter");
    let run = |text: &str| {
        std::fs::write(&f, text).unwrap();
        run_cli(&["plugin", "test", &glob, f.to_str().unwrap()], &[], LIMIT)
    };

    // An unknown field: exit 2 with its position, and the file's text is not echoed.
    let r =
        run("cases:\n  - input: {key: a}\n    expected: {verdict: hidden}\n    token: hunter2\n");
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("line 3") && r.stderr.contains("expected"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);

    let r = run("cases: [}\ntoken: hunter2\n");
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);

    // The fixtures name a hook the component does not implement.
    let r = run("hook: acl\ncases:\n  - {input: {object: {key: a}}, expect: {mode: \"0644\"}}\n");
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("hook is acl") && r.stderr.contains("implements filter"),
        "{}",
        r.stderr
    );

    // An example's fixtures against another example.
    let r = run_cli(
        &["plugin", "test", &glob, &fixtures("tenant-acl")],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
}
