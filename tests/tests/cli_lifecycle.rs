//! The quick-start path through the real binary: `blobmount mount` without `--foreground`
//! returns once the mount is live, keeps the terminal clean (its log goes to the cache
//! directory), shows up in `mount list`, and `blobmount unmount` stops it cleanly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use blobmount_tests::{blobmount_cmd, is_mounted, run_cli, sh};

const LIMIT: Duration = Duration::from_secs(60);

/// A scratch directory with a `file://` store path, a mount point (created) and a cache
/// directory path; the directory lives as long as the returned guard.
fn local_store() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mp, cache) = (
        tmp.path().join("store"),
        tmp.path().join("mnt"),
        tmp.path().join("cache"),
    );
    std::fs::create_dir(&mp).unwrap();
    (tmp, store, mp, cache)
}

#[test]
fn background_mount_of_a_local_store_round_trip() {
    let (_tmp, store, mp, cache) = local_store();
    let url = format!("file://{}", store.display());
    let mp_s = mp.to_str().unwrap();
    let r = run_cli(
        &["mount", &url, mp_s, "--cache-dir", cache.to_str().unwrap()],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(is_mounted(&mp), "mount returned before the mount was live");
    let log = cache.join("blobmount.log");
    assert_eq!(
        r.stderr.trim(),
        format!(
            "blobmount: mounted {url} on {mp_s} (log: {})",
            log.display()
        )
    );
    std::fs::write(mp.join("hello.txt"), b"hello").unwrap();
    assert_eq!(std::fs::read(store.join("hello.txt")).unwrap(), b"hello");
    // Directories are real directories in the store (empty ones included), and moving or
    // removing them leaves nothing behind.
    sh(
        &mp,
        "mkdir -p a/b a/empty gone && echo x > a/b/f && mv a c && rmdir gone && mkdir kept",
    );
    let tree = sh(&store, "find . | sort");
    assert_eq!(
        tree, ".\n./c\n./c/b\n./c/b/f\n./c/empty\n./hello.txt\n./kept\n",
        "store tree"
    );
    assert_eq!(
        sh(&mp, "find . | sort"),
        tree,
        "the mount shows the same tree"
    );
    assert!(mp.join("kept").is_dir() && mp.join("c/empty").is_dir());
    let list = run_cli(&["mount", "list"], &[], LIMIT);
    assert!(list.stdout.contains(mp_s), "{list:?}");

    let r = run_cli(&["unmount", mp_s], &[], LIMIT);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(!is_mounted(&mp));
    // The daemon notices and exits; its log says so and holds no warning about it.
    let t = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("exited cleanly") || t.elapsed() > Duration::from_secs(20) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.contains("exited cleanly"), "{text}");
    assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
}

/// `blobmount mount ... 2>&1 | cat` (or `$(blobmount mount ...)`) returns once mounted: the
/// background daemon does not keep the caller's stdout or stderr open.
#[test]
fn background_mount_lets_go_of_the_callers_output() {
    let (_tmp, store, mp, cache) = local_store();
    let bin = blobmount_cmd().get_program().to_owned();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#""$0" mount "file://$1" "$2" --cache-dir "$3" 2>&1 | cat"#)
        .arg(&bin)
        .args([&store, &mp, &cache])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        let _ = tx.send(s);
    });
    let got = rx.recv_timeout(Duration::from_secs(30));
    let mounted = is_mounted(&mp);
    let _ = run_cli(&["unmount", mp.to_str().unwrap()], &[], LIMIT);
    let _ = child.wait();
    let text = got.expect("the output pipe was still open 30 s after mounting");
    assert!(mounted && text.contains("blobmount: mounted"), "{text}");
}

