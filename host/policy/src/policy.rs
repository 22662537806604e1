//! [`WasmPolicy`]: the `Policy` the core calls when plugins are configured. Routes each hook
//! to its plugin (or to the built-in policy), converts between the plain policy-api types
//! and the generated bindings, validates what plugins return, caches pure answers and applies
//! the failure mode.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use blobmount_policy_api::{
    Access, AclDecision, Builtin, Caller, ConflictEntry, ConflictKind, Consistency, ObjectInfo,
    Policy, Resolution, Ttl, Verdict, is_valid_name,
};
use wasmtime::Engine;

use crate::bindings::{World, acl, consistency, filter, name_conflict};
use crate::cache::AnswerCache;
use crate::config::{FailureMode, Hook, PluginConfig, PluginsConfig};
use crate::engine::new_engine;
use crate::error::{CallError, LoadError};
use crate::plugin::{Loaded, StatsSnapshot};

use acl::exports::blobmount::policy::acl as acl_if;
use consistency::exports::blobmount::policy::consistency as cons_if;
use filter::exports::blobmount::policy::filter as filter_if;
use name_conflict::exports::blobmount::policy::name_conflict as nc_if;

struct Hooked<W: World, K, V> {
    plugin: Loaded<W>,
    mode: FailureMode,
    cache: AnswerCache<K, V>,
}

impl<W: World, K: std::hash::Hash + Eq, V: Clone> Hooked<W, K, V> {
    /// Record a call's outcome (counters, log, circuit breaker); the answer if usable.
    fn outcome<T>(&self, r: Result<T, CallError>) -> Option<T> {
        match r {
            Ok(v) => {
                self.plugin.note_success();
                Some(v)
            }
            Err(e) => {
                self.plugin.note_failure(&e);
                None
            }
        }
    }

    fn load(
        engine: &Engine,
        hook: Hook,
        cfg: &PluginConfig,
        cache_dir: Option<&Path>,
    ) -> Result<Self, LoadError> {
        Ok(Hooked {
            plugin: Loaded::load(engine, hook, cfg, cache_dir)?,
            mode: cfg.on_failure,
            cache: AnswerCache::new(cfg.cache_entries, Duration::from_secs(cfg.cache_secs)),
        })
    }
}

/// The policy with plugins: one optional plugin per hook, the built-in policy for the rest.
pub struct WasmPolicy {
    builtin: Builtin,
    filter: Option<Hooked<filter::FilterPlugin, ObjectInfo, Verdict>>,
    name_conflict: Option<Hooked<name_conflict::NameConflictPlugin, (), ()>>,
    consistency: Option<Hooked<consistency::ConsistencyPlugin, (String, bool), Consistency>>,
    acl: Option<Hooked<acl::AclPlugin, (ObjectInfo, Caller), AclDecision>>,
}

fn to_filter_obj(o: &ObjectInfo) -> filter::blobmount::policy::types::ObjectInfo {
    filter::blobmount::policy::types::ObjectInfo {
        key: o.key.clone(),
        size: o.size,
        mtime_secs: o.mtime_secs,
        is_dir: o.is_dir,
        content_type: o.content_type.clone(),
        metadata: o.metadata.clone(),
    }
}

fn to_acl_obj(o: &ObjectInfo) -> acl::blobmount::policy::types::ObjectInfo {
    acl::blobmount::policy::types::ObjectInfo {
        key: o.key.clone(),
        size: o.size,
        mtime_secs: o.mtime_secs,
        is_dir: o.is_dir,
        content_type: o.content_type.clone(),
        metadata: o.metadata.clone(),
    }
}

fn from_verdict(v: filter_if::Verdict) -> Verdict {
    match v {
        filter_if::Verdict::Hidden => Verdict::Hidden,
        filter_if::Verdict::Visible => Verdict::Visible,
        filter_if::Verdict::VisibleReadOnly => Verdict::VisibleReadOnly,
    }
}

fn from_ttl(t: cons_if::Ttl) -> Ttl {
    match t {
        cons_if::Ttl::None => Ttl::None,
        cons_if::Ttl::Millis(ms) => Ttl::For(Duration::from_millis(ms)),
        cons_if::Ttl::Forever => Ttl::Forever,
    }
}

