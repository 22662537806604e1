//! File attributes and how they are stored in object user metadata.
//!
//! Keys (documented in docs/semantics.md), chosen to interoperate with s3fs and BlobFuse2:
//! `mode` (st_mode in decimal, as s3fs writes it; octal strings as rclone writes them are read
//! too), `uid`, `gid`, `mtime` (seconds since the epoch, optional fraction), `is_symlink=true`
//! (BlobFuse2; the target is the object's content) and `hdi_isfolder=true` (BlobFuse2's
//! directory marker blob on Azure flat namespaces).
//!
//! Keys other tools write are read too, so a bucket written by one of them looks right here
//! (docs/semantics.md, "Metadata written by other tools"): gcsfuse's `gcsfuse_mtime`
//! (RFC 3339) and `gcsfuse_symlink_target` (the target in metadata, empty content), rclone's
//! `mtime` as RFC 3339 (its Azure and GCS backends) or decimal seconds (S3) and octal `mode`,
//! and the `goog-reserved-*` keys `gsutil cp -P` / `gcloud storage cp -P` write. Ours win where
//! both are present. When blobmount rewrites an object's attributes it keeps the peers' time
//! and POSIX keys that are already on the object in step, and it writes
//! `gcsfuse_symlink_target` on the symlinks it creates, so gcsfuse sees them as symlinks too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobmount_backend::UserMetadata;
use blobmount_backend::api::{ACCESS_GROUP, ACCESS_OWNER, ACCESS_PERMISSIONS, parse_permissions};

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

/// gcsfuse: the file's mtime, RFC 3339 with nanoseconds.
pub const META_GCSFUSE_MTIME: &str = "gcsfuse_mtime";
/// gcsfuse: a symlink's target (the object itself is empty).
pub const META_GCSFUSE_SYMLINK: &str = "gcsfuse_symlink_target";
/// Longest symlink target also written as `gcsfuse_symlink_target` (longer ones, and ones
/// that are not printable ASCII, are only in the content).
pub const PEER_SYMLINK_MAX: usize = 1024;
/// `gsutil cp -P` / `gcloud storage cp -P`: times in decimal seconds, uid and gid in decimal,
/// mode as octal permission bits ("644").
pub const META_GOOG_MTIME: &str = "goog-reserved-file-mtime";
pub const META_GOOG_ATIME: &str = "goog-reserved-file-atime";
pub const META_GOOG_UID: &str = "goog-reserved-posix-uid";
pub const META_GOOG_GID: &str = "goog-reserved-posix-gid";
pub const META_GOOG_MODE: &str = "goog-reserved-posix-mode";

/// Every metadata key blobmount reads or writes for its own purposes, in ONE place: these
/// are hidden from the `user.*` extended attributes (`xattr.rs`), cannot be set or removed
/// through them (EPERM), and are shown read-only under `user.blobmount.*` where they mean
/// something (as the attributes they decode to). The peers' keys are here too: blobmount
/// keeps them in step with the attributes. Adding a key here (another tool's mtime or
/// symlink key, say) is all it takes to hide and protect it.
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
    META_GCSFUSE_MTIME,
    META_GCSFUSE_SYMLINK,
    META_GOOG_MTIME,
    META_GOOG_ATIME,
    META_GOOG_UID,
    META_GOOG_GID,
    META_GOOG_MODE,
    // An HNS store's path access, reported with a head (`api::ACCESS_OWNER`).
    ACCESS_OWNER,
    ACCESS_GROUP,
    ACCESS_PERMISSIONS,
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
    /// A symlink's target when the metadata carries it (gcsfuse); `None`: the object's
    /// content is the target (BlobFuse2, s3fs, blobmount).
    pub symlink_target: Option<String>,
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

/// Parse a stored time: decimal seconds with an optional fraction (blobmount, s3fs, rclone on
/// S3, gsutil) or RFC 3339 (gcsfuse, rclone on Azure and GCS). Times before the epoch are
/// not taken.
pub fn parse_mtime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if s.contains('T') {
        return parse_rfc3339(s);
    }
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

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let secs = u64::try_from(t.timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, t.timestamp_subsec_nanos().min(999_999_999)))
}

