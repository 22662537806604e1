//! The value types of settings that are more than a number, a flag or a string: read
//! modes, recovery, log formats and outputs, and octal permission modes.
//!
//! Why apart from `config`: the settings table (`settings`) names their choices and the
//! config structs (`config`) use them as field types; with both importing them from here,
//! the table needs nothing from `config`, and `config` can read the table.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides: `BLOBMOUNT_STORE__ENDPOINT=...` sets `store.endpoint`
/// (`__` separates levels, `_` stands for `-`).
pub const ENV_PREFIX: &str = "BLOBMOUNT_";

/// Which read path open files use (see docs/configuration.md, "Read modes").
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Ranged GETs with a prefetch window that doubles while reads stay sequential.
    Direct,
    /// Blocks prefetched in parallel into a shared memory pool bounded by
    /// `cache.read-memory-mib`.
    #[default]
    BlockCache,
    /// Whole objects downloaded to the cache directory on first open (LRU, size cap).
    FileCache,
}

impl From<ReadMode> for blobmount_core::ReadMode {
    fn from(m: ReadMode) -> Self {
        match m {
            ReadMode::Direct => blobmount_core::ReadMode::Direct,
            ReadMode::BlockCache => blobmount_core::ReadMode::BlockCache,
            ReadMode::FileCache => blobmount_core::ReadMode::FileCache,
        }
    }
}

/// Kernel passthrough of files complete in the file cache (`cache.file-cache-passthrough`).
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Passthrough {
    /// On read-only mounts, where nothing can conflict with it.
    #[default]
    Auto,
    /// Also on read-write mounts: an open for writing of a file open in passthrough fails
    /// with ETXTBSY (after waiting up to 1 s for those opens to close).
    Always,
    Never,
}

impl Passthrough {
    /// Whether a mount (read-only or not) uses it.
    pub fn on(self, read_only: bool) -> bool {
        match self {
            Passthrough::Auto => read_only,
            Passthrough::Always => true,
            Passthrough::Never => false,
        }
    }
}

/// What a mount does with unfinished writes of a previous daemon (`write.recovery`).
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    #[default]
    Upload,
    Keep,
}

impl From<Recovery> for blobmount_core::Recovery {
    fn from(r: Recovery) -> Self {
        match r {
            Recovery::Upload => blobmount_core::Recovery::Upload,
            Recovery::Keep => blobmount_core::Recovery::Keep,
        }
    }
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where log lines go (`logging.output`).
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum LogOutput {
    /// `file` when `logging.file` is set, else `stderr`.
    #[default]
    Auto,
    /// Standard error.
    Stderr,
    /// `logging.file`, rotated by `max-size-mib` and `max-files`, reopened on SIGHUP.
    File,
    /// The syslog socket (`logging.socket`, default /dev/log).
    Syslog,
    /// The systemd journal (`logging.socket`, default /run/systemd/journal/socket).
    Journald,
}

pub fn parse_mode(s: &str) -> Result<u16, String> {
    let t = s.trim().trim_start_matches("0o");
    match u16::from_str_radix(t, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!(
            "invalid mode {s:?}: expected octal permissions such as \"0644\""
        )),
    }
}
