//! Misbehaving plugins (plugins/test-plugins/misbehave) are stopped within their limits and
//! answered by the failure mode; the policy keeps serving; bad components are rejected at load
//! with clear messages.

mod common;

use std::time::{Duration, Instant};

use blobmount_policy::{CallError, FailureMode, Hook, LoadError, PluginConfig};
use blobmount_policy_api::{Policy, Verdict};
use common::{component, obj, policy, try_policy};

fn misbehave(mode: &str) -> PluginConfig {
    let mut c = PluginConfig::new(component("misbehave")).param("mode", mode);
    c.cache_entries = 0;
    c
}

#[test]
fn runaway_loop_is_stopped_by_fuel() {
    let p = policy(Hook::Filter, misbehave("loop"));
    let t = Instant::now();
    assert_eq!(p.try_filter(&obj("a", 1, 0), 0), Err(CallError::OutOfFuel));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The failure mode answers, repeatedly, and the policy keeps serving.
    for _ in 0..3 {
        assert_eq!(p.filter(&obj("a", 1, 0), 0), Verdict::Hidden);
    }
    let s = p.stats(Hook::Filter).unwrap();
    assert_eq!(s.failures, 3);
    assert!(s.instantiations >= 4, "{s:?}");
}

#[test]
fn runaway_loop_is_stopped_by_the_deadline_when_fuel_is_plentiful() {
    let mut c = misbehave("loop");
    c.fuel = u64::MAX / 4;
    c.deadline_ms = 50;
    let p = policy(Hook::Filter, c);
    let t = Instant::now();
    assert_eq!(p.try_filter(&obj("a", 1, 0), 0), Err(CallError::Deadline));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(45) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}

#[test]
fn unbounded_allocation_is_stopped_at_the_cap() {
    let mut c = misbehave("alloc");
    c.memory_mib = 8;
    c.fuel = u64::MAX / 4;
    c.deadline_ms = 10_000;
    let p = policy(Hook::Filter, c);
    assert_eq!(p.try_filter(&obj("a", 1, 0), 0), Err(CallError::Memory));
    assert_eq!(p.filter(&obj("a", 1, 0), 0), Verdict::Hidden);
}

#[test]
fn trap_falls_back_to_the_failure_mode() {
    let p = policy(Hook::Filter, misbehave("trap"));
    assert!(matches!(
        p.try_filter(&obj("a", 1, 0), 0),
        Err(CallError::Trap(_))
    ));
    assert_eq!(p.filter(&obj("a", 1, 0), 0), Verdict::Hidden);
    let mut allow = misbehave("trap");
    allow.on_failure = FailureMode::Allow;
    let p = policy(Hook::Filter, allow);
    assert_eq!(p.filter(&obj("a", 1, 0), 0), Verdict::Visible);
}

#[test]
fn instance_is_replaced_after_a_trap() {
    let p = policy(Hook::Filter, misbehave("trap-once"));
    assert!(p.try_filter(&obj("boom", 1, 0), 0).is_err());
    assert_eq!(p.try_filter(&obj("fine", 1, 0), 0), Ok(Verdict::Visible));
    assert_eq!(
        p.filter_batch(&[obj("x", 1, 0), obj("y", 1, 0)], 0),
        vec![Verdict::Visible; 2]
    );
}

#[test]
fn garbage_return_is_rejected() {
    let p = policy(Hook::Filter, misbehave("garbage"));
    let objs = [obj("a", 1, 0), obj("b", 1, 0)];
    assert!(matches!(
        p.try_filter_batch(&objs, 0),
        Err(CallError::BadReturn(_))
    ));
    assert_eq!(p.filter_batch(&objs, 0), vec![Verdict::Hidden; 2]);
    assert_eq!(p.stats(Hook::Filter).unwrap().failures, 1);
}

#[test]
fn host_files_are_not_readable() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), b"top secret").unwrap();
    let c = misbehave("read-file").param("path", secret.path().to_str().unwrap());
    let p = policy(Hook::Filter, c);
    // Visible would mean the plugin read the file.
    assert_eq!(p.try_filter(&obj("a", 1, 0), 0), Ok(Verdict::Hidden));
}

#[test]
fn init_failure_is_a_load_error() {
    let e = try_policy(Hook::Filter, misbehave("init-fail"))
        .err()
        .expect("must fail");
    assert!(matches!(e, LoadError::InitRejected { .. }), "{e}");
    assert!(
        e.to_string().contains("refusing parameters as asked"),
        "{e}"
    );
}

