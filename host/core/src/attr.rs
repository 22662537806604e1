//! File attributes and how they are stored in object user metadata.
//!
//! Keys (documented in docs/semantics.md), chosen to interoperate with s3fs and BlobFuse2:
//! `mode` (st_mode in decimal, as s3fs writes it; octal strings as rclone writes them are read
//! too), `uid`, `gid`, `mtime` (seconds since the epoch, optional fraction), `is_symlink=true`
//! (BlobFuse2; the target is the object's content) and `hdi_isfolder=true` (BlobFuse2's
//! directory marker blob on Azure flat namespaces).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobmount_backend::UserMetadata;

pub const META_MODE: &str = "mode";
pub const META_UID: &str = "uid";
pub const META_GID: &str = "gid";
pub const META_MTIME: &str = "mtime";
/// Status change time and access time, in the format of `mtime` (s3fs writes the same keys).
/// `atime` is written only when a program sets it (`utimensat`); the mount is `noatime`.
pub const META_CTIME: &str = "ctime";
pub const META_ATIME: &str = "atime";
pub const META_SYMLINK: &str = "is_symlink";
pub const META_FOLDER: &str = "hdi_isfolder";
/// Id of the upload that wrote the object (random, per set of changes): lets an upload whose
/// reply was lost recognise its own object instead of reporting a conflict.
pub const META_UPLOAD: &str = "blobmount_upload";

/// Every metadata key blobmount reads or writes for its own purposes, in ONE place: these
/// are hidden from the `user.*` extended attributes (`xattr.rs`), cannot be set or removed
/// through them (EPERM), and are shown read-only under `user.blobmount.*` where they mean
/// something. Adding a key here (another tool's mtime or symlink key, say) is all it takes
/// to hide and protect it.
pub const INTERNAL_KEYS: &[&str] = &[
    META_MODE,
    META_UID,
    META_GID,
    META_MTIME,
    META_CTIME,
    META_ATIME,
    META_SYMLINK,
    META_FOLDER,
    META_UPLOAD,
];

/// Whether metadata key `k` (lower-case, as stores report keys) is one of [`INTERNAL_KEYS`].
pub fn is_internal_key(k: &str) -> bool {
    INTERNAL_KEYS.iter().any(|i| i.eq_ignore_ascii_case(k))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
        }
    }
}

/// Attributes as the core reports them (no FUSE types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits only (no file-type bits).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub atime: SystemTime,
    pub nlink: u32,
}

impl Attr {
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }
}

/// Attributes decoded from metadata; `None` where the object carries no value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaAttrs {
    pub kind: Option<Kind>,
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub ctime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

fn kind_of(mode: u32) -> Option<Kind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Some(Kind::File),
        libc::S_IFDIR => Some(Kind::Dir),
        libc::S_IFLNK => Some(Kind::Symlink),
        _ => None,
    }
}

/// Parse a stored mode: decimal st_mode (s3fs) or octal (rclone, leading 0 or octal digits
/// that only make sense as octal).
pub fn parse_mode(s: &str) -> Option<(Option<Kind>, u16)> {
    let s = s.trim();
    let pick = |m: u32| (kind_of(m), (m & 0o7777) as u16);
    // Decimal st_mode values of files, directories and symlinks have exactly 5 digits
    // (s3fs: "33188"); a leading 0 or 6+ digits means octal (rclone: "100644"); anything
    // else is a bare octal permission ("644").
    if !s.starts_with('0')
        && s.len() <= 5
        && let Some(d) = s.parse::<u32>().ok().filter(|d| kind_of(*d).is_some())
    {
        return Some(pick(d));
    }
    let o = u32::from_str_radix(s, 8).ok()?;
    if kind_of(o).is_some() || o <= 0o7777 {
        Some(pick(o))
    } else {
        None
    }
}

pub fn parse_mtime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    let mut nanos = 0u32;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let n: u32 = digits.parse().ok()?;
        nanos = n * 10u32.pow(9 - digits.len() as u32);
    }
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

pub fn format_mtime(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

pub fn is_true(meta: &UserMetadata, key: &str) -> bool {
    meta.get(key)
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

/// Decode attributes from user metadata.
pub fn decode(meta: &UserMetadata) -> MetaAttrs {
    let mut a = MetaAttrs::default();
    if let Some((kind, perm)) = meta.get(META_MODE).and_then(|m| parse_mode(m)) {
        a.kind = kind;
        a.perm = Some(perm);
    }
    if is_true(meta, META_SYMLINK) {
        a.kind = Some(Kind::Symlink);
    }
    if is_true(meta, META_FOLDER) {
        a.kind = Some(Kind::Dir);
    }
    a.uid = meta.get(META_UID).and_then(|v| v.trim().parse().ok());
    a.gid = meta.get(META_GID).and_then(|v| v.trim().parse().ok());
    a.mtime = meta.get(META_MTIME).and_then(|v| parse_mtime(v));
    a.ctime = meta.get(META_CTIME).and_then(|v| parse_mtime(v));
    a.atime = meta.get(META_ATIME).and_then(|v| parse_mtime(v));
    a
}

/// Add the status change time, and the access time when one was set, to `m`.
pub fn encode_times(m: &mut UserMetadata, ctime: SystemTime, atime: Option<SystemTime>) {
    m.insert(META_CTIME.into(), format_mtime(ctime));
    if let Some(a) = atime {
        m.insert(META_ATIME.into(), format_mtime(a));
    }
}

/// Encode attributes into user metadata (merged over `base`, which keeps foreign keys).
pub fn encode(
    base: &UserMetadata,
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
) -> UserMetadata {
    let mut m = base.clone();
    m.insert(
        META_MODE.into(),
        (kind.type_bits() | perm as u32).to_string(),
    );
    m.insert(META_UID.into(), uid.to_string());
    m.insert(META_GID.into(), gid.to_string());
    m.insert(META_MTIME.into(), format_mtime(mtime));
    if kind == Kind::Symlink {
        m.insert(META_SYMLINK.into(), "true".into());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_from_s3fs_and_rclone() {
        assert_eq!(parse_mode("33188"), Some((Some(Kind::File), 0o644))); // s3fs decimal
        assert_eq!(parse_mode("100755"), Some((Some(Kind::File), 0o755))); // rclone octal
        assert_eq!(parse_mode("040700"), Some((Some(Kind::Dir), 0o700)));
        assert_eq!(parse_mode("0644"), Some((None, 0o644)));
        assert_eq!(parse_mode("junk"), None);
        assert_eq!(parse_mode("41471"), Some((Some(Kind::Symlink), 0o777))); // s3fs symlink
        assert_eq!(parse_mode("16877"), Some((Some(Kind::Dir), 0o755)));
        assert_eq!(parse_mode("644"), Some((None, 0o644)));
    }

    #[test]
    fn metadata_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let m = encode(&UserMetadata::new(), Kind::Symlink, 0o777, 10, 20, t);
        let a = decode(&m);
        assert_eq!(
            a,
            MetaAttrs {
                kind: Some(Kind::Symlink),
                perm: Some(0o777),
                uid: Some(10),
                gid: Some(20),
                mtime: Some(t),
                ctime: None,
                atime: None,
            }
        );
        assert_eq!(
            parse_mtime("1700000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }
}
