//! Open files: reads pinned to the ETag seen at open, staged writes, uploads on
//! flush/fsync/close with preconditions, and keeping local data when an upload cannot land.
//!
//! Committing changes to the store lives in `commit.rs`. State per inode ([`OpenFile`]) is
//! shared by all handles of that inode so a reader sees a writer's data; per-handle state
//! ([`Handle`]) holds the read-ahead buffer.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use tracing::error;
use tracing::{debug, warn};

use crate::attr::Kind;
use crate::blockpool::Source;
use crate::error::{FsError, FsResult, stale};
use crate::files::{OpenEntry, upload_cond};
use crate::fs::Fs;
use crate::inode::ROOT_INO;
use crate::names;
use crate::passthrough::Admitted;
use crate::preload::PreloadProgress;
use crate::sync::lock;
use crate::types::{Caller, OpenReply};
use crate::writestream::StreamWrite;

impl Fs {
    /// Preload directory `dir` (relative to the mount root; empty or `/` for all of it)
    /// with `jobs` files in flight. Errors on single files are counted, not returned; an
    /// error means `dir` itself could not be found or listed.
    pub async fn preload(&self, dir: &str, jobs: usize, p: &PreloadProgress) -> FsResult<()> {
        let mut ino = ROOT_INO;
        for seg in dir.split('/').filter(|s| !s.is_empty() && *s != ".") {
            let a = self.lookup(ino, seg).await?;
            if a.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            ino = a.ino;
        }
        let files = {
            let mut files = Vec::new();
            let mut dirs = vec![ino];
            while let Some(d) = dirs.pop() {
                let fh = self.opendir(d).await?;
                let entries = self.readdir(fh, 0);
                self.releasedir(fh);
                PreloadProgress::add(&p.dirs, 1);
                for (_, entry) in entries? {
                    if entry.name == "." || entry.name == ".." {
                        continue;
                    }
                    match self.lookup(d, &entry.name).await {
                        Ok(a) if a.kind == Kind::Dir => dirs.push(a.ino),
                        Ok(a) if a.kind == Kind::File => {
                            PreloadProgress::add(&p.files_found, 1);
                            PreloadProgress::add(&p.bytes_found, a.size);
                            files.push(a.ino);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            debug!(name = entry.name, error = %e, "preload: lookup failed");
                            PreloadProgress::add(&p.failed, 1);
                        }
                    }
                }
            }
            files
        };
        let Some(fc) = self.file_cache.clone() else {
            // Metadata only: the lookups above filled the stat and list caches.
            for ino in &files {
                let size = lock(&self.ns.table).get(*ino).map(|n| n.size).unwrap_or(0);
                PreloadProgress::add(&p.files_done, 1);
                PreloadProgress::add(&p.bytes_done, size);
            }
            return Ok(());
        };
        futures::stream::iter(files)
            .for_each_concurrent(jobs.max(1), |ino| {
                let fc = fc.clone();
                async move {
                    let found = {
                        let t = lock(&self.ns.table);
                        t.get(ino).map(|n| (n.etag.clone(), n.size))
                    };
                    let (Some((etag, size)), Ok(key)) = (found, self.ns.key_of(ino)) else {
                        PreloadProgress::add(&p.failed, 1);
                        return;
                    };
                    match fc.get(&self.backend, &key, etag.as_deref(), size) {
                        None => PreloadProgress::add(&p.skipped, 1),
                        Some(c) => {
                            let mut seen = c.downloaded();
                            PreloadProgress::add(&p.bytes_done, seen);
                            let r = c
                                .wait_complete_with(|now| {
                                    PreloadProgress::add(&p.bytes_done, now - seen);
                                    seen = now;
                                })
                                .await;
                            match r {
                                Ok(()) => PreloadProgress::add(&p.files_done, 1),
                                Err(e) => {
                                    warn!(key, error = %e, "preload: download failed");
                                    PreloadProgress::add(&p.failed, 1);
                                }
                            }
                        }
                    }
                    // The walk's own reference; the kernel keeps its own.
                    self.forget(ino, 1);
                }
            })
            .await;
        Ok(())
    }

