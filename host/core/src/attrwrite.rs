//! Writing mode, owner and times to the store, at once or coalesced.
//!
//! Why its own module: `rsync -a` sets the mode and then the times of every file it has just
//! closed (chmod, utimensat), each a metadata request of its own, and then renames the file.
//! A change of a closed file is therefore held for a short delay (`write.attr-delay-ms`), so
//! the changes that follow each other go up as one request. A held change is written:
//! - when the delay has passed (a timer task; a failed write is tried again later);
//! - by the copy that renames the file (`Backend::copy_as`: one Copy Blob, CopyObject or GCS
//!   rewrite that sets the new name's metadata, not a metadata write before the copy); before the file is
//!   opened or its directory renamed;
//! - by an upload of the file (its metadata carries the node's attributes), or by fsync; a
//!   change of an open file is held until the delay after its last release;
//! - at unmount (`Fs::flush_for_shutdown`, also run on SIGTERM).
//!
//! A crash within the delay loses the change (as a local file system loses a chmod that was
//! not followed by an fsync); `fsync` writes it. A change of a file that is open (the kernel
//! sends a close's release after close returned, so rsync's chmod often finds the file still
//! open) waits for its last release, its next upload or an fsync: the timer never writes it
//! meanwhile, since the open file's next upload is conditional on the version it read. A
//! change of a directory, or of an open file with changes not uploaded yet, is not held (the
//! latter goes up with the data).
//!
//! Locks: `pending` is a short `std` mutex taken after the namespace's `table` or alone;
//! `writing` (a `tokio` mutex, held across the store request) comes before `table`, and
//! before an open file's `state` is never taken while holding it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blobmount_backend::{Backend, BackendError, Precondition, PutMeta};
use tracing::warn;

use crate::attr::{self, Kind};
use crate::error::{FsError, FsResult};
use crate::inode::Marker;
use crate::namespace::Namespace;
use crate::sync::lock;

/// Shortest wait before a held change that could not be written is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The attribute writer of one core (see the module doc).
pub(crate) struct AttrWriter {
    ns: Arc<Namespace>,
    backend: Arc<dyn Backend>,
    /// How long a change of a closed file is held (zero: written at once).
    delay: Duration,
    /// Inodes whose attributes changed here and are not in the store yet, with when.
    pending: Mutex<HashMap<u64, Instant>>,
    /// Held while a write is under way, so that a rename or open waiting for the held
    /// changes of a file finds them written, not half way.
    writing: tokio::sync::Mutex<()>,
    /// A timer task is scheduled.
    scheduled: AtomicBool,
    /// Files with open handles: their held change waits for the upload or the last close.
    is_open: Box<dyn Fn(u64) -> bool + Send + Sync>,
}

impl AttrWriter {
    pub(crate) fn new(
        ns: Arc<Namespace>,
        backend: Arc<dyn Backend>,
        delay: Duration,
        is_open: Box<dyn Fn(u64) -> bool + Send + Sync>,
    ) -> Arc<AttrWriter> {
        Arc::new(AttrWriter {
            ns,
            backend,
            delay,
            pending: Mutex::new(HashMap::new()),
            writing: tokio::sync::Mutex::new(()),
            scheduled: AtomicBool::new(false),
            is_open,
        })
    }

    /// Whether `ino` has attribute changes the store does not have yet (its node is newer
    /// than anything the store can say).
    pub(crate) fn is_pending(&self, ino: u64) -> bool {
        lock(&self.pending).contains_key(&ino)
    }

