//! The limits every policy plugin has (`plugins.<hook>.fuel`, `deadline-ms`, ...) with
//! their defaults and ranges, checked by `Config::validate` for each configured hook.
//!
//! Why not rows of the settings table (`crate::settings`): the hooks are a mapping, so a
//! limit has one row per hook rather than one key; the defaults are `blobmount_policy`'s.

use crate::settings::Range;

/// A limit of every policy plugin, `plugins.<hook>.<key>` (the hooks are a mapping, so
/// these are not rows of [`crate::settings::SETTINGS`]; the keys and defaults are `blobmount_policy`'s).
#[derive(Clone, Copy, Debug)]
pub struct PluginLimit {
    pub key: &'static str,
    pub default: u64,
    pub range: Range,
}

const fn limit(key: &'static str, default: u64, min: u64, max: u64) -> PluginLimit {
    PluginLimit {
        key,
        default,
        range: Range { min, max },
    }
}

/// The plugin limits with their ranges, checked by `Config::validate` for every configured
/// hook (`prewarm` instances are created at start, `memory-mib` is reserved per instance).
pub static PLUGIN_LIMITS: &[PluginLimit] = &[
    limit("fuel", 10_000_000, 1_000, 10_000_000_000),
    limit("deadline-ms", 200, 1, 60_000),
    limit("memory-mib", 16, 1, 4096),
    limit("prewarm", 2, 0, 64),
    limit(
        "max-instances",
        4,
        *blobmount_policy::MAX_INSTANCES_RANGE.start() as u64,
        *blobmount_policy::MAX_INSTANCES_RANGE.end() as u64,
    ),
    limit("breaker-failures", 5, 0, 1_000_000),
    limit(
        "breaker-secs",
        30,
        *blobmount_policy::BREAKER_SECS_RANGE.start(),
        *blobmount_policy::BREAKER_SECS_RANGE.end(),
    ),
    limit("cache-entries", 65_536, 0, 10_000_000),
    limit("cache-secs", 10, 0, 86_400),
];
