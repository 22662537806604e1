//! Extended attributes: `user.NAME` is the object's user metadata key `NAME` (Azure
//! `x-ms-meta-*`, S3 `x-amz-meta-*`, GCS custom metadata), read, listed, set and removed;
//! `user.blobmount.*` shows what blobmount knows about the object (ETag, content type, MD5,
//! key, and the attributes it keeps in metadata), read-only.
//!
//! Why here: the names, the store's rules for metadata (checked before a request, so a bad
//! name is EINVAL and too much is E2BIG instead of an HTTP 400 turned EIO) and the
//! namespaces are decided in the core, which tests drive without a kernel; the FUSE
//! adapter only decodes. Writes reuse the one attribute-writing path ([`Fs::change_attrs`]):
//! a file open with changes takes the new metadata with its pending upload, a clean one gets
//! one metadata update conditional on the ETag it was read at (a concurrent change outside
//! is ESTALE, and the new value is not kept). Reads answer from the cached node, so an
//! attribute of a file whose `stat` is fresh costs no request.
//!
//! On a store with POSIX access (ADLS Gen2 HNS), `system.posix_acl_access` and
//! `user.blobmount.acl` are the path's access ACL ([`crate::acl`]).
//!
//! The keys blobmount keeps for itself ([`attr::INTERNAL_KEYS`]) never appear as `user.*`
//! and cannot be set there (EPERM). `security.*`, `system.*` and `trusted.*` are ENOTSUP
//! (never ENOSYS, which would make the kernel stop asking for any attribute).
//! docs/semantics.md ("Extended attributes") has the full table.

use blobmount_backend::{MetaNames, MetadataRules, UserMetadata};

use crate::acl;
use crate::attr::{self, Kind};
use crate::error::{FsError, FsResult};
use crate::fs::Fs;
use crate::inode::{Marker, ROOT_INO};
use crate::sync::lock;

/// The namespace that maps to user metadata.
pub const USER_PREFIX: &str = "user.";
/// blobmount's read-only namespace (inside `user.` so every tool and kernel passes it).
pub const OWN_PREFIX: &str = "user.blobmount.";
/// The names under [`OWN_PREFIX`]. They are readable by name and not listed by listxattr,
/// so `cp -a` and `rsync -X` do not copy them onto other files (as CephFS does with its
/// virtual attributes).
pub const OWN_NAMES: &[&str] = &[
    "etag",
    "content_type",
    "content_md5",
    "key",
    "kind",
    "mode",
    "uid",
    "gid",
    "mtime",
    "ctime",
    "atime",
];
/// Bytes kept free for the upload id every upload adds (`blobmount_upload` = 32 hex digits).
const UPLOAD_ID_RESERVE: usize = attr::META_UPLOAD.len() + 32;

/// `setxattr` flags (`XATTR_CREATE`, `XATTR_REPLACE`).
const XATTR_CREATE: i32 = libc::XATTR_CREATE;
const XATTR_REPLACE: i32 = libc::XATTR_REPLACE;

/// What an extended attribute name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrName<'a> {
    /// `user.NAME`: user metadata key `NAME`.
    User(&'a str),
    /// `user.blobmount.NAME`.
    Own(&'a str),
    /// `security.*`, `system.*`, `trusted.*`, anything else.
    Other,
}

/// The error for a name outside `user.*` (`security.*`, `system.*`, `trusted.*`): ENOTSUP.
pub fn other_namespace() -> FsError {
    FsError::NotSupported("only user.* extended attributes are kept")
}

pub fn parse_name(name: &str) -> XattrName<'_> {
    if let Some(own) = name.strip_prefix(OWN_PREFIX) {
        XattrName::Own(own)
    } else if let Some(key) = name.strip_prefix(USER_PREFIX) {
        XattrName::User(key)
    } else {
        XattrName::Other
    }
}

/// The reply to getxattr/listxattr for a caller's buffer of `size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// Asked with size 0: how many bytes the answer needs.
    Size(u32),
    Data(Vec<u8>),
}

/// `value` for a buffer of `size` bytes: its size when `size` is 0, ERANGE when it does not fit.
pub fn sized(value: Vec<u8>, size: u32) -> FsResult<XattrReply> {
    let len = u32::try_from(value.len()).map_err(|_| FsError::TooBig("attribute too large"))?;
    if size == 0 {
        Ok(XattrReply::Size(len))
    } else if len > size {
        Err(FsError::BufferTooSmall)
    } else {
        Ok(XattrReply::Data(value))
    }
}