#[test]
fn malformed_wasm_is_rejected_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let e = try_policy(Hook::Filter, PluginConfig::new(&junk))
        .err()
        .unwrap();
    assert!(matches!(e, LoadError::NotAComponent { .. }), "{e}");
    assert!(e.to_string().contains("not WebAssembly"), "{e}");

    // A component header followed by garbage.
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, [0, b'a', b's', b'm', 0x0d, 0, 1, 0, 0xff, 0xff, 0x01]).unwrap();
    let e = try_policy(Hook::Filter, PluginConfig::new(&bad))
        .err()
        .unwrap();
    assert!(matches!(e, LoadError::Malformed { .. }), "{e}");

    // A core module (what a plain `cargo build` without the component linker produces).
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, [0, b'a', b's', b'm', 1, 0, 0, 0]).unwrap();
    let e = try_policy(Hook::Filter, PluginConfig::new(&core))
        .err()
        .unwrap();
    assert!(e.to_string().contains("core wasm module"), "{e}");

    let missing = dir.path().join("absent.wasm");
    let e = try_policy(Hook::Filter, PluginConfig::new(&missing))
        .err()
        .unwrap();
    assert!(matches!(e, LoadError::Read { .. }), "{e}");
}

#[test]
fn component_of_the_wrong_world_is_rejected_clearly() {
    let e = try_policy(Hook::Acl, PluginConfig::new(component("glob-filter")))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::WrongWorld { .. }), "{msg}");
    assert!(
        msg.contains("acl-plugin") && msg.contains("blobmount:policy/acl@0.1.0"),
        "{msg}"
    );
}

/// A `sha256` pin: the right digest loads (either case); another digest, or a value that is
/// not a digest, is refused before anything is compiled or run.
#[test]
fn a_pinned_component_loads_only_with_its_digest() {
    use sha2::{Digest, Sha256};
    let path = component("glob-filter");
    let bytes = std::fs::read(&path).unwrap();
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let pinned = |pin: &str| {
        let mut c = PluginConfig::new(&path);
        c.sha256 = Some(pin.to_string());
        try_policy(Hook::Filter, c)
    };
    assert!(pinned(&hex).is_ok());
    assert!(pinned(&hex.to_ascii_uppercase()).is_ok());
    let other = format!("{}0", &hex[..63]);
    let other = if other == hex {
        format!("{}1", &hex[..63])
    } else {
        other
    };
    let e = pinned(&other).err().unwrap();
    assert!(matches!(e, LoadError::Pinned { .. }), "{e}");
    assert!(e.to_string().contains(&hex), "{e}");
    let e = pinned("abc").err().unwrap();
    assert!(matches!(e, LoadError::Limits { .. }), "{e}");
}

/// A component that imports an interface the host does not provide (neither
/// `blobmount:policy/host` nor WASI, which is linked with nothing granted: see
/// tests/tests/plugin_langs.rs) is refused at load with the interface's name.
#[test]
fn a_component_importing_a_foreign_interface_is_rejected_at_load() {
    let name = b"acme:net/tcp@0.2.0";
    let mut wasm = vec![0, b'a', b's', b'm', 0x0d, 0, 1, 0];
    // Type section: one empty instance type.
    wasm.extend([7, 3, 1, 0x42, 0]);
    // Import section: that instance, under the WASI sockets name.
    let mut import = vec![1, 0, name.len() as u8];
    import.extend_from_slice(name);
    import.extend([5, 0]);
    wasm.extend([10, import.len() as u8]);
    wasm.extend(import);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sockets.wasm");
    std::fs::write(&path, &wasm).unwrap();
    let e = try_policy(Hook::Filter, PluginConfig::new(&path))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::ForbiddenImports { .. }), "{msg}");
    assert!(msg.contains("acme:net/tcp@0.2.0"), "{msg}");
}

/// The looping plugin with fuel to spare: every call runs until its deadline.
fn deadline_burner(deadline_ms: u64) -> PluginConfig {
    let mut c = misbehave("loop");
    c.fuel = u64::MAX / 4;
    c.deadline_ms = deadline_ms;
    c
}

/// With one instance, calls that overlap wait for it at most until their own deadline and
/// then fail as busy: instances stay capped and no call takes much longer than its deadline.
#[test]
fn overlapping_calls_wait_for_a_capped_instance_until_their_deadline() {
    let mut c = deadline_burner(100);
    c.max_instances = 1;
    c.prewarm = 4; // lowered to max-instances
    let p = std::sync::Arc::new(policy(Hook::Filter, c));
    let t = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.try_filter(&obj("a", 1, 0), 0))
        })
        .collect();
    let results: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    let took = t.elapsed();
    assert!(took < Duration::from_millis(600), "took {took:?}");
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert!(
        results.contains(&Err(CallError::Busy(1))),
        "no call found the instance busy: {results:?}"
    );
    // One instance at load, and replacements for failed calls only: never two at once.
    let s = p.stats(Hook::Filter).unwrap();
    assert!(s.instantiations <= 1 + 4, "{s:?}");
}

