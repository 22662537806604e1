//! A name-conflict plugin (hook `name-conflict`): when a store has both a file `foo` and a
//! directory `foo/`, the directory keeps `foo` and the file is shown as `foo` + the `suffix`
//! parameter (default `.file`). Entries whose names are invalid on Linux (`.`, `..`, empty,
//! longer than 255 bytes) are hidden.
//!
//! To make it yours, change `resolve`, then add cases to `fixtures.yaml`. Return exactly one
//! resolution per entry, in order; renamed names must be valid and distinct within the group
//! (the daemon checks, and treats a violation as a failed call).

use blobmount_plugin_sdk::name_conflict::{ConflictKind, Entry, NameConflict, Resolution};
use blobmount_plugin_sdk::Params;

/// Longest file name Linux accepts, in bytes.
const NAME_MAX: usize = 255;

struct RenameFiles {
    suffix: String,
}

impl NameConflict for RenameFiles {
    /// Called once per instance with `plugins.name-conflict.params` from the mount config.
    /// An `Err` stops the mount with that message.
    fn new(params: Params) -> Result<Self, String> {
        params.only(&["suffix"])?; // CHANGE: the parameter names you accept
        let suffix = params.get("suffix").unwrap_or(".file").to_string();
        if suffix.is_empty() || suffix.contains('/') || suffix.contains('\0') {
            return Err(format!(
                "parameter suffix: {suffix:?} must be non-empty, without / or NUL"
            ));
        }
        Ok(RenameFiles { suffix })
    }

    /// `parent` is the directory's key (`d/`), `entries` the colliding store entries.
    fn resolve(&self, _parent: &str, kind: ConflictKind, entries: &[Entry]) -> Vec<Resolution> {
        entries
            .iter()
            .map(|e| match kind {
                // CHANGE: what a file that collides with a directory is shown as.
                ConflictKind::FileAndDirectory if e.is_dir => Resolution::Keep,
                ConflictKind::FileAndDirectory => {
                    let name = format!("{}{}", e.name, self.suffix);
                    if name.len() <= NAME_MAX {
                        Resolution::Rename(name)
                    } else {
                        Resolution::Hide
                    }
                }
                // CHANGE: a name Linux cannot show (you may rename it to a valid stand-in).
                ConflictKind::InvalidName => Resolution::Hide,
            })
            .collect()
    }
}

blobmount_plugin_sdk::name_conflict_plugin!(RenameFiles);