/// Mount count of `mp` in /proc/self/mounts (stacked mounts count several times).
fn mounts_at(mp: &std::path::Path) -> usize {
    let want = mp.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        .count()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sidecar mounts onto a directory that is itself a mount (a shared volume). Stopping the
/// daemon, by `blobmount unmount` or by SIGTERM, must remove only its own mount (fuser 0.18
/// unmounted the path a second time, taking the volume underneath with it).
#[test]
fn stopping_leaves_the_mount_underneath_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("volume");
    std::fs::create_dir(&vol).unwrap();
    let vol_s = vol.to_str().unwrap().to_string();
    assert!(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs", &vol_s])
            .status()
            .unwrap()
            .success()
    );
    struct Umount(String);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .args(["-l", &self.0])
                .status();
        }
    }
    let _guard = Umount(vol_s.clone());
    std::fs::write(vol.join("on-the-volume"), b"keep").unwrap();

    for how in ["unmount", "sigterm"] {
        let mut child = blobmount_cmd()
            .args(["mount", "mem://", &vol_s, "--foreground"])
            .arg("--cache-dir")
            .arg(tmp.path().join(format!("cache-{how}")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until("mounted", || mounts_at(&vol) == 2);
        assert!(!vol.join("on-the-volume").exists(), "mount not on top");
        if how == "unmount" {
            let r = run_cli(&["unmount", &vol_s], &[], LIMIT);
            assert_eq!(r.code, Some(0), "{r:?}");
        } else {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(0), "{how}");
        assert_eq!(
            mounts_at(&vol),
            1,
            "{how}: the volume underneath was unmounted too"
        );
        assert_eq!(std::fs::read(vol.join("on-the-volume")).unwrap(), b"keep");
    }
}

#[test]
fn mounting_twice_on_one_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mp_s = mp.to_str().unwrap();
    let cache = tmp.path().join("cache");
    let r = run_cli(
        &[
            "mount",
            "mem://",
            mp_s,
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let again = run_cli(&["mount", "mem://", mp_s, "--foreground"], &[], LIMIT);
    assert_eq!(again.code, Some(5), "{again:?}");
    assert!(
        again.stderr.contains("already a blobmount mount"),
        "{}",
        again.stderr
    );
    assert_eq!(mounts_at(&mp), 1);
    assert_eq!(run_cli(&["unmount", mp_s], &[], LIMIT).code, Some(0));
    assert_eq!(mounts_at(&mp), 0);
}

/// fstab style: everything from `-o`, including the config file; `-o rw` beats
/// `read-only: true` in that file.
#[test]
fn mount_options_config_and_rw() {
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let cfg = tmp.path().join("m.yaml");
    std::fs::write(
        &cfg,
        format!(
            "store:\n  url: mem://\nmount:\n  mountpoint: {}\n  read-only: true\ncache:\n  dir: {}\n",
            mp.display(),
            tmp.path().join("cache").display()
        ),
    )
    .unwrap();
    let mp_s = mp.to_str().unwrap();
    for (opts, writable) in [
        (format!("config={}", cfg.display()), false),
        (format!("config={},rw", cfg.display()), true),
    ] {
        let r = run_cli(&["mount", "-o", &opts], &[], LIMIT);
        assert_eq!(r.code, Some(0), "{r:?}");
        let w = std::fs::write(mp.join("probe"), b"x");
        assert_eq!(w.is_ok(), writable, "-o {opts}: {w:?}");
        if !writable {
            assert_eq!(w.unwrap_err().raw_os_error(), Some(libc::EROFS));
        }
        assert_eq!(run_cli(&["unmount", mp_s], &[], LIMIT).code, Some(0));
    }
}

/// The kernel's read-ahead for the mount is raised (mount.kernel-read-ahead-kib) when the
/// daemon may write sysfs, as root can.
#[test]
fn kernel_read_ahead_is_raised() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mp_s = mp.to_str().unwrap();
    let cache = tmp.path().join("cache");
    let r = run_cli(
        &[
            "mount",
            "mem://",
            mp_s,
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &[("BLOBMOUNT_MOUNT__KERNEL_READ_AHEAD_KIB", "2048")],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let dev = std::fs::metadata(&mp).unwrap().dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(run_cli(&["unmount", mp_s], &[], LIMIT).code, Some(0));
    assert_eq!(got.trim(), "2048", "{path}");
}

/// SIGTERM with a file still open and written: the data is uploaded before the mount goes
/// away, and the daemon exits 0 once the file is closed.
#[test]
fn sigterm_uploads_pending_writes_before_unmounting() {
    use blobmount_tests::{Emulator, Kind, Mount, MountSpec};
    use std::io::Write;
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let mut m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    let mut f = std::fs::File::create(m.p("pending.txt")).unwrap();
    f.write_all(b"written but not closed").unwrap();
    let stopper = std::thread::spawn(move || {
        let code = m.stop();
        (code, m)
    });
    wait_until("the open file's data in the store", || {
        emu.get_object_opt(&bucket, "pending.txt").as_deref()
            == Some(&b"written but not closed"[..])
    });
    drop(f);
    let (code, m) = stopper.join().unwrap();
    assert_eq!(code, Some(0), "{}", m.log_text());
    assert!(!is_mounted(m.path()));
    assert!(
        m.log_text()
            .contains("uploaded open files before unmounting"),
        "{}",
        m.log_text()
    );
}

/// The unprivileged sidecar pattern: `blobmount fuse-mounter` (root) mounts and hands the
/// FUSE descriptor over a socket to a daemon running as nobody with no capabilities, which
/// serves it. A SIGKILLed daemon leaves a dead mount (ENOTCONN, not hanging calls: the mounter
/// keeps no copy of the descriptor); a restarted daemon gets a fresh mount from the same
/// mounter. Stopping the daemon leaves the unmount to the mounter.
#[test]
fn unprivileged_daemon_serves_a_descriptor_from_the_mounter() {
    use blobmount_tests::{Emulator, Kind, blobmount_bin};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};

    /// Stops the mounter (which detaches the mount) however the test ends.
    struct Mounter(Child, std::path::PathBuf);
    impl Drop for Mounter {
        fn drop(&mut self) {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
            blobmount_tests::lazy_unmount(&self.1);
        }
    }

    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mp, sock, cache) = (
        dir.path().join("mnt"),
        dir.path().join("fuse.sock"),
        dir.path().join("cache"),
    );
    std::fs::create_dir(&mp).unwrap();
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let log = |n: &str| std::fs::File::create(dir.path().join(n)).unwrap();
    let mut mounter = Mounter(
        blobmount_cmd()
            .args([
                "fuse-mounter",
                "--allow-other",
                "--uid",
                "65534",
                "--gid",
                "65534",
            ])
            .arg("--socket")
            .arg(&sock)
            .arg(&mp)
            .stderr(log("mounter.log"))
            .spawn()
            .unwrap(),
        mp.clone(),
    );
    let spawn_daemon = |n: u32| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .args(["--bounding-set=-all", "--no-new-privs"])
            .arg(blobmount_bin())
            .args([
                "mount",
                &emu.store_url(&bucket),
                "--foreground",
                "--allow-other",
            ])
            .args(["--endpoint", &emu.endpoint(), "--health-listen", ""])
            .arg("--fuse-fd-socket")
            .arg(&sock)
            .arg("--cache-dir")
            .arg(&cache)
            .envs(emu.env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log(&format!("daemon{n}.log")))
            .stderr(log(&format!("daemon{n}.err")))
            .spawn()
            .unwrap()
    };
    let logs = || {
        [
            "mounter.log",
            "daemon1.log",
            "daemon1.err",
            "daemon2.log",
            "daemon2.err",
        ]
        .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default())
        .join("\n")
    };
    // Touch the mount only once the daemon holds the descriptor and serves it: a FUSE
    // mount nobody serves blocks every access.
    let served = |daemon: &mut Child, n: u32| {
        let t = Instant::now();
        let log = dir.path().join(format!("daemon{n}.err"));
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("mounted store=")
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "not served: {}",
                logs()
            );
            if let Some(st) = daemon.try_wait().unwrap() {
                panic!("daemon exited ({st}): {}", logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut daemon = spawn_daemon(1);
    served(&mut daemon, 1);
    std::fs::write(mp.join("x.txt"), b"through an unprivileged daemon").unwrap();
    assert_eq!(
        emu.get_object(&bucket, "x.txt"),
        b"through an unprivileged daemon"
    );
    assert_eq!(
        std::fs::read(mp.join("x.txt")).unwrap(),
        b"through an unprivileged daemon"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.id())).unwrap();
    assert!(status.contains("\nUid:\t65534"), "{status}");
    assert!(status.contains("\nCapEff:\t0000000000000000"), "{status}");

    // Crash: the mount answers ENOTCONN (statfs through `timeout`, in case it hangs).
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    wait_until("the dead mount answers ENOTCONN", || {
        let out = Command::new("timeout")
            .args(["5", "stat", "-f"])
            .arg(&mp)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).contains("Transport endpoint is not connected")
    });
    // A restarted daemon connects to the same mounter and serves a fresh mount.
    let mut daemon = spawn_daemon(2);
    served(&mut daemon, 2);
    assert!(logs().contains("again for it"), "{}", logs());
    assert_eq!(
        std::fs::read(mp.join("x.txt")).unwrap(),
        b"through an unprivileged daemon"
    );
    assert_eq!(mounts_at(&mp), 1, "mounts stacked: {}", logs());
    // SAFETY: signals to our own children.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let st = daemon.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", logs());
    unsafe { libc::kill(mounter.0.id() as i32, libc::SIGTERM) };
    assert!(mounter.0.wait().unwrap().success(), "{}", logs());
    wait_until("the mounter detached the mount", || !is_mounted(&mp));
}

/// A daemon killed with SIGKILL leaves an ENOTCONN mount; the next daemon started right
/// away on the same directory detaches it and serves (the sidecar restart case).
#[test]
fn a_restart_right_after_a_crash_replaces_the_dead_mount() {
    use blobmount_tests::{Emulator, Kind, Mount, MountSpec};
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "f.txt", b"still here");
    let first = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    // The kernel caches the root's attributes, as after any recent access.
    assert_eq!(std::fs::read(first.p("f.txt")).unwrap(), b"still here");
    let pid = first.pid().unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until("the dead mount answers ENOTCONN", || {
        std::fs::read_dir(first.path())
            .err()
            .and_then(|e| e.raw_os_error())
            == Some(libc::ENOTCONN)
    });
    let spec = MountSpec::for_emulator(&emu, &bucket);
    let env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mp = first.path().to_str().unwrap().to_string();
    let endpoint = spec.endpoint.clone().unwrap();
    let second = run_cli(
        &["mount", &spec.url, &mp, "--endpoint", &endpoint],
        &env,
        Duration::from_secs(60),
    );
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(std::fs::read(first.p("f.txt")).unwrap(), b"still here");
    let r = run_cli(
        &["unmount", first.path().to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}
