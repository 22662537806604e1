//! The FUSE adapter: decodes kernel requests, runs the core operation on the tokio runtime
//! and replies from that task.
//!
//! Why thin: all behaviour lives in `blobmount_core::Fs`, which tests drive without a kernel.
//! Why async: fuser's session threads only hand requests off, so one slow GET never stalls
//! `ls` or `stat` on the rest of the mount. Errors become errno through `FsError::errno`
//! only.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use blobmount_core::policy::{EXECUTE, READ, WRITE};
use blobmount_core::{Attr, Caller, Fs, FsError, Kind, LOOKUP_CONCURRENCY, SetAttr, open_access};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tracing::{Instrument, debug, debug_span, warn};

use crate::metrics;

pub struct FuseAdapter {
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
}

impl FuseAdapter {
    pub fn new(fs: Arc<Fs>, rt: tokio::runtime::Handle) -> Self {
        FuseAdapter { fs, rt }
    }

    /// Run one operation on the runtime, timing it for `/metrics`.
    fn spawn<F>(&self, op: &'static str, span: tracing::Span, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let started = std::time::Instant::now();
        self.rt.spawn(
            async move {
                fut.await;
                metrics::FUSE.record(op, started.elapsed());
            }
            .instrument(span),
        );
    }
}

/// Log a failed operation (quietly for the expected ones) and give its errno.
fn errno(op: &str, e: &FsError) -> Errno {
    let code = e.errno();
    metrics::FUSE.error(op);
    match e {
        FsError::NotFound
        | FsError::Exists
        | FsError::NotEmpty
        | FsError::NotDir
        | FsError::IsDir => {
            debug!(op, error = %e, "operation failed")
        }
        _ => warn!(op, error = %e, errno = code, "operation failed"),
    }
    Errno::from_i32(code)
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

/// Placeholder attributes for `.` and `..` in readdirplus replies.
fn dot_attr(ino: u64) -> FileAttr {
    to_fuse(&Attr {
        ino,
        kind: Kind::Dir,
        size: 0,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: std::time::UNIX_EPOCH,
        ctime: std::time::UNIX_EPOCH,
        atime: std::time::UNIX_EPOCH,
        nlink: 2,
    })
}

fn to_fuse(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks(),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Object keys are UTF-8; a non-UTF-8 name can neither exist nor be created.
fn utf8(name: &OsStr) -> Result<String, Errno> {
    name.to_str().map(str::to_string).ok_or(Errno::EINVAL)
}

macro_rules! name_or_reply {
    ($name:expr, $reply:ident) => {
        match utf8($name) {
            Ok(n) => n,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // readdirplus lets `ls -l` get every entry's attributes in one round trip per page
        // (looked up concurrently); AUTO lets the kernel use it only when lookups follow.
        if let Err(missing) = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO)
        {
            debug!(?missing, "kernel lacks readdirplus; readdir + lookup it is");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match utf8(name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        let (fs, c) = (self.fs.clone(), caller(req));
        let span = debug_span!("lookup", parent = parent.0, name = %name);
        self.spawn("lookup", span, async move {
            let r = match fs.check_access(parent.0, c, EXECUTE) {
                Ok(()) => fs.lookup(parent.0, &name).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(a) => reply.entry(&fs.kernel_ttl(a.ino), &to_fuse(&a), Generation(0)),
                Err(e) => reply.error(errno("lookup", &e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        self.spawn("getattr", debug_span!("getattr", ino = ino.0), async move {
            match fs.getattr(ino.0).await {
                Ok(a) => reply.attr(&fs.kernel_ttl(a.ino), &to_fuse(&a)),
                Err(e) => reply.error(errno("getattr", &e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let c = caller(req);
        let req = SetAttr {
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            mtime: mtime.map(time),
            atime: atime.map(time),
            fh: fh.map(|f| f.0),
        };
        let fs = self.fs.clone();
        self.spawn("setattr", debug_span!("setattr", ino = ino.0), async move {
            let r = match fs.check_access(ino.0, c, WRITE) {
                Ok(()) => fs.setattr(ino.0, req).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(a) => reply.attr(&fs.kernel_ttl(a.ino), &to_fuse(&a)),
                Err(e) => reply.error(errno("setattr", &e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.spawn(
            "readlink",
            debug_span!("readlink", ino = ino.0),
            async move {
                match fs.readlink(ino.0).await {
                    Ok(t) => reply.data(t.as_bytes()),
                    Err(e) => reply.error(errno("readlink", &e)),
                }
            },
        );
    }

    /// No ioctls are supported. Programs probe files with them (`isatty` is TCGETS), so answer
    /// ENOTTY quietly instead of fuser's default warning per call.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::ENOSYS);
        }
        let name = name_or_reply!(name, reply);
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn(
            "mknod",
            debug_span!("mknod", parent = parent.0, name = %name),
            async move {
                let r = async {
                    let (a, h) = fs
                        .create(
                            parent.0,
                            &name,
                            (mode & 0o7777) as u16,
                            libc::O_WRONLY | libc::O_EXCL,
                            c,
                        )
                        .await?;
                    fs.release(h.fh).await?;
                    Ok::<_, FsError>(a)
                };
                match r.await {
                    Ok(a) => reply.entry(&fs.kernel_ttl(a.ino), &to_fuse(&a), Generation(0)),
                    Err(e) => reply.error(errno("mknod", &e)),
                }
            },
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(name, reply);
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn(
            "mkdir",
            debug_span!("mkdir", parent = parent.0, name = %name),
            async move {
                match fs.mkdir(parent.0, &name, (mode & 0o7777) as u16, c).await {
                    Ok(a) => reply.entry(&fs.kernel_ttl(a.ino), &to_fuse(&a), Generation(0)),
                    Err(e) => reply.error(errno("mkdir", &e)),
                }
            },
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_reply!(name, reply);
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn(
            "unlink",
            debug_span!("unlink", parent = parent.0, name = %name),
            async move {
                let r = match fs.check_access(parent.0, c, WRITE) {
                    Ok(()) => fs.unlink(parent.0, &name).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno("unlink", &e)),
                }
            },
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_reply!(name, reply);
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn(
            "rmdir",
            debug_span!("rmdir", parent = parent.0, name = %name),
            async move {
                let r = match fs.check_access(parent.0, c, WRITE) {
                    Ok(()) => fs.rmdir(parent.0, &name).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno("rmdir", &e)),
                }
            },
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(link_name, reply);
        let target = name_or_reply!(target.as_os_str(), reply);
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn(
            "symlink",
            debug_span!("symlink", parent = parent.0, name = %name),
            async move {
                match fs.symlink(parent.0, &name, &target, c).await {
                    Ok(a) => reply.entry(&fs.kernel_ttl(a.ino), &to_fuse(&a), Generation(0)),
                    Err(e) => reply.error(errno("symlink", &e)),
                }
            },
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let name = name_or_reply!(name, reply);
        let newname = name_or_reply!(newname, reply);
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn("rename", debug_span!("rename", parent = parent.0, name = %name, newparent = newparent.0, newname = %newname), async move {
            let allowed = fs
                .check_access(parent.0, c, WRITE)
                .and_then(|()| fs.check_access(newparent.0, c, WRITE));
            let r = match allowed {
                Ok(()) => fs.rename(parent.0, &name, newparent.0, &newname, no_replace).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("rename", &e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.fs.link() {
            Ok(_) => reply.error(Errno::EPERM),
            Err(e) => reply.error(errno("link", &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn("open", debug_span!("open", ino = ino.0), async move {
            let r = match fs.check_access(ino.0, c, open_access(flags.0)) {
                Ok(()) => fs.open(ino.0, flags.0).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(h) => {
                    let flags = if h.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(h.fh), flags)
                }
                Err(e) => reply.error(errno("open", &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "read",
            debug_span!("read", ino = ino.0, offset, size),
            async move {
                match fs.read(fh.0, offset, size).await {
                    Ok(b) => {
                        metrics::FUSE.bytes_read(b.len());
                        reply.data(&b)
                    }
                    Err(e) => reply.error(errno("read", &e)),
                }
            },
        );
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        let data = data.to_vec();
        self.spawn(
            "write",
            debug_span!("write", ino = ino.0, offset, size = data.len()),
            async move {
                match fs.write(fh.0, offset, &data).await {
                    Ok(n) => {
                        metrics::FUSE.bytes_written(n as usize);
                        reply.written(n)
                    }
                    Err(e) => reply.error(errno("write", &e)),
                }
            },
        );
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn("flush", debug_span!("flush", ino = ino.0), async move {
            match fs.flush(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("flush", &e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn("release", debug_span!("release", ino = ino.0), async move {
            match fs.release(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("release", &e)),
            }
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn("fsync", debug_span!("fsync", ino = ino.0), async move {
            match fs.fsync(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("fsync", &e)),
            }
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn("opendir", debug_span!("opendir", ino = ino.0), async move {
            let r = match fs.check_access(ino.0, c, READ) {
                Ok(()) => fs.opendir(ino.0).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno("opendir", &e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0, offset) {
            Ok(entries) => {
                for (next, e) in entries {
                    if reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno("readdir", &e)),
        }
    }

    /// readdir with attributes (`ls -l`): the entries' lookups run concurrently
    /// ([`LOOKUP_CONCURRENCY`] at a time) instead of one kernel LOOKUP after another.
    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // The entries' attributes come from lookups in the directory: execute (search) on
        // it, as for a plain lookup.
        let allowed = self.fs.check_access(ino.0, caller(req), EXECUTE);
        let entries = match allowed.and_then(|()| self.fs.readdir(fh.0, offset)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno("readdirplus", &e)),
        };
        let fs = self.fs.clone();
        let span = debug_span!("readdirplus", ino = ino.0, offset);
        self.spawn("readdirplus", span, async move {
            for batch in entries.chunks(LOOKUP_CONCURRENCY) {
                let names: Vec<String> = batch
                    .iter()
                    .filter(|(_, e)| e.name != "." && e.name != "..")
                    .map(|(_, e)| e.name.clone())
                    .collect();
                let mut attrs = fs.lookup_many(ino.0, &names).await.into_iter();
                let mut full = false;
                for (next, e) in batch {
                    if e.name == "." || e.name == ".." {
                        // The kernel takes no reference for these; their attributes are
                        // not used.
                        if !full {
                            let a = dot_attr(e.ino);
                            full = reply.add(
                                INodeNo(e.ino),
                                *next,
                                &e.name,
                                &fs.kernel_ttl(e.ino),
                                &a,
                                Generation(0),
                            );
                        }
                        continue;
                    }
                    let Some(Ok(a)) = attrs.next() else {
                        // Vanished or unreadable since the listing: left out.
                        continue;
                    };
                    if full
                        || reply.add(
                            INodeNo(a.ino),
                            *next,
                            &e.name,
                            &fs.kernel_ttl(a.ino),
                            &to_fuse(&a),
                            Generation(0),
                        )
                    {
                        // Not sent: give back the reference the lookup took.
                        full = true;
                        fs.forget(a.ino, 1);
                    }
                }
                if full {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // Extended attributes are not served yet; ENOSYS makes the kernel stop asking.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name_or_reply!(name, reply);
        let (fs, c) = (self.fs.clone(), caller(req));
        self.spawn(
            "create",
            debug_span!("create", parent = parent.0, name = %name),
            async move {
                match fs
                    .create(parent.0, &name, (mode & 0o7777) as u16, flags, c)
                    .await
                {
                    Ok((a, h)) => reply.created(
                        &fs.kernel_ttl(a.ino),
                        &to_fuse(&a),
                        Generation(0),
                        FileHandle(h.fh),
                        FopenFlags::empty(),
                    ),
                    Err(e) => reply.error(errno("create", &e)),
                }
            },
        );
    }
}
