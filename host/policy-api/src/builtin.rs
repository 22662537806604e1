//! The built-in policy: what blobmount does when no plugin is configured for a hook.
//!
//! Cheap by construction (globs compiled once, no allocation on the filter path beyond the
//! glob matcher's), so a mount without plugins pays nothing for the policy layer. The
//! name-conflict rule is the one documented in docs/semantics.md and implemented by the core
//! today: a directory keeps the name, the colliding file gets [`FILE_SUFFIX`], names Linux
//! cannot show get a deterministic stand-in.

use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Policy;
use crate::types::{
    Access, AclDecision, Caller, ConflictEntry, ConflictKind, Consistency, ObjectInfo, Resolution,
    Ttl, Verdict,
};

/// Suffix the built-in rule gives a file that shares its name with a directory.
pub const FILE_SUFFIX: &str = ".~file";
/// Longest Linux directory-entry name, in bytes.
pub const NAME_MAX: usize = 255;

/// A bad built-in policy configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error("{field}: bad glob {pattern:?}: {source}")]
    Glob {
        field: &'static str,
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("{field}: mode {mode:#o} has bits outside 0o7777")]
    Mode { field: &'static str, mode: u32 },
}

/// Built-in filter: globs over the key, size and age limits.
///
/// Globs match the whole key relative to the mount root (without a directory's trailing
/// `/`); `*` does not cross `/`, `**` does. A pattern without `/` matches the base name at
/// any depth (like `.gitignore`): `*.tmp` hides `a/b/x.tmp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilterConfig {
    /// If non-empty, only files matching one of these are shown (directories are not
    /// subject to `include`, so matching files stay reachable).
    pub include: Vec<String>,
    /// Files and directories matching one of these are hidden.
    pub exclude: Vec<String>,
    /// Files and directories matching one of these are shown read-only.
    pub read_only: Vec<String>,
    /// Hide files smaller than this many bytes.
    pub min_size: Option<u64>,
    /// Hide files larger than this many bytes.
    pub max_size: Option<u64>,
    /// Hide files last modified more than this many seconds ago.
    pub max_age_secs: Option<u64>,
}

/// Built-in ownership and permissions: the same for every object and caller.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AclConfig {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of files.
    pub file_mode: u32,
    /// Permission bits of directories.
    pub dir_mode: u32,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
        }
    }
}

/// Built-in consistency: global TTLs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsistencyConfig {
    /// Milliseconds attributes are trusted (0: never cached).
    pub stat_ttl_ms: u64,
    /// Milliseconds a directory listing is trusted.
    pub list_ttl_ms: u64,
    /// Milliseconds cached file data is trusted.
    pub data_ttl_ms: u64,
    /// Check the ETag on every open (close-to-open).
    pub revalidate_on_open: bool,
    /// May file data be cached locally.
    pub cacheable: bool,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        ConsistencyConfig {
            stat_ttl_ms: 1_000,
            list_ttl_ms: 1_000,
            data_ttl_ms: 1_000,
            revalidate_on_open: true,
            cacheable: true,
        }
    }
}

/// Built-in name-conflict rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictRule {
    /// The directory keeps `foo`; the file is shown as `foo.~file`.
    #[default]
    DirectoryKeepsName,
    /// The directory keeps `foo`; the file is not shown.
    HideFile,
    /// gcsfuse's rule: the directory keeps `foo`; the file is shown as `foo\n`.
    GcsfuseNewline,
}

/// All built-in policy settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuiltinConfig {
    pub filter: FilterConfig,
    pub acl: AclConfig,
    pub consistency: ConsistencyConfig,
    pub name_conflict: ConflictRule,
}

/// True if `name` can be a Linux directory entry as is.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains('\0')
        && !name.contains('/')
}

