//! The storage seam itself: the [`Backend`] and [`PartUpload`] traits and the values they
//! exchange (object info, list pages, preconditions, write attributes, capabilities).
//!
//! Why a module of its own: every store module depends on these and on nothing of each
//! other. Keeping them out of the crate root (which picks a store in [`crate::open`]) keeps
//! the graph of the crate's modules free of circles: the root depends on the stores, the
//! stores on this module, and this module on nothing but the error type.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::checksum::{ChecksumKind, StoredSum};
use crate::error::BackendError;

/// Result type of every backend call.
pub type Result<T> = std::result::Result<T, BackendError>;

/// User metadata of an object (`x-ms-meta-*`, `x-amz-meta-*`, `x-goog-meta-*`), keys lower-case.
pub type UserMetadata = BTreeMap<String, String>;

/// What a store reports about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full object key (including any mount prefix).
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: SystemTime,
    /// `None` when the call that produced this info does not return metadata (listings).
    pub metadata: Option<UserMetadata>,
    pub content_type: Option<String>,
}

impl ObjectInfo {
    /// An object known only by its key: empty, no ETag, no metadata, epoch mtime.
    pub fn named(key: String) -> ObjectInfo {
        ObjectInfo {
            key,
            size: 0,
            etag: None,
            last_modified: SystemTime::UNIX_EPOCH,
            metadata: None,
            content_type: None,
        }
    }
}

/// One page of a delimiter listing.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// Objects directly under the prefix (the key equal to the prefix itself, a directory
    /// marker, is included; the caller decides what it means).
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes, each ending with `/`.
    pub prefixes: Vec<String>,
    /// Token for the next page; `None` when the listing is complete.
    pub next: Option<String>,
}

/// Condition attached to a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditional overwrite.
    None,
    /// Only if the object currently has this ETag (replacing what we read). A missing object
    /// fails it with `PreconditionFailed`, like one with another ETag.
    IfMatch(String),
    /// Only if no object exists at the key (creating).
    IfNotExists,
}

/// Attributes written with an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutMeta {
    pub metadata: UserMetadata,
    pub content_type: Option<String>,
}

/// Result of a successful write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    pub etag: Option<String>,
}

/// What a backend can do natively; the core picks strategies from this.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capabilities {
    /// Keys ending in `/` (directory markers) can be written and read.
    pub dir_markers: bool,
    /// Metadata can be replaced without rewriting the data.
    pub native_metadata_update: bool,
    /// Writes honour `Precondition::IfMatch` / `IfNotExists` atomically.
    pub conditional_writes: bool,
    /// [`Backend::put_appended`] can send only the new bytes of an appended object (it may
    /// still decline a particular object).
    pub append_uploads: bool,
    /// Largest object this backend can write (the store's limit, or what its uploads in
    /// parts reach); `None`: no limit worth checking. A write past it fails at once (EFBIG)
    /// instead of at the upload.
    pub max_object_size: Option<u64>,
    /// What the store accepts as user metadata (the core checks extended attributes
    /// against it before asking the store, so a bad name is EINVAL, too much is E2BIG).
    pub metadata: MetadataRules,
    /// [`Backend::rename`] moves a file or a whole directory atomically in one request
    /// (ADLS Gen2 with a hierarchical namespace): no copy, no journal.
    pub native_rename: bool,
    /// Directories are real ([`Backend::create_dir`], [`Backend::delete_dir`]); the store
    /// refuses to delete a non-empty one.
    pub real_dirs: bool,
    /// Paths carry POSIX owner, group, permissions and ACLs ([`Backend::get_access`],
    /// [`Backend::set_access`]); heads report them under [`ACCESS_OWNER`], [`ACCESS_GROUP`]
    /// and [`ACCESS_PERMISSIONS`].
    pub posix_access: bool,
}

/// Pseudo-keys under which a store with [`Capabilities::posix_access`] reports a path's
/// owner, group and permissions in [`ObjectInfo::metadata`]. None is a valid Azure metadata
/// name (a C identifier has no `-`), so they never collide with user metadata; stores never
/// write them as metadata.
pub const ACCESS_OWNER: &str = "x-ms-owner";
pub const ACCESS_GROUP: &str = "x-ms-group";
pub const ACCESS_PERMISSIONS: &str = "x-ms-permissions";

/// True for the pseudo-keys above (a store drops them from metadata it writes).
pub fn is_access_key(k: &str) -> bool {
    matches!(k, ACCESS_OWNER | ACCESS_GROUP | ACCESS_PERMISSIONS)
}