/// Check a name-conflict answer: one per entry, valid names, no two shown alike.
fn check_resolutions(entries: &[ConflictEntry], out: &[Resolution]) -> Result<(), CallError> {
    if out.len() != entries.len() {
        return Err(CallError::BadReturn(format!(
            "{} resolutions for {} entries",
            out.len(),
            entries.len()
        )));
    }
    let mut seen = HashSet::new();
    for (e, r) in entries.iter().zip(out) {
        let shown = match r {
            Resolution::Hide => continue,
            Resolution::Keep => &e.name,
            Resolution::Rename(n) => n,
        };
        if !is_valid_name(shown) {
            return Err(CallError::BadReturn(format!(
                "{shown:?} is not a valid Linux name"
            )));
        }
        if !seen.insert(shown.as_str()) {
            return Err(CallError::BadReturn(format!(
                "two entries would both be shown as {shown:?}"
            )));
        }
    }
    Ok(())
}

impl WasmPolicy {
    /// Load every configured plugin; hooks without one use `builtin`. Fails on the first
    /// plugin that cannot be used, with a message naming it.
    pub fn load(cfg: &PluginsConfig, builtin: Builtin) -> Result<WasmPolicy, LoadError> {
        let any = Hook::ALL.iter().any(|h| cfg.get(*h).is_some());
        let mut p = WasmPolicy {
            builtin,
            filter: None,
            name_conflict: None,
            consistency: None,
            acl: None,
        };
        if !any {
            return Ok(p);
        }
        let engine = new_engine()?;
        let dir = cfg.cache_dir.as_deref();
        if let Some(c) = &cfg.filter {
            p.filter = Some(Hooked::load(&engine, Hook::Filter, c, dir)?);
        }
        if let Some(c) = &cfg.name_conflict {
            p.name_conflict = Some(Hooked::load(&engine, Hook::NameConflict, c, dir)?);
        }
        if let Some(c) = &cfg.consistency {
            p.consistency = Some(Hooked::load(&engine, Hook::Consistency, c, dir)?);
        }
        if let Some(c) = &cfg.acl {
            p.acl = Some(Hooked::load(&engine, Hook::Acl, c, dir)?);
        }
        Ok(p)
    }

    /// The built-in policy used for hooks without a plugin and for `allow` fallbacks.
    pub fn builtin(&self) -> &Builtin {
        &self.builtin
    }

    /// Counters of the plugin serving `hook`, if one is configured.
    pub fn stats(&self, hook: Hook) -> Option<StatsSnapshot> {
        match hook {
            Hook::Filter => self.filter.as_ref().map(|h| h.plugin.snapshot()),
            Hook::NameConflict => self.name_conflict.as_ref().map(|h| h.plugin.snapshot()),
            Hook::Consistency => self.consistency.as_ref().map(|h| h.plugin.snapshot()),
            Hook::Acl => self.acl.as_ref().map(|h| h.plugin.snapshot()),
        }
    }

    /// How long creating and initialising the first instance of `hook`'s plugin took.
    pub fn instantiate_time(&self, hook: Hook) -> Option<Duration> {
        match hook {
            Hook::Filter => self.filter.as_ref().map(|h| h.plugin.first_instantiate),
            Hook::NameConflict => self
                .name_conflict
                .as_ref()
                .map(|h| h.plugin.first_instantiate),
            Hook::Consistency => self
                .consistency
                .as_ref()
                .map(|h| h.plugin.first_instantiate),
            Hook::Acl => self.acl.as_ref().map(|h| h.plugin.first_instantiate),
        }
    }

    /// Call the filter plugin for one object, uncached, reporting failure instead of falling
    /// back (for `blobmount plugin run` and tests).
    pub fn try_filter(&self, obj: &ObjectInfo, now_secs: i64) -> Result<Verdict, CallError> {
        let Some(h) = &self.filter else {
            return Ok(self.builtin.filter(obj, now_secs));
        };
        let o = to_filter_obj(obj);
        h.plugin
            .call(1, |w, s| {
                w.blobmount_policy_filter().call_filter(s, &o, now_secs)
            })
            .map(from_verdict)
    }

