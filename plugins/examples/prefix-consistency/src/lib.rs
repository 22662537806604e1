//! Example consistency plugin: different guarantees per key prefix.
//!
//! Parameters:
//! - `immutable=PREFIX` (repeatable; e.g. `datasets/`): objects never change once written, so
//!   stat, listings and data are cached forever and opens do not revalidate.
//! - `revalidate=PREFIX` (repeatable; e.g. `logs/`): growing files: nothing is cached, every
//!   open checks the store.
//! - `default-ttl-ms=N` (default 1000): everything else caches for N ms and revalidates on open.

use blobmount_plugin_sdk::consistency::{ConsistencyPolicy, Decision, Ttl};
use blobmount_plugin_sdk::Params;

struct PrefixConsistency {
    immutable: Vec<String>,
    revalidate: Vec<String>,
    default_ttl_ms: u64,
}

impl ConsistencyPolicy for PrefixConsistency {
    fn new(p: Params) -> Result<Self, String> {
        p.only(&["immutable", "revalidate", "default-ttl-ms"])?;
        Ok(PrefixConsistency {
            immutable: p.all("immutable").map(String::from).collect(),
            revalidate: p.all("revalidate").map(String::from).collect(),
            default_ttl_ms: p.parse("default-ttl-ms")?.unwrap_or(1000),
        })
    }

    fn policy_for(&self, key: &str, _is_dir: bool) -> Decision {
        let under = |prefixes: &[String]| prefixes.iter().any(|p| key.starts_with(p.as_str()));
        if under(&self.immutable) {
            Decision {
                stat_ttl: Ttl::Forever,
                list_ttl: Ttl::Forever,
                data_ttl: Ttl::Forever,
                revalidate_on_open: false,
                cacheable: true,
            }
        } else if under(&self.revalidate) {
            Decision {
                stat_ttl: Ttl::None,
                list_ttl: Ttl::None,
                data_ttl: Ttl::None,
                revalidate_on_open: true,
                cacheable: false,
            }
        } else {
            let t = Ttl::Millis(self.default_ttl_ms);
            Decision {
                stat_ttl: t,
                list_ttl: t,
                data_ttl: t,
                revalidate_on_open: true,
                cacheable: true,
            }
        }
    }
}

blobmount_plugin_sdk::consistency_plugin!(PrefixConsistency);
