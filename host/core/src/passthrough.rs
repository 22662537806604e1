//! Kernel passthrough of files read from the file cache.
//!
//! Why: once the whole current version of an object is on local disk (file-cache mode,
//! downloaded and checked), passing every read through the daemon only costs CPU: a FUSE
//! request, a `pread` of the cached copy and a copy back per 1 MiB. With FUSE passthrough
//! (Linux 6.9+, CAP_SYS_ADMIN) an open is answered with the cached copy's descriptor and the
//! kernel reads (and maps) it itself, at local-disk speed, with no daemon work per byte.
//!
//! The kernel's rule shapes this module. While an inode has a file open in passthrough,
//! every other open of it must be passthrough to the same backing file; while it has a file
//! open through the daemon, no open of it may be passthrough; an open that breaks the rule
//! fails with EIO. So the core keeps the kernel's view of each inode ([`Io`]): which mode its
//! open files are in and how many there are, and decides every open under one lock:
//!
//! - an inode with no open file: a read-only open of a complete, checked cached copy goes
//!   passthrough, anything else through the daemon;
//! - open through the daemon: every new open too;
//! - open in passthrough: a read-only open shares the backing file; an open for writing
//!   (whose writes the daemon must see to upload them) waits up to [`WAIT`] for the
//!   passthrough opens to close (a `close` returns before its release reaches the daemon)
//!   and then fails with ETXTBSY. A read-only open while the object was replaced (another
//!   version is current) waits the same way, then reads the version the open files read.
//!
//! The backing file's kernel id is registered by the FUSE adapter at the first open
//! ([`PassFile::backing`]) and closed when the last passthrough open is released (the
//! [`PassFile`] is dropped). If the kernel refuses it (no CAP_SYS_ADMIN, a kernel without
//! passthrough), the open goes through the daemon and passthrough is off from then on.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::filecache::{Cached, FileCache};
use crate::sync::lock;

/// How long an open that cannot share the passthrough file waits for it to be closed.
pub const WAIT: Duration = Duration::from_secs(1);

/// A cached copy the kernel reads directly, shared by every passthrough open of its inode.
pub struct PassFile {
    cached: Arc<Cached>,
    /// The kernel's handle of the backing file (a `fuser::BackingId` in the daemon), kept
    /// for as long as any passthrough open of the inode may still be answered.
    backing: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
    /// The kernel refused the backing file: opens sharing this file go through the daemon.
    refused: AtomicBool,
}

impl fmt::Debug for PassFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassFile")
            .field("cached", &self.cached)
            .finish_non_exhaustive()
    }
}

impl PassFile {
    /// The local file the kernel reads.
    pub fn file(&self) -> &std::fs::File {
        self.cached.file()
    }

    /// The kernel's id of the backing file: registered with `register` by the first open,
    /// the same one for every open after it (the kernel refuses a second backing file for
    /// an inode). `register` runs under this file's lock, so concurrent opens share one.
    pub fn backing<T: Any + Send + Sync>(
        &self,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<T>,
    ) -> std::io::Result<Arc<T>> {
        let mut b = lock(&self.backing);
        if self.refused.load(Ordering::Acquire) {
            return Err(std::io::Error::other("passthrough refused for this file"));
        }
        if let Some(id) = &*b {
            return id
                .clone()
                .downcast::<T>()
                .map_err(|_| std::io::Error::other("passthrough backing of another type"));
        }
        let id = Arc::new(register(self.cached.file())?);
        *b = Some(id.clone());
        Ok(id)
    }
}

/// How the kernel does I/O on an inode's open files.
enum Io {
    /// Through the daemon (its page cache, or direct).
    Daemon(usize),
    /// Straight to the backing file.
    Pass { file: Arc<PassFile>, opens: usize },
}

/// What [`Passthrough::decide`] says of an open.
enum Decision {
    Admit(Admitted),
    /// A writer of a file still open in passthrough after the wait (ETXTBSY).
    Refuse,
    /// Wait for a release, then decide again.
    Wait,
}

/// What an open became.
pub(crate) enum Admitted {
    Daemon,
    Pass(Arc<PassFile>),
}

/// The open files of every inode, by I/O mode, while passthrough is configured.
pub(crate) struct Passthrough {
    /// Configured: opens are counted (fixed for the life of the mount).
    tracked: bool,
    /// New passthrough opens may be made (off after the kernel refused one).
    enabled: AtomicBool,
    io: Mutex<HashMap<u64, Io>>,
    changed: tokio::sync::Notify,
    /// The file cache whose copies are passed through (counts the opens in its stats).
    cache: Option<Arc<FileCache>>,
}

impl Passthrough {
    /// `configured`: the mount wants passthrough; it needs the file cache.
    pub(crate) fn new(configured: bool, cache: Option<Arc<FileCache>>) -> Self {
        let on = configured && cache.is_some();
        Passthrough {
            tracked: on,
            enabled: AtomicBool::new(on),
            io: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            cache,
        }
    }

