//! Policy plugins in real mounts: each example plugin (built by plugins/build.sh) changes what
//! the mount shows and allows as docs/plugins.md says; misbehaving plugins are stopped
//! within their limits while the mount keeps answering with the failure mode; bad plugins
//! fail the mount before anything is mounted.
//!
//! The policy is backend-independent, so most bodies run on Azurite only; the filter runs
//! on all three emulators through `per_backend!`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use blobmount_tests::plugin_component as component;
use blobmount_tests::{
    Emulator, Kind, Mount, MountSpec, free_port, http_get, is_mounted, metric, per_backend, sh,
};

/// A config file with `yaml` in a directory that lives as long as the returned guard.
fn config(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("blobmount.yaml");
    std::fs::write(&p, yaml).expect("write config");
    let s = p.to_string_lossy().into_owned();
    (dir, s)
}

/// Mount `bucket` with the config file and a fixed health port; returns the mount and port.
fn mount_with(emu: &Emulator, bucket: &str, cfg: &str, extra: &[&str]) -> (Mount, u16) {
    let port = free_port();
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.args = vec![
        "--config".into(),
        cfg.into(),
        "--health-listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    spec.args.extend(extra.iter().map(|s| s.to_string()));
    (Mount::start(&spec), port)
}

fn metrics(port: u16) -> String {
    http_get(port, "/metrics").1
}

/// The errno of `std::fs` result `r` (panics if it succeeded).
fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected a failure")
        .raw_os_error()
        .unwrap_or(0)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Run `script` as `uid:gid` (no supplementary groups); exit status and combined output.
fn as_user(dir: &Path, uid: u32, gid: u32, script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "bash",
            "-c",
            script,
        ])
        .current_dir(dir)
        .output()
        .expect("setpriv");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// glob-filter: excluded names vanish from listings and lookups and cannot be created over;
/// read-only names refuse writes, deletion and renames with EROFS; the rest is untouched.
fn filter_hides_and_protects(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "keep.txt", b"visible");
    emu.put_object(&bucket, "junk.tmp", b"hidden");
    emu.put_object(&bucket, "d/deep.tmp", b"hidden too");
    emu.put_object(&bucket, "d/data.csv", b"1,2");
    emu.put_object(&bucket, "archive/old.csv", b"frozen");
    let (_g, cfg) = config(&format!(
        "plugins:\n  filter:\n    path: {}\n    params:\n      exclude: '*.tmp'\n      read-only: 'archive/**'\n",
        component("glob-filter")
    ));
    let (m, port) = mount_with(&emu, &bucket, &cfg, &[]);
    assert_eq!(names(m.path()), ["archive", "d", "keep.txt"]);
    assert_eq!(names(&m.p("d")), ["data.csv"]);
    assert_eq!(errno(std::fs::metadata(m.p("junk.tmp"))), libc::ENOENT);
    assert_eq!(errno(std::fs::read(m.p("d/deep.tmp"))), libc::ENOENT);
    // A hidden object's name cannot be created, written or renamed over.
    assert_eq!(errno(std::fs::write(m.p("junk.tmp"), b"x")), libc::EACCES);
    assert_eq!(
        errno(std::fs::rename(m.p("keep.txt"), m.p("junk.tmp"))),
        libc::EACCES
    );
    assert_eq!(emu.get_object(&bucket, "junk.tmp"), b"hidden");
    // Read-only: readable, every modification is EROFS.
    assert_eq!(std::fs::read(m.p("archive/old.csv")).unwrap(), b"frozen");
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(m.p("archive/old.csv"));
    assert_eq!(errno(w), libc::EROFS);
    assert_eq!(
        errno(std::fs::remove_file(m.p("archive/old.csv"))),
        libc::EROFS
    );
    assert_eq!(
        errno(std::fs::rename(m.p("archive/old.csv"), m.p("moved.csv"))),
        libc::EROFS
    );
    assert_eq!(
        errno(std::fs::write(m.p("archive/new.csv"), b"x")),
        libc::EROFS
    );
    assert_eq!(emu.get_object(&bucket, "archive/old.csv"), b"frozen");
    // Visible names behave as without a plugin.
    std::fs::write(m.p("d/new.txt"), b"new").unwrap();
    assert_eq!(emu.get_object(&bucket, "d/new.txt"), b"new");
    assert_eq!(std::fs::read(m.p("keep.txt")).unwrap(), b"visible");
    let page = metrics(port);
    assert!(metric(&page, "blobmount_plugin_calls_total{hook=\"filter\"}") >= 1.0);
    assert!(
        metric(
            &page,
            "blobmount_plugin_call_seconds_total{hook=\"filter\"}"
        ) > 0.0
    );
    assert!(metric(&page, "blobmount_plugin_fuel_used_total{hook=\"filter\"}") > 0.0);
    let status: serde_json::Value = serde_json::from_str(&http_get(port, "/status").1).unwrap();
    assert_eq!(status["plugins"][0]["hook"], "filter", "{status}");
    assert!(
        status["plugins"][0]["fuel_used"].as_u64() > Some(0),
        "{status}"
    );
    assert_eq!(
        metric(&page, "blobmount_plugin_failures_total{hook=\"filter\"}"),
        0.0
    );
}

