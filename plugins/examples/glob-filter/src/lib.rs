//! Example filter plugin: hide or protect objects by glob, size, age and content type.
//!
//! Parameters (all optional, globs may repeat; a glob without `/` matches the base name at
//! any depth, one with `/` the whole key — `*` stops at `/`, `**` does not):
//! - `include=GLOB`   only files matching one of these are shown (directories always pass)
//! - `exclude=GLOB`   files and directories matching one of these are hidden
//! - `read-only=GLOB` matching entries are shown read-only
//! - `min-size=BYTES`, `max-size=BYTES`   hide files outside the range
//! - `max-age-secs=N` hide files last modified more than N seconds ago
//! - `hide-content-type=TYPE`  hide files with this Content-Type (prefix match, e.g. `video/`)

use blobmount_plugin_sdk::filter::{Filter, ObjectInfo, Verdict};
use blobmount_plugin_sdk::{glob_match, Params};

struct GlobFilter {
    include: Vec<String>,
    exclude: Vec<String>,
    read_only: Vec<String>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    max_age_secs: Option<i64>,
    hide_content_types: Vec<String>,
}

fn any_match(globs: &[String], obj: &ObjectInfo) -> bool {
    let key = obj.key.strip_suffix('/').unwrap_or(&obj.key);
    let base = key.rsplit('/').next().unwrap_or(key);
    globs.iter().any(|g| {
        if g.contains('/') {
            glob_match(g, key)
        } else {
            glob_match(g, base)
        }
    })
}

impl Filter for GlobFilter {
    fn new(p: Params) -> Result<Self, String> {
        p.only(&[
            "include",
            "exclude",
            "read-only",
            "min-size",
            "max-size",
            "max-age-secs",
            "hide-content-type",
        ])?;
        let list = |k: &str| p.all(k).map(String::from).collect::<Vec<_>>();
        Ok(GlobFilter {
            include: list("include"),
            exclude: list("exclude"),
            read_only: list("read-only"),
            min_size: p.parse("min-size")?,
            max_size: p.parse("max-size")?,
            max_age_secs: p.parse("max-age-secs")?,
            hide_content_types: list("hide-content-type"),
        })
    }

    fn filter(&self, obj: &ObjectInfo, now_secs: i64) -> Verdict {
        if any_match(&self.exclude, obj) {
            return Verdict::Hidden;
        }
        if !obj.is_dir {
            let hidden = (!self.include.is_empty() && !any_match(&self.include, obj))
                || self.min_size.is_some_and(|m| obj.size < m)
                || self.max_size.is_some_and(|m| obj.size > m)
                || self
                    .max_age_secs
                    .is_some_and(|m| now_secs.saturating_sub(obj.mtime_secs) > m)
                || obj.content_type.as_deref().is_some_and(|ct| {
                    self.hide_content_types
                        .iter()
                        .any(|h| ct.starts_with(h.as_str()))
                });
            if hidden {
                return Verdict::Hidden;
            }
        }
        if any_match(&self.read_only, obj) {
            Verdict::VisibleReadOnly
        } else {
            Verdict::Visible
        }
    }
}

blobmount_plugin_sdk::filter_plugin!(GlobFilter);
