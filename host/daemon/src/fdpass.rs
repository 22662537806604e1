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
use tracing::info;

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

/// `blobmount fuse-mounter`: open `/dev/fuse`, mount it, hand the descriptor to the first
/// daemon that connects, then keep the mount until SIGTERM/SIGINT and detach it.
pub fn mounter(r: &MountRequest<'_>) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    // Signals wait until the mount exists, so a stop never leaves it half made.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set.thread_block().map_err(|e| e.to_string())?;
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
    if let Err(e) = std::fs::metadata(r.mountpoint)
        && e.raw_os_error() == Some(libc::ENOTCONN)
    {
        info!(mountpoint = %r.mountpoint.display(), "detaching a stale FUSE mount");
        let _ = nix::mount::umount2(r.mountpoint, nix::mount::MntFlags::MNT_DETACH);
    }
    mount(
        Some("blobmount"),
        r.mountpoint,
        Some("fuse.blobmount"),
        flags,
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mounting {}: {e}", r.mountpoint.display()))?;
    let detach = || {
        let _ = nix::mount::umount2(r.mountpoint, nix::mount::MntFlags::MNT_DETACH);
    };
    let _ = std::fs::remove_file(r.socket);
    let listener = match UnixListener::bind(r.socket) {
        Ok(l) => l,
        Err(e) => {
            detach();
            return Err(format!("socket {}: {e}", r.socket.display()));
        }
    };
    // Only the daemon's user may connect.
    let c = std::ffi::CString::new(r.socket.as_os_str().as_encoded_bytes())
        .map_err(|e| e.to_string())?;
    // SAFETY: valid path; chown/chmod of the socket we just created.
    unsafe {
        libc::chown(c.as_ptr(), r.uid, r.gid);
        libc::chmod(c.as_ptr(), 0o600);
    }
    info!(mountpoint = %r.mountpoint.display(), socket = %r.socket.display(), "mounted; waiting for the daemon");
    eprintln!(
        "blobmount fuse-mounter: mounted {}; waiting for a daemon on {}",
        r.mountpoint.display(),
        r.socket.display()
    );
    // The hand-over runs beside the signal wait, so SIGTERM also works before a daemon came.
    let raw = fd.as_raw_fd();
    let socket = r.socket.to_path_buf();
    let handover = std::thread::spawn(move || -> Result<(), String> {
        let (conn, _) = listener
            .accept()
            .map_err(|e| format!("accept on {}: {e}", socket.display()))?;
        let fds = [raw];
        let iov = [IoSlice::new(b"fuse")];
        sendmsg::<()>(
            conn.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| format!("sending the FUSE descriptor: {e}"))?;
        let _ = std::fs::remove_file(&socket);
        eprintln!("blobmount fuse-mounter: descriptor handed over; SIGTERM unmounts");
        Ok(())
    });
    let sig = set.wait().map_err(|e| e.to_string())?;
    eprintln!(
        "blobmount fuse-mounter: {sig:?}: detaching {}",
        r.mountpoint.display()
    );
    detach();
    let _ = std::fs::remove_file(r.socket);
    drop(fd);
    // A hand-over that failed is reported; one still waiting for a daemon is abandoned.
    if handover.is_finished()
        && let Ok(Err(e)) = handover.join()
    {
        return Err(e);
    }
    Ok(())
}