per_backend!(filter_hides_and_protects);

/// tenant-acl: owner and mode come from the tenant's prefix; the allow flags are enforced
/// per caller (EACCES) on top of the kernel's mode check.
#[test]
fn acl_plugin_sets_owner_and_enforces_access() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "tenants/alice/a.txt", b"alice's");
    emu.put_object(&bucket, "tenants/bob/b.txt", b"bob's");
    emu.put_object(&bucket, "public/p.txt", b"everyone's");
    let (_g, cfg) = config(&format!(
        "mount:\n  allow-other: true\nplugins:\n  acl:\n    path: {}\n    params:\n      tenant: ['tenants/alice/:1001:1001:0777', 'tenants/bob/:1002:1002:0777']\n      default: '0:0:0755'\n",
        component("tenant-acl")
    ));
    let (m, _port) = mount_with(&emu, &bucket, &cfg, &[]);
    let d = m.path();
    assert_eq!(
        sh(
            d,
            "stat -c '%u %g %a' tenants/alice tenants/alice/a.txt public/p.txt"
        ),
        "1001 1001 777\n1001 1001 666\n0 0 644\n"
    );
    // The mode bits let everyone in (0777/0666); the ACL does not.
    let (ok, out) = as_user(
        d,
        1001,
        1001,
        "cat tenants/alice/a.txt && echo more >> tenants/alice/a.txt",
    );
    assert!(ok, "{out}");
    let (ok, out) = as_user(d, 1002, 1002, "cat tenants/alice/a.txt");
    assert!(!ok && out.contains("Permission denied"), "{out}");
    let (ok, out) = as_user(d, 1002, 1002, "ls tenants/alice");
    assert!(!ok && out.contains("Permission denied"), "{out}");
    let (ok, out) = as_user(d, 1002, 1002, "touch tenants/alice/intruder");
    assert!(!ok && out.contains("Permission denied"), "{out}");
    let (ok, out) = as_user(d, 1002, 1002, "cat tenants/bob/b.txt public/p.txt");
    assert!(ok && out == "bob'severyone's", "{out}");
    assert!(
        emu.get_object_opt(&bucket, "tenants/alice/intruder")
            .is_none()
    );
    assert_eq!(
        emu.get_object(&bucket, "tenants/alice/a.txt"),
        b"alice'smore\n"
    );
}

