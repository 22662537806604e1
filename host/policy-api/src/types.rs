//! Plain Rust mirrors of the WIT types in `wit/policy.wit`; see that file for the meaning of
//! every field. Kept free of any binding-generator types so the core can use them directly.

use std::time::Duration;

/// What the mount knows about one object or directory (WIT `types.object-info`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ObjectInfo {
    /// Key relative to the mount root; directories end with `/`.
    pub key: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime_secs: i64,
    pub is_dir: bool,
    pub content_type: Option<String>,
    /// User metadata and tags, names lower-cased, without the store's prefix.
    pub metadata: Vec<(String, String)>,
}

impl ObjectInfo {
    /// The last path segment (`c` for `a/b/c` and for `a/b/c/`).
    pub fn base_name(&self) -> &str {
        let k = self.key.strip_suffix('/').unwrap_or(&self.key);
        k.rsplit('/').next().unwrap_or(k)
    }
}

/// Filter verdict (WIT `filter.verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Hidden,
    Visible,
    VisibleReadOnly,
}

/// Why a name conflict is being resolved (WIT `name-conflict.conflict-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictKind {
    FileAndDirectory,
    InvalidName,
}

/// One colliding entry (WIT `name-conflict.entry`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConflictEntry {
    pub name: String,
    pub key: String,
    pub is_dir: bool,
    pub size: u64,
}

/// What one colliding entry becomes (WIT `name-conflict.resolution`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resolution {
    Keep,
    Rename(String),
    Hide,
}

/// A cache lifetime (WIT `consistency.ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// Do not cache.
    None,
    /// Cache this long.
    For(Duration),
    /// Cache until the mount itself changes the object.
    Forever,
}

impl Ttl {
    /// The lifetime as a duration, `None` for "do not cache" as zero and `Forever` as `None`.
    pub fn as_duration(self) -> Option<Duration> {
        match self {
            Ttl::None => Some(Duration::ZERO),
            Ttl::For(d) => Some(d),
            Ttl::Forever => None,
        }
    }
}

/// Consistency policy for one path (WIT `consistency.decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Consistency {
    pub stat_ttl: Ttl,
    pub list_ttl: Ttl,
    pub data_ttl: Ttl,
    pub revalidate_on_open: bool,
    pub cacheable: bool,
}

impl Consistency {
    /// Trust nothing: every stat, listing and open goes to the store; nothing is cached.
    pub const STRICT: Consistency = Consistency {
        stat_ttl: Ttl::None,
        list_ttl: Ttl::None,
        data_ttl: Ttl::None,
        revalidate_on_open: true,
        cacheable: false,
    };
}

/// The requesting process (WIT `acl.caller`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Access kinds granted (WIT `acl.access` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Access {
    pub const ALL: Access = Access {
        read: true,
        write: true,
        execute: true,
    };
    pub const NONE: Access = Access {
        read: false,
        write: false,
        execute: false,
    };
}

/// ACL decision (WIT `acl.decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AclDecision {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only (at most 0o7777).
    pub mode: u32,
    pub allow: Access,
}
