//! The `plugins:` configuration: which component serves which hook, its parameters, its
//! limits and what happens when it fails. Plain serde structs so the daemon can embed them in
//! its YAML config (kebab-case keys, unknown keys rejected, JSON Schema derived).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The four hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    Filter,
    NameConflict,
    Consistency,
    Acl,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::Filter,
        Hook::NameConflict,
        Hook::Consistency,
        Hook::Acl,
    ];

    /// The hook's name as written in config, on the command line and in the WIT.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Filter => "filter",
            Hook::NameConflict => "name-conflict",
            Hook::Consistency => "consistency",
            Hook::Acl => "acl",
        }
    }

    /// The WIT world a component for this hook must implement.
    pub fn world(self) -> &'static str {
        match self {
            Hook::Filter => "filter-plugin",
            Hook::NameConflict => "name-conflict-plugin",
            Hook::Consistency => "consistency-plugin",
            Hook::Acl => "acl-plugin",
        }
    }

    /// Parse a hook name (`filter`, `name-conflict`, `consistency`, `acl`).
    pub fn parse(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == s)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a failed call (trap, out of fuel, deadline, memory cap, bad return) is answered with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// The most restrictive answer: hidden (filter), no access (acl), no caching
    /// (consistency), hide the colliding entries (name-conflict).
    #[default]
    Deny,
    /// The built-in policy's answer, as if no plugin were configured for the hook.
    Allow,
}

/// One parameter value: a string, or a list of strings for a repeated key. Numbers and
/// booleans are taken as their text (`max-size: 100` is `"100"`): plugins parse their
/// parameters themselves, and YAML authors should not have to quote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ParamValue {
    One(String),
    Many(Vec<String>),
}

/// A scalar parameter value as text.
struct Scalar(String);

struct ScalarVisitor;

impl serde::de::Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ParamVisitor;