/// POSIX access of one path on a store with [`Capabilities::posix_access`], as the DFS
/// API's Get Access Control reports it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PathAccess {
    /// Owner (numeric id as a string for mounts, an Entra object id, or `$superuser`).
    pub owner: String,
    pub group: String,
    /// Symbolic permissions, `rwxr-x---` (with a trailing `+` when an ACL extends them).
    pub permissions: String,
    /// The access ACL, `user::rwx,group::r-x,other::---[,user:ID:rwx,...,mask::rwx]`.
    pub acl: String,
}

/// A change of access (Path - Update `action=setAccessControl`): what is `None` stays.
/// `permissions` and `acl` exclude each other (the DFS API refuses both at once).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AccessUpdate {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub permissions: Option<String>,
    pub acl: Option<String>,
}

/// Conditions of a native rename.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RenameCond {
    /// Only if the source still has this ETag (`x-ms-source-if-match`).
    pub source_etag: Option<String>,
    /// Only if nothing exists at the destination (`If-None-Match: *`); otherwise a file
    /// replaces a file and a directory an empty directory.
    pub no_replace: bool,
}

/// `rwxr-x---` of the low nine bits of `mode` (set-id and sticky bits as `s`/`S`/`t`/`T`).
pub fn permissions_string(mode: u16) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, lower) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => lower,
            (true, false) => lower.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// The mode bits of a symbolic permissions string (`rwxr-x---`, optionally `+`-suffixed;
/// also the octal form `0750` the DFS API accepts). `None` when it is neither.
pub fn parse_permissions(s: &str) -> Option<u16> {
    let s = s.trim_end_matches('+');
    if s.len() == 4 && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return u16::from_str_radix(s, 8).ok();
    }
    let b = s.as_bytes();
    if b.len() != 9 {
        return None;
    }
    let mut mode = 0u16;
    for (i, (shift, special, lower)) in [(6, 0o4000, b's'), (3, 0o2000, b's'), (0, 0o1000, b't')]
        .into_iter()
        .enumerate()
    {
        let (r, w, x) = (b[i * 3], b[i * 3 + 1], b[i * 3 + 2]);
        match r {
            b'r' => mode |= 4 << shift,
            b'-' => {}
            _ => return None,
        }
        match w {
            b'w' => mode |= 2 << shift,
            b'-' => {}
            _ => return None,
        }
        match x {
            b'x' => mode |= 1 << shift,
            b'-' => {}
            c if c == lower => mode |= (1 << shift) | special,
            c if c == lower.to_ascii_uppercase() => mode |= special,
            _ => return None,
        }
    }
    Some(mode)
}

/// What a store accepts as user metadata: names, values, and how much in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataRules {
    /// The store keeps user metadata at all (`file://` does not).
    pub kept: bool,
    pub names: MetaNames,
    /// Values travel as HTTP headers: printable ASCII, no leading or trailing blanks.
    pub ascii_values: bool,
    /// Most bytes of names plus values in all (`0`: no limit the core checks).
    pub max_total: usize,
}

/// Which metadata names a store accepts (lower-case in every case: stores report keys so).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetaNames {
    /// Any non-empty UTF-8 without control characters (GCS JSON API, memory).
    #[default]
    Any,
    /// An HTTP header token (`x-amz-meta-NAME`): ASCII letters, digits and ``!#$%&'*+-.^_`|~``.
    HeaderToken,
    /// A C# identifier (Azure): ASCII letters, digits and `_`, not starting with a digit.
    CIdentifier,
}

/// The version of an object an append starts from: the object had `etag` and its first
/// `len` bytes are unchanged in the new content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendBase {
    pub etag: String,
    pub len: u64,
}

/// The storage seam. Keys are full object keys (`prefix/dir/file`); the backend never
/// interprets them beyond what the store does.
#[async_trait]
pub trait Backend: Send + Sync + Debug {
    /// Human-readable description for logs (never contains secrets).
    fn describe(&self) -> String;

    fn capabilities(&self) -> Capabilities;

    /// Object properties including user metadata.
    async fn head(&self, key: &str) -> Result<ObjectInfo>;

    /// Bytes `range` of the object. With `if_match`, fails with `PreconditionFailed` if the
    /// object changed. A range past the end is clipped (to no bytes when it starts at or after
    /// the end); an empty range returns no bytes without asking the store.
    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes>;

    /// Write a whole object from memory.
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome>;

    /// Write a whole object from a local file (large files go up in parallel parts).
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome>;