    /// Call the filter plugin for a page, uncached, reporting failure.
    pub fn try_filter_batch(
        &self,
        objs: &[ObjectInfo],
        now_secs: i64,
    ) -> Result<Vec<Verdict>, CallError> {
        let Some(h) = &self.filter else {
            return Ok(self.builtin.filter_batch(objs, now_secs));
        };
        let os: Vec<_> = objs.iter().map(to_filter_obj).collect();
        let out = h.plugin.call(objs.len() as u64, |w, s| {
            w.blobmount_policy_filter()
                .call_filter_batch(s, &os, now_secs)
        })?;
        if out.len() != objs.len() {
            return Err(CallError::BadReturn(format!(
                "filter-batch returned {} verdicts for {} objects",
                out.len(),
                objs.len()
            )));
        }
        Ok(out.into_iter().map(from_verdict).collect())
    }

    /// Call the name-conflict plugin, reporting failure.
    pub fn try_resolve_conflict(
        &self,
        parent: &str,
        kind: ConflictKind,
        entries: &[ConflictEntry],
    ) -> Result<Vec<Resolution>, CallError> {
        let Some(h) = &self.name_conflict else {
            return Ok(self.builtin.resolve_conflict(parent, kind, entries));
        };
        let k = match kind {
            ConflictKind::FileAndDirectory => nc_if::ConflictKind::FileAndDirectory,
            ConflictKind::InvalidName => nc_if::ConflictKind::InvalidName,
        };
        let es: Vec<nc_if::Entry> = entries
            .iter()
            .map(|e| nc_if::Entry {
                name: e.name.clone(),
                key: e.key.clone(),
                is_dir: e.is_dir,
                size: e.size,
            })
            .collect();
        let out = h.plugin.call(entries.len() as u64, |w, s| {
            w.blobmount_policy_name_conflict()
                .call_resolve(s, parent, k, &es)
        })?;
        let out: Vec<Resolution> = out
            .into_iter()
            .map(|r| match r {
                nc_if::Resolution::Keep => Resolution::Keep,
                nc_if::Resolution::Rename(n) => Resolution::Rename(n),
                nc_if::Resolution::Hide => Resolution::Hide,
            })
            .collect();
        check_resolutions(entries, &out)?;
        Ok(out)
    }

    /// Call the consistency plugin, uncached, reporting failure.
    pub fn try_consistency(&self, key: &str, is_dir: bool) -> Result<Consistency, CallError> {
        let Some(h) = &self.consistency else {
            return Ok(self.builtin.consistency(key, is_dir));
        };
        let d = h.plugin.call(1, |w, s| {
            w.blobmount_policy_consistency()
                .call_policy_for(s, key, is_dir)
        })?;
        Ok(Consistency {
            stat_ttl: from_ttl(d.stat_ttl),
            list_ttl: from_ttl(d.list_ttl),
            data_ttl: from_ttl(d.data_ttl),
            revalidate_on_open: d.revalidate_on_open,
            cacheable: d.cacheable,
        })
    }

    /// Call the ACL plugin, uncached, reporting failure.
    pub fn try_acl(&self, obj: &ObjectInfo, caller: Caller) -> Result<AclDecision, CallError> {
        let Some(h) = &self.acl else {
            return Ok(self.builtin.acl(obj, caller));
        };
        let o = to_acl_obj(obj);
        let who = acl_if::Caller {
            uid: caller.uid,
            gid: caller.gid,
        };
        let d = h
            .plugin
            .call(1, |w, s| w.blobmount_policy_acl().call_decide(s, &o, who))?;
        if d.mode & !0o7777 != 0 {
            return Err(CallError::BadReturn(format!(
                "mode {:#o} has bits outside 0o7777",
                d.mode
            )));
        }
        Ok(AclDecision {
            uid: d.uid,
            gid: d.gid,
            mode: d.mode,
            allow: Access {
                read: d.allow.contains(acl_if::Access::READ),
                write: d.allow.contains(acl_if::Access::WRITE),
                execute: d.allow.contains(acl_if::Access::EXECUTE),
            },
        })
    }
}

