//! Open files: reads pinned to the ETag seen at open, staged writes, uploads on
//! flush/fsync/close with preconditions, and keeping local data when an upload cannot land.
//!
//! Committing changes to the store lives in `commit.rs`. State per inode ([`OpenFile`]) is
//! shared by all handles of that inode so a reader sees a writer's data; per-handle state
//! ([`Handle`]) holds the read-ahead buffer.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use blobmount_backend::BackendError;
use bytes::Bytes;
use tracing::{error, warn};

use crate::attr::Kind;
use crate::commit::{new_upload_id, upload_cond};
use crate::direct::Direct;
use crate::error::{FsError, FsResult};
use crate::filecache::FileCacheReader;
use crate::fs::{Caller, Fs, OpenReply, lock};
use crate::names;
use crate::readahead::{Source, Stream};
use crate::readpath::{ReadMode, ReadPath};
use crate::staging::Staged;
use crate::writestream::StreamWrite;

pub(crate) struct OpenFile {
    pub(crate) handles: usize,
    pub(crate) staged: Option<Staged>,
    /// ETag the next upload must match; `None` with `exists_remote` means unconditional.
    pub(crate) base_etag: Option<String>,
    pub(crate) exists_remote: bool,
    /// ETag reads are pinned to.
    pub(crate) read_etag: Option<String>,
    pub(crate) size: u64,
    /// The staging file's first `missing` bytes were never downloaded (a hole): they are the
    /// object's at `base_etag`. Only while `append_from` is set. An append to an existing
    /// object stages nothing of the old content.
    pub(crate) missing: u64,
    /// The object at `base_etag` holds this file's first this many bytes unchanged: an upload
    /// may send only the rest (`Backend::put_appended`).
    pub(crate) append_from: Option<u64>,
    pub(crate) unlinked: bool,
    /// Upload in parts while a new file is written in order (see `writestream.rs`).
    pub(crate) stream: StreamWrite,
    /// Mode, owner or times were changed while the file had changes not uploaded yet: a
    /// streaming upload (whose metadata was fixed when it started) is followed by a
    /// metadata update.
    pub(crate) attrs_changed: bool,
    /// Carried in the metadata of every upload of the current changes (see
    /// [`attr::META_UPLOAD`]), so an upload that landed although its reply was lost (a
    /// commit retried after a timeout, a crash before the clean manifest) is recognised as
    /// ours and not taken for a conflict. A new one after each upload.
    pub(crate) upload_id: String,
}

pub(crate) struct OpenEntry {
    pub(crate) state: tokio::sync::Mutex<OpenFile>,
    pub(crate) dirty: AtomicBool,
    /// Set (under `state`) by the last release once it is done with the entry; an open that
    /// raced with that release must not attach to it and creates a fresh one instead.
    pub(crate) retired: AtomicBool,
}

pub(crate) struct Handle {
    ino: u64,
    /// The open state this handle counts in (kept here so a handle never looks it up again
    /// and cannot miss it while another handle of the inode is being released).
    entry: Arc<OpenEntry>,
    writable: bool,
    /// Read state of the configured read path (see [`crate::readpath`]).
    read: tokio::sync::Mutex<Box<dyn ReadPath>>,
}

impl Fs {
    pub(crate) fn is_open_dirty(&self, ino: u64) -> bool {
        lock(&self.open_files)
            .get(&ino)
            .map(|e| e.dirty.load(Ordering::Acquire))
            .unwrap_or(false)
    }

    /// Open files with changes the store does not have yet.
    pub fn pending_uploads(&self) -> usize {
        lock(&self.open_files)
            .values()
            .filter(|e| e.dirty.load(Ordering::Acquire))
            .count()
    }

