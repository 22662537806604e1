//! `blobmount plugin new` end to end: for each hook, write a project into a temporary
//! directory, build it with its own build.sh (as an author would, outside this repository),
//! then `plugin check` it and `plugin run` every fixture case, comparing the JSON with the
//! case's `expect`. The four builds share one CARGO_TARGET_DIR (under cargo's target/tmp,
//! kept between runs) so the SDK's dependencies — and on the Debian route, std — are built
//! once. Skipped, with the reason printed, only when neither build route exists here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use blobmount_tests::{Mount, MountSpec, run_cli};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const HOOKS: [&str; 4] = ["filter", "name-conflict", "consistency", "acl"];

/// Which of plugins/route.sh's routes can work on this machine without network, or why none.
fn available_route() -> Result<&'static str, String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let rustup = Command::new("rustup").arg("--version").output().is_ok();
    if let Some(root) = sysroot.filter(|_| rustup) {
        let lib = root.join("lib/rustlib");
        if lib.join("wasm32-unknown-unknown").is_dir()
            && lib
                .join("x86_64-unknown-linux-gnu/bin/wasm-component-ld")
                .is_file()
        {
            return Ok("rustup");
        }
    }
    let debian = [
        "/usr/bin/rustc",
        "/usr/lib/rustlib/src/rust/library",
        "/usr/lib/llvm-22/bin/wasm-ld",
    ];
    if debian.iter().all(|p| Path::new(p).exists()) {
        return Ok("debian");
    }
    Err(format!(
        "neither build route is available: no rustup toolchain with the wasm32-unknown-unknown \
         target and wasm-component-ld, and not all of {debian:?} (apt: rustc-web rust-web-src \
         lld-22); plugins/build.sh installs them"
    ))
}

/// Where the Debian route keeps wasm-component-ld: as tests/run-all.sh does, when it exists.
fn tools_dir(shared: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("BLOBMOUNT_PLUGIN_TOOLS") {
        return PathBuf::from(p);
    }
    let test_tools = std::env::var_os("BLOBMOUNT_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/blobmount-test"))
        .join("wasm");
    if test_tools.join("bin/wasm-component-ld").is_file() {
        test_tools
    } else {
        shared.join("tools")
    }
}

/// `params` of a fixtures file as `-p KEY=VALUE` arguments (a list value repeats the key).
fn param_args(fixtures: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = fixtures["params"].as_object() {
        for (k, v) in m {
            let values = match v {
                Value::Array(vs) => vs.clone(),
                v => vec![v.clone()],
            };
            for v in values {
                let v = match v {
                    Value::String(s) => s,
                    v => v.to_string(),
                };
                out.push("-p".to_string());
                out.push(format!("{k}={v}"));
            }
        }
    }
    out
}