impl Policy for WasmPolicy {
    fn filter(&self, obj: &ObjectInfo, now_secs: i64) -> Verdict {
        let Some(h) = &self.filter else {
            return self.builtin.filter(obj, now_secs);
        };
        if let Some(v) = h.cache.get(obj) {
            h.plugin
                .stats
                .cache_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return v;
        }
        match h.outcome(self.try_filter(obj, now_secs)) {
            Some(v) => {
                h.cache.put(obj.clone(), v);
                v
            }
            None => match h.mode {
                FailureMode::Deny => Verdict::Hidden,
                FailureMode::Allow => self.builtin.filter(obj, now_secs),
            },
        }
    }

    fn filter_batch(&self, objs: &[ObjectInfo], now_secs: i64) -> Vec<Verdict> {
        let Some(h) = &self.filter else {
            return self.builtin.filter_batch(objs, now_secs);
        };
        let mut out: Vec<Option<Verdict>> = objs.iter().map(|o| h.cache.get(o)).collect();
        let missing: Vec<ObjectInfo> = objs
            .iter()
            .zip(&out)
            .filter(|(_, v)| v.is_none())
            .map(|(o, _)| o.clone())
            .collect();
        let hits = (objs.len() - missing.len()) as u64;
        h.plugin
            .stats
            .cache_hits
            .fetch_add(hits, std::sync::atomic::Ordering::Relaxed);
        if !missing.is_empty() {
            let answers = match h.outcome(self.try_filter_batch(&missing, now_secs)) {
                Some(vs) => vs,
                None => {
                    return match h.mode {
                        FailureMode::Deny => vec![Verdict::Hidden; objs.len()],
                        FailureMode::Allow => self.builtin.filter_batch(objs, now_secs),
                    };
                }
            };
            let mut it = missing.into_iter().zip(answers);
            for slot in out.iter_mut().filter(|s| s.is_none()) {
                if let Some((o, v)) = it.next() {
                    h.cache.put(o, v);
                    *slot = Some(v);
                }
            }
        }
        out.into_iter()
            .map(|v| v.unwrap_or(Verdict::Hidden))
            .collect()
    }

    fn resolve_conflict(
        &self,
        parent: &str,
        kind: ConflictKind,
        entries: &[ConflictEntry],
    ) -> Vec<Resolution> {
        let Some(h) = &self.name_conflict else {
            return self.builtin.resolve_conflict(parent, kind, entries);
        };
        match h.outcome(self.try_resolve_conflict(parent, kind, entries)) {
            Some(r) => r,
            None => match h.mode {
                FailureMode::Deny => vec![Resolution::Hide; entries.len()],
                FailureMode::Allow => self.builtin.resolve_conflict(parent, kind, entries),
            },
        }
    }

    fn consistency(&self, key: &str, is_dir: bool) -> Consistency {
        let Some(h) = &self.consistency else {
            return self.builtin.consistency(key, is_dir);
        };
        let ck = (key.to_string(), is_dir);
        if let Some(v) = h.cache.get(&ck) {
            h.plugin
                .stats
                .cache_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return v;
        }
        match h.outcome(self.try_consistency(key, is_dir)) {
            Some(v) => {
                h.cache.put(ck, v);
                v
            }
            None => match h.mode {
                FailureMode::Deny => Consistency::STRICT,
                FailureMode::Allow => self.builtin.consistency(key, is_dir),
            },
        }
    }

    fn acl(&self, obj: &ObjectInfo, caller: Caller) -> AclDecision {
        let Some(h) = &self.acl else {
            return self.builtin.acl(obj, caller);
        };
        let ck = (obj.clone(), caller);
        if let Some(v) = h.cache.get(&ck) {
            h.plugin
                .stats
                .cache_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return v;
        }
        match h.outcome(self.try_acl(obj, caller)) {
            Some(v) => {
                h.cache.put(ck, v);
                v
            }
            None => {
                let base = self.builtin.acl(obj, caller);
                match h.mode {
                    FailureMode::Deny => AclDecision {
                        mode: 0,
                        allow: Access::NONE,
                        ..base
                    },
                    FailureMode::Allow => base,
                }
            }
        }
    }
}