    /// FUSE open. Revalidates the object first when its attributes are stale
    /// (close-to-open consistency).
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<OpenReply> {
        let kind = self.ns.node_kind(ino)?;
        if kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        self.touch(ino);
        let acc = flags & libc::O_ACCMODE;
        let writable = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        if writable || flags & libc::O_TRUNC != 0 {
            self.ns.check_node_writable(ino)?;
        }
        match self.files.entry(ino) {
            None => {
                // Attributes held for a moment go up before an open for writing: its uploads
                // are conditional on the version they make. A read-only open leaves them held
                // (written after its last release: the timer skips open files, so its reads
                // stay pinned to the version they opened).
                if writable || flags & libc::O_TRUNC != 0 {
                    self.attrs.flush(ino).await?;
                }
                self.ns.revalidate_if_policy_says(ino);
                self.getattr(ino).await?;
            }
            Some(e) => self.reopen_clean(ino, e).await?,
        }
        let (fh, entry) = self.files.attach_handle(ino, writable, false).await?;
        let h = self.files.handle(fh)?;
        let changes = writable || flags & libc::O_TRUNC != 0;
        if changes {
            // Not while the kernel reads the file through passthrough (`passthrough.rs`).
            if !self.files.pass.admit_writer(ino).await {
                self.abandon(fh).await;
                return Err(FsError::TextBusy);
            }
            h.counted.store(true, Ordering::Release);
        }
        let mut st = entry.state.lock().await;
        if writable
            && flags & libc::O_TRUNC != 0
            && let Err(e) = self.files.truncate_locked(ino, &entry, &mut st, 0).await
        {
            drop(st);
            self.abandon(fh).await;
            return Err(e);
        }
        let (size, etag, staged) = (st.size, st.read_etag.clone(), st.staged.is_some());
        let dirty = entry.dirty.load(Ordering::Acquire);
        drop(st);
        let keep_cache =
            self.files.keep_cache(ino, etag.as_deref(), staged) && self.ns.cacheable(ino);
        if !staged && !writable {
            let key = self.ns.key_of(ino)?;
            let src = Source {
                backend: &self.backend,
                key: &key,
                etag: etag.as_deref(),
                size,
                pool: &self.pool,
            };
            h.read.lock().await.opened(&src).await;
        }
        let mut passthrough = None;
        if !changes {
            let copy = match staged || dirty {
                true => None,
                false => h.read.lock().await.complete_copy(),
            };
            if let Admitted::Pass(p) = self.files.pass.admit_reader(ino, copy).await {
                passthrough = Some(p);
            }
            h.counted.store(true, Ordering::Release);
        }
        Ok(OpenReply {
            fh,
            keep_cache,
            passthrough,
        })
    }

    /// Undo a handle whose open failed after it was attached (the kernel never sees it,
    /// so no release follows).
    async fn abandon(&self, fh: u64) {
        if let Err(e) = self.release(fh).await {
            debug!(fh, error = %e, "releasing the handle of a failed open");
        }
    }

    /// Whether opens may still be answered with passthrough (the FUSE adapter asks the
    /// kernel for it at init).
    pub fn passthrough_wanted(&self) -> bool {
        self.files.pass.wanted()
    }

    /// The stack depth backing files in the file cache need (`passthrough::stack_depth`).
    pub fn passthrough_stack_depth(&self) -> u32 {
        crate::passthrough::stack_depth(&self.cfg.cache_dir)
    }

    /// The kernel cannot do passthrough (it lacks it, or refused the settings): no open
    /// asks for it.
    pub fn disable_passthrough(&self, why: &str) {
        self.files.pass.disable(why);
    }

    /// The kernel refused the backing file of handle `fh`'s passthrough open: it was
    /// answered as an ordinary open, and passthrough is off from now on.
    pub fn passthrough_refused(&self, fh: u64, why: &str) {
        if let Ok(h) = self.files.handle(fh) {
            self.files.pass.refused(h.ino, why);
        }
    }

    /// An open of a file that is open already: when the opening is read-only (no handle
    /// open for writing, no local changes) and another client replaced the object since
    /// (the node's ETag, revalidated as the TTL says, moved on; `blobmount refresh` and the
    /// poller drop it at once), the new open starts a new opening of the new version.
    /// Handles opened before keep reading theirs (a read the store must serve then fails
    /// with `ESTALE`): two versions are never mixed in one handle, and a reader's next open
    /// is not pinned to an old version. An opening with a writer stays one opening: its
    /// upload is conditional on the version it started from (a conflict, data kept).
    async fn reopen_clean(&self, ino: u64, e: Arc<OpenEntry>) -> FsResult<()> {
        let writer = lock(&self.files.handles)
            .values()
            .any(|h| h.writable && Arc::ptr_eq(&h.entry, &e));
        if writer || e.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        self.getattr(ino).await?;
        let st = e.state.lock().await;
        let now = lock(&self.ns.table).get(ino).and_then(|n| n.etag.clone());
        let replaced = st.staged.is_none()
            && !e.dirty.load(Ordering::Acquire)
            && st.read_etag.is_some()
            && now.is_some()
            && now != st.read_etag;
        if replaced {
            e.retired.store(true, Ordering::Release);
            drop(st);
            self.files.forget_entry(ino, &e);
        }
        Ok(())
    }