impl<'de> serde::de::Visitor<'de> for ParamVisitor {
    type Value = ParamValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean, or a list of them")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ParamValue, E> {
        Ok(ParamValue::One(v.to_string()))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ParamValue, E> {
        Ok(ParamValue::One(v.to_string()))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ParamValue, E> {
        Ok(ParamValue::One(v.to_string()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ParamValue, E> {
        Ok(ParamValue::One(v.to_string()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ParamValue, E> {
        Ok(ParamValue::One(v.to_string()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ParamValue, A::Error> {
        let mut out = Vec::new();
        while let Some(Scalar(s)) = seq.next_element()? {
            out.push(s);
        }
        Ok(ParamValue::Many(out))
    }
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ParamValue, D::Error> {
        d.deserialize_any(ParamVisitor)
    }
}

/// One plugin for one hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginConfig {
    /// Path to the component (`.wasm`).
    pub path: PathBuf,
    /// Parameters passed to the plugin's `init`, e.g. `{include: ["*.csv"], max-size: "1000"}`.
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
    /// Answer used when a call fails.
    #[serde(default)]
    pub on_failure: FailureMode,
    /// Fuel (roughly, wasm instructions) per call; a batch call gets this per object.
    #[serde(default = "default_fuel")]
    pub fuel: u64,
    /// Wall-clock limit per call in milliseconds (a backstop behind fuel).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Linear-memory cap per instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Instances created at load time (more are created on demand when calls overlap, up
    /// to `max-instances`; a larger value is lowered to it).
    #[serde(default = "default_prewarm")]
    pub prewarm: usize,
    /// Most instances of this plugin that exist at once, 1 to 64: calls beyond that many in
    /// parallel wait for a free instance, at most until their deadline (then the call fails
    /// and is answered by the failure mode).
    #[serde(default = "default_max_instances")]
    pub max_instances: usize,
    /// Consecutive failed calls that open the circuit breaker (0: never open it). While
    /// open, the hook answers with its failure mode without calling the plugin.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker keeps the plugin out, in seconds (1 to 3600); then one trial
    /// call decides: success closes it, failure opens it again.
    #[serde(default = "default_breaker_secs")]
    pub breaker_secs: u64,
    /// How many answers are cached (0 disables the cache). Only pure hooks are cached.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// How long a cached answer is reused, in seconds (filter age rules are as accurate as
    /// this).
    #[serde(default = "default_cache_secs")]
    pub cache_secs: u64,
    /// Pin: the SHA-256 of the component file (64 hex digits). A file with another digest
    /// is refused at load and at a reload, so a swapped file is never run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn default_fuel() -> u64 {
    10_000_000
}
fn default_deadline_ms() -> u64 {
    200
}
fn default_memory_mib() -> u64 {
    16
}
fn default_prewarm() -> usize {
    2
}
fn default_max_instances() -> usize {
    4
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_secs() -> u64 {
    30
}
/// Most values in a plugin's `params` (a list counts each element).
pub const MAX_PARAM_VALUES: usize = 4096;
/// Longest `params` key.
pub const MAX_PARAM_KEY_BYTES: usize = 256;
/// Longest single `params` value.
pub const MAX_PARAM_VALUE_BYTES: usize = 64 * 1024;
/// Most bytes in all of `params` (keys and values).
pub const MAX_PARAM_BYTES: usize = 1024 * 1024;
/// Largest component file accepted (a Python component is about 40 MiB).
pub const MAX_COMPONENT_BYTES: u64 = 512 * 1024 * 1024;
/// Allowed range of `max-instances`.
pub const MAX_INSTANCES_RANGE: std::ops::RangeInclusive<usize> = 1..=64;
/// Allowed range of `breaker-secs`.
pub const BREAKER_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
fn default_cache_entries() -> usize {
    65_536
}
fn default_cache_secs() -> u64 {
    10
}

impl PluginConfig {
    /// A plugin at `path` with default limits and no parameters.
    pub fn new(path: impl Into<PathBuf>) -> PluginConfig {
        PluginConfig {
            path: path.into(),
            params: BTreeMap::new(),
            on_failure: FailureMode::default(),
            fuel: default_fuel(),
            deadline_ms: default_deadline_ms(),
            memory_mib: default_memory_mib(),
            prewarm: default_prewarm(),
            max_instances: default_max_instances(),
            breaker_failures: default_breaker_failures(),
            breaker_secs: default_breaker_secs(),
            cache_entries: default_cache_entries(),
            cache_secs: default_cache_secs(),
            sha256: None,
        }
    }

    /// Add a parameter (repeated keys accumulate).
    pub fn param(mut self, key: &str, value: &str) -> PluginConfig {
        let v = match self.params.remove(key) {
            None => ParamValue::One(value.into()),
            Some(ParamValue::One(old)) => ParamValue::Many(vec![old, value.into()]),
            Some(ParamValue::Many(mut vs)) => {
                vs.push(value.into());
                ParamValue::Many(vs)
            }
        };
        self.params.insert(key.into(), v);
        self
    }

    /// Refuse parameter tables larger than a plugin's `init` should ever need: they are
    /// copied into every instance's linear memory, and a runaway list in a config file
    /// (generated, templated) should fail the mount with a reason, not exhaust memory.
    pub fn check_params(&self) -> Result<(), String> {
        let mut values = 0usize;
        let mut bytes = 0usize;
        for (k, v) in &self.params {
            if k.len() > MAX_PARAM_KEY_BYTES {
                return Err(format!(
                    "a params key is {} bytes long (at most {MAX_PARAM_KEY_BYTES})",
                    k.len()
                ));
            }
            let vs: &[String] = match v {
                ParamValue::One(s) => std::slice::from_ref(s),
                ParamValue::Many(vs) => vs,
            };
            for s in vs {
                if s.len() > MAX_PARAM_VALUE_BYTES {
                    return Err(format!(
                        "params.{k}: a value is {} bytes long (at most {MAX_PARAM_VALUE_BYTES})",
                        s.len()
                    ));
                }
                values += 1;
                bytes += k.len() + s.len();
            }
        }
        if values > MAX_PARAM_VALUES {
            return Err(format!(
                "params has {values} values (at most {MAX_PARAM_VALUES})"
            ));
        }
        if bytes > MAX_PARAM_BYTES {
            return Err(format!(
                "params hold {bytes} bytes (at most {MAX_PARAM_BYTES})"
            ));
        }
        Ok(())
    }

    /// `sha256`, when given, is 64 hex digits.
    pub fn check_pin(&self) -> Result<(), String> {
        match &self.sha256 {
            Some(h) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => Err(format!(
                "sha256 {h:?} is not a SHA-256 digest (64 hex digits)"
            )),
            _ => Ok(()),
        }
    }

    /// The parameters as the WIT `params` list (keys sorted, repeated values in order).
    pub fn param_list(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in &self.params {
            match v {
                ParamValue::One(s) => out.push((k.clone(), s.clone())),
                ParamValue::Many(vs) => out.extend(vs.iter().map(|s| (k.clone(), s.clone()))),
            }
        }
        out
    }
}

/// The whole `plugins:` section: at most one plugin per hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginsConfig {
    /// Where compiled plugins are cached (default: no on-disk cache; each start compiles,
    /// which takes 10-50 ms for a Rust plugin and seconds for JS/Python ones).
    pub cache_dir: Option<PathBuf>,
    /// A directory of plugins described by its `manifest.yaml` (name, hook, file, sha256,
    /// params and limits per plugin), merged with the plugins configured here.
    pub dir: Option<PathBuf>,
    /// How often the config file and the plugin files are checked for changes, in seconds;
    /// a change reloads the policy as `SIGHUP` does. 0: only `SIGHUP` reloads.
    pub watch_secs: u64,
    pub filter: Option<PluginConfig>,
    pub name_conflict: Option<PluginConfig>,
    pub consistency: Option<PluginConfig>,
    pub acl: Option<PluginConfig>,
}

/// Default of `plugins.watch-secs`.
pub const DEFAULT_WATCH_SECS: u64 = 5;
/// Allowed range of `plugins.watch-secs`.
pub const WATCH_SECS_RANGE: std::ops::RangeInclusive<u64> = 0..=3600;

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            cache_dir: None,
            dir: None,
            watch_secs: DEFAULT_WATCH_SECS,
            filter: None,
            name_conflict: None,
            consistency: None,
            acl: None,
        }
    }
}

impl PluginsConfig {
    /// Where the plugin for `hook` is configured.
    pub fn slot(&mut self, hook: Hook) -> &mut Option<PluginConfig> {
        match hook {
            Hook::Filter => &mut self.filter,
            Hook::NameConflict => &mut self.name_conflict,
            Hook::Consistency => &mut self.consistency,
            Hook::Acl => &mut self.acl,
        }
    }

    /// The configured plugin for `hook`.
    pub fn get(&self, hook: Hook) -> Option<&PluginConfig> {
        match hook {
            Hook::Filter => self.filter.as_ref(),
            Hook::NameConflict => self.name_conflict.as_ref(),
            Hook::Consistency => self.consistency.as_ref(),
            Hook::Acl => self.acl.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(n: usize, key: &str, value: &str) -> PluginConfig {
        (0..n).fold(PluginConfig::new("p.wasm"), |c, _| c.param(key, value))
    }

    #[test]
    fn numbers_and_booleans_in_params_are_taken_as_text() {
        let v: BTreeMap<String, ParamValue> = serde_json::from_value(serde_json::json!({
            "n": 100, "neg": -3, "f": 1.5, "b": true, "s": "x", "l": ["a", 2, false]
        }))
        .unwrap();
        let one = |k: &str| v[k].clone();
        assert_eq!(one("n"), ParamValue::One("100".into()));
        assert_eq!(one("neg"), ParamValue::One("-3".into()));
        assert_eq!(one("f"), ParamValue::One("1.5".into()));
        assert_eq!(one("b"), ParamValue::One("true".into()));
        assert_eq!(one("s"), ParamValue::One("x".into()));
        assert_eq!(
            one("l"),
            ParamValue::Many(vec!["a".into(), "2".into(), "false".into()])
        );
        let e = serde_json::from_value::<ParamValue>(serde_json::json!({"a": 1})).unwrap_err();
        assert!(
            e.to_string()
                .contains("a string, number or boolean, or a list of them"),
            "{e}"
        );
        let e = serde_json::from_value::<ParamValue>(serde_json::json!([[1]])).unwrap_err();
        assert!(e.to_string().contains("a string, number or boolean"), "{e}");
    }

    #[test]
    fn params_tables_are_capped() {
        assert_eq!(with(MAX_PARAM_VALUES, "k", "v").check_params(), Ok(()));
        let e = with(MAX_PARAM_VALUES + 1, "k", "v")
            .check_params()
            .unwrap_err();
        assert!(e.contains("4097 values"), "{e}");
        let long_key = "k".repeat(MAX_PARAM_KEY_BYTES + 1);
        assert!(with(1, &long_key, "v").check_params().is_err());
        assert_eq!(
            with(1, &"k".repeat(MAX_PARAM_KEY_BYTES), "v").check_params(),
            Ok(())
        );
        let big = "v".repeat(MAX_PARAM_VALUE_BYTES);
        assert_eq!(with(1, "k", &big).check_params(), Ok(()));
        let e = with(1, "k", &format!("{big}v")).check_params().unwrap_err();
        assert!(e.starts_with("params.k:"), "{e}");
        // Each value within its limit, all of them together above the total.
        let e = with(MAX_PARAM_BYTES / big.len() + 1, "k", &big)
            .check_params()
            .unwrap_err();
        assert!(e.contains("bytes (at most 1048576)"), "{e}");
    }
}
