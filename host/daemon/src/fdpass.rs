//! FUSE file-descriptor passing: the daemon can serve a mount it did not make.
//!
//! Why: mounting needs `CAP_SYS_ADMIN` (or a setuid `fusermount3`), serving does not. In a
//! sidecar the daemon can then run with no capabilities and no `/dev/fuse` device while a
//! small privileged helper (`blobmount fuse-mounter`, or a CSI node driver) opens
//! `/dev/fuse`, mounts it and hands the descriptor over a Unix socket (`SCM_RIGHTS`), the
//! design GKE's gcsfuse driver and mountpoint-s3 use. The daemon also accepts an inherited
//! descriptor as `/dev/fd/N` (the libfuse convention). In fd mode the mounter owns the
//! mount: the daemon never mounts or unmounts.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tracing::{info, warn};

/// `/dev/fd/N` as a mount point: the descriptor number.
pub fn fd_number(mp: &Path) -> Option<Result<RawFd, String>> {
    let n = mp.to_str()?.strip_prefix("/dev/fd/")?;
    Some(
        n.parse::<RawFd>()
            .map_err(|_| format!("{}: not a descriptor number", mp.display())),
    )
}

/// Take ownership of inherited descriptor `fd`, checking it is open.
pub fn inherited(fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: F_GETFD only inspects the descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!(
            "/dev/fd/{fd}: {} (the FUSE descriptor must be inherited from the mounter)",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor is open and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Connect to the mounter's socket (waiting up to `wait` for it) and receive the FUSE
/// descriptor.
pub fn receive(socket: &Path, wait: Duration) -> Result<OwnedFd, String> {
    let start = Instant::now();
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) if start.elapsed() < wait => {
                tracing::debug!(socket = %socket.display(), error = %e, "waiting for the mounter");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(format!(
                    "no FUSE descriptor from {} within {wait:?}: {e}",
                    socket.display()
                ));
            }
        }
    };
    let mut buf = [0u8; 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| {
        format!(
            "receiving the FUSE descriptor from {}: {e}",
            socket.display()
        )
    })?;
    let cmsgs = msg
        .cmsgs()
        .map_err(|e| format!("receiving the FUSE descriptor: {e}"))?;
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(format!(
        "{} sent no descriptor (is it a blobmount fuse-mounter socket?)",
        socket.display()
    ))
}

/// What `blobmount fuse-mounter` mounts with.
pub struct MountRequest<'a> {
    pub mountpoint: &'a Path,
    pub socket: &'a Path,
    pub uid: u32,
    pub gid: u32,
    pub allow_other: bool,
    pub read_only: bool,
}

/// Open `/dev/fuse` and mount it on the mount point (detaching a dead mount first); the
/// descriptor now serves that mount.
fn mount_fuse(r: &OwnedRequest) -> Result<OwnedFd, String> {
    use nix::mount::{MsFlags, mount};
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("/dev/fuse: {e}"))?;
    let fd: OwnedFd = fuse.into();
    let mut opts = format!(
        "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
        fd.as_raw_fd(),
        r.uid,
        r.gid
    );
    if r.allow_other {
        opts.push_str(",allow_other");
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME;
    if r.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    if let Err(e) = nix::sys::statfs::statfs(r.mountpoint.as_path())
        && e == nix::errno::Errno::ENOTCONN
    {
        info!(mountpoint = %r.mountpoint.display(), "detaching a stale FUSE mount");
        detach(&r.mountpoint);
    }
    mount(
        Some("blobmount"),
        r.mountpoint.as_path(),
        Some("fuse.blobmount"),
        flags,
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mounting {}: {e}", r.mountpoint.display()))?;
    Ok(fd)
}

fn detach(mp: &Path) {
    let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
}

/// Whether `mountinfo` (the text of `/proc/self/mountinfo`) lists a blobmount FUSE mount on
/// `mp`.
fn blobmount_mount_listed(mountinfo: &str, mp: &Path) -> bool {
    // Field 5 is the mount point (with space, tab, newline and backslash octal-escaped); the
    // file system type follows the " - " separator.
    let want = mp
        .to_string_lossy()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            return false;
        };
        f.get(4) == Some(&want.as_str()) && f.get(sep + 1) == Some(&"fuse.blobmount")
    })
}