/// prefix-consistency: `datasets/` is trusted forever (a remote change stays unseen), `logs/`
/// is asked at every stat and open (a remote change is seen at once), the rest follows the
/// default TTL.
#[test]
fn consistency_plugin_sets_ttls_per_prefix() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "datasets/x.bin", b"12345");
    emu.put_object(&bucket, "logs/app.log", b"line1\n");
    emu.put_object(&bucket, "other/o.txt", b"abc");
    let (_g, cfg) = config(&format!(
        "plugins:\n  consistency:\n    path: {}\n    deadline-ms: 10000\n    params:\n      immutable: datasets/\n      revalidate: logs/\n      default-ttl-ms: '500'\n",
        component("prefix-consistency")
    ));
    let (m, port) = mount_with(&emu, &bucket, &cfg, &[]);
    let size = |rel: &str| std::fs::metadata(m.p(rel)).unwrap().len();
    assert_eq!(
        (
            size("datasets/x.bin"),
            size("logs/app.log"),
            size("other/o.txt")
        ),
        (5, 6, 3)
    );
    emu.put_object(&bucket, "datasets/x.bin", b"1234567890");
    emu.put_object(&bucket, "logs/app.log", b"line1\nline2\n");
    emu.put_object(&bucket, "other/o.txt", b"abcdef");
    // logs/: no stat TTL, the next stat and open see the new version.
    assert_eq!(size("logs/app.log"), 12);
    assert_eq!(
        std::fs::read(m.p("logs/app.log")).unwrap(),
        b"line1\nline2\n"
    );
    std::thread::sleep(Duration::from_millis(1500));
    // other/: the 500 ms default TTL has passed.
    assert_eq!(size("other/o.txt"), 6);
    // datasets/: trusted forever; stat and listing still show the first version. (A failed
    // plugin call would answer "nothing cached": the deadline is generous for loaded hosts.)
    assert_eq!(size("datasets/x.bin"), 5, "{}", metrics(port));
    let ls = sh(m.path(), "ls -l datasets/x.bin");
    assert!(ls.contains(" 5 "), "{ls}");
    let page = metrics(port);
    assert!(metric(&page, "blobmount_plugin_calls_total{hook=\"consistency\"}") >= 3.0);
}

/// conflict-resolver: the file beside a same-named directory gets the plugin's suffix
/// instead of the built-in `.~file`, and is reachable under it.
#[test]
fn conflict_plugin_names_the_colliding_file() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "foo", b"the file");
    emu.put_object(&bucket, "foo/bar", b"in the dir");
    let (_g, cfg) = config(&format!(
        "plugins:\n  name-conflict:\n    path: {}\n    params:\n      file-suffix: .as-file\n",
        component("conflict-resolver")
    ));
    let (m, _port) = mount_with(&emu, &bucket, &cfg, &[]);
    assert_eq!(names(m.path()), ["foo", "foo.as-file"]);
    assert!(m.p("foo").is_dir());
    assert_eq!(std::fs::read(m.p("foo.as-file")).unwrap(), b"the file");
    assert_eq!(std::fs::read(m.p("foo/bar")).unwrap(), b"in the dir");
    assert_eq!(errno(std::fs::metadata(m.p("foo.~file"))), libc::ENOENT);
    drop(m);
    // Without the plugin the built-in rule applies.
    let (_g2, cfg2) = config("policy:\n  name-conflict: hide-file\n");
    let (m, _port) = mount_with(&emu, &bucket, &cfg2, &[]);
    assert_eq!(names(m.path()), ["foo"]);
}

/// The built-in `policy:` filter without plugins.
#[test]
fn builtin_policy_filters_without_plugins() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "a.csv", b"1");
    emu.put_object(&bucket, "b.log", b"2");
    emu.put_object(&bucket, "ro/c.csv", b"3");
    let (_g, cfg) =
        config("policy:\n  filter:\n    exclude: ['*.log']\n    read-only: ['ro/**']\n");
    let (m, _port) = mount_with(&emu, &bucket, &cfg, &[]);
    assert_eq!(names(m.path()), ["a.csv", "ro"]);
    assert_eq!(errno(std::fs::remove_file(m.p("ro/c.csv"))), libc::EROFS);
    assert_eq!(errno(std::fs::write(m.p("b.log"), b"x")), libc::EACCES);
}