/// Whether the store accepts `key` as a user metadata name (EINVAL if not).
pub fn check_name(rules: &MetadataRules, key: &str) -> FsResult<()> {
    if key.is_empty() {
        return Err(FsError::Invalid("empty attribute name"));
    }
    if key.chars().any(|c| c.is_uppercase()) {
        // Every store reports metadata names in lower case: `user.Foo` would come back as
        // `user.foo`. Refused rather than silently renamed.
        return Err(FsError::Invalid(
            "metadata names are lower case on object stores",
        ));
    }
    let ok = match rules.names {
        MetaNames::Any => !key.chars().any(char::is_control),
        MetaNames::HeaderToken => key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
        MetaNames::CIdentifier => {
            key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !key.as_bytes()[0].is_ascii_digit()
        }
    };
    if ok {
        Ok(())
    } else {
        Err(FsError::Invalid(
            "attribute name has characters this store does not accept in metadata names",
        ))
    }
}

/// The value as the store can keep it (EINVAL if it cannot).
pub fn check_value(rules: &MetadataRules, value: &[u8]) -> FsResult<String> {
    let v = std::str::from_utf8(value)
        .map_err(|_| FsError::Invalid("metadata values are text (UTF-8)"))?;
    if rules.ascii_values {
        let printable = v.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !printable || v.trim() != v {
            return Err(FsError::Invalid(
                "this store keeps metadata values as HTTP headers: printable ASCII, no leading or trailing blanks",
            ));
        }
    } else if v.chars().any(char::is_control) {
        return Err(FsError::Invalid(
            "metadata values cannot hold control characters",
        ));
    }
    Ok(v.to_string())
}

