//! What `blobmount plugin check`, `run` and `test` do, kept here so the daemon's CLI stays a
//! thin wrapper: find which hook a component implements, load one plugin for one hook, and
//! call it with JSON input, producing JSON output. Input shapes are documented in
//! docs/plugins.md; `plugin test` feeds its fixture cases through [`run_value`], so a case's
//! input and expected output are exactly what `plugin run` takes and prints.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use blobmount_policy_api::{
    AclDecision, Builtin, Caller, ConflictEntry, ConflictKind, Consistency, ObjectInfo, Resolution,
    Ttl, Verdict,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{Hook, PluginConfig, PluginsConfig};
use crate::error::{CallError, LoadError};
use crate::policy::WasmPolicy;

/// Why `plugin check|run|test` failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path}: cannot tell which hook it implements: {reason}")]
    Inspect { path: PathBuf, reason: String },
    #[error(
        "{path} exports none of the hook interfaces (blobmount:policy/filter, name-conflict, \
         consistency or acl); it exports: {exports}"
    )]
    NoHook { path: PathBuf, exports: String },
    #[error(
        "{path} exports more than one hook interface ({hooks}); pass --hook to choose \
         (it exports: {exports})"
    )]
    ManyHooks {
        path: PathBuf,
        hooks: String,
        exports: String,
    },
    #[error("bad input: {0}")]
    Input(String),
    #[error("the plugin call failed: {0} (a mount would answer with the failure mode)")]
    Call(#[from] CallError),
}

/// Where `plugin check|run|test` keep compiled components, so that only the first command
/// on a JS or Python component pays seconds of Cranelift: `$BLOBMOUNT_PLUGIN_CACHE` (empty:
/// no cache), else `$XDG_CACHE_HOME/blobmount/plugins`, else `~/.cache/blobmount/plugins`.
/// The artifacts are the ones a mount writes to its `plugins.cache-dir` (same engine
/// settings), so pointing both at one directory shares them.
pub fn cli_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(v) = std::env::var_os("BLOBMOUNT_PLUGIN_CACHE") {
        return (!v.is_empty()).then(|| PathBuf::from(v));
    }
    var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("blobmount/plugins"))
}

/// Load `path` as the plugin for `hook` with `params`, exactly as a mount would (with the
/// compile cache of [`cli_cache_dir`]).
pub fn load(path: &Path, hook: Hook, params: &[(String, String)]) -> Result<WasmPolicy, LoadError> {
    let mut pc = PluginConfig::new(path);
    pc.prewarm = 1;
    // Each call reports its own result: no breaker between the user and the plugin.
    pc.breaker_failures = 0;
    for (k, v) in params {
        pc = pc.param(k, v);
    }
    let mut cfg = PluginsConfig {
        cache_dir: cli_cache_dir(),
        ..PluginsConfig::default()
    };
    match hook {
        Hook::Filter => cfg.filter = Some(pc),
        Hook::NameConflict => cfg.name_conflict = Some(pc),
        Hook::Consistency => cfg.consistency = Some(pc),
        Hook::Acl => cfg.acl = Some(pc),
    }
    WasmPolicy::load(&cfg, Builtin::default())
}

