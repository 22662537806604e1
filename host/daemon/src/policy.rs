//! Building the mount's policy from the `policy:` and `plugins:` config sections.
//!
//! Why here and not in the core: the core knows only the `Policy` trait; loading WASM
//! components (wasmtime) is the daemon's business, done once at mount time before the
//! file system serves, so that a missing, malformed or wrong-world plugin fails the mount
//! with a clear message and instantiation never happens in a FUSE request.

use std::sync::Arc;

use blobmount_core::FsConfig;
use blobmount_policy::WasmPolicy;
use blobmount_policy_api::Builtin;
use tracing::info;

use crate::config::Config;

/// The built-in policy from the global settings plus `policy:`, with the configured plugins
/// loaded over it. The mount keeps it (as the core's `Policy`, and for the plugins'
/// counters on `/metrics`).
pub fn load(cfg: &Config, fs_cfg: &FsConfig) -> Result<Arc<WasmPolicy>, String> {
    let mut b = blobmount_core::policy::builtin_config_for(fs_cfg);
    b.filter = cfg.policy.filter.clone();
    b.name_conflict = cfg.policy.name_conflict;
    b.consistency.revalidate_on_open = cfg.policy.revalidate_on_open;
    b.consistency.cacheable = cfg.policy.cacheable;
    let builtin = Builtin::new(b).map_err(|e| format!("policy.{e}"))?;
    let wasm = WasmPolicy::load(&cfg.plugins, builtin).map_err(|e| format!("plugins: {e}"))?;
    for hook in blobmount_policy::Hook::ALL {
        if let (Some(p), Some(t)) = (cfg.plugins.get(hook), wasm.instantiate_time(hook)) {
            info!(
                hook = hook.name(),
                path = %p.path.display(),
                instantiate_ms = t.as_secs_f64() * 1e3,
                "policy plugin loaded"
            );
        }
    }
    Ok(Arc::new(wasm))
}
