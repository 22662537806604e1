//! Where a mount goes (stage 1 of a mount): a directory the daemon mounts on, or a FUSE
//! descriptor someone else mounted (fd mode), plus the kernel mount table operations the
//! lifecycle needs: detaching a stale mount, finding our mounts, unmounting.
//!
//! Why its own module: everything that touches the kernel's view of mount points is here, so
//! the other stages only see a [`Place`] and never parse `/proc/mounts` or call `umount2`.

use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracing::{debug, warn};

use crate::config::Config;
use crate::exit::Failure;

/// Mount source prefix: identifies our mounts in /proc/mounts (the kernel type is `fuse`
/// when root mounts directly).
pub const FSNAME_PREFIX: &str = "blobmount:";
/// How long a daemon in fd mode waits for the mounter's descriptor.
const FD_WAIT: Duration = Duration::from_secs(120);

/// Where the FUSE session comes from.
pub enum Source {
    /// The daemon mounts on the mount point itself.
    Mount,
    /// `/dev/fd/N`: a descriptor inherited from the mounter (or the number was bad).
    Inherited(Result<RawFd, String>),
    /// A descriptor received on `mount.fuse-fd-socket`.
    Socket(PathBuf),
}

/// The mount point of this daemon and how the kernel side is reached.
pub struct Place {
    /// The mount point (in fd mode with only a socket: `fd-socket:SOCKET`, for messages).
    pub mp: PathBuf,
    pub source: Source,
    /// Where the mount can be seen from here, for health probes.
    pub probe_dir: Option<PathBuf>,
}

impl Place {
    /// fd mode serves a descriptor someone else mounted (`/dev/fd/N`, or one received on
    /// `mount.fuse-fd-socket`); the daemon then never mounts or unmounts.
    pub fn from_config(cfg: &Config) -> Result<Place, Failure> {
        let fd_number = cfg
            .mount
            .mountpoint
            .as_deref()
            .and_then(crate::fdpass::fd_number);
        let socket = cfg.mount.fuse_fd_socket.clone();
        let mp = match (cfg.mount.mountpoint.clone(), &socket) {
            (Some(m), _) => m,
            (None, Some(s)) => PathBuf::from(format!("fd-socket:{}", s.display())),
            (None, None) => return Err(Failure::config("no mount point")),
        };
        let probe_dir = (fd_number.is_none() && cfg.mount.mountpoint.is_some()).then(|| mp.clone());
        let source = match (fd_number, socket) {
            (Some(n), _) => Source::Inherited(n),
            (None, Some(s)) => Source::Socket(s),
            (None, None) => Source::Mount,
        };
        Ok(Place {
            mp,
            source,
            probe_dir,
        })
    }

    /// Whether the daemon serves a descriptor it did not mount.
    pub fn fd_mode(&self) -> bool {
        !matches!(self.source, Source::Mount)
    }

    /// 16 hex digits naming this (store, mount point) pair: the default cache directory.
    pub fn id(&self, cfg: &Config) -> String {
        let key = format!(
            "{}|{}",
            cfg.store.url.as_deref().unwrap_or(""),
            self.mp.display()
        );
        format!("{:016x}", blobmount_core::names::fnv1a(key.as_bytes()))
    }

    /// Before mounting: detach a dead mount left at the mount point, refuse to stack on a
    /// live blobmount mount, and check it is a directory. Nothing to do in fd mode.
    pub fn prepare(&self) -> Result<(), Failure> {
        if self.fd_mode() {
            return Ok(());
        }
        let mp = &self.mp;
        clear_stale_mount(mp);
        if let Some(source) = existing_mount(mp) {
            return Err(Failure::mount(format!(
                "{} is already a blobmount mount of {source}; unmount it first (blobmount unmount {})",
                mp.display(),
                mp.display()
            )));
        }
        match std::fs::metadata(mp) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Failure::config(format!(
                "mount point {} is not a directory",
                mp.display()
            ))),
            Err(e) => Err(Failure::config(format!(
                "mount point {}: {e}",
                mp.display()
            ))),
        }
    }

    /// In fd mode, the FUSE descriptor to serve.
    pub fn descriptor(&self) -> Result<OwnedFd, String> {
        match &self.source {
            Source::Inherited(Ok(n)) => crate::fdpass::inherited(*n),
            Source::Inherited(Err(e)) => Err(e.clone()),
            Source::Socket(sock) => crate::fdpass::receive(sock, FD_WAIT),
            Source::Mount => Err("no FUSE descriptor".into()),
        }
    }
}

/// The kernel answers ENOTCONN on a mount whose daemon died: detach it so we can mount.
/// `statfs` is asked, not `stat`: for up to the attribute timeout after a crash the kernel
/// still answers `stat` of the mount point from its cache.
fn clear_stale_mount(mp: &Path) {
    if let Err(e) = nix::sys::statfs::statfs(mp)
        && e == nix::errno::Errno::ENOTCONN
    {
        warn!(mountpoint = %mp.display(), "stale FUSE mount (ENOTCONN) found; detaching it");
        if let Err(e) = umount(mp, true) {
            warn!(error = %e, "could not detach the stale mount");
        }
    }
}

/// Unmount `mp` (detach it when `lazy`), through `fusermount3` when not permitted directly.
pub fn umount(mp: &Path, lazy: bool) -> Result<(), String> {
    let c = CString::new(mp.as_os_str().as_bytes())
        .map_err(|_| "mount point contains NUL".to_string())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EPERM) {
        // Not root: fusermount3 is setuid and may unmount our own mounts.
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        let st = cmd
            .arg(mp)
            .status()
            .map_err(|e| format!("fusermount3: {e}"))?;
        return if st.success() {
            Ok(())
        } else {
            Err(format!("fusermount3 -u {} failed", mp.display()))
        };
    }
    Err(format!("umount {}: {err}", mp.display()))
}

/// `blobmount unmount`.
pub fn unmount(mp: &Path, lazy: bool) -> Result<(), String> {
    match umount(mp, lazy) {
        Err(e) if !lazy && e.contains("busy") => Err(format!(
            "{e} (files are open; use --lazy to detach now and finish when they close)"
        )),
        r => r,
    }
}

/// `blobmount mount list`: (source, mount point) of each blobmount mount.
pub fn list() -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| format!("/proc/self/mounts: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ours = f.len() >= 3
                && (f[2] == "fuse.blobmount"
                    || (f[2] == "fuse" && f[0].starts_with(FSNAME_PREFIX)));
            ours.then(|| {
                (
                    unescape(f[0].trim_start_matches(FSNAME_PREFIX)),
                    unescape(f[1]),
                )
            })
        })
        .collect())
}

/// The store of a live blobmount mount at `mp`, if there is one (mounting again would stack
/// a second daemon on top of the first).
fn existing_mount(mp: &Path) -> Option<String> {
    let want = std::fs::canonicalize(mp).ok()?;
    list()
        .ok()?
        .into_iter()
        .find(|(_, at)| Path::new(at) == want)
        .map(|(source, _)| source)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Raise the kernel's read-ahead for this mount (its BDI is named after the mount's device
/// number). Best effort: without the right to write sysfs the default stays.
pub fn set_kernel_read_ahead(mp: &Path, kib: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(mp) else {
        return;
    };
    let dev = m.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let path = format!("/sys/class/bdi/{maj}:{min}/read_ahead_kb");
    match std::fs::write(&path, kib.to_string()) {
        Ok(()) => debug!(path, kib, "kernel read-ahead set"),
        Err(e) => debug!(path, error = %e, "kernel read-ahead left at its default"),
    }
}