    /// Changes held now.
    pub(crate) fn pending_count(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Whether a change of `kind` may be held rather than written at once.
    pub(crate) fn can_defer(&self, kind: Kind) -> bool {
        !self.delay.is_zero() && kind != Kind::Dir
    }

    /// Hold the attribute change of `ino` (already made to its node) and make sure a timer
    /// writes it within the delay.
    pub(crate) fn defer(self: &Arc<Self>, ino: u64) {
        lock(&self.pending).entry(ino).or_insert_with(Instant::now);
        self.schedule(self.delay);
    }

    /// The last handle of `ino` was released: a change held for it is written after the
    /// delay from now (changes may still follow it).
    pub(crate) fn closed(self: &Arc<Self>, ino: u64) {
        let held = match lock(&self.pending).get_mut(&ino) {
            Some(at) => {
                *at = Instant::now();
                true
            }
            None => false,
        };
        if held {
            self.schedule(self.delay);
        }
    }

    /// The held change of `ino` is in the store by other means (an upload carried it) or
    /// has no object any more (unlinked): forget it.
    pub(crate) fn forget(&self, ino: u64) {
        lock(&self.pending).remove(&ino);
    }

    fn schedule(self: &Arc<Self>, after: Duration) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (cannot happen on the FUSE paths): written by the next flush.
            self.scheduled.store(false, Ordering::Release);
            return;
        };
        let me = Arc::downgrade(self);
        rt.spawn(async move {
            tokio::time::sleep(after).await;
            let Some(me) = me.upgrade() else {
                return;
            };
            me.scheduled.store(false, Ordering::Release);
            let failed = me.write_due().await;
            let left = !lock(&me.pending).is_empty();
            if left {
                let wait = if failed {
                    RETRY_AFTER.max(me.delay)
                } else {
                    me.delay
                };
                me.schedule(wait);
            }
        });
    }

    /// Write the held changes that have waited the delay, except those of open files.
    /// Returns whether a write failed (it stays held).
    async fn write_due(&self) -> bool {
        let due: Vec<u64> = lock(&self.pending)
            .iter()
            .filter(|(_, at)| at.elapsed() >= self.delay)
            .map(|(ino, _)| *ino)
            .collect();
        let mut failed = false;
        for ino in due {
            if (self.is_open)(ino) {
                continue;
            }
            if let Err(e) = self.flush(ino).await {
                failed = true;
                let key = self.ns.key_of(ino).unwrap_or_default();
                warn!(key, error = %e, "could not write the mode, owner or times of a file; tried again later");
            }
        }
        failed
    }

    /// Write the held change of `ino`, if any (nothing to do otherwise). A file whose
    /// object is gone has nothing to write.
    pub(crate) async fn flush(&self, ino: u64) -> FsResult<()> {
        let _w = self.writing.lock().await;
        if !self.is_pending(ino) {
            return Ok(());
        }
        match self.write_locked(ino).await {
            Ok(()) | Err(FsError::NotFound) => {
                self.forget(ino);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Write every held change (before a directory rename, at unmount). Returns how many
    /// could not be written (each logged).
    pub(crate) async fn flush_all(&self) -> usize {
        let all: Vec<u64> = lock(&self.pending).keys().copied().collect();
        let mut failed = 0;
        for ino in all {
            if let Err(e) = self.flush(ino).await {
                failed += 1;
                let key = self.ns.key_of(ino).unwrap_or_default();
                warn!(key, error = %e, "could not write the mode, owner or times of a file");
            }
        }
        failed
    }

    /// Write the node's attributes to the store now (a held change of it goes with them).
    pub(crate) async fn write_now(&self, ino: u64) -> FsResult<()> {
        let _w = self.writing.lock().await;
        self.write_locked(ino).await?;
        self.forget(ino);
        Ok(())
    }

    /// Copy the file `ino` from `from` to `to` (a rename) carrying its held change in the
    /// copy itself ([`Backend::copy_as`]: on Azure, S3 and GCS one copy request instead of a
    /// metadata write and a copy), conditional on the version the node knows; the copy gets
    /// `new_type`. `None` when nothing is held (the caller copies as usual); the change is
    /// no longer held once the copy is made.
    pub(crate) async fn copy_carrying(
        &self,
        ino: u64,
        from: &str,
        to: &str,
        new_type: Option<&str>,
    ) -> FsResult<Option<Option<String>>> {
        let _w = self.writing.lock().await;
        if !self.is_pending(ino) {
            return Ok(None);
        }
        let node = lock(&self.ns.table)
            .get(ino)
            .cloned()
            .ok_or(FsError::NotFound)?;
        let pm = PutMeta {
            metadata: node_metadata(&node),
            content_type: new_type.map(str::to_string),
        };
        let (version, stored) = (node.etag.as_deref(), node.content_type.as_deref());
        let copied = self
            .backend
            .copy_as(from, to, &pm, version, stored, &Precondition::None)
            .await?;
        self.forget(ino);
        Ok(Some(copied.etag))
    }

    async fn write_locked(&self, ino: u64) -> FsResult<()> {
        let key = self.ns.key_of(ino)?;
        let node = lock(&self.ns.table)
            .get(ino)
            .cloned()
            .ok_or(FsError::NotFound)?;
        if node.detached {
            return Err(FsError::NotFound);
        }
        let mut meta = node_metadata(&node);
        // Stores that rewrite the object to change its metadata (Azure, S3) would drop its
        // type otherwise.
        let content_type = (node.kind == Kind::File).then(|| {
            crate::contenttype::upload_type(
                &self.ns.cfg.content_types,
                &node.seg,
                node.content_type.as_deref(),
            )
        });
        let put = match node.kind {
            Kind::Dir => {
                let caps = self.backend.capabilities();
                let marker_key = match node.marker {
                    Marker::Folder => key.clone(),
                    Marker::Slash => format!("{key}/"),
                    Marker::None if caps.dir_markers => format!("{key}/"),
                    Marker::None => key.clone(),
                };
                if !caps.dir_markers {
                    meta.insert(attr::META_FOLDER.into(), "true".into());
                }
                let pm = PutMeta {
                    metadata: meta,
                    content_type: None,
                };
                let r = self
                    .backend
                    .put(
                        &marker_key,
                        bytes::Bytes::new(),
                        &pm,
                        &blobmount_backend::Precondition::None,
                    )
                    .await?;
                let marker = if marker_key.ends_with('/') {
                    Marker::Slash
                } else {
                    Marker::Folder
                };
                if let Some(n) = lock(&self.ns.table).get_mut(ino) {
                    n.marker = marker;
                }
                r
            }
            Kind::File | Kind::Symlink => {
                let pm = PutMeta {
                    metadata: meta,
                    content_type: content_type.clone(),
                };
                let (version, stored) = (node.etag.as_deref(), node.content_type.as_deref());
                match self
                    .backend
                    .set_metadata_over(&key, &pm, version, stored)
                    .await
                {
                    Ok(r) => r,
                    Err(BackendError::NotFound { .. }) => return Err(FsError::NotFound),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let mut t = lock(&self.ns.table);
        if let Some(n) = t.get_mut(ino) {
            if node.kind != Kind::Dir {
                n.etag = put.etag.or(n.etag.take());
            }
            if node.kind == Kind::File {
                n.content_type = content_type;
            }
            n.fetched = Some(Instant::now());
        }
        Ok(())
    }
}

/// The user metadata that stores a node's mode, owner and times.
fn node_metadata(node: &crate::inode::Node) -> blobmount_backend::UserMetadata {
    let mut meta = attr::encode(
        &node.meta, node.kind, node.perm, node.uid, node.gid, node.mtime,
    );
    attr::encode_times(&mut meta, node.ctime, node.atime);
    meta
}