/// Each way a plugin can misbehave is stopped within its limits: with `on-failure: allow`
/// the mount answers as the built-in policy would, with `deny` the objects are hidden, and
/// the mount answers promptly either way.
#[test]
fn misbehaving_plugins_are_stopped_and_the_mount_keeps_answering() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "a.txt", b"a");
    emu.put_object(&bucket, "b.txt", b"b");
    let wasm = component("misbehave");
    for (mode, on_failure, shown) in [
        ("loop", "allow", &["a.txt", "b.txt"][..]),
        ("alloc", "allow", &["a.txt", "b.txt"][..]),
        ("trap", "deny", &[][..]),
        ("garbage", "deny", &[][..]),
        ("read-file", "allow", &[][..]),
    ] {
        let (_g, cfg) = config(&format!(
            "plugins:\n  filter:\n    path: {wasm}\n    on-failure: {on_failure}\n    fuel: 1000000\n    deadline-ms: 100\n    memory-mib: 8\n    params:\n      mode: {mode}\n      path: /etc/hostname\n"
        ));
        let (m, port) = mount_with(&emu, &bucket, &cfg, &[]);
        let t = Instant::now();
        assert_eq!(names(m.path()), shown, "mode {mode}");
        // Twice: a replaced instance must fail the same way, not wedge the mount.
        assert_eq!(names(m.path()), shown, "mode {mode}, again");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "mode {mode}: listing took {:?}",
            t.elapsed()
        );
        let failures = metric(
            &metrics(port),
            "blobmount_plugin_failures_total{hook=\"filter\"}",
        );
        if mode == "read-file" {
            // The plugin has no file system: the read failed inside the sandbox (a normal
            // answer, hidden), it did not trap.
            assert_eq!(failures, 0.0, "mode {mode}");
            assert!(!std::path::Path::new("/etc/hostname").exists() || shown.is_empty());
        } else {
            assert!(failures >= 1.0, "mode {mode}: no failure counted");
            // Counted by kind as well.
            // (`alloc` grows memory in a loop: the fuel may run out before the cap is hit.)
            let kinds: &[&str] = match mode {
                "loop" => &["out-of-fuel"],
                "alloc" => &["memory", "out-of-fuel"],
                "trap" => &["trap"],
                _ => &["bad-return"],
            };
            let page = metrics(port);
            let series = |k: &str| {
                format!("blobmount_plugin_failures_by_kind_total{{hook=\"filter\",kind=\"{k}\"}}")
            };
            assert!(
                kinds
                    .iter()
                    .any(|k| page.lines().any(|l| l.starts_with(&series(k)))),
                "mode {mode}: no {kinds:?} counted"
            );
        }
        // The mount still serves file contents.
        if !shown.is_empty() {
            assert_eq!(std::fs::read(m.p("a.txt")).unwrap(), b"a", "mode {mode}");
        }
    }
}

/// A missing file, a file that is not a component, and a component of another hook's world
/// fail the mount at start-up with a message naming the problem; nothing stays mounted.
#[test]
fn bad_plugins_are_rejected_at_mount() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let missing = tmp.path().join("missing.wasm");
    let acl = component("tenant-acl");
    for (path, expect) in [
        (missing.to_string_lossy().into_owned(), "missing.wasm"),
        (junk.to_string_lossy().into_owned(), "junk.wasm"),
        (
            acl,
            "does not implement world blobmount:policy/filter-plugin",
        ),
    ] {
        let (_g, cfg) = config(&format!("plugins:\n  filter:\n    path: {path}\n"));
        let mut spec = MountSpec::for_emulator(&emu, &bucket);
        spec.args = vec!["--config".into(), cfg];
        let err = match Mount::try_start(&spec) {
            Ok(m) => panic!("mounted with {path} at {}", m.path().display()),
            Err(e) => e,
        };
        assert!(
            err.contains("plugins:") && err.contains(expect),
            "{path}: {err}"
        );
        assert!(err.contains("exit status: 2"), "{path}: {err}");
    }
    // The same bucket mounts fine without the plugin: nothing was left behind.
    let spec = MountSpec::for_emulator(&emu, &bucket);
    let m = Mount::start(&spec);
    assert!(is_mounted(m.path()));
}