    pub(crate) fn entry(&self, ino: u64) -> Option<Arc<OpenEntry>> {
        lock(&self.open_files)
            .get(&ino)
            .filter(|e| !e.retired.load(Ordering::Acquire))
            .cloned()
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// Register a handle on `ino`, creating the shared open state from the node if needed,
    /// and count it in that state.
    async fn attach_handle(
        &self,
        ino: u64,
        writable: bool,
        new_file: bool,
    ) -> FsResult<(u64, Arc<OpenEntry>)> {
        let lineage = self.lineage(ino);
        let (entry, node) = loop {
            // A rename moving this file waits for no handle that arrives after it started:
            // this one attaches once the file is at its new key (see `renamegate.rs`).
            self.wait_for_renames(&lineage).await;
            let node = lock(&self.ns.table)
                .get(ino)
                .cloned()
                .ok_or(FsError::NotFound)?;
            let entry = {
                let mut of = lock(&self.open_files);
                if self.moving_over(&lineage) {
                    continue;
                }
                of.entry(ino)
                    .or_insert_with(|| {
                        Arc::new(OpenEntry {
                            state: tokio::sync::Mutex::new(OpenFile {
                                handles: 0,
                                staged: None,
                                base_etag: node.etag.clone(),
                                exists_remote: !new_file,
                                read_etag: node.etag.clone(),
                                size: node.size,
                                missing: 0,
                                append_from: None,
                                unlinked: false,
                                stream: StreamWrite::default(),
                                attrs_changed: false,
                                upload_id: new_upload_id(),
                            }),
                            dirty: AtomicBool::new(false),
                            retired: AtomicBool::new(false),
                        })
                    })
                    .clone()
            };
            let mut st = entry.state.lock().await;
            if entry.retired.load(Ordering::Acquire) {
                // The last release of the previous opening is removing it; wait for that
                // and start from a fresh state.
                drop(st);
                self.forget_entry(ino, &entry);
                continue;
            }
            st.handles += 1;
            drop(st);
            break (entry, node);
        };
        let fh = self.new_fh();
        let h = Handle {
            ino,
            entry: entry.clone(),
            writable,
            read: tokio::sync::Mutex::new(self.new_read_path(node.policy.cacheable)),
        };
        lock(&self.handles).insert(fh, Arc::new(h));
        Ok((fh, entry))
    }

    /// The read path for a new handle; data the policy marks not cacheable bypasses the
    /// file cache.
    fn new_read_path(&self, cacheable: bool) -> Box<dyn ReadPath> {
        let stream = || {
            Stream::new(
                self.cfg.read_block as u64,
                self.cfg.read_ahead_max / self.cfg.read_block.max(1),
            )
        };
        match (self.cfg.read_mode, &self.file_cache) {
            (ReadMode::Direct, _) => Box::new(Direct::new(self.cfg.read_ahead_max as u64)),
            (ReadMode::FileCache, Some(fc)) if cacheable => {
                Box::new(FileCacheReader::new(fc.clone(), stream()))
            }
            (ReadMode::BlockCache | ReadMode::FileCache, _) => Box::new(stream()),
        }
    }

    /// Remove `entry` from the open-file map if it is still the one registered for `ino`.
    fn forget_entry(&self, ino: u64, entry: &Arc<OpenEntry>) {
        let mut of = lock(&self.open_files);
        if of.get(&ino).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            of.remove(&ino);
        }
    }

    /// FUSE open. Revalidates the object first when its attributes are stale
    /// (close-to-open consistency).
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<OpenReply> {
        let kind = self.ns.node_kind(ino)?;
        if kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let acc = flags & libc::O_ACCMODE;
        let writable = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        if writable || flags & libc::O_TRUNC != 0 {
            self.ns.check_node_writable(ino)?;
        }
        if self.entry(ino).is_none() {
            self.ns.revalidate_if_policy_says(ino);
            self.getattr(ino).await?;
        }
        let (fh, entry) = self.attach_handle(ino, writable, false).await?;
        let mut st = entry.state.lock().await;
        if writable
            && flags & libc::O_TRUNC != 0
            && let Err(e) = self.truncate_locked(ino, &entry, &mut st, 0).await
        {
            st.handles -= 1;
            drop(st);
            lock(&self.handles).remove(&fh);
            return Err(e);
        }
        let (size, etag, staged) = (st.size, st.read_etag.clone(), st.staged.is_some());
        drop(st);
        let keep_cache = self.keep_cache(ino, etag.as_deref(), staged) && self.ns.cacheable(ino);
        if !staged && !writable {
            let key = self.ns.key_of(ino)?;
            let h = self.handle(fh)?;
            let src = Source {
                backend: &self.backend,
                key: &key,
                etag: etag.as_deref(),
                size,
                pool: &self.pool,
            };
            h.read.lock().await.opened(&src).await;
        }
        Ok(OpenReply { fh, keep_cache })
    }

