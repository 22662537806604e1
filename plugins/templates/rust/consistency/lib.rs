//! A consistency plugin (hook `consistency`): how long the daemon may trust what it cached
//! about a key, per key prefix. Parameters:
//! - `ttl=PREFIX:MILLIS` (repeatable; the longest matching prefix wins; `MILLIS` may also be
//!   `forever` or `none`): the stat, list and data TTL for keys under `PREFIX`;
//! - `default-ttl-ms=MILLIS` (default 1000): for every other key.
//!
//! To make it yours, change `policy_for` (for instance, set `revalidate_on_open` for data that
//! changes under you), then add cases to `fixtures.yaml`.

use blobmount_plugin_sdk::consistency::{ConsistencyPolicy, Decision, Ttl};
use blobmount_plugin_sdk::Params;

struct PrefixTtl {
    /// (prefix, TTL), longest prefix first.
    rules: Vec<(String, Ttl)>,
    default: Ttl,
}

fn parse_ttl(key: &str, v: &str) -> Result<Ttl, String> {
    match v.trim() {
        "forever" => Ok(Ttl::Forever),
        "none" => Ok(Ttl::None),
        n => n
            .parse()
            .map(Ttl::Millis)
            .map_err(|_| format!("parameter {key}: {v:?} is not MILLIS, forever or none")),
    }
}

impl ConsistencyPolicy for PrefixTtl {
    /// Called once per instance with `plugins.consistency.params` from the mount config.
    /// An `Err` stops the mount with that message.
    fn new(params: Params) -> Result<Self, String> {
        params.only(&["ttl", "default-ttl-ms"])?; // CHANGE: the parameter names you accept
        let mut rules = Vec::new();
        for rule in params.all("ttl") {
            let (prefix, ttl) = rule
                .rsplit_once(':')
                .ok_or_else(|| format!("parameter ttl: {rule:?} is not PREFIX:MILLIS"))?;
            rules.push((prefix.to_string(), parse_ttl("ttl", ttl)?));
        }
        rules.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        let default = match params.get("default-ttl-ms") {
            Some(v) => parse_ttl("default-ttl-ms", v)?,
            None => Ttl::Millis(1000),
        };
        Ok(PrefixTtl { rules, default })
    }

    /// `key` is the object's key; directories end with `/`.
    fn policy_for(&self, key: &str, _is_dir: bool) -> Decision {
        // CHANGE: your rule.
        let ttl = self
            .rules
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, ttl)| *ttl);
        Decision {
            stat_ttl: ttl,
            list_ttl: ttl,
            data_ttl: ttl,
            revalidate_on_open: false,
            cacheable: true,
        }
    }
}

blobmount_plugin_sdk::consistency_plugin!(PrefixTtl);
