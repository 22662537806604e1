//! The log file of a real mount: SIGHUP reopens it (logrotate's `create` mode) and does
//! nothing else (the file moved away, SIGHUP; the next lines land in a new file at the
//! configured path, and the mount keeps serving); and a crafted file name cannot forge a
//! line in it.

use std::path::Path;
use std::time::{Duration, Instant};

use blobmount_tests::{Mount, MountSpec, is_mounted};

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn sighup_reopens_the_log_file_and_keeps_the_mount() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let moved = dir.path().join("daemon.log.1");
    let mut m = Mount::start(&MountSpec {
        url: "mem://".into(),
        endpoint: None,
        env: vec![
            ("BLOBMOUNT_LOGGING__FILE".into(), log.display().to_string()),
            ("BLOBMOUNT_LOGGING__MAX_SIZE_MIB".into(), "0".into()),
        ],
        args: vec![],
        cache: None,
        mountpoint: None,
    });
    wait_for("the log file says mounted", || {
        read(&log).contains("mounted")
    });
    std::fs::write(m.p("before"), b"one").unwrap();
    std::fs::rename(&log, &moved).unwrap();
    let pid = m.pid().unwrap() as i32;
    // SAFETY: kill(2) on the test's own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for("a new log file at the configured path", || {
        read(&log).contains("SIGHUP: log file reopened")
    });
    assert!(!read(&moved).contains("SIGHUP"), "{}", read(&moved));
    // Still mounted and serving, reads and writes.
    assert!(is_mounted(m.path()));
    assert_eq!(std::fs::read(m.p("before")).unwrap(), b"one");
    std::fs::write(m.p("after"), b"two").unwrap();
    assert_eq!(std::fs::read(m.p("after")).unwrap(), b"two");
    // A second SIGHUP with the file in place is harmless too.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for("the second reopen", || {
        read(&log).matches("SIGHUP: log file reopened").count() == 2
    });
    assert_eq!(m.stop(), Some(0));
    let new = read(&log);
    assert!(new.contains("SIGTERM: unmounting"), "{new}");
    assert!(!read(&moved).contains("SIGTERM"), "{}", read(&moved));
}

/// A name with a newline and an escape sequence, looked up through the mount with debug
/// logging on (the failed lookup is logged with the name): it stays on its line, escaped.
#[test]
fn a_crafted_name_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let mut m = Mount::start(&MountSpec {
        url: "mem://".into(),
        endpoint: None,
        env: vec![
            ("BLOBMOUNT_LOGGING__FILE".into(), log.display().to_string()),
            ("RUST_LOG".into(), "debug".into()),
        ],
        args: vec![],
        cache: None,
        mountpoint: None,
    });
    let name = "a\nFAKE LOG LINE \x1b[31m";
    assert!(std::fs::metadata(m.p(name)).is_err());
    std::fs::write(m.p(name), b"x").unwrap();
    wait_for("the lookup is logged", || {
        read(&log).contains("a\\nFAKE LOG LINE")
    });
    assert_eq!(m.stop(), Some(0));
    let text = read(&log);
    assert!(text.contains("a\\nFAKE LOG LINE \\e[31m"), "{text}");
    for l in text.lines() {
        assert!(!l.starts_with("FAKE"), "forged line: {l}");
        assert!(!l.contains('\x1b'), "raw escape: {l}");
    }
}