/// A plugin call on a multi-thread runtime does not hold the worker: with one worker busy
/// in a 300 ms call, another task still runs at once.
#[test]
fn a_plugin_call_does_not_hold_a_runtime_worker() {
    let p = std::sync::Arc::new(policy(Hook::Filter, deadline_burner(300)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let slow = tokio::spawn({
            let p = p.clone();
            async move { p.filter(&obj("a", 1, 0), 0) }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let t = Instant::now();
        let quick = tokio::spawn(async { 1 }).await.unwrap();
        assert_eq!(quick, 1);
        assert!(
            t.elapsed() < Duration::from_millis(150),
            "another task waited {:?} for the worker",
            t.elapsed()
        );
        assert_eq!(slow.await.unwrap(), Verdict::Hidden);
    });
    // And on a current-thread runtime the call runs in place (no panic).
    let ct = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        ct.block_on(async { p.filter(&obj("b", 1, 0), 0) }),
        Verdict::Hidden
    );
}

/// After `breaker-failures` failed calls the hook answers without calling the plugin; the
/// breaker shows in the stats; the failures it saves are not counted as calls.
#[test]
fn the_breaker_opens_after_consecutive_failures() {
    let mut c = misbehave("trap");
    c.breaker_failures = 3;
    let p = policy(Hook::Filter, c);
    for _ in 0..10 {
        assert_eq!(p.filter(&obj("a", 1, 0), 0), Verdict::Hidden);
    }
    let s = p.stats(Hook::Filter).unwrap();
    assert_eq!((s.calls, s.failures), (3, 3), "{s:?}");
    assert!(s.breaker_open);
    assert_eq!((s.breaker_trips, s.breaker_skipped), (1, 7));
}

/// Limits outside their ranges are refused at load with the range in the message.
#[test]
fn instance_and_breaker_limits_are_checked() {
    let mut c = misbehave("loop");
    c.max_instances = 0;
    let e = try_policy(Hook::Filter, c)
        .err()
        .expect("max-instances 0 loaded");
    assert!(e.to_string().contains("max-instances is 0"), "{e}");
    let mut c = misbehave("loop");
    c.breaker_secs = 0;
    let e = try_policy(Hook::Filter, c)
        .err()
        .expect("breaker-secs 0 loaded");
    assert!(e.to_string().contains("breaker-secs is 0"), "{e}");
}

/// A component exporting the given names, each an empty instance (enough for its type).
fn component_exporting(names: &[&str]) -> Vec<u8> {
    let mut wasm = vec![0, b'a', b's', b'm', 0x0d, 0, 1, 0];
    // Instance section: one empty instance per name, from (no) inline exports.
    let mut inst = vec![names.len() as u8];
    for _ in names {
        inst.extend([0x01, 0]);
    }
    wasm.extend([5, inst.len() as u8]);
    wasm.extend(inst);
    // Export section: instance i under names[i].
    let mut exp = vec![names.len() as u8];
    for (i, n) in names.iter().enumerate() {
        exp.extend([0, n.len() as u8]);
        exp.extend(n.as_bytes());
        exp.extend([5, i as u8, 0]);
    }
    wasm.extend([11, exp.len() as u8]);
    wasm.extend(exp);
    wasm
}

/// `plugin check|run|test` without `--hook` take the hook from the exports; a component
/// with none, or several, is refused with what it exports.
#[test]
fn the_hook_is_found_from_the_exports() {
    use blobmount_policy::tool::{ToolError, detect_hook};
    for (name, hook) in [
        ("glob-filter", Hook::Filter),
        ("tenant-acl", Hook::Acl),
        ("prefix-consistency", Hook::Consistency),
        ("conflict-resolver", Hook::NameConflict),
    ] {
        assert_eq!(detect_hook(&component(name)).unwrap(), hook, "{name}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.wasm");

    std::fs::write(&path, component_exporting(&[])).unwrap();
    let e = detect_hook(&path).unwrap_err();
    assert!(matches!(e, ToolError::NoHook { .. }), "{e}");
    assert!(e.to_string().contains("it exports: nothing"), "{e}");

    std::fs::write(
        &path,
        component_exporting(&["blobmount:policy/plugin@0.1.0"]),
    )
    .unwrap();
    let e = detect_hook(&path).unwrap_err();
    assert!(
        matches!(e, ToolError::NoHook { .. }) && e.to_string().contains("blobmount:policy/plugin"),
        "{e}"
    );

    std::fs::write(
        &path,
        component_exporting(&[
            "blobmount:policy/filter@0.1.0",
            "blobmount:policy/acl@0.2.0",
        ]),
    )
    .unwrap();
    let e = detect_hook(&path).unwrap_err();
    assert!(
        matches!(e, ToolError::ManyHooks { .. }) && e.to_string().contains("(filter, acl)"),
        "{e}"
    );

    // Another WIT version still names the hook; loading then says which version it is.
    std::fs::write(
        &path,
        component_exporting(&["blobmount:policy/consistency@9.0.0"]),
    )
    .unwrap();
    assert_eq!(detect_hook(&path).unwrap(), Hook::Consistency);

    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let e = detect_hook(&path).unwrap_err();
    assert!(
        matches!(e, ToolError::Inspect { .. }) && e.to_string().contains("core wasm module"),
        "{e}"
    );
}