    /// Whether the kernel may keep the file's page cache at this open: only when the object
    /// has the same ETag as at its previous open and has no local changes.
    fn keep_cache(&self, ino: u64, etag: Option<&str>, staged: bool) -> bool {
        let mut m = lock(&self.opened_etags);
        match etag {
            Some(e) if !staged => {
                let same = m.get(&ino).is_some_and(|p| p == e);
                if !same {
                    m.insert(ino, e.to_string());
                }
                same
            }
            _ => {
                m.remove(&ino);
                false
            }
        }
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
        let (fh, entry) = self.attach_handle(ino, true, true).await?;
        {
            let mut st = entry.state.lock().await;
            st.staged = Some(self.new_staging_file()?);
            st.size = 0;
            st.stream = self.new_stream();
            entry.dirty.store(true, Ordering::Release);
            self.record_staged(ino, &st, true)?;
        }
        let attr = lock(&self.ns.table)
            .get(ino)
            .map(|n| n.attr(ino))
            .ok_or(FsError::NotFound)?;
        lock(&self.opened_etags).remove(&ino);
        Ok((
            attr,
            OpenReply {
                fh,
                keep_cache: false,
            },
        ))
    }

    pub(crate) fn new_staging_file(&self) -> FsResult<Staged> {
        Ok(Staged::create(&self.cfg.cache_dir.join("staging"))?)
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let h = self.handle(fh)?;
        let entry = &h.entry;
        let (file_size, etag) = {
            let mut st = entry.state.lock().await;
            if st.staged.is_some() {
                return self.read_staged(h.ino, &mut st, offset, size).await;
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
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(FsError::BadHandle);
        }
        let end = offset.saturating_add(data.len() as u64);
        self.check_size(end)?;
        let entry = &h.entry;
        let mut guard = entry.state.lock().await;
        self.begin_change(h.ino, entry, &mut guard, offset).await?;
        let st = &mut *guard;
        if let Some(tmp) = &st.staged {
            tmp.as_file().write_all_at(data, offset)?;
            self.stats
                .bytes_written
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            let cond = upload_cond(st);
            let upload = (&cond, st.upload_id.as_str());
            self.stream_after_write(h.ino, &mut st.stream, tmp.as_file(), (offset, data), upload)
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

    async fn truncate_locked(
        &self,
        ino: u64,
        entry: &OpenEntry,
        st: &mut OpenFile,
        size: u64,
    ) -> FsResult<()> {
        self.check_size(size)?;
        if size == 0 {
            if st.staged.is_none() {
                st.staged = Some(self.new_staging_file()?);
            }
            // Nothing old is left to download or to keep in the store.
            st.missing = 0;
            st.append_from = None;
        }
        self.begin_change(ino, entry, st, size.min(st.size)).await?;
        if let Some(tmp) = &st.staged {
            tmp.as_file().set_len(size)?;
        }
        if size == 0 {
            // The manifest must not keep an append base the file no longer has: recovery
            // would put the old bytes back in front of the new ones.
            self.record_staged(ino, st, true)?;
        }
        self.stream_cancel(&mut st.stream, "truncated");
        if size == 0 && !st.unlinked {
            // Empty again: a rewrite from the start can stream (not for a file without a
            // name: nothing of it is uploaded).
            st.stream = self.new_stream();
        }
        st.size = size;
        if let Some(n) = lock(&self.ns.table).get_mut(ino) {
            n.size = size;
            n.mtime = SystemTime::now();
            n.ctime = n.mtime;
        }
        Ok(())
    }

    /// Truncate (from setattr). Without an open handle the change is uploaded at once.
    pub(crate) async fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        if let Some(entry) = self.entry(ino) {
            let mut st = entry.state.lock().await;
            if !entry.retired.load(Ordering::Acquire) {
                return self.truncate_locked(ino, &entry, &mut st, size).await;
            }
        }
        let (fh, entry) = self.attach_handle(ino, true, false).await?;
        let result = {
            let mut st = entry.state.lock().await;
            match self.truncate_locked(ino, &entry, &mut st, size).await {
                Ok(()) => self.upload_locked(ino, &entry, &mut st).await,
                Err(e) => Err(e),
            }
        };
        self.release(fh).await?;
        result
    }

    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        let mut st = h.entry.state.lock().await;
        self.upload_locked(h.ino, &h.entry, &mut st).await
    }

    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        self.flush(fh).await
    }