/// Whether SIGTERM or SIGINT is pending (they are blocked in the mounter until it waits).
fn stop_pending() -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given; it is read only after success.
    unsafe {
        if libc::sigpending(set.as_mut_ptr()) != 0 {
            return false;
        }
        let set = set.assume_init();
        libc::sigismember(&set, libc::SIGTERM) == 1 || libc::sigismember(&set, libc::SIGINT) == 1
    }
}

/// Wait while a live blobmount mount is on `mp` (one a daemon still serves: `statfs` answers);
/// false when SIGTERM/SIGINT arrived meanwhile.
fn wait_while_served(mp: &Path) -> bool {
    let mut said = false;
    loop {
        let listed = std::fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|m| blobmount_mount_listed(&m, mp));
        if !listed || nix::sys::statfs::statfs(mp).is_err() {
            return true;
        }
        if !said {
            eprintln!(
                "blobmount fuse-mounter: {} is still served by a daemon; waiting for it to end before mounting again",
                mp.display()
            );
            said = true;
        }
        if stop_pending() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Make the socket the daemon's (`uid`:`gid`, mode 0600), so that only it may connect.
/// The mode is set first: once the socket is given away, changing it needs `CAP_FOWNER`.
/// Giving a file away needs `CAP_CHOWN` unless `uid`/`gid` are already the mounter's: a
/// mounter without it fails here rather than leave a socket the daemon cannot open.
fn give_socket(socket: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("socket {}: chmod 0600: {e}", socket.display()))?;
    std::os::unix::fs::chown(socket, Some(uid), Some(gid)).map_err(|e| {
        format!(
            "socket {}: chown to {uid}:{gid}: {e} (the mounter needs CAP_CHOWN to give it to the daemon's user)",
            socket.display()
        )
    })
}

/// The request, owned by the hand-over thread.
struct OwnedRequest {
    mountpoint: std::path::PathBuf,
    uid: u32,
    gid: u32,
    allow_other: bool,
    read_only: bool,
}

/// Hand `fd` to the daemon on `conn` and close our copy: the daemon then holds the only one,
/// so when it dies the kernel ends the connection and the mount answers ENOTCONN instead of
/// queueing requests nobody will read.
fn hand_over(conn: &UnixStream, fd: OwnedFd) -> Result<(), String> {
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(b"fuse")];
    sendmsg::<()>(
        conn.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sending the FUSE descriptor: {e}"))?;
    drop(fd);
    Ok(())
}

