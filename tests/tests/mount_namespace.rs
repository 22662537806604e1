//! The sidecar's mount as an application in another mount namespace sees it, without
//! containers: a shared volume (a directory bind-mounted on itself, made shared: Docker's
//! `rshared`, Kubernetes' `Bidirectional`) and an "app" process in a new mount namespace whose
//! copy of it is a slave (`rslave`, `HostToContainer`), started before anything is mounted.
//! The app must see the mount, get ENOTCONN when the daemon is SIGKILLed, read again through
//! a restarted daemon without being restarted itself, and be left with no mount at all after
//! a clean stop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, lazy_unmount, mount_ids, mount_ids_in};

const END: &str = "--end-of-command--";

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private directory bind-mounted on itself and made shared: its own peer group, as the
/// kubelet and Docker make a volume that is to propagate. Detached on drop, with anything
/// left mounted inside it.
struct SharedVolume(PathBuf);

impl SharedVolume {
    fn new(dir: &Path) -> SharedVolume {
        let d = dir.to_str().expect("utf-8 path");
        run("mount", &["--bind", d, d]);
        let v = SharedVolume(dir.to_path_buf());
        // Private first, so that the bind does not join the peer group of a shared parent.
        run("mount", &["--make-private", d]);
        run("mount", &["--make-shared", d]);
        v
    }
}

impl Drop for SharedVolume {
    fn drop(&mut self) {
        while !mount_ids(&self.0.join("mnt")).is_empty() {
            lazy_unmount(&self.0.join("mnt"));
        }
        lazy_unmount(&self.0);
    }
}

/// The application: a shell in its own mount namespace (`unshare --mount --propagation
/// slave`), running the commands it is sent on a pipe, one at a time. Killed by PID on drop.
struct App {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<String>,
}

impl App {
    fn start() -> App {
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "--", "bash", "-c"])
            .arg(format!(
                "while IFS= read -r cmd; do eval \"$cmd\" 2>&1; echo \"rc=$? {END}\"; done"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, out) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        App { child, stdin, out }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Run `cmd` in the app's namespace; its output and "rc=N". Every command the test sends
    /// is bounded by `timeout`, so a hung FUSE call fails the test instead of hanging it.
    fn sh(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("app stdin");
        self.stdin.flush().expect("app stdin");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut text = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) => match l.strip_suffix(END) {
                    Some(rc) => return text + rc.trim_end(),
                    None => {
                        text.push_str(&l);
                        text.push('\n');
                    }
                },
                Err(RecvTimeoutError::Timeout) => panic!("app: no answer to {cmd:?}: {text}"),
                Err(RecvTimeoutError::Disconnected) => panic!("app exited: {text}"),
            }
        }
    }

    /// Poll `cmd` until its output contains `want`.
    fn wait_for(&mut self, cmd: &str, want: &str) -> String {
        let t = Instant::now();
        loop {
            let out = self.sh(cmd);
            if out.contains(want) {
                return out;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "app: {cmd:?} never gave {want:?}; last: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ns(pid: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("mount namespace")
}

#[test]
fn propagation_crash_and_restart_as_seen_from_another_mount_namespace() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    // Contents end in a newline, so that `cat` output and the "rc=" line stay apart.
    emu.put_object(&bucket, "f.txt", b"from the store\n");
    let tmp = tempfile::tempdir().expect("tmp");
    let vol = tmp.path().join("vol");
    std::fs::create_dir(&vol).expect("volume dir");
    let _volume = SharedVolume::new(&vol);
    let mp = vol.join("mnt");
    std::fs::create_dir(&mp).expect("mount point");

    // The app starts before anything is mounted, in a namespace of its own.
    let mut app = App::start();
    assert_eq!(app.sh("echo up"), "up\nrc=0");
    assert_ne!(
        ns(&app.pid()),
        ns("self"),
        "the app shares our mount namespace"
    );
    assert!(mount_ids_in(&app.pid(), &mp).is_empty());
    let cat = format!("timeout 10 cat {}", mp.join("f.txt").display());

    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.mountpoint = Some(mp.clone());
    let first = Mount::start(&spec);
    assert_eq!(
        app.sh(&cat),
        "from the store\nrc=0",
        "the mount did not reach the app's namespace"
    );
    assert_eq!(mount_ids_in(&app.pid(), &mp).len(), 1);

    // Crash: the kernel keeps the mount, in both namespaces, and it answers ENOTCONN.
    let pid = first.pid().expect("daemon pid");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let out = app.wait_for(&cat, "Transport endpoint is not connected");
    assert!(out.ends_with("rc=1"), "{out}");
    assert_eq!(mount_ids_in(&app.pid(), &mp).len(), 1, "dead mount gone");
    assert_eq!(mount_ids(&mp).len(), 1);

    // A new daemon on the same mount point, in our namespace: it detaches the dead mount and
    // mounts again; both propagate to the app, which is the same process as before.
    let app_pid = app.pid();
    let mut second = Mount::start(&spec);
    assert!(
        second.log_text().contains("stale FUSE mount"),
        "the new daemon did not detach the dead mount: {}",
        second.log_text()
    );
    assert_eq!(app.sh(&cat), "from the store\nrc=0");
    assert_eq!(app.pid(), app_pid);
    assert_eq!(
        mount_ids_in(&app.pid(), &mp).len(),
        1,
        "mounts stacked in the app's namespace"
    );
    // Written on this side, read on the other.
    std::fs::write(mp.join("g.txt"), b"written by the host\n").expect("write");
    assert_eq!(
        app.sh(&format!("timeout 10 cat {}", mp.join("g.txt").display())),
        "written by the host\nrc=0"
    );

    // A clean stop leaves nothing mounted anywhere; the app sees the plain directory.
    assert_eq!(second.stop(), Some(0), "{}", second.log_text());
    assert!(mount_ids(&mp).is_empty(), "still mounted here");
    assert!(
        mount_ids_in(&app.pid(), &mp).is_empty(),
        "still mounted in the app's namespace"
    );
    assert_eq!(
        app.sh(&format!("timeout 10 ls -A {}", mp.display())),
        "rc=0"
    );
    assert_eq!(emu.get_object(&bucket, "g.txt"), b"written by the host\n");
    drop(first);
}