    fn count_open(&self) {
        if let Some(c) = &self.cache {
            c.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether opens may still go passthrough (the FUSE adapter asks the kernel for it).
    pub(crate) fn wanted(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Turn passthrough off for new opens (opens already made stay as they are).
    pub(crate) fn disable(&self, why: &str) {
        if self.enabled.swap(false, Ordering::AcqRel) {
            warn!(
                reason = why,
                "file-cache passthrough off: cached files are read through the daemon"
            );
        }
    }

    /// Count an open for writing of `ino`: waits while the inode is open in passthrough
    /// (up to [`WAIT`]); `false` if it still is (the caller fails with ETXTBSY).
    pub(crate) async fn admit_writer(&self, ino: u64) -> bool {
        if !self.tracked {
            return true;
        }
        self.admit(ino, None, true).await.is_some()
    }

    /// Count a read-only open of `ino`; `cached` is the complete, checked copy of the
    /// version it reads, if there is one. Passthrough when the inode is open in passthrough
    /// already (its file) or has no open file and `cached` is given.
    pub(crate) async fn admit_reader(&self, ino: u64, cached: Option<Arc<Cached>>) -> Admitted {
        if !self.tracked {
            return Admitted::Daemon;
        }
        self.admit(ino, cached, false)
            .await
            .unwrap_or(Admitted::Daemon)
    }

    /// The open counted, or `None`: refused.
    async fn admit(&self, ino: u64, cached: Option<Arc<Cached>>, writer: bool) -> Option<Admitted> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let last_try = tokio::time::Instant::now() >= deadline;
            match self.decide(ino, cached.as_ref(), writer, last_try) {
                Decision::Admit(a) => return Some(a),
                Decision::Refuse => return None,
                Decision::Wait => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                // The wait is over: decide once more, taking what there is.
                continue;
            }
        }
    }

    /// The decision for an open of `ino` (counted in it when admitted).
    fn decide(
        &self,
        ino: u64,
        cached: Option<&Arc<Cached>>,
        writer: bool,
        last_try: bool,
    ) -> Decision {
        let mut io = lock(&self.io);
        match io.get_mut(&ino) {
            None => {
                let pass = match cached {
                    Some(c) if !writer && self.enabled.load(Ordering::Acquire) => c.clone(),
                    _ => {
                        io.insert(ino, Io::Daemon(1));
                        return Decision::Admit(Admitted::Daemon);
                    }
                };
                let file = Arc::new(PassFile {
                    cached: pass,
                    backing: Mutex::new(None),
                    refused: AtomicBool::new(false),
                });
                io.insert(
                    ino,
                    Io::Pass {
                        file: file.clone(),
                        opens: 1,
                    },
                );
                self.count_open();
                Decision::Admit(Admitted::Pass(file))
            }
            Some(Io::Daemon(n)) => {
                *n += 1;
                Decision::Admit(Admitted::Daemon)
            }
            Some(Io::Pass { file, opens }) => {
                let same = cached.is_some_and(|c| Arc::ptr_eq(c, &file.cached));
                match (writer, same, last_try) {
                    (true, _, true) => return Decision::Refuse,
                    (true, _, false) | (false, false, false) => return Decision::Wait,
                    (false, true, _) | (false, false, true) => {}
                }
                if !same {
                    info!(
                        ino,
                        "a newer version is not read by this open: the file is open in passthrough on the version before"
                    );
                }
                *opens += 1;
                self.count_open();
                Decision::Admit(Admitted::Pass(file.clone()))
            }
        }
    }

    /// A counted open of `ino` was released (or abandoned).
    pub(crate) fn release(&self, ino: u64) {
        if !self.tracked {
            return;
        }
        let mut io = lock(&self.io);
        let left = match io.get_mut(&ino) {
            Some(Io::Daemon(n)) | Some(Io::Pass { opens: n, .. }) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => return,
        };
        if left == 0 {
            // Dropping a `PassFile` closes its backing id.
            io.remove(&ino);
            drop(io);
            self.changed.notify_waiters();
        }
    }

    /// The kernel refused the backing file of an open that was to be passthrough: that open
    /// goes through the daemon, and no new passthrough open is made.
    pub(crate) fn refused(&self, ino: u64, why: &str) {
        self.disable(why);
        let mut io = lock(&self.io);
        if let Some(Io::Pass { file, opens }) = io.get(&ino) {
            // Opens sharing the file that were decided but not answered yet go through the
            // daemon too (their registration fails from now on).
            file.refused.store(true, Ordering::Release);
            let n = *opens;
            io.insert(ino, Io::Daemon(n));
        }
    }
}

/// The stack depth the kernel needs for backing files in `dir`: 1 on an ordinary file system,
/// 2 when `dir` is itself on a stacking one (overlayfs, the usual root of a container;
/// another FUSE file system; ecryptfs).
pub fn stack_depth(dir: &std::path::Path) -> u32 {
    const OVERLAYFS: i64 = 0x794c_7630;
    const FUSE: i64 = 0x6573_5546;
    const ECRYPTFS: i64 = 0xf15f;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return 2;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return 2;
    }
    match st.f_type as i64 {
        OVERLAYFS | FUSE | ECRYPTFS => 2,
        _ => 1,
    }
}