/// `blobmount fuse-mounter`: open `/dev/fuse`, mount it, hand the descriptor to the daemon
/// that connects, then keep the mount until SIGTERM/SIGINT and detach it.
///
/// A daemon that connects later (a restarted sidecar container) cannot serve the first mount:
/// the kernel's FUSE handshake happened with the daemon before it. It gets a fresh mount on
/// the same mount point instead (the dead one is detached), which reaches the application the
/// same way, through mount propagation.
pub fn mounter(r: &MountRequest<'_>) -> Result<(), String> {
    // Signals wait until the mount exists, so a stop never leaves it half made.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set.thread_block().map_err(|e| e.to_string())?;
    let req = OwnedRequest {
        mountpoint: r.mountpoint.to_path_buf(),
        uid: r.uid,
        gid: r.gid,
        allow_other: r.allow_other,
        read_only: r.read_only,
    };
    // A restarted mounter whose daemon still serves the previous mount must not stack a new,
    // unserved mount on top of it (the app's calls would wait on it): wait for that daemon to
    // end first, as the daemon's next restart will need a fresh mount anyway.
    if !wait_while_served(r.mountpoint) {
        eprintln!(
            "blobmount fuse-mounter: stopped while {} was still served; left it alone",
            r.mountpoint.display()
        );
        return Ok(());
    }
    let fd = mount_fuse(&req)?;
    let _ = std::fs::remove_file(r.socket);
    let listener = match UnixListener::bind(r.socket) {
        Ok(l) => l,
        Err(e) => {
            detach(r.mountpoint);
            return Err(format!("socket {}: {e}", r.socket.display()));
        }
    };
    // Only the daemon's user may connect.
    if let Err(e) = give_socket(r.socket, r.uid, r.gid) {
        detach(r.mountpoint);
        let _ = std::fs::remove_file(r.socket);
        return Err(e);
    }
    info!(mountpoint = %r.mountpoint.display(), socket = %r.socket.display(), "mounted; waiting for the daemon");
    eprintln!(
        "blobmount fuse-mounter: mounted {}; waiting for a daemon on {}",
        r.mountpoint.display(),
        r.socket.display()
    );
    // The hand-over runs beside the signal wait, so SIGTERM also works while it waits.
    let handover = std::thread::spawn(move || -> Result<(), String> {
        let mut first = Some(fd);
        // Whether a mount of ours is on the mount point (only that one may be detached: the
        // directory may sit on a volume that is itself a mount).
        let mut mounted = true;
        loop {
            let (conn, _) = listener
                .accept()
                .map_err(|e| format!("accept on the descriptor socket: {e}"))?;
            let fd = match first.take() {
                Some(fd) => fd,
                None => {
                    eprintln!(
                        "blobmount fuse-mounter: another daemon connected; mounting {} again for it",
                        req.mountpoint.display()
                    );
                    if std::mem::take(&mut mounted) {
                        detach(&req.mountpoint);
                    }
                    match mount_fuse(&req) {
                        Ok(fd) => {
                            mounted = true;
                            fd
                        }
                        Err(e) => {
                            warn!(error = %e, "could not mount again for the new daemon");
                            continue;
                        }
                    }
                }
            };
            match hand_over(&conn, fd) {
                Ok(()) => {
                    eprintln!("blobmount fuse-mounter: descriptor handed over; SIGTERM unmounts")
                }
                Err(e) => {
                    warn!(error = %e, "hand-over failed; the next daemon to connect gets a new mount")
                }
            }
        }
    });
    let sig = set.wait().map_err(|e| e.to_string())?;
    eprintln!(
        "blobmount fuse-mounter: {sig:?}: detaching {}",
        r.mountpoint.display()
    );
    detach(r.mountpoint);
    let _ = std::fs::remove_file(r.socket);
    // The hand-over thread only ends on an error of the socket itself.
    if handover.is_finished()
        && let Ok(Err(e)) = handover.join()
    {
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn give_socket_sets_owner_and_mode_or_says_why_not() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("bm-fdpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("fuse.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        // Our own ids need no capability.
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        give_socket(&sock, uid, gid).unwrap();
        let m = std::fs::metadata(&sock).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (uid, gid, 0o600));
        // A failure names the socket and the ids instead of passing silently.
        let e = give_socket(&dir.join("missing.sock"), uid, gid).unwrap_err();
        assert!(e.contains("missing.sock"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_a_blobmount_mount_in_mountinfo() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    91 60 0:52 / /data/mnt rw,nosuid,nodev,noatime shared:40 - fuse.blobmount blobmount rw,user_id=65534\n\
                    92 60 0:53 / /data/other\\040dir rw - fuse.blobmount blobmount rw\n\
                    93 60 0:54 / /data/sshfs rw - fuse.sshfs host: rw\n";
        assert!(blobmount_mount_listed(info, Path::new("/data/mnt")));
        assert!(blobmount_mount_listed(info, Path::new("/data/other dir")));
        assert!(!blobmount_mount_listed(info, Path::new("/data/sshfs")));
        assert!(!blobmount_mount_listed(info, Path::new("/data")));
        assert!(!blobmount_mount_listed(info, Path::new("/proc")));
    }
}
