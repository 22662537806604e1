//! A local directory as a store (`file:///PATH`): objects are files under the root, read,
//! written, copied, deleted and listed through the shared data plane ([`ObjectPlane`] on
//! `object_store`'s local file system); directory markers (`dir/` keys) are real directories
//! ([`crate::localdir`]).
//!
//! Why a type of its own: a local directory keeps no user metadata, no checksums and no
//! ETag-conditional writes, so every condition is checked by a HEAD just before the write
//! (not atomic: `conditional_writes` is false), uploads are sparse copies of the staged file
//! renamed into place, and there are no uploads in parts (the trait's defaults apply).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::{Attributes, PutMode};

use crate::api::{
    Backend, Capabilities, ListPage, ObjectInfo, Precondition, PutMeta, PutOutcome, Result,
};
use crate::checksum::{ChecksumKind, StoredSum};
use crate::config::{StoreConfig, StoreUrl};
use crate::connect::build_err;
use crate::error::BackendError;
use crate::localdir;
use crate::objstore::{ObjectPlane, key_to_path, map_err};
use crate::writes::{check_precondition, copy_in_store, rewrite_metadata};

/// One local directory.
pub struct LocalBackend {
    plane: ObjectPlane,
    /// The root; directory markers are real directories below it.
    root: PathBuf,
    /// The store, for where a key lives on disk (uploads copy files there).
    fs: Arc<LocalFileSystem>,
    description: String,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("store", &self.description)
            .finish()
    }
}

impl LocalBackend {
    /// Serve the directory `url` names, creating it if needed.
    pub fn open(url: &StoreUrl, _cfg: &StoreConfig) -> Result<Self> {
        let root = PathBuf::from(&url.bucket);
        std::fs::create_dir_all(&root)
            .map_err(|e| BackendError::Config(format!("file store {}: {e}", root.display())))?;
        let fs = Arc::new(LocalFileSystem::new_with_prefix(&root).map_err(build_err)?);
        Ok(LocalBackend {
            plane: ObjectPlane::new(fs.clone()),
            root,
            fs,
            description: format!("file://{}", url.bucket),
        })
    }

    /// The root if `key` is a directory marker.
    fn marker(&self, key: &str) -> Option<&Path> {
        key.ends_with('/').then_some(self.root.as_path())
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dir_markers: true,
            native_metadata_update: false,
            conditional_writes: false,
            append_uploads: false,
            native_rename: false,
            real_dirs: false,
            posix_access: false,
            max_object_size: None,
            metadata: crate::api::MetadataRules::default(),
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        match self.marker(key) {
            Some(root) => localdir::head(root, key),
            None => self.plane.head(key).await,
        }
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        if range.end <= range.start {
            return Ok(Bytes::new());
        }
        if let Some(root) = self.marker(key) {
            localdir::head(root, key)?;
            return Ok(Bytes::new());
        }
        self.plane.get_range(key, range, if_match).await
    }

    /// User metadata is not kept; the condition is checked by a HEAD just before.
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        _meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        if let Some(root) = self.marker(key) {
            if *cond == Precondition::IfNotExists && localdir::exists(root, key) {
                return Err(BackendError::AlreadyExists { key: key.into() });
            }
            return localdir::create(root, key);
        }
        // An invalid key fails before any HEAD.
        key_to_path(key)?;
        check_precondition(self, key, cond).await?;
        self.plane
            .put(key, data, PutMode::Overwrite, Attributes::new())
            .await
    }

    /// The file is copied there (holes stay holes, memory stays small) and renamed into place.
    async fn put_file(
        &self,
        key: &str,
        file: &Path,
        _meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        tokio::fs::metadata(file).await?;
        check_precondition(self, key, cond).await?;
        let dst = self
            .fs
            .path_to_filesystem(&key_to_path(key)?)
            .map_err(|e| map_err(key, e))?;
        let src = file.to_path_buf();
        tokio::task::spawn_blocking(move || localdir::install_copy(&src, &dst))
            .await
            .map_err(|e| BackendError::Other(format!("local copy task: {e}")))??;
        Ok(PutOutcome { etag: None })
    }

    /// The whole directory in one page (one `readdir`); its own marker first.
    async fn list_page(
        &self,
        prefix: &str,
        _token: Option<String>,
        _max: usize,
    ) -> Result<ListPage> {
        let mut page = self.plane.list_delimited(prefix).await?;
        if let Some(root) = self.marker(prefix)
            && localdir::exists(root, prefix)
        {
            page.objects.insert(0, localdir::head(root, prefix)?);
        }
        Ok(page)
    }

    // `list_under`: the trait's default (one delimiter listing) is as cheap as anything here.

    async fn delete(&self, key: &str) -> Result<()> {
        match self.marker(key) {
            Some(root) => localdir::delete(root, key),
            None => self.plane.delete(key).await,
        }
    }

    async fn copy(&self, from: &str, to: &str, cond: &Precondition) -> Result<PutOutcome> {
        if let Some(root) = self.marker(from) {
            localdir::head(root, from)?;
            return localdir::create(root, to);
        }
        copy_in_store(self, &self.plane, from, to, cond).await
    }

    /// A local directory keeps no content types: a plain copy.
    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        _content_type: &str,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        self.copy(from, to, cond).await
    }

    fn checksum_kind(&self) -> ChecksumKind {
        ChecksumKind::Md5
    }

    /// A local directory keeps no checksum.
    async fn content_checksum(
        &self,
        _key: &str,
        _etag: &str,
        _kind: ChecksumKind,
    ) -> Result<Option<StoredSum>> {
        Ok(None)
    }

    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        if let Some(root) = self.marker(key) {
            // A directory keeps no user metadata (like files on this store).
            localdir::head(root, key)?;
            return Ok(PutOutcome { etag: None });
        }
        rewrite_metadata(self, key, meta, if_match).await
    }

    // `put_appended` and `start_upload`: the trait's defaults (`None`): a local directory
    // gains nothing from either, the core copies the whole file at close.
}
