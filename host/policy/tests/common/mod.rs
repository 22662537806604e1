//! Finding the real plugin components built by `plugins/build.sh`.
#![allow(dead_code)]

use std::path::PathBuf;

use blobmount_policy::{Hook, PluginConfig, PluginsConfig, WasmPolicy};
use blobmount_policy_api::{Builtin, ObjectInfo};

/// `plugins/dist/NAME.wasm` (or `$BLOBMOUNT_PLUGIN_DIR/NAME.wasm`). Fails loudly if missing:
/// these tests must run against real components, never be skipped.
pub fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os("BLOBMOUNT_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist"));
    let p = dir.join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "plugin component {} is missing: build the plugins first with `bash plugins/build.sh` \
         (tests/run-all.sh does this), or point BLOBMOUNT_PLUGIN_DIR at a directory holding them",
        p.display()
    );
    p
}

pub fn policy(hook: Hook, cfg: PluginConfig) -> WasmPolicy {
    try_policy(hook, cfg).unwrap_or_else(|e| panic!("load failed: {e}"))
}

pub fn try_policy(
    hook: Hook,
    cfg: PluginConfig,
) -> Result<WasmPolicy, blobmount_policy::LoadError> {
    let mut c = PluginsConfig::default();
    match hook {
        Hook::Filter => c.filter = Some(cfg),
        Hook::NameConflict => c.name_conflict = Some(cfg),
        Hook::Consistency => c.consistency = Some(cfg),
        Hook::Acl => c.acl = Some(cfg),
    }
    WasmPolicy::load(&c, Builtin::default())
}

pub fn obj(key: &str, size: u64, mtime_secs: i64) -> ObjectInfo {
    ObjectInfo {
        key: key.into(),
        size,
        mtime_secs,
        is_dir: key.ends_with('/'),
        content_type: None,
        metadata: vec![],
    }
}