/// Bytes metadata `m` counts against a store's limit (names plus values).
pub fn metadata_size(m: &UserMetadata) -> usize {
    m.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// What a getxattr or listxattr answers from: the node as last confirmed.
struct View {
    kind: Kind,
    marker: Marker,
    meta: UserMetadata,
    etag: Option<String>,
    content_type: Option<String>,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: std::time::SystemTime,
    ctime: std::time::SystemTime,
    atime: Option<std::time::SystemTime>,
}

/// The node's attributes, revalidated (one HEAD) only when its stat has expired.
async fn xattr_view(fs: &Fs, ino: u64) -> FsResult<View> {
    fs.getattr(ino).await?;
    let t = lock(&fs.ns.table);
    let n = t.get(ino).ok_or(FsError::NotFound)?;
    Ok(View {
        kind: n.kind,
        marker: n.marker,
        meta: n.meta.clone(),
        etag: n.etag.clone(),
        content_type: n.content_type.clone(),
        perm: n.perm,
        uid: n.uid,
        gid: n.gid,
        mtime: n.mtime,
        ctime: n.ctime,
        atime: n.atime,
    })
}

/// FUSE getxattr: the value of `name` on `ino` (see the module doc).
pub(crate) async fn getxattr(fs: &Fs, ino: u64, name: &str) -> FsResult<Vec<u8>> {
    match name {
        acl::POSIX_ACL_ACCESS => return acl::get_acl(fs, ino, true).await,
        acl::OWN_ACL => return acl::get_acl(fs, ino, false).await,
        _ => {}
    }
    let key = match parse_name(name) {
        XattrName::Other => return Err(other_namespace()),
        XattrName::Own(own) => return own_xattr(fs, ino, own).await,
        XattrName::User(key) => key,
    };
    let v = xattr_view(fs, ino).await?;
    // Linux keeps no user.* attributes on symlinks (the kernel answers so itself).
    if v.kind == Kind::Symlink || attr::is_internal_key(key) {
        return Err(FsError::NoAttr);
    }
    v.meta
        .get(key)
        .map(|s| s.as_bytes().to_vec())
        .ok_or(FsError::NoAttr)
}

/// FUSE listxattr: the `user.*` names of `ino`, each followed by a NUL.
pub(crate) async fn listxattr(fs: &Fs, ino: u64) -> FsResult<Vec<u8>> {
    let v = xattr_view(fs, ino).await?;
    let mut out = Vec::new();
    if v.kind == Kind::Symlink {
        return Ok(out);
    }
    for k in v.meta.keys().filter(|k| !attr::is_internal_key(k)) {
        // A key that reads as blobmount's own namespace cannot be told apart from it.
        if parse_name(&format!("{USER_PREFIX}{k}")) != XattrName::User(k) {
            continue;
        }
        out.extend_from_slice(USER_PREFIX.as_bytes());
        out.extend_from_slice(k.as_bytes());
        out.push(0);
    }
    Ok(out)
}

/// A `user.blobmount.*` value.
async fn own_xattr(fs: &Fs, ino: u64, own: &str) -> FsResult<Vec<u8>> {
    let v = xattr_view(fs, ino).await?;
    let time = |t| attr::format_mtime(t).into_bytes();
    let text = match own {
        "etag" => v.etag.clone(),
        "content_type" => v.content_type.clone(),
        "content_md5" => match (&v.etag, v.kind) {
            (Some(etag), Kind::File) => {
                let key = fs.ns.key_of(ino)?;
                let md5 = fs
                    .backend
                    .content_md5(&key, etag)
                    .await
                    .map_err(crate::error::stale)?;
                md5.map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
            }
            _ => None,
        },
        "key" => match (ino, v.kind, v.marker) {
            (ROOT_INO, _, _) => None,
            (_, Kind::Dir, Marker::Slash) => Some(format!("{}/", fs.ns.key_of(ino)?)),
            (_, Kind::Dir, Marker::None) => None,
            _ => Some(fs.ns.key_of(ino)?),
        },
        "kind" => Some(
            match v.kind {
                Kind::File => "file",
                Kind::Dir => "dir",
                Kind::Symlink => "symlink",
            }
            .to_string(),
        ),
        "mode" => Some(format!("{:o}", v.kind.type_bits() | u32::from(v.perm))),
        "uid" => Some(v.uid.to_string()),
        "gid" => Some(v.gid.to_string()),
        "mtime" => return Ok(time(v.mtime)),
        "ctime" => return Ok(time(v.ctime)),
        "atime" => return Ok(time(v.atime.unwrap_or(v.mtime))),
        _ => None,
    };
    text.map(String::into_bytes).ok_or(FsError::NoAttr)
}

/// The metadata rules of the store, and whether `ino` can carry user metadata at all.
fn writable_meta(fs: &Fs, ino: u64, name: &str) -> FsResult<(MetadataRules, String)> {
    let key = match parse_name(name) {
        XattrName::Other => return Err(other_namespace()),
        XattrName::Own(_) => {
            return Err(FsError::NotPermitted(
                "user.blobmount.* attributes are read-only",
            ));
        }
        XattrName::User(key) => key,
    };
    if attr::is_internal_key(key) {
        return Err(FsError::NotPermitted(
            "this metadata key is blobmount's own (see user.blobmount.*; use chmod, chown, touch)",
        ));
    }
    if ino == ROOT_INO {
        return Err(FsError::NotSupported(
            "the mount root has no object to keep metadata",
        ));
    }
    fs.ns.check_node_writable(ino)?;
    if fs.ns.node_kind(ino)? == Kind::Symlink {
        return Err(FsError::NotPermitted("symlinks keep no user.* attributes"));
    }
    let rules = fs.backend.capabilities().metadata;
    if !rules.kept {
        return Err(FsError::NotSupported("this store keeps no user metadata"));
    }
    Ok((rules, key.to_string()))
}

/// FUSE setxattr: set user metadata key `name` (`user.NAME`) to `value`. `flags` are
/// `XATTR_CREATE` (EEXIST when set) and `XATTR_REPLACE` (ENODATA when not).
pub(crate) async fn setxattr(
    fs: &Fs,
    ino: u64,
    name: &str,
    value: &[u8],
    flags: i32,
) -> FsResult<()> {
    match name {
        acl::POSIX_ACL_ACCESS => return acl::set_acl(fs, ino, value, true).await,
        acl::OWN_ACL => return acl::set_acl(fs, ino, value, false).await,
        _ => {}
    }
    let (rules, key) = writable_meta(fs, ino, name)?;
    check_name(&rules, &key)?;
    let value = check_value(&rules, value)?;
    edit_user_meta(fs, ino, rules, move |m| {
        let exists = m.contains_key(&key);
        if flags & XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoAttr);
        }
        m.insert(key, value);
        Ok(())
    })
    .await
}

