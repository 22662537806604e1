//! Building the mount's policy from the `policy:` and `plugins:` config sections, and
//! building it again on `SIGHUP`.
//!
//! Why here and not in the core: the core knows only the `Policy` trait; loading WASM
//! components (wasmtime) is the daemon's business, done once at mount time before the
//! file system serves, so that a missing, malformed or wrong-world plugin fails the mount
//! with a clear message and instantiation never happens in a FUSE request.
//!
//! Why a [`MountPolicy`] around the plugins: a reload must change the policy of a running
//! mount without remounting, and must keep the old one when the new one does not load. The
//! core holds the `MountPolicy` for the whole mount; a reload builds a complete new
//! [`WasmPolicy`] first (compiling and instantiating its plugins off the FUSE path) and only
//! then swaps it in, so a call sees either the old policy or the new one, never a mix.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use blobmount_core::{Fs, FsConfig};
use blobmount_policy::WasmPolicy;
use blobmount_policy_api::{
    AclDecision, Builtin, Caller, ConflictEntry, ConflictKind, Consistency, ObjectInfo, Policy,
    Resolution, Verdict,
};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::config::Config;

/// The built-in policy from the global settings plus `policy:`, with the configured plugins
/// loaded over it.
fn build(cfg: &Config, fs_cfg: &FsConfig) -> Result<WasmPolicy, String> {
    let mut b = blobmount_core::policy::builtin_config_for(fs_cfg);
    b.filter = cfg.policy.filter.clone();
    b.name_conflict = cfg.policy.name_conflict;
    b.consistency.revalidate_on_open = cfg.policy.revalidate_on_open;
    b.consistency.cacheable = cfg.policy.cacheable;
    let builtin = Builtin::new(b).map_err(|e| format!("policy.{e}"))?;
    let plugins = crate::manifest::merged(&cfg.plugins)?;
    let wasm = WasmPolicy::load(&plugins, builtin).map_err(|e| format!("plugins: {e}"))?;
    for hook in blobmount_policy::Hook::ALL {
        if let (Some(p), Some(t)) = (plugins.get(hook), wasm.instantiate_time(hook)) {
            info!(
                hook = hook.name(),
                path = %p.path.display(),
                instantiate_ms = t.as_secs_f64() * 1e3,
                "policy plugin loaded"
            );
        }
    }
    Ok(wasm)
}

/// The mount's policy (the core's `Policy`, and the plugins' counters on `/metrics`).
pub fn load(cfg: &Config, fs_cfg: &FsConfig) -> Result<Arc<MountPolicy>, String> {
    Ok(Arc::new(MountPolicy {
        current: RwLock::new(Arc::new(build(cfg, fs_cfg)?)),
    }))
}

/// The policy a mount uses now; replaced as a whole by a reload.
pub struct MountPolicy {
    current: RwLock<Arc<WasmPolicy>>,
}

impl MountPolicy {
    /// The policy in force (a reload does not change what a caller already holds).
    pub fn current(&self) -> Arc<WasmPolicy> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, p: WasmPolicy) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(p);
    }
}

impl Policy for MountPolicy {
    fn filter(&self, obj: &ObjectInfo, now_secs: i64) -> Verdict {
        self.current().filter(obj, now_secs)
    }

    fn filter_batch(&self, objs: &[ObjectInfo], now_secs: i64) -> Vec<Verdict> {
        self.current().filter_batch(objs, now_secs)
    }

    fn resolve_conflict(
        &self,
        parent: &str,
        kind: ConflictKind,
        entries: &[ConflictEntry],
    ) -> Vec<Resolution> {
        self.current().resolve_conflict(parent, kind, entries)
    }

    fn consistency(&self, key: &str, is_dir: bool) -> Consistency {
        self.current().consistency(key, is_dir)
    }

    fn acl(&self, obj: &ObjectInfo, caller: Caller) -> AclDecision {
        self.current().acl(obj, caller)
    }
}

/// Where the mount's settings came from, so that a reload reads them the same way: the
/// config file and the environment again, and the command line's `policy.*` / `plugins.*`
/// settings (the others, secrets among them, are not kept).
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub file: Option<PathBuf>,
    pub overrides: Vec<(Vec<String>, Value)>,
}

impl Source {
    pub fn new(file: Option<PathBuf>, overrides: Vec<(Vec<String>, Value)>) -> Source {
        let overrides = overrides
            .into_iter()
            .filter(|(path, _)| is_reloadable(path.first().map(String::as_str)))
            .collect();
        Source { file, overrides }
    }
}

/// Top-level config sections a reload applies; the others need a remount.
const RELOADED: [&str; 2] = ["policy", "plugins"];

fn is_reloadable(section: Option<&str>) -> bool {
    section.is_some_and(|s| RELOADED.contains(&s))
}

impl Source {
    /// The settings as they read now, without the store section (credentials).
    fn read(&self) -> Result<Config, String> {
        let mut cfg =
            Config::load_with(self.file.as_deref(), &self.overrides).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        cfg.store = Default::default();
        Ok(cfg)
    }
}

