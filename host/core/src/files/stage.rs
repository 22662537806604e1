//! The staging file of an open file: what it holds of the object's old content and how
//! that content reaches the store again.
//!
//! Why its own module: a change to an existing object is staged before it is uploaded, and
//! for an append to a large object staging the old bytes would be most of the cost (a
//! download at the first write, an upload of everything at close). So the staging file may
//! hold only the new bytes, with the old ones left as a hole (`missing`) that is filled only
//! when something needs them: a read of them, a write among them, a store that cannot take
//! an append. Everything that reads the staging file goes through here so no path sees the
//! hole as zeros.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use blobmount_backend::{AppendBase, BackendError, Precondition, PutMeta, PutOutcome};
use bytes::Bytes;
use tracing::warn;

use super::{Files, OpenEntry, OpenFile};
use crate::error::stale;
use crate::error::{FsError, FsResult};
use crate::staging::Staged;
use crate::sync::lock;
use crate::writestream::StreamWrite;

impl Files {
    /// Before a change of the file that leaves its bytes before `keep` as they are: stage it
    /// and record that it is dirty. A change below the part the store could keep (see
    /// `append_from`) stages the old bytes and gives that up.
    pub(crate) async fn begin_change(
        &self,
        ino: u64,
        entry: &OpenEntry,
        st: &mut OpenFile,
        keep: u64,
    ) -> FsResult<()> {
        self.ensure_staged(ino, st, keep).await?;
        let below_base = st.append_from.is_some_and(|b| keep < b);
        if below_base {
            self.fill_missing(ino, st).await?;
            st.append_from = None;
        }
        if !entry.dirty.load(Ordering::Acquire) || below_base {
            self.record_staged(ino, st, true)?;
            entry.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Make sure the file has a local staging file. The old content is downloaded into it,
    /// except for a change that keeps all of it (an append) on a store that can take only the
    /// new bytes: then the old bytes stay a hole (`missing`) until something needs them.
    async fn ensure_staged(&self, ino: u64, st: &mut OpenFile, keep: u64) -> FsResult<()> {
        if st.staged.is_some() {
            return Ok(());
        }
        let tmp = self.new_staging_file()?;
        let lazy =
            keep >= st.size && st.base_etag.is_some() && self.backend.capabilities().append_uploads;
        if st.exists_remote && st.size > 0 {
            if lazy {
                tmp.as_file().set_len(st.size)?;
                st.missing = st.size;
                st.append_from = Some(st.size);
            } else {
                let key = self.ns.key_of(ino)?;
                self.download_into(tmp.as_file(), &key, st.size, st.base_etag.as_deref())
                    .await
                    .map_err(stale)?;
            }
        }
        st.staged = Some(tmp);
        Ok(())
    }

    /// Stage every byte of the file (downloading what is not local yet): its name is about
    /// to go (unlink, or replaced by a rename) while handles are open, and they must keep
    /// reading and writing it after its object is gone.
    pub(crate) async fn stage_all(&self, ino: u64, st: &mut OpenFile) -> FsResult<()> {
        self.ensure_staged(ino, st, 0).await?;
        self.fill_missing(ino, st).await?;
        st.append_from = None;
        Ok(())
    }

    /// Download the old bytes an append left out of the staging file.
    async fn fill_missing(&self, ino: u64, st: &mut OpenFile) -> FsResult<()> {
        if st.missing == 0 {
            return Ok(());
        }
        let key = self.ns.key_of(ino)?;
        self.fill_missing_of(&key, st).await.map_err(stale)
    }

    /// [`Fs::fill_missing`] for a caller that has the key and wants the store's error.
    async fn fill_missing_of(&self, key: &str, st: &mut OpenFile) -> Result<(), BackendError> {
        let Some(tmp) = &st.staged else {
            return Ok(());
        };
        if st.missing > 0 {
            self.download_into(tmp.as_file(), key, st.missing, st.base_etag.as_deref())
                .await?;
            st.missing = 0;
        }
        Ok(())
    }

    /// Read from the staging file; bytes an append never staged come from the store. (`st`
    /// is `&mut` only so that the future is `Send`: `OpenFile` is not `Sync`.)
    pub(crate) async fn read_staged(
        &self,
        ino: u64,
        st: &mut OpenFile,
        offset: u64,
        size: u32,
    ) -> FsResult<Bytes> {
        let Some(tmp) = &st.staged else {
            return Err(FsError::BadHandle);
        };
        let len = (size as u64).min(st.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        let from_store = st.missing.saturating_sub(offset).min(len as u64) as usize;
        if from_store > 0 {
            let key = self.ns.key_of(ino)?;
            let end = offset + from_store as u64;
            let old = self
                .backend
                .get_range(&key, offset..end, st.base_etag.as_deref())
                .await
                .map_err(stale)?;
            if old.len() != from_store {
                return Err(FsError::Stale);
            }
            buf[..from_store].copy_from_slice(&old);
        }
        let n = read_full_at(
            tmp.as_file(),
            &mut buf[from_store..],
            offset + from_store as u64,
        )?;
        buf.truncate(from_store + n);
        Ok(Bytes::from(buf))
    }

    /// Upload the staged file: only the appended bytes when the store can keep the old ones,
    /// else all of it (downloading first whatever an append left out).
    pub(crate) async fn upload_staged(
        &self,
        key: &str,
        st: &mut OpenFile,
        path: &std::path::Path,
        pm: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome, BackendError> {
        let base = (st.append_from, st.base_etag.as_deref(), st.size);
        if let Some(out) = self.try_append(key, path, base, pm, cond).await? {
            self.stats.append_uploads.fetch_add(1, Ordering::Relaxed);
            return Ok(out);
        }
        self.fill_missing_of(key, st).await?;
        self.backend.put_file(key, path, pm, cond).await
    }

    pub(crate) fn new_staging_file(&self) -> FsResult<Staged> {
        Ok(Staged::create(&self.cfg.cache_dir.join("staging"))?)
    }

    pub(crate) async fn truncate_locked(
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
        st.stream.cancel("truncated");
        if size == 0 && !st.unlinked {
            // Empty again: a rewrite from the start can stream (not for a file without a
            // name: nothing of it is uploaded).
            st.stream = StreamWrite::for_new_file(&self.cfg);
        }
        st.size = size;
        if let Some(n) = lock(&self.ns.table).get_mut(ino) {
            n.size = size;
            n.mtime = SystemTime::now();
            n.ctime = n.mtime;
        }
        Ok(())
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
        st.stream.cancel("unlinked");
        entry.dirty.store(false, Ordering::Release);
        if let Some(n) = lock(&self.ns.table).get_mut(ino) {
            n.local_only = false; // nothing of it is to be uploaded any more
        }
    }

    /// Upload the staged `data` of `key` as an append, sending only what follows its first
    /// `append_from` bytes (which the object at `base_etag` holds unchanged), when there is
    /// something appended, the upload replaces that version and the store can take it.
    /// `Ok(None)`: not so; nothing was sent and the caller uploads the whole content.
    pub(crate) async fn try_append(
        &self,
        key: &str,
        data: &Path,
        (append_from, base_etag, size): (Option<u64>, Option<&str>, u64),
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>, BackendError> {
        let (Some(len), Some(etag), Precondition::IfMatch(_)) = (append_from, base_etag, cond)
        else {
            return Ok(None);
        };
        if len == 0 || len >= size {
            return Ok(None);
        }
        let base = AppendBase {
            etag: etag.to_string(),
            len,
        };
        self.backend
            .put_appended(key, &base, data, meta, cond)
            .await
    }

    /// Download the first `len` bytes of `key` (only while it has `etag`, when given) into
    /// the same offsets of `file`.
    pub(crate) async fn download_into(
        &self,
        file: &File,
        key: &str,
        len: u64,
        etag: Option<&str>,
    ) -> Result<(), BackendError> {
        const CHUNK: u64 = 8 * 1024 * 1024;
        let mut off = 0;
        while off < len {
            let end = (off + CHUNK).min(len);
            let data = self.backend.get_range(key, off..end, etag).await?;
            if data.is_empty() {
                // The object is shorter than it was: it changed.
                return Err(BackendError::PreconditionFailed { key: key.into() });
            }
            // Up to 8 MiB per chunk: off the async workers.
            crate::blocking::run(|| file.write_all_at(&data, off))?;
            off += data.len() as u64;
        }
        Ok(())
    }
}

fn read_full_at(f: &std::fs::File, buf: &mut [u8], mut off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], off)?;
        if n == 0 {
            break;
        }
        done += n;
        off += n as u64;
    }
    Ok(done)
}
