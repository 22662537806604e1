//! The FUSE adapter: decodes kernel requests, runs the core operation on the tokio runtime
//! and replies from that task.
//!
//! Why thin: all behaviour lives in `blobmount_core::Fs`, which tests drive without a kernel.
//! Each handler decodes its arguments and calls [`FuseAdapter::serve`] with its [`Op`], a
//! tracing span and the core call; `serve` spawns it, times it for `/metrics`, and sends the
//! result through the reply type's [`Answer`] or the errno from `FsError::errno` (see
//! [`Refusal`] for the answers given without the core).
//! Why async: fuser's session threads only hand requests off, so one slow GET never stalls
//! `ls` or `stat` on the rest of the mount.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use blobmount_core::acl;
use blobmount_core::xattr::{self, XattrName};
use blobmount_core::{Caller, DirEntry, Fs, FsError, LOOKUP_CONCURRENCY, SetAttr};
use fuser::{
    Errno, FileHandle, Filesystem, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{Instrument, debug, debug_span, warn};

use crate::opstats::{FuseStats, Op};
use crate::reply::{Answer, DirHandle, Refusal, Reply, dot_attr, refuse, time, to_fuse, utf8};

pub struct FuseAdapter {
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
    /// This mount's operation counters (owned by the mount, read by the health endpoint).
    stats: Arc<FuseStats>,
}

/// Log a failed operation (quietly for the expected ones), count it, and give its errno.
fn failed(stats: &FuseStats, op: Op, e: &FsError) -> Errno {
    let code = e.errno();
    stats.error(op);
    let op = op.name();
    match e {
        FsError::NotFound
        | FsError::Exists
        | FsError::NotEmpty
        | FsError::NotDir
        | FsError::IsDir
        | FsError::NoAttr
        | FsError::BufferTooSmall => {
            debug!(op, error = %e, "operation failed")
        }
        _ => warn!(op, error = %e, errno = code, "operation failed"),
    }
    Errno::from_i32(code)
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// The UTF-8 name of a request, or refuse the request (see [`Refusal`]).
macro_rules! name_or_refuse {
    ($name:expr, $reply:ident) => {
        match utf8($name) {
            Ok(n) => n,
            Err(r) => return refuse($reply, r),
        }
    };
}

impl FuseAdapter {
    pub fn new(fs: Arc<Fs>, rt: tokio::runtime::Handle, stats: Arc<FuseStats>) -> Self {
        FuseAdapter { fs, rt, stats }
    }

    /// Run `fut` on the runtime inside `span`, timing it as `op` for `/metrics`.
    fn spawn_timed<F>(&self, op: Op, span: tracing::Span, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (started, stats) = (Instant::now(), self.stats.clone());
        self.rt.spawn(
            async move {
                fut.await;
                stats.record(op, started.elapsed());
            }
            .instrument(span),
        );
    }

    /// Run core operation `call` (given the core) as `op`, and send its result or errno
    /// through `reply`.
    fn serve<T, R, F, Fut>(&self, op: Op, span: tracing::Span, reply: R, call: F)
    where
        T: Send + 'static,
        R: Answer<T>,
        F: FnOnce(Arc<Fs>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        let (fs, stats) = (self.fs.clone(), self.stats.clone());
        let fut = call(fs.clone());
        self.spawn_timed(op, span, async move {
            match fut.await {
                Ok(v) => reply.answer(&fs, v),
                Err(e) => reply.fail(failed(&stats, op, &e)),
            }
        });
    }

    /// Send the result of a core call that does not wait (not timed, failures counted).
    fn answer_now<T, R: Answer<T>>(&self, op: Op, reply: R, r: Result<T, FsError>) {
        match r {
            Ok(v) => reply.answer(&self.fs, v),
            Err(e) => reply.fail(failed(&self.stats, op, &e)),
        }
    }
}

/// readdirplus of a listed page: the entries' lookups run in batches of
/// [`LOOKUP_CONCURRENCY`], and stop once the reply is full.
async fn fill_plus(
    fs: &Fs,
    ino: u64,
    entries: Vec<(u64, DirEntry)>,
    reply: &mut ReplyDirectoryPlus,
) {
    for batch in entries.chunks(LOOKUP_CONCURRENCY) {
        let names: Vec<String> = batch
            .iter()
            .filter(|(_, e)| e.name != "." && e.name != "..")
            .map(|(_, e)| e.name.clone())
            .collect();
        let mut attrs = fs.lookup_many(ino, &names).await.into_iter();
        let mut full = false;
        for (next, e) in batch {
            if e.name == "." || e.name == ".." {
                // The kernel takes no reference for these; their attributes are not used.
                if !full {
                    let a = dot_attr(e.ino);
                    let ttl = fs.kernel_ttl(e.ino);
                    full = reply.add(INodeNo(e.ino), *next, &e.name, &ttl, &a, Generation(0));
                }
                continue;
            }
            let Some(Ok(a)) = attrs.next() else {
                // Vanished or unreadable since the listing: left out.
                continue;
            };
            let ttl = fs.kernel_ttl(a.ino);
            if full
                || reply.add(
                    INodeNo(a.ino),
                    *next,
                    &e.name,
                    &ttl,
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
        if self.fs.passthrough_wanted() {
            // Reads of files complete in the file cache go from the kernel to the cached copy
            // (`blobmount_core::passthrough`).
            let depth = self.fs.passthrough_stack_depth();
            if config
                .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
                .is_err()
            {
                self.fs
                    .disable_passthrough("the kernel does not offer FUSE passthrough (Linux 6.9+)");
            } else if let Err(max) = config.set_max_stack_depth(depth) {
                self.fs.disable_passthrough(&format!(
                    "the kernel allows a stack depth of {max}, the cache directory needs {depth}"
                ));
            } else {
                debug!(depth, "FUSE passthrough for cached files");
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // A name that is not UTF-8 cannot exist.
        let Ok(name) = utf8(name) else {
            return refuse(reply, Refusal::Fs(FsError::NotFound));
        };
        let c = caller(req);
        let span = debug_span!("lookup", parent = parent.0, name = %name);
        self.serve(Op::Lookup, span, reply, |fs| async move {
            fs.as_caller(c).lookup(parent.0, &name).await
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let span = debug_span!("getattr", ino = ino.0);
        self.serve(Op::Getattr, span, reply, |fs| async move {
            fs.getattr(ino.0).await
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
        let span = debug_span!("setattr", ino = ino.0);
        self.serve(Op::Setattr, span, reply, |fs| async move {
            fs.as_caller(c).setattr(ino.0, req).await
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let span = debug_span!("readlink", ino = ino.0);
        self.serve(Op::Readlink, span, reply, |fs| async move {
            fs.readlink(ino.0).await
        });
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
        refuse(reply, Refusal::NoIoctl);
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
            let no = FsError::NoSys("device files, FIFOs and sockets are not supported");
            return refuse(reply, Refusal::Fs(no));
        }
        let name = name_or_refuse!(name, reply);
        let c = caller(req);
        let span = debug_span!("mknod", parent = parent.0, name = %name);
        self.serve(Op::Mknod, span, reply, |fs| async move {
            let perm = (mode & 0o7777) as u16;
            let flags = libc::O_WRONLY | libc::O_EXCL;
            let (a, h) = fs.as_caller(c).create(parent.0, &name, perm, flags).await?;
            fs.release(h.fh).await?;
            Ok(a)
        });
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
        let name = name_or_refuse!(name, reply);
        let c = caller(req);
        let span = debug_span!("mkdir", parent = parent.0, name = %name);
        self.serve(Op::Mkdir, span, reply, |fs| async move {
            fs.as_caller(c)
                .mkdir(parent.0, &name, (mode & 0o7777) as u16)
                .await
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_refuse!(name, reply);
        let c = caller(req);
        let span = debug_span!("unlink", parent = parent.0, name = %name);
        self.serve(Op::Unlink, span, reply, |fs| async move {
            fs.as_caller(c).unlink(parent.0, &name).await
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_refuse!(name, reply);
        let c = caller(req);
        let span = debug_span!("rmdir", parent = parent.0, name = %name);
        self.serve(Op::Rmdir, span, reply, |fs| async move {
            fs.as_caller(c).rmdir(parent.0, &name).await
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = name_or_refuse!(link_name, reply);
        let target = name_or_refuse!(target.as_os_str(), reply);
        let c = caller(req);
        let span = debug_span!("symlink", parent = parent.0, name = %name);
        self.serve(Op::Symlink, span, reply, |fs| async move {
            fs.as_caller(c).symlink(parent.0, &name, &target).await
        });
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
            let no = FsError::Invalid("RENAME_EXCHANGE and RENAME_WHITEOUT are not supported");
            return refuse(reply, Refusal::Fs(no));
        }
        let name = name_or_refuse!(name, reply);
        let newname = name_or_refuse!(newname, reply);
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let c = caller(req);
        let span = debug_span!("rename", parent = parent.0, name = %name, newparent = newparent.0, newname = %newname);
        self.serve(Op::Rename, span, reply, |fs| async move {
            fs.as_caller(c)
                .rename(parent.0, &name, newparent.0, &newname, no_replace)
                .await
        });
    }

    /// Hard links: the core refuses them (EPERM).
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.answer_now(Op::Link, reply, self.fs.link());
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let c = caller(req);
        let span = debug_span!("open", ino = ino.0);
        self.serve(Op::Open, span, reply, |fs| async move {
            fs.as_caller(c).open(ino.0, flags.0).await
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
        let stats = self.stats.clone();
        let span = debug_span!("read", ino = ino.0, offset, size);
        self.serve(Op::Read, span, reply, |fs| async move {
            let b = fs.read(fh.0, offset, size).await?;
            stats.bytes_read(b.len());
            Ok(b)
        });
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
        let (stats, data) = (self.stats.clone(), data.to_vec());
        let span = debug_span!("write", ino = ino.0, offset, size = data.len());
        self.serve(Op::Write, span, reply, |fs| async move {
            let n = fs.write(fh.0, offset, &data).await?;
            stats.bytes_written(n as usize);
            Ok(n)
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let span = debug_span!("flush", ino = ino.0);
        self.serve(
            Op::Flush,
            span,
            reply,
            |fs| async move { fs.flush(fh.0).await },
        );
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
        let span = debug_span!("release", ino = ino.0);
        self.serve(Op::Release, span, reply, |fs| async move {
            fs.release(fh.0).await
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
        let span = debug_span!("fsync", ino = ino.0);
        self.serve(
            Op::Fsync,
            span,
            reply,
            |fs| async move { fs.fsync(fh.0).await },
        );
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let c = caller(req);
        let span = debug_span!("opendir", ino = ino.0);
        self.serve(Op::Opendir, span, reply, |fs| async move {
            fs.as_caller(c).opendir(ino.0).await.map(DirHandle)
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.answer_now(Op::Readdir, reply, self.fs.readdir(fh.0, offset));
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
        let entries = match self
            .fs
            .as_caller(caller(req))
            .readdir_plus(ino.0, fh.0, offset)
        {
            Ok(e) => e,
            Err(e) => return reply.fail(failed(&self.stats, Op::Readdirplus, &e)),
        };
        let fs = self.fs.clone();
        let span = debug_span!("readdirplus", ino = ino.0, offset);
        self.spawn_timed(Op::Readdirplus, span, async move {
            fill_plus(&fs, ino.0, entries, &mut reply).await;
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

    /// Extended attributes (`blobmount_core::xattr`): `user.*` is the object's user
    /// metadata. Other namespaces (`security.*`, asked on every write for capabilities;
    /// `system.*`) are ENOTSUP at once, without the core; never ENOSYS, which would make the
    /// kernel stop asking for any attribute. `system.posix_acl_access` goes to the core: on
    /// an HNS store it is the path's ACL (`blobmount_core::acl`).
    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = match utf8(name) {
            Ok(n) => n,
            // A name that is not UTF-8 cannot be a metadata key.
            Err(_) => return refuse(reply, Refusal::Fs(FsError::NoAttr)),
        };
        if xattr::parse_name(&name) == XattrName::Other && name != acl::POSIX_ACL_ACCESS {
            // Counted (the kernel asks `security.capability` before writes): cheap, but seen.
            self.stats.record(Op::Getxattr, std::time::Duration::ZERO);
            return refuse(reply, Refusal::Fs(xattr::other_namespace()));
        }
        let c = caller(req);
        let span = debug_span!("getxattr", ino = ino.0, name = %name, size);
        self.serve(Op::Getxattr, span, reply, |fs| async move {
            xattr::sized(fs.as_caller(c).getxattr(ino.0, &name).await?, size)
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let c = caller(req);
        let span = debug_span!("listxattr", ino = ino.0, size);
        self.serve(Op::Listxattr, span, reply, |fs| async move {
            xattr::sized(fs.as_caller(c).listxattr(ino.0).await?, size)
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name_or_refuse!(name, reply);
        if xattr::parse_name(&name) == XattrName::Other && name != acl::POSIX_ACL_ACCESS {
            return refuse(reply, Refusal::Fs(xattr::other_namespace()));
        }
        let (c, value) = (caller(req), value.to_vec());
        let span = debug_span!("setxattr", ino = ino.0, name = %name, size = value.len());
        self.serve(Op::Setxattr, span, reply, |fs| async move {
            fs.as_caller(c).setxattr(ino.0, &name, &value, flags).await
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_refuse!(name, reply);
        if xattr::parse_name(&name) == XattrName::Other && name != acl::POSIX_ACL_ACCESS {
            return refuse(reply, Refusal::Fs(xattr::other_namespace()));
        }
        let c = caller(req);
        let span = debug_span!("removexattr", ino = ino.0, name = %name);
        self.serve(Op::Removexattr, span, reply, |fs| async move {
            fs.as_caller(c).removexattr(ino.0, &name).await
        });
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
        let name = name_or_refuse!(name, reply);
        let c = caller(req);
        let span = debug_span!("create", parent = parent.0, name = %name);
        self.serve(Op::Create, span, reply, |fs| async move {
            fs.as_caller(c)
                .create(parent.0, &name, (mode & 0o7777) as u16, flags)
                .await
        });
    }
}