    /// One page of the listing of `prefix` (which is empty or ends with `/`) with `/` as
    /// delimiter.
    async fn list_page(&self, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage>;

    /// Up to `max` objects whose keys start with `prefix`, at any depth (a listing without
    /// delimiter; `prefixes` and `next` are empty). This answers "is there anything under this
    /// directory" in one cheap call: a delimiter listing with a small page is cheap on the
    /// clouds but quadratic on Azurite, which scans the whole prefix once per entry it skips
    /// (30 s for one lookup of a directory holding a 10k-object subdirectory). The default
    /// uses [`Backend::list_page`] (prefixes then stand in as keys), right for stores where
    /// that is cheap.
    async fn list_under(&self, prefix: &str, max: usize) -> Result<ListPage> {
        Ok(prefixes_as_objects(
            self.list_page(prefix, None, max).await?,
        ))
    }

    /// Delete an object. Deleting a missing object is `NotFound`, except on S3, whose DELETE
    /// answers success either way.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Server-side copy of `from` (data and user metadata) to `to`, conditional on `cond`
    /// about `to`. `IfNotExists` is `NotSupported` on S3 (`object_store` needs a
    /// copy-if-not-exists extension there). The ETag is reported where the store reports
    /// one for a copy (GCS, memory), else `None`.
    async fn copy(&self, from: &str, to: &str, cond: &Precondition) -> Result<PutOutcome>;

    /// [`Backend::copy`], after which `to` has the content type `content_type` instead of
    /// the source's (a renamed file takes its new name's type); data and user metadata are
    /// the source's. How each store does it, and what it costs over a plain copy: GCS and
    /// Azure copy, then set the type in place (a PATCH conditional on the copy's generation;
    /// Get and Set Blob Properties, giving the copy's other HTTP headers again since Azure
    /// clears those not given); S3 reads the source's metadata (HEAD) and copies with
    /// `x-amz-metadata-directive: REPLACE`, conditional on the version read; memory in the
    /// copy itself; `file://` keeps no content types and just copies. Where the type is set
    /// after the copy, failing to set it is logged and the copy (with the source's type)
    /// stands, so a rename does not fail half done.
    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        cond: &Precondition,
    ) -> Result<PutOutcome>;

    /// [`Backend::copy`] that gives `to` the user metadata `meta.metadata` instead of the
    /// source's, and the content type `meta.content_type` where given (`stored_type`: the
    /// source's, when the caller knows it), conditional on `from` still being version
    /// `source_etag` when given (`PreconditionFailed` otherwise) and on `cond` about `to`.
    /// A rename carries a file's held mode and times this way. One request where the store
    /// takes metadata with a copy (Azure Copy Blob with `x-ms-meta-*`, S3 CopyObject with
    /// `REPLACE`, GCS a rewrite whose body is the copy's resource, memory), plus Azure's
    /// type change when the type changes; S3 and GCS read the source first (HEAD: S3 for
    /// its metadata, GCS for the generation `source_etag` is), and GCS reads the copy's
    /// ETag after, as for every GCS write. Neither writes the source. The default sets the
    /// metadata on the source first, then copies (typed when the type changes): what a
    /// rename cost before (file://).
    async fn copy_as(
        &self,
        from: &str,
        to: &str,
        meta: &PutMeta,
        source_etag: Option<&str>,
        stored_type: Option<&str>,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let kept = PutMeta {
            metadata: meta.metadata.clone(),
            content_type: stored_type.map(str::to_string),
        };
        self.set_metadata_over(from, &kept, source_etag, stored_type)
            .await?;
        match &meta.content_type {
            Some(ct) if stored_type != Some(ct.as_str()) => {
                self.copy_typed(from, to, ct, cond).await
            }
            Some(_) | None => self.copy(from, to, cond).await,
        }
    }

    /// The kind of checksum reads are best verified with on this store: the cheapest one it
    /// keeps for every object (GCS: CRC32C, which composite objects have too; the others:
    /// MD5). No I/O: a reader asks before its first byte, so it runs one hasher, not two.
    fn checksum_kind(&self) -> ChecksumKind;

    /// The checksum of kind `kind` of the object's content as the store reports it (MD5:
    /// Azure `Content-MD5`, GCS `x-goog-hash: md5=`, S3 ETags of single-part uploads without
    /// KMS or customer keys; CRC32C: GCS `x-goog-hash: crc32c=`); `None` when the store
    /// reports none of that kind. One request at most. Fails with `PreconditionFailed` when
    /// the object no longer has `etag`, so the answer always belongs to the version that was
    /// read (file:// keeps no checksum and answers `None` without looking).
    async fn content_checksum(
        &self,
        key: &str,
        etag: &str,
        kind: ChecksumKind,
    ) -> Result<Option<StoredSum>>;

    /// The MD5 the store reports ([`Backend::content_checksum`] of kind MD5), for what shows
    /// an MD5 whatever the store prefers (the `content_md5` xattr).
    async fn content_md5(&self, key: &str, etag: &str) -> Result<Option<[u8; 16]>> {
        Ok(
            match self.content_checksum(key, etag, ChecksumKind::Md5).await? {
                Some(StoredSum::Md5(d)) => Some(d),
                Some(StoredSum::Crc32c(_)) | None => None,
            },
        )
    }