/// FUSE removexattr: remove user metadata key `name` (`user.NAME`); ENODATA when absent.
pub(crate) async fn removexattr(fs: &Fs, ino: u64, name: &str) -> FsResult<()> {
    if name == acl::POSIX_ACL_ACCESS || name == acl::OWN_ACL {
        return acl::remove_acl(fs, ino).await;
    }
    let (rules, key) = writable_meta(fs, ino, name)?;
    edit_user_meta(fs, ino, rules, move |m| {
        m.remove(&key).map(|_| ()).ok_or(FsError::NoAttr)
    })
    .await
}

/// Change the node's user metadata with `edit` and write it through the attribute path.
/// A failed write (ESTALE when the object changed outside) leaves the cached metadata as
/// it was and the node to be asked again, so the value the store refused is not shown.
async fn edit_user_meta(
    fs: &Fs,
    ino: u64,
    rules: MetadataRules,
    edit: impl FnOnce(&mut UserMetadata) -> FsResult<()> + Send,
) -> FsResult<()> {
    // Metadata as the store has it now (a HEAD only when the stat has expired): the
    // update is a read-modify-write of all of it.
    xattr_view(fs, ino).await?;
    let before = lock(&fs.ns.table)
        .get(ino)
        .map(|n| n.meta.clone())
        .ok_or(FsError::NotFound)?;
    let r = fs
        .change_attrs(ino, crate::fs::Persist::Now, |n| {
            let mut m = n.meta.clone();
            edit(&mut m)?;
            if rules.max_total > 0 {
                let mut stored = attr::encode(&m, n.kind, n.perm, n.uid, n.gid, n.mtime);
                attr::encode_times(&mut stored, n.ctime, n.atime);
                if metadata_size(&stored) + UPLOAD_ID_RESERVE > rules.max_total {
                    return Err(FsError::TooBig(
                        "the store's limit on an object's metadata is reached",
                    ));
                }
            }
            n.meta = m;
            Ok(())
        })
        .await;
    if r.is_err()
        && let Some(n) = lock(&fs.ns.table).get_mut(ino)
        && n.meta != before
    {
        n.meta = before;
        n.fetched = None;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(names: MetaNames, ascii: bool) -> MetadataRules {
        MetadataRules {
            kept: true,
            names,
            ascii_values: ascii,
            max_total: 8192,
        }
    }

    #[test]
    fn names_split_into_namespaces() {
        assert_eq!(parse_name("user.color"), XattrName::User("color"));
        assert_eq!(parse_name("user.blobmount.etag"), XattrName::Own("etag"));
        assert_eq!(parse_name("security.selinux"), XattrName::Other);
        assert_eq!(parse_name("trusted.x"), XattrName::Other);
        assert_eq!(parse_name("system.posix_acl_access"), XattrName::Other);
    }

    #[test]
    fn store_name_rules() {
        let az = rules(MetaNames::CIdentifier, true);
        let s3 = rules(MetaNames::HeaderToken, true);
        let gcs = rules(MetaNames::Any, false);
        assert!(check_name(&az, "my_key2").is_ok());
        assert_eq!(check_name(&az, "my-key").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(check_name(&az, "2key").unwrap_err().errno(), libc::EINVAL);
        assert!(check_name(&s3, "my-key.v2").is_ok());
        assert_eq!(check_name(&s3, "a b").unwrap_err().errno(), libc::EINVAL);
        assert!(check_name(&gcs, "a b:ü").is_ok());
        for r in [&az, &s3, &gcs] {
            assert_eq!(check_name(r, "Color").unwrap_err().errno(), libc::EINVAL);
            assert_eq!(check_name(r, "").unwrap_err().errno(), libc::EINVAL);
        }
    }

    #[test]
    fn store_value_rules() {
        let az = rules(MetaNames::CIdentifier, true);
        let gcs = rules(MetaNames::Any, false);
        assert_eq!(check_value(&az, b"blue").unwrap(), "blue");
        assert!(check_value(&az, "blü".as_bytes()).is_err());
        assert!(check_value(&az, b" blue").is_err());
        assert_eq!(check_value(&gcs, "blü".as_bytes()).unwrap(), "blü");
        assert!(check_value(&gcs, b"\xff").is_err());
        assert!(check_value(&gcs, b"a\nb").is_err());
    }

    #[test]
    fn sizes_and_buffers() {
        assert_eq!(sized(b"abc".to_vec(), 0).unwrap(), XattrReply::Size(3));
        assert_eq!(
            sized(b"abc".to_vec(), 3).unwrap(),
            XattrReply::Data(b"abc".to_vec())
        );
        assert_eq!(sized(b"abc".to_vec(), 2).unwrap_err().errno(), libc::ERANGE);
    }
}
