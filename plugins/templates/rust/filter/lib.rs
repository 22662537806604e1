//! A filter plugin (hook `filter`): hides every file whose key ends with the `suffix`
//! parameter (default `.draft`); everything else stays visible.
//!
//! To make it yours, change `filter` (and the parameters `new` accepts), then add cases to
//! `fixtures.yaml`. A filter must be pure: same object and time, same verdict (the daemon
//! caches verdicts). `Verdict::VisibleReadOnly` shows an object but refuses writes to it.

use blobmount_plugin_sdk::filter::{Filter, ObjectInfo, Verdict};
use blobmount_plugin_sdk::Params;

struct HideSuffix {
    suffix: String,
}

impl Filter for HideSuffix {
    /// Called once per instance with `plugins.filter.params` from the mount config. An
    /// `Err` stops the mount with that message, so refuse anything you do not understand.
    fn new(params: Params) -> Result<Self, String> {
        params.only(&["suffix"])?; // CHANGE: the parameter names you accept
        let suffix = params.get("suffix").unwrap_or(".draft").to_string();
        if suffix.is_empty() {
            return Err("parameter suffix: must not be empty".to_string());
        }
        Ok(HideSuffix { suffix })
    }

    /// Called for each object of a listing and each lookup. `obj` has `key`, `size`,
    /// `mtime_secs`, `is_dir`, `content_type` and `metadata`; `now_secs` is the current time.
    fn filter(&self, obj: &ObjectInfo, _now_secs: i64) -> Verdict {
        // CHANGE: your rule.
        if !obj.is_dir && obj.key.ends_with(&self.suffix) {
            Verdict::Hidden
        } else {
            Verdict::Visible
        }
    }
}

blobmount_plugin_sdk::filter_plugin!(HideSuffix);