/// Which hook the component at `path` implements, from its exports: the one of the four
/// hook interfaces it exports. For `plugin check|run|test` without `--hook`; the full world
/// (imports, `plugin` export, WIT version) is checked afterwards by [`load`].
pub fn detect_hook(path: &Path) -> Result<Hook, ToolError> {
    let inspect = |reason: String| ToolError::Inspect {
        path: path.to_path_buf(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| inspect(format!("cannot read the file: {e}")))?
        .len();
    if size > crate::config::MAX_COMPONENT_BYTES {
        return Err(inspect(format!(
            "it is {size} bytes (at most {})",
            crate::config::MAX_COMPONENT_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| inspect(format!("cannot read the file: {e}")))?;
    if let Some(what) = crate::plugin::header_problem(&bytes) {
        return Err(inspect(format!("not a WebAssembly component ({what})")));
    }
    // Nothing runs; compiled with the mount's engine settings and through the same cache as
    // [`load`], so the load that follows does not compile a big component a second time.
    let engine = crate::engine::new_engine().map_err(ToolError::Load)?;
    let component = crate::engine::compile(
        &engine,
        Hook::Filter,
        path,
        &bytes,
        cli_cache_dir().as_deref(),
    )
    .map_err(|e| match e {
        LoadError::Malformed { reason, .. } => inspect(format!("malformed component: {reason}")),
        other => ToolError::Load(other),
    })?;
    let (hooks, exports) = crate::plugin::exported_hooks(&engine, &component);
    let exports = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports.join(", ")
    };
    match hooks.as_slice() {
        [hook] => Ok(*hook),
        [] => Err(ToolError::NoHook {
            path: path.to_path_buf(),
            exports,
        }),
        many => Err(ToolError::ManyHooks {
            path: path.to_path_buf(),
            hooks: many.iter().map(|h| h.name()).collect::<Vec<_>>().join(", "),
            exports,
        }),
    }
}

/// `plugin check`: load and initialise; the summary line on success.
pub fn check(path: &Path, hook: Hook, params: &[(String, String)]) -> Result<String, LoadError> {
    let p = load(path, hook, params)?;
    let us = p.instantiate_time(hook).map(|d| d.as_micros()).unwrap_or(0);
    Ok(format!(
        "ok: {} implements blobmount:policy/{}@{} (hook {hook}); init accepted {} parameter(s); first instance ready in {us} us",
        path.display(),
        hook.world(),
        crate::WIT_VERSION,
        params.len()
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ObjIn {
    key: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    mtime_secs: i64,
    is_dir: Option<bool>,
    content_type: Option<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

impl From<ObjIn> for ObjectInfo {
    fn from(o: ObjIn) -> ObjectInfo {
        ObjectInfo {
            is_dir: o.is_dir.unwrap_or(o.key.ends_with('/')),
            key: o.key,
            size: o.size,
            mtime_secs: o.mtime_secs,
            content_type: o.content_type,
            metadata: o.metadata.into_iter().collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FilterIn {
    now_secs: Option<i64>,
    objects: Vec<ObjIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConsistencyIn {
    key: String,
    is_dir: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AclIn {
    object: ObjIn,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EntryIn {
    name: String,
    key: Option<String>,
    #[serde(default)]
    is_dir: bool,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConflictIn {
    #[serde(default)]
    parent: String,
    kind: String,
    entries: Vec<EntryIn>,
}

/// Accept one item or a list of items.
fn one_or_many<T: for<'de> Deserialize<'de>>(v: Value) -> Result<Vec<T>, ToolError> {
    let r = if v.is_array() {
        serde_json::from_value(v)
    } else {
        serde_json::from_value(v).map(|x| vec![x])
    };
    r.map_err(|e| ToolError::Input(e.to_string()))
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Hidden => "hidden",
        Verdict::Visible => "visible",
        Verdict::VisibleReadOnly => "visible-read-only",
    }
}

fn ttl_json(t: Ttl) -> Value {
    match t {
        Ttl::None => json!("none"),
        Ttl::For(d) => json!({ "millis": d.as_millis() as u64 }),
        Ttl::Forever => json!("forever"),
    }
}

fn consistency_json(key: &str, c: Consistency) -> Value {
    json!({
        "key": key,
        "stat-ttl": ttl_json(c.stat_ttl),
        "list-ttl": ttl_json(c.list_ttl),
        "data-ttl": ttl_json(c.data_ttl),
        "revalidate-on-open": c.revalidate_on_open,
        "cacheable": c.cacheable,
    })
}

fn acl_json(key: &str, d: AclDecision) -> Value {
    let mut allow = Vec::new();
    if d.allow.read {
        allow.push("read");
    }
    if d.allow.write {
        allow.push("write");
    }
    if d.allow.execute {
        allow.push("execute");
    }
    json!({ "key": key, "uid": d.uid, "gid": d.gid, "mode": format!("{:04o}", d.mode), "allow": allow })
}

/// `plugin run`: call the plugin with `input` (JSON text), return the JSON answer.
pub fn run(policy: &WasmPolicy, hook: Hook, input: &str) -> Result<Value, ToolError> {
    let v: Value =
        serde_json::from_str(input).map_err(|e| ToolError::Input(format!("not JSON: {e}")))?;
    run_value(policy, hook, v)
}

/// [`run`] on input already parsed (a `plugin test` case): always a JSON array, one item
/// per object, entry or key asked about.
pub fn run_value(policy: &WasmPolicy, hook: Hook, v: Value) -> Result<Value, ToolError> {
    match hook {
        Hook::Filter => {
            // `{"now-secs": N, "objects": [...]}`, one object, or a list of objects.
            let (now, objs) = if v.get("objects").is_some() {
                let f: FilterIn =
                    serde_json::from_value(v).map_err(|e| ToolError::Input(e.to_string()))?;
                (f.now_secs, f.objects)
            } else {
                (None, one_or_many::<ObjIn>(v)?)
            };
            let now = now.unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            });
            let objs: Vec<ObjectInfo> = objs.into_iter().map(Into::into).collect();
            let verdicts = if objs.len() == 1 {
                vec![policy.try_filter(&objs[0], now)?]
            } else {
                policy.try_filter_batch(&objs, now)?
            };
            Ok(Value::Array(
                objs.iter()
                    .zip(verdicts)
                    .map(|(o, v)| json!({ "key": o.key, "verdict": verdict_name(v) }))
                    .collect(),
            ))
        }
        Hook::Consistency => {
            let mut out = Vec::new();
            for c in one_or_many::<ConsistencyIn>(v)? {
                let is_dir = c.is_dir.unwrap_or(c.key.ends_with('/'));
                out.push(consistency_json(
                    &c.key,
                    policy.try_consistency(&c.key, is_dir)?,
                ));
            }
            Ok(Value::Array(out))
        }
        Hook::Acl => {
            let mut out = Vec::new();
            for a in one_or_many::<AclIn>(v)? {
                let obj: ObjectInfo = a.object.into();
                let d = policy.try_acl(
                    &obj,
                    Caller {
                        uid: a.uid,
                        gid: a.gid,
                    },
                )?;
                out.push(acl_json(&obj.key, d));
            }
            Ok(Value::Array(out))
        }
        Hook::NameConflict => {
            let c: ConflictIn =
                serde_json::from_value(v).map_err(|e| ToolError::Input(e.to_string()))?;
            let kind = match c.kind.as_str() {
                "file-and-directory" => ConflictKind::FileAndDirectory,
                "invalid-name" => ConflictKind::InvalidName,
                k => {
                    return Err(ToolError::Input(format!(
                        "kind {k:?}: expected file-and-directory or invalid-name"
                    )));
                }
            };
            let entries: Vec<ConflictEntry> = c
                .entries
                .into_iter()
                .map(|e| ConflictEntry {
                    key: e.key.unwrap_or_else(|| {
                        format!("{}{}{}", c.parent, e.name, if e.is_dir { "/" } else { "" })
                    }),
                    name: e.name,
                    is_dir: e.is_dir,
                    size: e.size,
                })
                .collect();
            let rs = policy.try_resolve_conflict(&c.parent, kind, &entries)?;
            Ok(Value::Array(
                entries
                    .iter()
                    .zip(rs)
                    .map(|(e, r)| {
                        let r = match r {
                            Resolution::Keep => json!("keep"),
                            Resolution::Hide => json!("hide"),
                            Resolution::Rename(n) => json!({ "rename": n }),
                        };
                        json!({ "key": e.key, "resolution": r })
                    })
                    .collect(),
            ))
        }
    }
}