/// SIGHUP reads the config again and swaps in the new plugins without remounting: a listing
/// changes at once (the cached one is dropped). A config whose plugin does not load keeps
/// the old policy in force, and says so in the log.
#[test]
fn sighup_reloads_plugins_and_keeps_the_old_ones_on_failure() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    for k in ["keep.txt", "junk.tmp", "notes.md"] {
        emu.put_object(&bucket, k, b"x");
    }
    let filter = |pattern: &str, path: &str| {
        format!("plugins:\n  filter:\n    path: {path}\n    params:\n      exclude: '{pattern}'\n")
    };
    let glob = component("glob-filter");
    let (g, cfg) = config(&filter("*.tmp", &glob));
    let log = g.path().join("daemon.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--config".into(), cfg.clone()];
    spec.env
        .push(("BLOBMOUNT_LOGGING__FILE".into(), log.display().to_string()));
    let m = Mount::start(&spec);
    // The listing is cached for the default list TTL: only the reload can change it soon.
    assert_eq!(names(m.path()), ["keep.txt", "notes.md"]);
    let pid = m.pid().expect("daemon pid") as i32;
    let hangup_until = |what: &str, done: &dyn Fn() -> bool| {
        // SAFETY: kill(2) on the test's own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
        let t = Instant::now();
        while !done() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "timed out: {what}\n{}",
                read_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    std::fs::write(&cfg, filter("*.md", &glob)).unwrap();
    hangup_until("the new filter's listing", &|| {
        read_log().contains("policy reloaded")
    });
    assert_eq!(names(m.path()), ["junk.tmp", "keep.txt"]);
    assert_eq!(std::fs::read(m.p("junk.tmp")).unwrap(), b"x");
    // (`notes.md` itself may still be stat-able until the kernel's entry for it, from the
    // first listing, times out: the reload does not reach into the kernel's caches.)

    let missing = g.path().join("missing.wasm");
    std::fs::write(&cfg, filter("*", &missing.to_string_lossy())).unwrap();
    hangup_until("the failed reload is logged", &|| {
        read_log().contains("policy not reloaded")
    });
    assert!(read_log().contains("missing.wasm"), "{}", read_log());
    assert!(is_mounted(m.path()));
    assert_eq!(names(m.path()), ["junk.tmp", "keep.txt"]);
}

/// With `plugins.watch-secs`, a changed config file is reloaded without a signal, once it
/// has stayed the same for one period.
#[test]
fn a_changed_config_file_is_reloaded_without_a_signal() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    for k in ["keep.txt", "junk.tmp", "notes.md"] {
        emu.put_object(&bucket, k, b"x");
    }
    let filter = |pattern: &str| {
        format!(
            "plugins:\n  watch-secs: 1\n  filter:\n    path: {}\n    params:\n      exclude: '{pattern}'\n",
            component("glob-filter")
        )
    };
    let (g, cfg) = config(&filter("*.tmp"));
    let log = g.path().join("daemon.log");
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--config".into(), cfg.clone()];
    spec.env
        .push(("BLOBMOUNT_LOGGING__FILE".into(), log.display().to_string()));
    let m = Mount::start(&spec);
    assert_eq!(names(m.path()), ["keep.txt", "notes.md"]);
    std::fs::write(&cfg, filter("*.md")).unwrap();
    let t = Instant::now();
    while names(m.path()) != ["junk.tmp", "keep.txt"] {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "not reloaded: {:?}\n{}",
            names(m.path()),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("config changed: policy reloaded"), "{text}");
}

/// `plugins.dir`: the plugins of a directory's manifest, pinned by digest, serve the mount;
/// a component that does not match its pin stops the mount (exit 2) naming both digests.
#[test]
fn a_plugin_directory_with_a_pinned_manifest_serves_the_mount() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    for k in ["keep.txt", "junk.tmp"] {
        emu.put_object(&bucket, k, b"x");
    }
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("glob-filter.wasm");
    std::fs::copy(component("glob-filter"), &wasm).unwrap();
    let out = Command::new("sha256sum").arg(&wasm).output().unwrap();
    let digest = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let manifest = |pin: &str| {
        format!(
            "plugins:\n  - name: hide-tmp\n    hook: filter\n    file: glob-filter.wasm\n    \
             sha256: '{pin}'\n    params: {{exclude: '*.tmp'}}\n"
        )
    };
    std::fs::write(dir.path().join("manifest.yaml"), manifest(&digest)).unwrap();
    let (_g, cfg) = config(&format!("plugins:\n  dir: {}\n", dir.path().display()));
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.args = vec!["--config".into(), cfg.clone()];
    let m = Mount::start(&spec);
    assert_eq!(names(m.path()), ["keep.txt"]);
    drop(m);

    let wrong = if digest.starts_with('0') { "1" } else { "0" }.repeat(64);
    std::fs::write(dir.path().join("manifest.yaml"), manifest(&wrong)).unwrap();
    let err = match Mount::try_start(&spec) {
        Ok(m) => panic!("mounted with a wrong pin at {}", m.path().display()),
        Err(e) => e,
    };
    assert!(err.contains("exit status: 2"), "{err}");
    assert!(err.contains(&digest) && err.contains(&wrong), "{err}");
}