#[test]
fn new_projects_build_check_and_answer_their_fixtures() {
    let route = match available_route() {
        Ok(r) => r,
        Err(why) => {
            println!("SKIPPED plugin new build test: {why}");
            return;
        }
    };
    let shared = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-new");
    std::fs::create_dir_all(&shared).unwrap();
    let target_dir = shared.join("target");
    let tools = tools_dir(&shared);
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().to_str().unwrap();

    for hook in HOOKS {
        let name = format!("my-{hook}");
        let r = run_cli(
            &["plugin", "new", &name, "--hook", hook, "--dir", dir],
            &[],
            LIMIT,
        );
        assert_eq!(r.code, Some(0), "{r:?}");
        assert!(r.stdout.contains("bash build.sh"), "{}", r.stdout);
        let project = parent.path().join(&name);

        // Built from elsewhere, as an author might: build.sh finds its own directory.
        let start = Instant::now();
        let out = Command::new("bash")
            .arg(project.join("build.sh"))
            .current_dir(parent.path())
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("BLOBMOUNT_PLUGIN_TOOLS", &tools)
            .output()
            .unwrap();
        // build.sh names the route it took (BLOBMOUNT_PLUGIN_ROUTE forces one).
        println!(
            "{hook}: build.sh took {:.1}s ({route} route available)",
            start.elapsed().as_secs_f64()
        );
        assert!(
            out.status.success(),
            "build.sh for {hook} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
        let wasm = project.join(format!("{name}.wasm"));
        assert!(wasm.is_file(), "{} missing", wasm.display());
        let wasm = wasm.to_str().unwrap();

        let text = std::fs::read_to_string(project.join("fixtures.yaml")).unwrap();
        let fixtures: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(fixtures["hook"], hook);
        let params = param_args(&fixtures);
        let params: Vec<&str> = params.iter().map(String::as_str).collect();

        // The hook is found from the component's exports.
        let mut args = vec!["plugin", "check", wasm];
        args.extend(&params);
        let r = run_cli(&args, &[], LIMIT);
        assert_eq!(r.code, Some(0), "{r:?}");
        assert!(r.stdout.contains(&format!("{hook}-plugin")), "{}", r.stdout);

        let cases = fixtures["cases"].as_array().unwrap();
        assert!(!cases.is_empty());
        let fixtures_file = project.join("fixtures.yaml");
        let r = run_cli(
            &["plugin", "test", wasm, fixtures_file.to_str().unwrap()],
            &[],
            LIMIT,
        );
        assert_eq!(r.code, Some(0), "{hook}: {r:?}");
        assert!(
            r.stdout
                .contains(&format!("{} passed, 0 failed", cases.len())),
            "{hook}: {}",
            r.stdout
        );
        if hook == "filter" {
            serves_a_mount(wasm);
        }
    }
}

/// The filter template in a real mount, with its fixtures' parameter: over a store that
/// holds a draft and a final file, only the final one is listed and readable.
fn serves_a_mount(wasm: &str) {
    let g = tempfile::tempdir().unwrap();
    let store = g.path().join("store");
    std::fs::create_dir_all(store.join("reports")).unwrap();
    std::fs::write(store.join("reports/q3.pdf"), b"final").unwrap();
    std::fs::write(store.join("reports/q4.pdf.draft"), b"draft").unwrap();
    let cfg = g.path().join("blobmount.yaml");
    std::fs::write(
        &cfg,
        format!("plugins:\n  filter:\n    path: {wasm}\n    params: {{suffix: \".draft\"}}\n"),
    )
    .unwrap();
    let m = Mount::start(&MountSpec {
        url: format!("file://{}", store.display()),
        endpoint: None,
        env: vec![],
        args: vec!["--config".into(), cfg.to_string_lossy().into_owned()],
        cache: None,
        mountpoint: None,
    });
    let names: Vec<String> = std::fs::read_dir(m.p("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["q3.pdf"]);
    assert_eq!(std::fs::read(m.p("reports/q3.pdf")).unwrap(), b"final");
    let e = std::fs::read(m.p("reports/q4.pdf.draft")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
}

#[test]
fn new_refuses_bad_names_other_languages_and_used_directories() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().to_str().unwrap();
    let r = run_cli(
        &["plugin", "new", "2fast", "--hook", "filter", "--dir", dir],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("invalid plugin name"), "{}", r.stderr);

    // JS and Python have a template for the filter hook only (tests/tests/plugin_langs.rs).
    let r = run_cli(
        &[
            "plugin", "new", "p", "--hook", "acl", "--lang", "python", "--dir", dir,
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("filter hook only") && r.stderr.contains("--lang rust"),
        "{}",
        r.stderr
    );
    assert!(!parent.path().join("p").exists());

    std::fs::create_dir(parent.path().join("p")).unwrap();
    std::fs::write(parent.path().join("p/notes"), "mine").unwrap();
    let r = run_cli(
        &["plugin", "new", "p", "--hook", "acl", "--dir", dir],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_dir(parent.path().join("p")).unwrap().count(),
        1
    );
}
