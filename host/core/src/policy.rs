//! Where the core asks the policy (`blobmount_policy_api::Policy`): filter verdicts,
//! name-conflict resolutions, per-path consistency and ACL decisions.
//!
//! Why a module of its own: the questions are asked from listing, lookup, attribute and write
//! paths alike, and must be asked the same way everywhere (keys relative to the mount root,
//! the same object description, the same errors). The core sees only the plain-Rust trait;
//! whether a WASM plugin or the built-in defaults answer is the daemon's choice. Without
//! configuration the core runs with [`builtin_for`], which reproduces the behaviour the
//! global settings in [`FsConfig`] have always had.
//!
//! Error rules (docs/semantics.md, "Policy"): a read-only verdict makes modifications fail
//! with EROFS ([`FsError::ReadOnly`]); an access kind the ACL does not allow gives EACCES
//! ([`FsError::AccessDenied`]), as does creating over a name the filter hides.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobmount_backend::UserMetadata;
use blobmount_policy_api::{
    self as api, Access, AclConfig, Builtin, BuiltinConfig, Consistency, ConsistencyConfig, Ttl,
};

use crate::config::FsConfig;

/// Longest time the kernel is told to trust an entry or attributes (a `forever` stat TTL).
pub const KERNEL_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// What the policy decided for one node when its attributes were fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePolicy {
    /// Filter verdict `visible-read-only`: modifications fail with EROFS.
    pub read_only: bool,
    /// How long the node's attributes are trusted (`Duration::MAX`: until changed here).
    pub stat_ttl: Duration,
    /// Directories: how long a listing is reused.
    pub list_ttl: Duration,
    /// Every open asks the store for the current version, whatever `stat_ttl` says.
    pub revalidate_on_open: bool,
    /// File data may be kept by the kernel page cache and the file cache.
    pub cacheable: bool,
}

impl NodePolicy {
    pub fn new(read_only: bool, c: Consistency) -> NodePolicy {
        NodePolicy {
            read_only,
            stat_ttl: ttl(c.stat_ttl),
            list_ttl: ttl(c.list_ttl),
            revalidate_on_open: c.revalidate_on_open,
            cacheable: c.cacheable,
        }
    }
}

/// A policy TTL as a duration: `none` is zero, `forever` is `Duration::MAX`.
pub fn ttl(t: Ttl) -> Duration {
    t.as_duration().unwrap_or(Duration::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The built-in policy equivalent to the global settings of `cfg`: owner and modes for
/// objects without metadata, the attribute and listing TTLs, everything visible, the
/// directory keeps a conflicting name.
pub fn builtin_config_for(cfg: &FsConfig) -> BuiltinConfig {
    BuiltinConfig {
        acl: AclConfig {
            uid: cfg.uid,
            gid: cfg.gid,
            file_mode: u32::from(cfg.file_mode & 0o7777),
            dir_mode: u32::from(cfg.dir_mode & 0o7777),
        },
        consistency: ConsistencyConfig {
            stat_ttl_ms: ms(cfg.attr_ttl),
            list_ttl_ms: ms(cfg.list_ttl),
            data_ttl_ms: ms(cfg.attr_ttl),
            // Open revalidates once the attributes are older than the stat TTL (see
            // `Fs::open`); `true` would ask the store at every open.
            revalidate_on_open: false,
            cacheable: true,
        },
        ..BuiltinConfig::default()
    }
}

/// [`builtin_config_for`], compiled.
pub fn builtin_for(cfg: &FsConfig) -> Builtin {
    // Cannot fail: no globs, and the modes are masked to permission bits.
    Builtin::new(builtin_config_for(cfg)).unwrap_or_default()
}

fn secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn now_secs() -> i64 {
    secs(SystemTime::now())
}

/// What the store says about one object, as the policy sees it.
pub(crate) struct Described<'a> {
    /// Key relative to the mount root; directories end with `/`.
    pub key: String,
    pub is_dir: bool,
    pub size: u64,
    pub mtime: SystemTime,
    pub content_type: Option<&'a str>,
    pub meta: Option<&'a UserMetadata>,
}

impl Described<'_> {
    pub(crate) fn info(&self) -> api::ObjectInfo {
        api::ObjectInfo {
            key: self.key.clone(),
            size: if self.is_dir { 0 } else { self.size },
            mtime_secs: secs(self.mtime),
            is_dir: self.is_dir,
            content_type: self.content_type.map(str::to_string),
            metadata: self
                .meta
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Read a file, or list a directory.
pub const READ: Access = Access {
    read: true,
    write: false,
    execute: false,
};
/// Modify a file, or create/delete/rename entries in a directory.
pub const WRITE: Access = Access {
    read: false,
    write: true,
    execute: false,
};
/// Traverse a directory (lookups in it).
pub const EXECUTE: Access = Access {
    read: false,
    write: false,
    execute: true,
};

/// Access kinds an open with `flags` needs.
pub fn open_access(flags: i32) -> Access {
    let acc = flags & libc::O_ACCMODE;
    Access {
        read: acc == libc::O_RDONLY || acc == libc::O_RDWR,
        write: acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0,
        execute: false,
    }
}
