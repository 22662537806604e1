//! How core results become FUSE replies: the [`Reply`]/[`Answer`] traits over fuser's reply
//! types, attribute conversion, and the refusals the adapter answers without the core.
//!
//! Why separate from the adapter: `fuse.rs` then holds only the operation handlers, each a
//! few lines (decode, call the core, hand the result to its reply type); every errno goes
//! through [`FsError::errno`], and the one the core has no variant for is in [`Refusal`].

use std::ffi::OsStr;
use std::time::{SystemTime, UNIX_EPOCH};

use blobmount_core::xattr::XattrReply;
use blobmount_core::{Attr, DirEntry, Fs, FsError, Kind, OpenReply};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyWrite, ReplyXattr, TimeOrNow,
};

/// A fuser reply that can be failed with an errno.
pub trait Reply: Send + 'static {
    fn fail(self, e: Errno);
}

macro_rules! reply_types {
    ($($t:ty),*) => {$(
        impl Reply for $t {
            fn fail(self, e: Errno) {
                self.error(e)
            }
        }
    )*};
}

reply_types!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyIoctl,
    ReplyOpen,
    ReplyWrite,
    ReplyXattr
);

/// A fuser reply that can send a successful core result of type `T`.
pub trait Answer<T>: Reply {
    fn answer(self, fs: &Fs, v: T);
}

impl Answer<Attr> for ReplyEntry {
    fn answer(self, fs: &Fs, a: Attr) {
        self.entry(&fs.kernel_ttl(a.ino), &to_fuse(&a), Generation(0))
    }
}

impl Answer<Attr> for ReplyAttr {
    fn answer(self, fs: &Fs, a: Attr) {
        self.attr(&fs.kernel_ttl(a.ino), &to_fuse(&a))
    }
}

impl<B: AsRef<[u8]>> Answer<B> for ReplyData {
    fn answer(self, _fs: &Fs, b: B) {
        self.data(b.as_ref())
    }
}

impl Answer<()> for ReplyEmpty {
    fn answer(self, _fs: &Fs, (): ()) {
        self.ok()
    }
}

impl Answer<u32> for ReplyWrite {
    fn answer(self, _fs: &Fs, n: u32) {
        self.written(n)
    }
}

/// A file opened by `open`: the kernel may keep its page cache when the object is unchanged.
impl Answer<OpenReply> for ReplyOpen {
    fn answer(self, fs: &Fs, h: OpenReply) {
        let flags = if h.keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        if let Some(p) = &h.passthrough {
            // One backing id per inode, shared by its passthrough opens and closed when the
            // last of them is released (the core drops the file then).
            match p.backing(|f| self.open_backing(f)) {
                // The kernel answers EIO to a passthrough open that also asks it to keep
                // the page cache (which passthrough does not use).
                Ok(id) => {
                    return self.opened_passthrough(FileHandle(h.fh), FopenFlags::empty(), &id);
                }
                Err(e) => fs.passthrough_refused(
                    h.fh,
                    &format!("the kernel refused the cached copy as a backing file: {e}"),
                ),
            }
        }
        self.opened(FileHandle(h.fh), flags)
    }
}

/// A directory opened by `opendir`: its handle.
pub struct DirHandle(pub u64);

impl Answer<DirHandle> for ReplyOpen {
    fn answer(self, _fs: &Fs, h: DirHandle) {
        self.opened(FileHandle(h.0), FopenFlags::empty())
    }
}

impl Answer<(Attr, OpenReply)> for ReplyCreate {
    fn answer(self, fs: &Fs, (a, h): (Attr, OpenReply)) {
        self.created(
            &fs.kernel_ttl(a.ino),
            &to_fuse(&a),
            Generation(0),
            FileHandle(h.fh),
            FopenFlags::empty(),
        )
    }
}

/// An extended attribute's value or a list of names, or its size when asked with size 0.
impl Answer<XattrReply> for ReplyXattr {
    fn answer(self, _fs: &Fs, r: XattrReply) {
        match r {
            XattrReply::Size(n) => self.size(n),
            XattrReply::Data(d) => self.data(&d),
        }
    }
}

/// A page of `readdir`: as many entries as fit, each with the offset of the next.
impl Answer<Vec<(u64, DirEntry)>> for ReplyDirectory {
    fn answer(mut self, _fs: &Fs, entries: Vec<(u64, DirEntry)>) {
        for (next, e) in entries {
            if self.add(INodeNo(e.ino), next, file_type(e.kind), &e.name) {
                break;
            }
        }
        self.ok()
    }
}

/// An answer the adapter gives without calling the core; like before, it is neither counted
/// as a failed operation nor logged. Every errno still comes from [`FsError::errno`] except
/// ENOTTY: the core never sees ioctls and `FsError` has no variant for "no such ioctl", so
/// that mapping is made here, in this one place.
pub enum Refusal {
    Fs(FsError),
    NoIoctl,
}

impl Refusal {
    pub fn errno(&self) -> Errno {
        match self {
            Refusal::Fs(e) => Errno::from_i32(e.errno()),
            Refusal::NoIoctl => Errno::ENOTTY,
        }
    }
}

/// Refuse `reply` (see [`Refusal`]).
pub fn refuse(reply: impl Reply, r: Refusal) {
    reply.fail(r.errno())
}

/// Object keys are UTF-8; a non-UTF-8 name can neither exist nor be created.
pub fn utf8(name: &OsStr) -> Result<String, Refusal> {
    name.to_str()
        .map(str::to_string)
        .ok_or(Refusal::Fs(FsError::Invalid("name is not UTF-8")))
}

pub fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

/// Placeholder attributes for `.` and `..` in readdirplus replies.
pub fn dot_attr(ino: u64) -> FileAttr {
    to_fuse(&Attr {
        ino,
        kind: Kind::Dir,
        size: 0,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        atime: UNIX_EPOCH,
        nlink: 2,
    })
}

pub fn to_fuse(a: &Attr) -> FileAttr {
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

pub fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}