/// What a reload needs: where the settings come from and how they read when the mount
/// started (to name the changes a reload does not apply), the settings the core runs with
/// (a reload applies only `policy:` and `plugins:`, over the same global owner, modes and
/// TTLs), the policy to replace and the file system whose cached verdicts it drops.
pub struct Reloader {
    source: Source,
    baseline: Option<Config>,
    /// The config file and the plugin files of the settings last read (for the watcher).
    watched: Mutex<Vec<PathBuf>>,
    fs_cfg: FsConfig,
    policy: Arc<MountPolicy>,
    fs: Arc<Fs>,
    busy: AtomicBool,
}

impl Reloader {
    pub fn new(
        source: Source,
        fs_cfg: FsConfig,
        policy: Arc<MountPolicy>,
        fs: Arc<Fs>,
    ) -> Reloader {
        let baseline = source.read().ok();
        let watched = Mutex::new(watched_files(&source, baseline.as_ref()));
        Reloader {
            baseline,
            watched,
            source,
            fs_cfg,
            policy,
            fs,
            busy: AtomicBool::new(false),
        }
    }

    /// Read the settings again and swap in the new policy; on any error keep the old one
    /// and say why. Blocking (plugins are compiled): run it off the async workers. A
    /// reload asked for while one runs is skipped with a log line.
    /// `why` names the trigger in the log (`SIGHUP`, `config changed`).
    pub fn reload(&self, why: &str) {
        if self.busy.swap(true, Ordering::AcqRel) {
            warn!("{why}: a policy reload is already running; this one is skipped");
            return;
        }
        match self.try_reload() {
            Ok(()) => info!("{why}: policy reloaded"),
            Err(e) => {
                error!(error = %e, "{why}: policy not reloaded; the old one stays in force")
            }
        }
        self.busy.store(false, Ordering::Release);
    }

    /// Check the config file and the plugin files every `every` on a thread of its own, and
    /// reload when one of them changed and then stayed the same for one more period (a file
    /// being written, or a Kubernetes ConfigMap update, is not read half-done). Nothing to
    /// watch (no config file, no plugin): no thread.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        if lock(&self.watched).is_empty() {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("blobmount-watch".into())
            .spawn(move || {
                let mut seen = me.fingerprint();
                let mut pending: Option<Vec<Stamp>> = None;
                loop {
                    std::thread::sleep(every);
                    let now = me.fingerprint();
                    if pending.as_ref() == Some(&now) {
                        me.reload("config changed");
                        pending = None;
                        seen = me.fingerprint();
                    } else if now != seen {
                        pending = Some(now);
                    } else {
                        pending = None;
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot watch the config for changes; SIGHUP still reloads");
        }
    }

    fn fingerprint(&self) -> Vec<Stamp> {
        lock(&self.watched).iter().map(|p| stamp(p)).collect()
    }

    fn try_reload(&self) -> Result<(), String> {
        let cfg = self.source.read()?;
        *lock(&self.watched) = watched_files(&self.source, Some(&cfg));
        let ignored = self
            .baseline
            .as_ref()
            .map(|b| changed_sections(b, &cfg))
            .unwrap_or_default();
        if !ignored.is_empty() {
            warn!(
                sections = %ignored.join(", "),
                "SIGHUP: changed settings outside policy and plugins need a remount; not applied"
            );
        }
        let new = build(&cfg, &self.fs_cfg)?;
        self.policy.replace(new);
        self.fs.policy_changed();
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What identifies a version of a watched file: modification time, size and inode (a
/// replaced file, as a ConfigMap update swaps a symlink, has another inode); `None` while
/// it is missing.
type Stamp = Option<(i64, i64, u64, u64)>;

fn stamp(p: &std::path::Path) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
}

/// The config file, the plugin directory's manifest and the plugin files `cfg` names.
fn watched_files(source: &Source, cfg: Option<&Config>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = source.file.iter().cloned().collect();
    if let Some(c) = cfg {
        out.extend(crate::manifest::manifest_path(&c.plugins));
        let plugins = crate::manifest::merged(&c.plugins).unwrap_or_else(|_| c.plugins.clone());
        out.extend(
            blobmount_policy::Hook::ALL
                .into_iter()
                .filter_map(|h| plugins.get(h).map(|p| p.path.clone())),
        );
    }
    out
}

/// Top-level sections other than the reloaded ones whose settings differ.
fn changed_sections(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    a.iter()
        .filter(|(k, v)| !is_reloadable(Some(k)) && b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policy_and_plugin_flags_are_kept_for_a_reload() {
        let o = |p: &str| (p.split('.').map(String::from).collect(), Value::from("x"));
        let s = Source::new(
            None,
            vec![
                o("store.azure.account-key"),
                o("policy.filter.exclude"),
                o("plugins.cache-dir"),
            ],
        );
        let kept: Vec<_> = s.overrides.iter().map(|(p, _)| p.join(".")).collect();
        assert_eq!(kept, ["policy.filter.exclude", "plugins.cache-dir"]);
    }

    #[test]
    fn sections_outside_policy_and_plugins_are_named_when_changed() {
        let old = Config::default();
        let mut new = Config::default();
        new.mount.uid = Some(4242);
        new.policy.cacheable = !new.policy.cacheable;
        assert_eq!(changed_sections(&old, &new), ["mount"]);
        assert!(changed_sections(&old, &old.clone()).is_empty());
    }
}
