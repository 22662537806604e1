//! A directory of plugins (`plugins.dir`) described by its `manifest.yaml`, merged into the
//! `plugins:` section before the policy is built.
//!
//! Why: a sidecar image or a ConfigMap ships plugins as a unit (the components and what
//! each one is for), pinned by digest, without repeating paths and limits in every mount's
//! config. The manifest is read at mount and at every reload, so replacing the directory's
//! contents (and its pins) is a policy update. Each entry takes the keys of a
//! `plugins.<hook>` mapping, with `file` (relative to the directory) instead of `path`:
//!
//! ```yaml
//! plugins:
//!   - name: hide-drafts
//!     hook: filter
//!     file: hide-drafts.wasm
//!     sha256: 3f0c...          # optional pin
//!     params: {suffix: ".draft"}
//!     deadline-ms: 50          # any other plugin setting
//! ```

use std::path::{Path, PathBuf};

use blobmount_policy::{Hook, PluginConfig, PluginsConfig};
use serde_json::Value;

/// The manifest's file name inside `plugins.dir`.
pub const MANIFEST: &str = "manifest.yaml";

/// `plugins` with the entries of `plugins.dir`'s manifest added (none without a dir). A
/// hook configured both ways, twice in the manifest, or an entry that does not parse is an
/// error naming the manifest and the entry.
pub fn merged(plugins: &PluginsConfig) -> Result<PluginsConfig, String> {
    let mut out = plugins.clone();
    let Some(dir) = &plugins.dir else {
        return Ok(out);
    };
    let file = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("plugins.dir: {}: {e}", file.display()))?;
    let tree = crate::config::parse_yaml(&text)
        .map_err(|e| format!("plugins.dir: {}: {e}", file.display()))?;
    for (name, hook, plugin) in
        entries(dir, &tree).map_err(|e| format!("{}: {e}", file.display()))?
    {
        let slot = out.slot(hook);
        if slot.is_some() {
            return Err(format!(
                "{}: {name}: the {hook} hook already has a plugin (in the config or earlier in the manifest)",
                file.display()
            ));
        }
        *slot = Some(plugin);
    }
    Ok(out)
}

/// The manifest's entries: name, hook and plugin settings (paths made absolute).
fn entries(dir: &Path, tree: &Value) -> Result<Vec<(String, Hook, PluginConfig)>, String> {
    let mut top = tree.as_object().cloned().unwrap_or_default();
    let list = match top.remove("plugins") {
        Some(Value::Array(list)) => list,
        Some(_) | None => return Err("expected `plugins:` with a list of plugins".into()),
    };
    if let Some(k) = top.keys().next() {
        return Err(format!("unknown key {k:?} (only `plugins:`)"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, v)| entry(dir, i, v))
        .collect()
}

fn entry(dir: &Path, i: usize, v: Value) -> Result<(String, Hook, PluginConfig), String> {
    let Value::Object(mut m) = v else {
        return Err(format!("entry {}: expected a mapping", i + 1));
    };
    let mut take = |k: &str| match m.remove(k) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("entry {}: `{k}` must be a string", i + 1)),
        None => Err(format!("entry {}: `{k}` is missing", i + 1)),
    };
    let name = take("name")?;
    let hook_name = take("hook")?;
    let file = take("file").map_err(|e| format!("{name}: {e}"))?;
    let hook = Hook::parse(&hook_name).ok_or_else(|| {
        format!("{name}: unknown hook {hook_name:?} (filter, name-conflict, consistency, acl)")
    })?;
    let rel = Path::new(&file);
    if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
        return Err(format!(
            "{name}: file {file:?} must be a path inside the plugin directory"
        ));
    }
    m.insert(
        "path".into(),
        Value::String(dir.join(rel).to_string_lossy().into_owned()),
    );
    let plugin: PluginConfig =
        serde_json::from_value(Value::Object(m)).map_err(|e| format!("{name}: {e}"))?;
    Ok((name, hook, plugin))
}

/// The manifest file, when `plugins.dir` is set (watched for changes with the config).
pub fn manifest_path(plugins: &PluginsConfig) -> Option<PathBuf> {
    plugins.dir.as_ref().map(|d| d.join(MANIFEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_manifest(text: &str) -> (tempfile::TempDir, PluginsConfig) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(MANIFEST), text).unwrap();
        let p = PluginsConfig {
            dir: Some(d.path().to_path_buf()),
            ..PluginsConfig::default()
        };
        (d, p)
    }

    #[test]
    fn entries_become_plugins_with_paths_in_the_directory() {
        let (d, p) = with_manifest(
            "plugins:\n  - name: drafts\n    hook: filter\n    file: f.wasm\n    sha256: ab\n    \
             deadline-ms: 50\n    params: {suffix: .draft}\n  - name: owners\n    hook: acl\n    file: sub/a.wasm\n",
        );
        let m = merged(&p).unwrap();
        let f = m.filter.unwrap();
        assert_eq!(f.path, d.path().join("f.wasm"));
        assert_eq!(f.deadline_ms, 50);
        assert_eq!(f.sha256.as_deref(), Some("ab"));
        assert_eq!(
            f.param_list(),
            [("suffix".to_string(), ".draft".to_string())]
        );
        assert_eq!(m.acl.unwrap().path, d.path().join("sub/a.wasm"));
    }

    #[test]
    fn bad_manifests_are_refused_with_the_entry_named() {
        for (text, expect) in [
            ("plugins: {}\n", "expected `plugins:` with a list"),
            ("other: 1\nplugins: []\n", "unknown key \"other\""),
            (
                "plugins:\n  - hook: filter\n    file: f.wasm\n",
                "entry 1: `name` is missing",
            ),
            (
                "plugins:\n  - {name: x, hook: nope, file: f.wasm}\n",
                "x: unknown hook \"nope\"",
            ),
            (
                "plugins:\n  - {name: x, hook: acl, file: ../f.wasm}\n",
                "inside the plugin directory",
            ),
            (
                "plugins:\n  - {name: x, hook: acl, file: /f.wasm}\n",
                "inside the plugin directory",
            ),
            (
                "plugins:\n  - {name: x, hook: acl, file: f.wasm, fule: 1}\n",
                "x: unknown field `fule`",
            ),
            (
                "plugins:\n  - {name: x, hook: acl, file: f.wasm}\n  - {name: second, hook: acl, file: g.wasm}\n",
                "second: the acl hook already has a plugin",
            ),
        ] {
            let (_d, p) = with_manifest(text);
            let e = merged(&p).unwrap_err();
            assert!(e.contains(expect), "{text}: {e}");
        }
        let mut p = PluginsConfig {
            dir: Some("/nonexistent-plugins".into()),
            ..PluginsConfig::default()
        };
        assert!(
            merged(&p)
                .unwrap_err()
                .contains("/nonexistent-plugins/manifest.yaml")
        );
        p.dir = None;
        assert_eq!(merged(&p).unwrap(), p);
    }

    #[test]
    fn a_hook_in_both_the_config_and_the_manifest_is_refused() {
        let (_d, mut p) = with_manifest("plugins:\n  - {name: x, hook: filter, file: f.wasm}\n");
        p.filter = Some(PluginConfig::new("/other.wasm"));
        assert!(
            merged(&p)
                .unwrap_err()
                .contains("filter hook already has a plugin")
        );
    }
}