/// 64-bit FNV-1a, stable across runs and platforms.
fn fnv1a(s: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The deterministic stand-in shown for a store name Linux cannot show (same scheme as the
/// core's `names::stand_in`).
pub fn stand_in_name(seg: &str) -> String {
    match seg {
        "" => "~empty".into(),
        "." => "~dot".into(),
        ".." => "~dotdot".into(),
        _ => {
            let clean: String = seg.replace(['\0', '/'], "~");
            let mut cut = 200.min(clean.len());
            while !clean.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}~{:016x}", &clean[..cut], fnv1a(seg.as_bytes()))
        }
    }
}

/// Globs split into those matched against the full key and those against the base name.
#[derive(Debug, Clone)]
struct Globs {
    full: GlobSet,
    base: GlobSet,
    empty: bool,
}

impl Globs {
    fn new(field: &'static str, patterns: &[String]) -> Result<Globs, BuiltinError> {
        let mut full = GlobSetBuilder::new();
        let mut base = GlobSetBuilder::new();
        for p in patterns {
            let glob: Glob = GlobBuilder::new(p.trim_start_matches('/'))
                .literal_separator(true)
                .build()
                .map_err(|source| BuiltinError::Glob {
                    field,
                    pattern: p.clone(),
                    source,
                })?;
            if p.contains('/') {
                full.add(glob);
            } else {
                base.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|source| BuiltinError::Glob {
                field,
                pattern: patterns.join(" "),
                source,
            })
        };
        Ok(Globs {
            full: build(full)?,
            base: build(base)?,
            empty: patterns.is_empty(),
        })
    }

    fn matches(&self, obj: &ObjectInfo) -> bool {
        if self.empty {
            return false;
        }
        let key = obj.key.strip_suffix('/').unwrap_or(&obj.key);
        self.full.is_match(key) || self.base.is_match(obj.base_name())
    }
}

/// The built-in policy; implements every hook from [`BuiltinConfig`].
#[derive(Debug, Clone)]
pub struct Builtin {
    cfg: BuiltinConfig,
    include: Globs,
    exclude: Globs,
    read_only: Globs,
}

impl Builtin {
    /// Compile the configuration (globs) once.
    pub fn new(cfg: BuiltinConfig) -> Result<Builtin, BuiltinError> {
        for (field, mode) in [
            ("acl.file-mode", cfg.acl.file_mode),
            ("acl.dir-mode", cfg.acl.dir_mode),
        ] {
            if mode & !0o7777 != 0 {
                return Err(BuiltinError::Mode { field, mode });
            }
        }
        Ok(Builtin {
            include: Globs::new("filter.include", &cfg.filter.include)?,
            exclude: Globs::new("filter.exclude", &cfg.filter.exclude)?,
            read_only: Globs::new("filter.read-only", &cfg.filter.read_only)?,
            cfg,
        })
    }

    /// The configuration this policy was built from.
    pub fn config(&self) -> &BuiltinConfig {
        &self.cfg
    }
}

impl Default for Builtin {
    fn default() -> Self {
        let empty = |_| Globs {
            full: GlobSet::empty(),
            base: GlobSet::empty(),
            empty: true,
        };
        Builtin {
            cfg: BuiltinConfig::default(),
            include: empty(()),
            exclude: empty(()),
            read_only: empty(()),
        }
    }
}

fn ms(v: u64) -> Ttl {
    if v == 0 {
        Ttl::None
    } else {
        Ttl::For(Duration::from_millis(v))
    }
}

impl Policy for Builtin {
    fn filter(&self, obj: &ObjectInfo, now_secs: i64) -> Verdict {
        let f = &self.cfg.filter;
        if self.exclude.matches(obj) {
            return Verdict::Hidden;
        }
        if !obj.is_dir {
            if !self.include.empty && !self.include.matches(obj) {
                return Verdict::Hidden;
            }
            if f.min_size.is_some_and(|m| obj.size < m) || f.max_size.is_some_and(|m| obj.size > m)
            {
                return Verdict::Hidden;
            }
            if let Some(max) = f.max_age_secs {
                let age = now_secs.saturating_sub(obj.mtime_secs);
                if age > i64::try_from(max).unwrap_or(i64::MAX) {
                    return Verdict::Hidden;
                }
            }
        }
        if self.read_only.matches(obj) {
            Verdict::VisibleReadOnly
        } else {
            Verdict::Visible
        }
    }

    fn resolve_conflict(
        &self,
        _parent: &str,
        kind: ConflictKind,
        entries: &[ConflictEntry],
    ) -> Vec<Resolution> {
        match kind {
            ConflictKind::InvalidName => entries
                .iter()
                .map(|e| Resolution::Rename(stand_in_name(&e.name)))
                .collect(),
            ConflictKind::FileAndDirectory => entries
                .iter()
                .map(|e| match (e.is_dir, self.cfg.name_conflict) {
                    (true, _) => Resolution::Keep,
                    (false, ConflictRule::DirectoryKeepsName) => {
                        Resolution::Rename(format!("{}{FILE_SUFFIX}", e.name))
                    }
                    (false, ConflictRule::HideFile) => Resolution::Hide,
                    (false, ConflictRule::GcsfuseNewline) => {
                        Resolution::Rename(format!("{}\n", e.name))
                    }
                })
                .collect(),
        }
    }

    fn consistency(&self, _key: &str, _is_dir: bool) -> Consistency {
        let c = &self.cfg.consistency;
        Consistency {
            stat_ttl: ms(c.stat_ttl_ms),
            list_ttl: ms(c.list_ttl_ms),
            data_ttl: ms(c.data_ttl_ms),
            revalidate_on_open: c.revalidate_on_open,
            cacheable: c.cacheable,
        }
    }

    fn acl(&self, obj: &ObjectInfo, _caller: Caller) -> AclDecision {
        let a = &self.cfg.acl;
        AclDecision {
            uid: a.uid,
            gid: a.gid,
            mode: if obj.is_dir { a.dir_mode } else { a.file_mode },
            allow: Access::ALL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64, mtime: i64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            mtime_secs: mtime,
            is_dir: key.ends_with('/'),
            ..Default::default()
        }
    }

    #[test]
    fn default_shows_everything() {
        let b = Builtin::default();
        assert_eq!(b.filter(&obj("a/.x", 1, 0), 0), Verdict::Visible);
        assert_eq!(b.acl(&obj("d/", 0, 0), Caller::default()).mode, 0o755);
    }

    #[test]
    fn globs_sizes_and_age() {
        let b = Builtin::new(BuiltinConfig {
            filter: FilterConfig {
                include: vec!["*.csv".into(), "keep/**".into()],
                exclude: vec!["*.tmp".into(), "secret".into()],
                read_only: vec!["archive/**".into()],
                min_size: Some(1),
                max_size: Some(100),
                max_age_secs: Some(10),
            },
            ..Default::default()
        })
        .unwrap();
        let now = 1000;
        assert_eq!(b.filter(&obj("a/b.csv", 5, now), now), Verdict::Visible);
        assert_eq!(b.filter(&obj("a/b.txt", 5, now), now), Verdict::Hidden);
        assert_eq!(
            b.filter(&obj("keep/x/y.bin", 5, now), now),
            Verdict::Visible
        );
        assert_eq!(b.filter(&obj("a/b.tmp", 5, now), now), Verdict::Hidden);
        assert_eq!(b.filter(&obj("x/secret/", 0, 0), now), Verdict::Hidden);
        assert_eq!(b.filter(&obj("x/other/", 0, 0), now), Verdict::Visible);
        assert_eq!(b.filter(&obj("a.csv", 0, now), now), Verdict::Hidden);
        assert_eq!(b.filter(&obj("a.csv", 101, now), now), Verdict::Hidden);
        assert_eq!(b.filter(&obj("a.csv", 5, now - 11), now), Verdict::Hidden);
        assert_eq!(
            b.filter(&obj("archive/2020.csv", 5, now), now),
            Verdict::VisibleReadOnly
        );
    }

    #[test]
    fn bad_glob_and_mode_are_named() {
        let e = Builtin::new(BuiltinConfig {
            filter: FilterConfig {
                exclude: vec!["a[".into()],
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("filter.exclude"), "{e}");
        let mut cfg = BuiltinConfig::default();
        cfg.acl.file_mode = 0o10644;
        assert!(
            Builtin::new(cfg)
                .unwrap_err()
                .to_string()
                .contains("acl.file-mode")
        );
    }

    #[test]
    fn conflicts_follow_the_rule() {
        let entries = [
            ConflictEntry {
                name: "foo".into(),
                key: "foo".into(),
                is_dir: false,
                size: 1,
            },
            ConflictEntry {
                name: "foo".into(),
                key: "foo/".into(),
                is_dir: true,
                size: 0,
            },
        ];
        let b = Builtin::default();
        assert_eq!(
            b.resolve_conflict("", ConflictKind::FileAndDirectory, &entries),
            vec![Resolution::Rename("foo.~file".into()), Resolution::Keep]
        );
        let r = b.resolve_conflict(
            "",
            ConflictKind::InvalidName,
            &[ConflictEntry {
                name: "..".into(),
                key: "../x".into(),
                is_dir: true,
                size: 0,
            }],
        );
        assert_eq!(r, vec![Resolution::Rename("~dotdot".into())]);
        let long = "é".repeat(200);
        assert!(is_valid_name(&stand_in_name(&long)));
    }
}