    /// Replace user metadata (and content type) of an existing object, conditional on
    /// `if_match` when given.
    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome>;

    /// [`Backend::set_metadata`] when the caller knows the content type the store holds
    /// for version `if_match` (`stored_type`, from the upload that made it): a store whose
    /// type is a property apart (Azure) needs not read it first.
    async fn set_metadata_over(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
        stored_type: Option<&str>,
    ) -> Result<PutOutcome> {
        let _ = stored_type;
        self.set_metadata(key, meta, if_match).await
    }

    /// Replace `key` with the first `base.len` bytes of its version `base.etag` followed by
    /// the bytes of the local `file` from offset `base.len` to its end, sending only what is
    /// new where the store can reuse the old bytes in place (Azure committed blocks). Bytes
    /// `[0, base.len)` of `file` are never read (they may be a hole). Conditional on `cond`
    /// like any write. `Ok(None)`: not possible for this store or this object (its layout,
    /// its size); nothing was changed and the caller uploads the whole content instead.
    async fn put_appended(
        &self,
        _key: &str,
        _base: &AppendBase,
        _file: &Path,
        _meta: &PutMeta,
        _cond: &Precondition,
    ) -> Result<Option<PutOutcome>> {
        Ok(None)
    }

    /// Start an upload in parts of `key` (see [`crate::upload`]); `None` when the store has no
    /// such uploads, and the caller writes whole objects instead. `cond` is the condition
    /// the commit will carry (stores that fix it when the upload starts, GCS, need it here;
    /// [`PartUpload::complete`] must then be given the same).
    async fn start_upload(
        self: Arc<Self>,
        _key: &str,
        _meta: &PutMeta,
        _cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        Ok(None)
    }

    /// Move the file or directory `from` (with everything under it) to `to` in one atomic
    /// request (Path - Create with `x-ms-rename-source`), only where
    /// [`Capabilities::native_rename`]. A missing source or destination parent is
    /// `NotFound`, a source with another ETag `PreconditionFailed`, an existing destination
    /// with `no_replace` `AlreadyExists`, a non-empty destination directory `NotEmpty`.
    async fn rename(&self, _from: &str, _to: &str, _cond: &RenameCond) -> Result<PutOutcome> {
        Err(BackendError::NotSupported("native rename".into()))
    }

    /// Create the directory `key` (Path - Create `resource=directory`, conditional on
    /// absence), with the permissions `mode` where given; only where
    /// [`Capabilities::real_dirs`]. An existing path is `AlreadyExists`.
    async fn create_dir(&self, _key: &str, _mode: Option<u16>) -> Result<()> {
        Err(BackendError::NotSupported("real directories".into()))
    }

    /// Delete the directory `key` (Path - Delete); without `recursive` a non-empty one is
    /// `NotEmpty`, a file `KindMismatch`.
    async fn delete_dir(&self, _key: &str, _recursive: bool) -> Result<()> {
        Err(BackendError::NotSupported("real directories".into()))
    }

    /// Owner, group, permissions and ACL of `key` (Path - Get Properties
    /// `action=getAccessControl`); only where [`Capabilities::posix_access`].
    async fn get_access(&self, _key: &str) -> Result<PathAccess> {
        Err(BackendError::NotSupported("POSIX access control".into()))
    }

    /// Change owner, group, permissions or ACL of `key` (Path - Update
    /// `action=setAccessControl`). Returns the path's ETag after the change when the store
    /// reports one (a store may give the path a new version for it: later conditional
    /// requests must use that one).
    async fn set_access(&self, _key: &str, _update: &AccessUpdate) -> Result<Option<String>> {
        Err(BackendError::NotSupported("POSIX access control".into()))
    }
}

/// A delimiter page as a [`Backend::list_under`] answer: each common prefix becomes an entry
/// keyed by the prefix, and there is no next page.
pub fn prefixes_as_objects(mut page: ListPage) -> ListPage {
    for p in std::mem::take(&mut page.prefixes) {
        page.objects.push(ObjectInfo::named(p));
    }
    page.next = None;
    page
}

/// One upload in progress. Parts are numbered in the order `put_part` is called; all but
/// the last must have the same size (at least 5 MiB on S3).
#[async_trait]
pub trait PartUpload: Send + Debug {
    /// Send the next part. The returned future runs independently of the upload (parts may
    /// be in flight concurrently) and must complete before [`PartUpload::complete`].
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'static, Result<()>>;

    /// Commit all parts as the object, conditional on `cond`. Where the store cannot check
    /// the condition atomically with the commit, it is checked just before.
    async fn complete(self: Box<Self>, cond: &Precondition) -> Result<PutOutcome>;

    /// Discard the parts; nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<()>;
}