/// RFC 3339 in UTC with nanoseconds, as gcsfuse writes `gcsfuse_mtime`.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp(secs, d.subsec_nanos()) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        None => "1970-01-01T00:00:00.000000000Z".to_string(),
    }
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
    if let Some(t) = meta.get(META_GCSFUSE_SYMLINK) {
        a.kind = Some(Kind::Symlink);
        a.symlink_target = Some(t.clone());
    }
    // Ours first, then the peers' (module doc).
    let first = |keys: &[&str], parse: &dyn Fn(&str) -> Option<u32>| {
        keys.iter()
            .find_map(|k| meta.get(*k).and_then(|v| parse(v)))
    };
    let number = |v: &str| v.trim().parse().ok();
    a.uid = first(&[META_UID, META_GOOG_UID], &number);
    a.gid = first(&[META_GID, META_GOOG_GID], &number);
    if a.perm.is_none()
        && let Some((kind, perm)) = meta.get(META_GOOG_MODE).and_then(|m| parse_mode(m))
    {
        a.kind = a.kind.or(kind);
        a.perm = Some(perm);
    }
    let time = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| meta.get(*k).and_then(|v| parse_mtime(v)))
    };
    a.mtime = time(&[META_MTIME, META_GCSFUSE_MTIME, META_GOOG_MTIME]);
    a.ctime = time(&[META_CTIME]);
    a.atime = time(&[META_ATIME, META_GOOG_ATIME]);
    // On a hierarchical namespace the path's own access is the truth (chmod and chown
    // change it, not the metadata): permissions always, owner and group when they are
    // numeric ids (an Entra object id or `$superuser` leaves the mount's default).
    if let Some(p) = meta
        .get(ACCESS_PERMISSIONS)
        .and_then(|p| parse_permissions(p))
    {
        a.perm = Some(p);
    }
    if let Some(u) = meta.get(ACCESS_OWNER).and_then(|v| number(v)) {
        a.uid = Some(u);
    }
    if let Some(g) = meta.get(ACCESS_GROUP).and_then(|v| number(v)) {
        a.gid = Some(g);
    }
    a
}

/// Keep the peers' keys that `m` already carries in step with ours (module doc): an object
/// that gcsfuse or gsutil wrote keeps telling them the truth after blobmount changed it.
fn sync_peer_keys(m: &mut UserMetadata, perm: u16, uid: u32, gid: u32, mtime: SystemTime) {
    let secs = mtime
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string();
    let updates = [
        (META_GCSFUSE_MTIME, format_rfc3339(mtime)),
        (META_GOOG_MTIME, secs),
        (META_GOOG_UID, uid.to_string()),
        (META_GOOG_GID, gid.to_string()),
        (META_GOOG_MODE, format!("{perm:o}")),
    ];
    for (k, v) in updates {
        if let Some(old) = m.get_mut(k) {
            *old = v;
        }
    }
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
    sync_peer_keys(&mut m, perm, uid, gid, mtime);
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
                symlink_target: None,
            }
        );
        assert_eq!(
            parse_mtime("1700000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    fn meta(pairs: &[(&str, &str)]) -> UserMetadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_of_gcsfuse_rclone_s3fs_and_gsutil() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        // gcsfuse: RFC 3339 mtime, symlink target in metadata.
        let g = decode(&meta(&[
            ("gcsfuse_mtime", "2023-11-14T22:13:20.123456789Z"),
            ("gcsfuse_symlink_target", "../x/y"),
        ]));
        assert_eq!(g.mtime, Some(t));
        assert_eq!(g.kind, Some(Kind::Symlink));
        assert_eq!(g.symlink_target.as_deref(), Some("../x/y"));
        // rclone on Azure/GCS: RFC 3339 with an offset, octal mode.
        let r = decode(&meta(&[
            ("mtime", "2023-11-15T00:13:20.123456789+02:00"),
            ("mode", "100640"),
        ]));
        assert_eq!(r.mtime, Some(t));
        assert_eq!((r.kind, r.perm), (Some(Kind::File), Some(0o640)));
        // rclone on S3 and s3fs: decimal seconds.
        assert_eq!(
            decode(&meta(&[("mtime", "1700000000.123456789")])).mtime,
            Some(t)
        );
        // gsutil / gcloud storage cp -P.
        let p = decode(&meta(&[
            ("goog-reserved-file-mtime", "1700000000"),
            ("goog-reserved-posix-uid", "1001"),
            ("goog-reserved-posix-gid", "1002"),
            ("goog-reserved-posix-mode", "600"),
        ]));
        assert_eq!(
            p.mtime,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            (p.uid, p.gid, p.perm),
            (Some(1001), Some(1002), Some(0o600))
        );
        // Ours win over the peers'.
        let both = decode(&meta(&[
            ("mtime", "1700000000.123456789"),
            ("gcsfuse_mtime", "2001-01-01T00:00:00Z"),
            ("uid", "5"),
            ("goog-reserved-posix-uid", "6"),
        ]));
        assert_eq!((both.mtime, both.uid), (Some(t), Some(5)));
        // Junk and times before the epoch are not taken.
        assert_eq!(decode(&meta(&[("gcsfuse_mtime", "yesterday")])).mtime, None);
        assert_eq!(parse_mtime("1960-01-01T00:00:00Z"), None);
    }

    #[test]
    fn rewriting_keeps_the_peers_keys_in_step() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let base = meta(&[
            ("gcsfuse_mtime", "2001-01-01T00:00:00Z"),
            ("goog-reserved-posix-mode", "644"),
            ("color", "blue"),
        ]);
        let m = encode(&base, Kind::File, 0o600, 1, 2, t);
        assert_eq!(m["gcsfuse_mtime"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(parse_mtime(&m["gcsfuse_mtime"]), Some(t));
        assert_eq!(m["goog-reserved-posix-mode"], "600");
        assert_eq!(m["color"], "blue");
        // Keys the object did not carry are not added.
        assert!(!m.contains_key("goog-reserved-file-mtime"));
    }
}