    /// Before shutting down: upload every modified open file. Data that cannot be uploaded
    /// is copied to `conflicts/` (a conflict already is). Returns `(uploaded, kept)`.
    pub async fn flush_for_shutdown(&self) -> (usize, usize) {
        let inos: Vec<u64> = lock(&self.open_files).keys().copied().collect();
        let (mut uploaded, mut kept) = (0, 0);
        for ino in inos {
            let Some(entry) = self.entry(ino) else {
                continue;
            };
            let mut st = entry.state.lock().await;
            if !entry.dirty.load(Ordering::Acquire) || st.unlinked {
                continue;
            }
            match self.upload_locked(ino, &entry, &mut st).await {
                Ok(()) => uploaded += 1,
                Err(_) if !entry.dirty.load(Ordering::Acquire) => kept += 1,
                Err(e) => {
                    kept += 1;
                    let key = self.ns.key_of(ino).unwrap_or_default();
                    let p = self.keep_failed(ino, &key, &mut st);
                    entry.dirty.store(false, Ordering::Release);
                    error!(key, saved_to = %p.display(), error = %e, "upload failed at shutdown; local data kept");
                }
            }
        }
        (uploaded, kept)
    }

    pub(crate) async fn mark_unlinked(&self, ino: u64) {
        if let Some(entry) = self.entry(ino) {
            let mut st = entry.state.lock().await;
            self.keep_for_handles(ino, &mut st).await;
            self.mark_unlinked_locked(ino, &entry, &mut st);
        }
    }

    /// Before an open file's object goes away under it (unlink, replaced by a rename): stage
    /// its bytes, so its handles go on reading and writing it as POSIX promises.
    pub(crate) async fn keep_for_handles(&self, ino: u64, st: &mut OpenFile) {
        if st.handles == 0 || st.unlinked {
            return;
        }
        if let Err(e) = self.stage_all(ino, st).await {
            warn!(ino, error = %e, "could not stage an open file whose name is going away; its handles will fail");
        }
    }

    /// [`Fs::mark_unlinked`] with the open file's lock held.
    pub(crate) fn mark_unlinked_locked(&self, ino: u64, entry: &OpenEntry, st: &mut OpenFile) {
        // Mark the staged data clean (nothing to recover: the name is gone); open handles
        // may still read it until they close.
        if self.record_staged(ino, st, false).is_err()
            && let Some(s) = &st.staged
        {
            s.forget();
        }
        st.unlinked = true;
        self.stream_cancel(&mut st.stream, "unlinked");
        entry.dirty.store(false, Ordering::Release);
        if let Some(n) = lock(&self.ns.table).get_mut(ino) {
            n.local_only = false; // nothing of it is to be uploaded any more
        }
    }

    /// FUSE release: last handle of a modified file uploads; data that cannot be uploaded
    /// is kept in `conflicts/` (never dropped silently).
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let h = match lock(&self.handles).remove(&fh) {
            Some(h) => h,
            None => return Err(FsError::BadHandle),
        };
        let entry = h.entry.clone();
        let mut st = entry.state.lock().await;
        st.handles = st.handles.saturating_sub(1);
        if st.handles > 0 {
            return Ok(());
        }
        let mut result = Ok(());
        if entry.dirty.load(Ordering::Acquire)
            && !st.unlinked
            && let Err(e) = self.upload_locked(h.ino, &entry, &mut st).await
        {
            // Still dirty: the upload failed and nothing kept the data yet (a conflict keeps
            // it; a failed metadata update follows a landed upload).
            if entry.dirty.load(Ordering::Acquire) {
                let key = self.ns.key_of(h.ino).unwrap_or_default();
                let p = self.keep_failed(h.ino, &key, &mut st);
                entry.dirty.store(false, Ordering::Release);
                error!(key, saved_to = %p.display(), error = %e, "upload failed at close; local data kept");
            }
            result = Err(e);
        }
        entry.retired.store(true, Ordering::Release);
        drop(st);
        self.forget_entry(h.ino, &entry);
        // A file created here whose upload failed is not in the store: drop its entry.
        let mut t = lock(&self.ns.table);
        if let Some(n) = t.get_mut(h.ino)
            && n.local_only
        {
            n.local_only = false;
            let (p, name) = (n.parent, n.name.clone());
            // Only if the name is still this file's (a rename may have given it to another).
            if t.child(p, &name) == Some(h.ino) {
                t.unlink(p, &name);
            }
        }
        result
    }
}

/// The error of a read pinned to the version a file was opened at: that version replaced
/// or deleted by someone else is ESTALE (the handle's file is gone), not ENOENT.
pub(crate) fn stale(e: BackendError) -> FsError {
    match e {
        BackendError::PreconditionFailed { .. } | BackendError::NotFound { .. } => FsError::Stale,
        e => e.into(),
    }
}