    /// FUSE create: a new empty file, uploaded (conditional on absence) at flush.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        perm: u16,
        flags: i32,
        c: Caller,
    ) -> FsResult<(crate::Attr, OpenReply)> {
        self.ns.check_writable()?;
        names::check_new(name)?;
        if self.ns.node_kind(parent)? != Kind::Dir {
            return Err(FsError::NotDir);
        }
        self.ns.check_create(parent, name, Kind::File, c)?;
        match self.ensure_absent(parent, name).await {
            Ok(()) => {}
            Err(FsError::Exists) if flags & libc::O_EXCL == 0 => {
                // Raced with another client: open the existing file instead.
                let a = self.lookup(parent, name).await?;
                let r = self.open(a.ino, flags).await?;
                return Ok((self.getattr(a.ino).await?, r));
            }
            Err(e) => return Err(e),
        }
        let mut node = self.new_node(parent, name, Kind::File, perm & 0o7777, c);
        node.local_only = true;
        let ino = {
            let mut t = lock(&self.ns.table);
            let ino = t.upsert(node);
            if let Some(n) = t.get_mut(ino) {
                n.lookups += 1;
            }
            t.name_changed(parent, name, Some(Kind::File));
            t.entries_changed(parent);
            ino
        };
        let (fh, entry) = self.files.attach_handle(ino, true, true).await?;
        // A new inode: counted as open through the daemon at once.
        self.files.pass.admit_writer(ino).await;
        self.files
            .handle(fh)?
            .counted
            .store(true, Ordering::Release);
        {
            let mut st = entry.state.lock().await;
            st.staged = Some(self.files.new_staging_file()?);
            st.size = 0;
            st.stream = StreamWrite::for_new_file(&self.cfg);
            entry.dirty.store(true, Ordering::Release);
            self.files.record_staged(ino, &st, true)?;
        }
        let attr = lock(&self.ns.table)
            .get(ino)
            .map(|n| n.attr(ino))
            .ok_or(FsError::NotFound)?;
        lock(&self.files.opened_etags).remove(&ino);
        Ok((
            attr,
            OpenReply {
                fh,
                keep_cache: false,
                passthrough: None,
            },
        ))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let h = self.files.handle(fh)?;
        let entry = &h.entry;
        let (file_size, etag) = {
            let mut st = entry.state.lock().await;
            if st.staged.is_some() {
                return self.files.read_staged(h.ino, &mut st, offset, size).await;
            }
            (st.size, st.read_etag.clone())
        };
        let key = self.ns.key_of(h.ino)?;
        let src = Source {
            backend: &self.backend,
            key: &key,
            etag: etag.as_deref(),
            size: file_size,
            pool: &self.pool,
        };
        let mut stream = h.read.lock().await;
        stream.read(&src, offset, size as u64).await.map_err(stale)
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.files.handle(fh)?;
        if !h.writable {
            return Err(FsError::BadHandle);
        }
        let end = offset.saturating_add(data.len() as u64);
        self.files.check_size(end)?;
        let entry = &h.entry;
        let mut guard = entry.state.lock().await;
        self.files
            .begin_change(h.ino, entry, &mut guard, offset)
            .await?;
        let st = &mut *guard;
        if let Some(tmp) = &st.staged {
            tmp.as_file().write_all_at(data, offset)?;
            self.stats
                .bytes_written
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            let cond = upload_cond(st);
            let upload = (&cond, st.upload_id.as_str());
            st.stream
                .after_write(&*self.files, h.ino, tmp.as_file(), (offset, data), upload)
                .await;
        }
        st.size = st.size.max(offset + data.len() as u64);
        let size = st.size;
        drop(guard);
        if let Some(n) = lock(&self.ns.table).get_mut(h.ino) {
            n.size = size;
            n.mtime = SystemTime::now();
            n.ctime = n.mtime;
        }
        Ok(data.len() as u32)
    }

    /// Truncate (from setattr). Without an open handle the change is uploaded at once.
    pub(crate) async fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        // Not while the kernel reads the file through passthrough (it would go on reading
        // the old bytes): counted as an open for writing while it runs.
        if !self.files.pass.admit_writer(ino).await {
            return Err(FsError::TextBusy);
        }
        let r = self.truncate_counted(ino, size).await;
        self.files.pass.release(ino);
        r
    }

    async fn truncate_counted(&self, ino: u64, size: u64) -> FsResult<()> {
        if let Some(entry) = self.files.entry(ino) {
            let mut st = entry.state.lock().await;
            if !entry.retired.load(Ordering::Acquire) {
                return self.files.truncate_locked(ino, &entry, &mut st, size).await;
            }
        }
        let (fh, entry) = self.files.attach_handle(ino, true, false).await?;
        let result = {
            let mut st = entry.state.lock().await;
            match self.files.truncate_locked(ino, &entry, &mut st, size).await {
                Ok(()) => self.files.upload_locked(ino, &entry, &mut st).await,
                Err(e) => Err(e),
            }
        };
        self.release(fh).await?;
        result
    }

    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.files.handle(fh)?;
        if self.files.writes_behind() {
            // Uploaded after the last close (`files/mod.rs`, "Closing"); fsync still uploads.
            return Ok(());
        }
        let mut st = h.entry.state.lock().await;
        self.files.upload_locked(h.ino, &h.entry, &mut st).await
    }

    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let h = self.files.handle(fh)?;
        let mut st = h.entry.state.lock().await;
        self.files.upload_locked(h.ino, &h.entry, &mut st).await?;
        // Mode, owner or times held for a moment are durable after fsync too.
        if self.attrs.is_pending(h.ino) {
            let before = lock(&self.ns.table).get(h.ino).and_then(|n| n.etag.clone());
            self.attrs.flush(h.ino).await?;
            // The store's version changed by the metadata update only: this open file's
            // next upload is conditional on the new one.
            if st.exists_remote && st.base_etag.is_some() && st.base_etag == before {
                let etag = lock(&self.ns.table).get(h.ino).and_then(|n| n.etag.clone());
                st.base_etag = etag.clone();
                st.read_etag = etag;
            }
        }
        Ok(())
    }

    /// Before shutting down: upload every modified open file. Data that cannot be uploaded
    /// is copied to `conflicts/` (a conflict already is). Returns `(uploaded, kept)`.
    pub async fn flush_for_shutdown(&self) -> (usize, usize) {
        let inos: Vec<u64> = lock(&self.files.open_files).keys().copied().collect();
        let (mut uploaded, mut kept) = (0, 0);
        for ino in inos {
            let Some(entry) = self.files.entry(ino) else {
                continue;
            };
            let mut st = entry.state.lock().await;
            if !entry.dirty.load(Ordering::Acquire) || st.unlinked {
                continue;
            }
            match self.files.upload_locked(ino, &entry, &mut st).await {
                Ok(()) => uploaded += 1,
                Err(_) if !entry.dirty.load(Ordering::Acquire) => kept += 1,
                Err(e) => {
                    kept += 1;
                    let key = self.ns.key_of(ino).unwrap_or_default();
                    let p = self.files.keep_failed(ino, &key, &mut st);
                    entry.dirty.store(false, Ordering::Release);
                    error!(key, saved_to = %p.display(), error = %e, "upload failed at shutdown; local data kept");
                }
            }
        }
        // Mode, owner and times held for a moment (`attrwrite.rs`).
        let failed = self.attrs.flush_all().await;
        (uploaded, kept + failed)
    }

    /// FUSE release: last handle of a modified file uploads; data that cannot be uploaded
    /// is kept in `conflicts/` (never dropped silently).
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let h = match lock(&self.files.handles).remove(&fh) {
            Some(h) => h,
            None => return Err(FsError::BadHandle),
        };
        if h.counted.load(Ordering::Acquire) {
            self.files.pass.release(h.ino);
        }
        let entry = h.entry.clone();
        let mut st = entry.state.lock().await;
        st.handles = st.handles.saturating_sub(1);
        if st.handles > 0 {
            return Ok(());
        }
        self.files.last_release(h.ino, &entry, st).await
    }
}
