//! The file-system operations as a caller asks for them: each checks what the policy's
//! ACL allows that caller, then runs the operation.
//!
//! Why: the FUSE adapter used to call `check_access` itself before seven operations, and
//! the core checked the other three (create, mkdir, symlink); an operation added to the
//! adapter without its check would have bypassed the ACL policy. Here every operation a
//! caller can ask for takes the [`Caller`] and checks in one place, and the adapter only
//! translates. (The kernel's `default_permissions` check on the reported mode comes first;
//! this is the policy's check on top.) [`Fs`]'s own methods stay caller-free for the core's
//! internal walks (preload) and tests.

use crate::attr::Attr;
use crate::error::FsResult;
use crate::fs::Fs;
use crate::policy::{EXECUTE, READ, WRITE, open_access};
use crate::types::{Caller, DirEntry, OpenReply, SetAttr};

/// [`Fs`] seen by one caller (see the module doc). Made by [`Fs::as_caller`].
#[derive(Clone, Copy)]
pub struct AsCaller<'a> {
    fs: &'a Fs,
    c: Caller,
}

impl<'a> AsCaller<'a> {
    /// Made by [`Fs::as_caller`].
    pub(crate) fn new(fs: &'a Fs, c: Caller) -> Self {
        AsCaller { fs, c }
    }
}

impl AsCaller<'_> {
    /// Lookup needs search (execute) on the directory.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.fs.check_access(parent, self.c, EXECUTE)?;
        self.fs.lookup(parent, name).await
    }

    /// The entries of an open directory from `offset` on, for readdirplus: their
    /// attributes come from lookups, so search (execute) on the directory is needed.
    pub fn readdir_plus(&self, ino: u64, fh: u64, offset: u64) -> FsResult<Vec<(u64, DirEntry)>> {
        self.fs.check_access(ino, self.c, EXECUTE)?;
        self.fs.readdir(fh, offset)
    }

    pub async fn setattr(&self, ino: u64, req: SetAttr) -> FsResult<Attr> {
        self.fs.check_access(ino, self.c, WRITE)?;
        self.fs.setattr(ino, req).await
    }

    /// Extended attributes: reading needs read access, changing them write access (they
    /// are the object's metadata, like its mode).
    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        self.fs.check_access(ino, self.c, READ)?;
        self.fs.getxattr(ino, name).await
    }

    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.fs.check_access(ino, self.c, READ)?;
        self.fs.listxattr(ino).await
    }

    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> FsResult<()> {
        self.fs.check_access(ino, self.c, WRITE)?;
        self.fs.setxattr(ino, name, value, flags).await
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        self.fs.check_access(ino, self.c, WRITE)?;
        self.fs.removexattr(ino, name).await
    }

    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<OpenReply> {
        self.fs.check_access(ino, self.c, open_access(flags))?;
        self.fs.open(ino, flags).await
    }

    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.fs.check_access(ino, self.c, READ)?;
        self.fs.opendir(ino).await
    }

    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        perm: u16,
        flags: i32,
    ) -> FsResult<(Attr, OpenReply)> {
        self.fs.create(parent, name, perm, flags, self.c).await
    }

    pub async fn mkdir(&self, parent: u64, name: &str, perm: u16) -> FsResult<Attr> {
        self.fs.mkdir(parent, name, perm, self.c).await
    }

    pub async fn symlink(&self, parent: u64, name: &str, target: &str) -> FsResult<Attr> {
        self.fs.symlink(parent, name, target, self.c).await
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.fs.check_access(parent, self.c, WRITE)?;
        self.fs.unlink(parent, name).await
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.fs.check_access(parent, self.c, WRITE)?;
        self.fs.rmdir(parent, name).await
    }

    /// Rename needs write on both directories (one question when they are the same).
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        self.fs.check_access(parent, self.c, WRITE)?;
        if new_parent != parent {
            // A rename within one directory asks once.
            self.fs.check_access(new_parent, self.c, WRITE)?;
        }
        self.fs
            .rename(parent, name, new_parent, new_name, no_replace)
            .await
    }
}
