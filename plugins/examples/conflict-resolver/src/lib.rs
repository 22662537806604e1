//! Example name-conflict plugin.
//!
//! - `foo` + `foo/`: the directory keeps `foo`; the file becomes `foo` + `file-suffix`
//!   (parameter, default `.file`), or is hidden with `hide-files=true`.
//! - Names Linux cannot show are escaped readably: `` -> `%empty`, `.` -> `%2E`,
//!   `..` -> `%2E%2E`, NUL -> `%00`, and names over 255 bytes are cut to 240 bytes plus
//!   `~` and 8 hex digits of a hash of the full name.

use blobmount_plugin_sdk::name_conflict::{ConflictKind, Entry, NameConflict, Resolution};
use blobmount_plugin_sdk::Params;

struct Resolver {
    file_suffix: String,
    hide_files: bool,
}

fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    })
}

fn escape(name: &str) -> String {
    match name {
        "" => "%empty".into(),
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => {
            let clean = name.replace('\0', "%00");
            if clean.len() <= 255 {
                return clean;
            }
            let mut cut = 240;
            while !clean.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}~{:08x}", &clean[..cut], fnv32(name))
        }
    }
}

impl NameConflict for Resolver {
    fn new(p: Params) -> Result<Self, String> {
        p.only(&["file-suffix", "hide-files"])?;
        let file_suffix = p.get("file-suffix").unwrap_or(".file").to_string();
        if file_suffix.is_empty() || file_suffix.contains('/') || file_suffix.contains('\0') {
            return Err(format!(
                "file-suffix {file_suffix:?}: must be non-empty, without / or NUL"
            ));
        }
        Ok(Resolver {
            file_suffix,
            hide_files: p.parse("hide-files")?.unwrap_or(false),
        })
    }

    fn resolve(&self, _parent: &str, kind: ConflictKind, entries: &[Entry]) -> Vec<Resolution> {
        entries
            .iter()
            .map(|e| match kind {
                ConflictKind::InvalidName => Resolution::Rename(escape(&e.name)),
                ConflictKind::FileAndDirectory if e.is_dir => Resolution::Keep,
                ConflictKind::FileAndDirectory if self.hide_files => Resolution::Hide,
                ConflictKind::FileAndDirectory => {
                    Resolution::Rename(format!("{}{}", e.name, self.file_suffix))
                }
            })
            .collect()
    }
}

blobmount_plugin_sdk::name_conflict_plugin!(Resolver);
