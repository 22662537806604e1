//! Example filter plugin: decide by an object's user metadata and tags, the `metadata` field
//! of the filter hook's `object-info` (`x-amz-meta-*`, `x-ms-meta-*`, `x-goog-meta-*` without
//! the prefix, tags as `tag:NAME`; names lower-cased; empty when the listing carried none).
//!
//! Parameters (each may repeat; `NAME=VALUE` matches when the object has metadata `NAME` with
//! exactly `VALUE`, `NAME=*` when it has `NAME` at all; names are compared lower-cased):
//! - `hide=NAME=VALUE`       files matching any of these are hidden
//! - `require=NAME=VALUE`    only files matching one of these are shown
//! - `read-only=NAME=VALUE`  files matching any of these are shown read-only
//!
//! Directories carry no metadata and are always shown. Example: hide everything tagged
//! `classification=secret`, show `status=final` files read-only:
//! `hide: "tag:classification=secret"`, `read-only: "status=final"`.

use blobmount_plugin_sdk::filter::{Filter, ObjectInfo, Verdict};
use blobmount_plugin_sdk::Params;

/// One `NAME=VALUE` rule; `value` is `None` for `NAME=*`.
struct Rule {
    name: String,
    value: Option<String>,
}

impl Rule {
    fn parse(key: &str, s: &str) -> Result<Rule, String> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| format!("parameter {key}: {s:?} is not NAME=VALUE"))?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(format!("parameter {key}: {s:?} has an empty NAME"));
        }
        let value = (value != "*").then(|| value.to_string());
        Ok(Rule { name, value })
    }

    fn matches(&self, obj: &ObjectInfo) -> bool {
        obj.metadata.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case(&self.name) && self.value.as_ref().is_none_or(|want| v == want)
        })
    }
}

struct MetaFilter {
    hide: Vec<Rule>,
    require: Vec<Rule>,
    read_only: Vec<Rule>,
}

impl Filter for MetaFilter {
    fn new(p: Params) -> Result<Self, String> {
        p.only(&["hide", "require", "read-only"])?;
        let rules = |k: &str| {
            p.all(k)
                .map(|s| Rule::parse(k, s))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(MetaFilter {
            hide: rules("hide")?,
            require: rules("require")?,
            read_only: rules("read-only")?,
        })
    }

    fn filter(&self, obj: &ObjectInfo, _now_secs: i64) -> Verdict {
        if obj.is_dir {
            return Verdict::Visible;
        }
        if self.hide.iter().any(|r| r.matches(obj)) {
            return Verdict::Hidden;
        }
        if !self.require.is_empty() && !self.require.iter().any(|r| r.matches(obj)) {
            return Verdict::Hidden;
        }
        if self.read_only.iter().any(|r| r.matches(obj)) {
            return Verdict::VisibleReadOnly;
        }
        Verdict::Visible
    }
}

blobmount_plugin_sdk::filter_plugin!(MetaFilter);
