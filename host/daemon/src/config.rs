//! The daemon's configuration: one YAML file, `BLOBMOUNT_*` environment overrides, and CLI
//! flags on top, all laid over one tree and deserialised into [`Config`] (which also
//! generates the JSON Schema). What each key of the daemon's sections means, its unit,
//! default, flag and env name are in the settings table (`crate::settings`); the structs
//! here are the typed shape, checked against that table by its tests.
//!
//! Why one tree: the file, the environment and the flags are merged as key paths before
//! anything is typed, so every value, wherever it came from, gets the same checks and the
//! same error naming its key.
//!
//! Errors always name the key path (`store.retry.max-retries: invalid type ...`) and, for
//! syntax errors, the line. Secrets are `Secret` values and never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blobmount_backend::StoreConfig;
use blobmount_policy::PluginsConfig;
use blobmount_policy_api::{ConflictRule, FilterConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use crate::values::{
    ENV_PREFIX, LogFormat, LogOutput, Passthrough, ReadMode, Recovery, parse_mode,
};

const SECTIONS: [&str; 10] = [
    "store", "mount", "read", "write", "cache", "health", "monitor", "logging", "policy", "plugins",
];

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub mount: MountConfig,
    #[serde(default)]
    pub read: ReadConfig,
    #[serde(default)]
    pub write: WriteConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// The health monitor's periodic report (`crate::monitor`).
    #[serde(default)]
    pub monitor: crate::monitor::MonitorConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// The built-in policy (used for every hook without a plugin).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// WASM policy plugins, one per hook (see docs/plugins.md).
    #[serde(default)]
    pub plugins: PluginsConfig,
}

/// The built-in policy's settings beyond the global ones it also uses: owner and modes of
/// objects without metadata are `mount.uid`/`gid`/`file-mode`/`dir-mode`, the stat and
/// listing TTLs `mount.attr-timeout-secs` and `cache.list-ttl-secs`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyConfig {
    // What each key means: its row in `settings::SETTINGS` (also the schema description).
    pub filter: FilterConfig,
    pub name_conflict: ConflictRule,
    pub revalidate_on_open: bool,
    pub cacheable: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            filter: FilterConfig::default(),
            name_conflict: ConflictRule::default(),
            revalidate_on_open: false,
            cacheable: true,
        }
    }
}

/// The health and metrics endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthConfig {
    // What each key means: its row in `settings::SETTINGS` (also the schema description).
    pub listen: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            listen: "127.0.0.1:0".into(),
        }
    }
}

/// How the directory is presented.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MountConfig {
    // What each key means: its row in `settings::SETTINGS` (also the schema description).
    pub mountpoint: Option<PathBuf>,
    pub subdirectory: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub allow_other: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    #[serde(deserialize_with = "de_mode", serialize_with = "ser_mode")]
    #[schemars(with = "String")]
    pub file_mode: u16,
    #[serde(deserialize_with = "de_mode", serialize_with = "ser_mode")]
    #[schemars(with = "String")]
    pub dir_mode: u16,
    pub attr_timeout_secs: f64,
    pub threads: usize,
    pub rename_dir_limit: usize,
    pub kernel_read_ahead_kib: u32,
    pub fuse_fd_socket: Option<PathBuf>,
    pub shutdown_grace_secs: f64,
    #[serde(default)]
    pub foreground: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            mountpoint: None,
            subdirectory: None,
            read_only: false,
            allow_other: false,
            uid: None,
            gid: None,
            file_mode: 0o644,
            dir_mode: 0o755,
            attr_timeout_secs: 1.0,
            threads: 2,
            rename_dir_limit: 1000,
            kernel_read_ahead_kib: 1024,
            fuse_fd_socket: None,
            shutdown_grace_secs: 30.0,
            foreground: false,
        }
    }
}

/// How file contents are read.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReadConfig {
    // What each key means: its row in `settings::SETTINGS` (also the schema description).
    pub mode: ReadMode,
    pub preload: Vec<String>,
    pub preload_jobs: usize,
    pub verify_min_mib: u64,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            mode: ReadMode::BlockCache,
            preload: Vec::new(),
            preload_jobs: 8,
            verify_min_mib: 8,
        }
    }
}

/// How file contents are written.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WriteConfig {
    // What each key means: its row in `settings::SETTINGS` (also the schema description).
    pub recovery: Recovery,
    pub streaming: bool,
    pub checksums: bool,
    pub part_size_mib: usize,
    pub parts_in_flight: usize,
    pub attr_delay_ms: u64,
    pub close_delay_ms: u64,
    pub content_types: BTreeMap<String, String>,
    pub content_type_default: String,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            recovery: Recovery::Upload,
            streaming: true,
            checksums: true,
            part_size_mib: 8,
            parts_in_flight: 8,
            attr_delay_ms: 200,
            close_delay_ms: 0,
            content_types: BTreeMap::new(),
            content_type_default: blobmount_core::contenttype::OCTET_STREAM.into(),
        }
    }
}

impl WriteConfig {
    /// The core's content-type table from `content-types` and `content-type-default`.
    pub fn content_types(&self) -> Result<blobmount_core::contenttype::ContentTypes, ConfigError> {
        blobmount_core::contenttype::ContentTypes::new(
            &self.content_types,
            &self.content_type_default,
        )
        .map_err(|e| ConfigError(format!("write.content-types / content-type-default: {e}")))
    }
}

/// Local cache settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheConfig {
    // What each key means: its row in `settings::SETTINGS` (also the schema description).
    pub dir: Option<PathBuf>,
    pub read_ahead_max_mib: usize,
    pub read_block_mib: usize,
    pub read_memory_mib: usize,
    pub list_page_size: usize,
    pub list_ttl_secs: f64,
    pub negative_ttl_secs: f64,
    pub list_cache_max_entries: usize,
    pub file_cache_max_mib: u64,
    pub file_cache_min_free_mib: u64,
    pub file_cache_range_reads: bool,
    pub file_cache_passthrough: Passthrough,
    pub poll_secs: f64,
    pub poll_recent_secs: f64,
    pub poll_max_dirs: usize,
    pub poll_max_files: usize,
    pub poll_max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: None,
            read_ahead_max_mib: 64,
            read_block_mib: 8,
            read_memory_mib: 512,
            list_page_size: 5000,
            list_ttl_secs: 1.0,
            negative_ttl_secs: 1.0,
            list_cache_max_entries: 1_000_000,
            file_cache_max_mib: 10 * 1024,
            file_cache_min_free_mib: 1024,
            file_cache_range_reads: true,
            file_cache_passthrough: Passthrough::Auto,
            poll_secs: 0.0,
            poll_recent_secs: 300.0,
            poll_max_dirs: 32,
            poll_max_files: 64,
            poll_max_entries: 5000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoggingConfig {
    // What each key means: its row in `settings::SETTINGS` (also the schema description).
    pub level: String,
    pub format: LogFormat,
    pub file: Option<PathBuf>,
    pub output: LogOutput,
    pub socket: Option<PathBuf>,
    pub max_size_mib: u64,
    pub max_files: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
            file: None,
            output: LogOutput::Auto,
            socket: None,
            max_size_mib: 100,
            max_files: 5,
        }
    }
}

/// Modes are octal strings ("0644", "755") in YAML, env and the schema.
fn ser_mode<S: serde::Serializer>(m: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{m:04o}"))
}

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => parse_mode(&s).map_err(serde::de::Error::custom),
        // YAML reads 0644 as the number 644 and 0o644 as 420: neither can be trusted.
        other => Err(serde::de::Error::custom(format!(
            "invalid mode {other}: write it as a quoted octal string such as \"0644\""
        ))),
    }
}

/// `mib` MiB in bytes; a value whose byte count does not fit in 64 bits is an error naming
/// `key` (never a wrapped size).
pub fn mib_bytes(key: &str, mib: u64) -> Result<u64, ConfigError> {
    mib.checked_mul(1024 * 1024)
        .ok_or_else(|| ConfigError(format!("{key}: {mib} MiB is too large")))
}

/// A configuration error, always naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Load from an optional YAML file, then apply `BLOBMOUNT_*` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with(file, &[])
    }

    /// [`Config::load`], then `overrides` (command-line flags: key path and value) over the
    /// file and the environment, before the whole is checked as one tree.
    pub fn load_with(
        file: Option<&Path>,
        overrides: &[(Vec<String>, Value)],
    ) -> Result<Config, ConfigError> {
        let tree = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", p.display())))?;
                parse_yaml(&text)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", p.display())))?
            }
            None => Value::Object(Default::default()),
        };
        Config::load_tree_with(tree, overrides)
    }

    /// [`Config::load_with`] from a tree already read (a converted BlobFuse2 file).
    pub fn load_tree_with(
        mut tree: Value,
        overrides: &[(Vec<String>, Value)],
    ) -> Result<Config, ConfigError> {
        apply_env(&mut tree, std::env::vars())?;
        for (path, v) in overrides {
            set_path(&mut tree, path, v.clone())
                .map_err(|p| ConfigError(format!("command line: {p} is not a section")))?;
        }
        from_tree(tree)
    }

    pub fn attr_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.mount.attr_timeout_secs.max(0.0))
    }

    /// Check values that deserialisation cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.store.url {
            blobmount_backend::StoreUrl::parse(u)
                .map_err(|e| ConfigError(format!("store.url: {e}")))?;
        }
        self.check_ranges()?;
        self.write.content_types()?;
        self.monitor.check().map_err(ConfigError)?;
        let watch = blobmount_policy::WATCH_SECS_RANGE;
        if !watch.contains(&self.plugins.watch_secs) {
            return Err(ConfigError(format!(
                "plugins.watch-secs: {} is out of range ({} to {})",
                self.plugins.watch_secs,
                watch.start(),
                watch.end()
            )));
        }
        let plugins = crate::manifest::merged(&self.plugins).map_err(ConfigError)?;
        for hook in blobmount_policy::Hook::ALL {
            if let Some(p) = plugins.get(hook) {
                p.check_params()
                    .and_then(|()| p.check_pin())
                    .map_err(|e| ConfigError(format!("plugins.{}: {e}", hook.name())))?;
            }
        }
        if self.cache.read_memory_mib < self.cache.read_block_mib {
            return Err(ConfigError(format!(
                "cache.read-memory-mib: must be at least cache.read-block-mib ({})",
                self.cache.read_block_mib
            )));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return Err(ConfigError(format!(
                "logging.level {:?}: {e}",
                self.logging.level
            )));
        }
        if self.logging.output == LogOutput::File && self.logging.file.is_none() {
            return Err(ConfigError(
                "logging.output: `file` needs logging.file (the path to write)".into(),
            ));
        }
        if let Some(s) = &self.mount.subdirectory
            && s.split('/').any(|p| p == "." || p == "..")
        {
            return Err(ConfigError(
                "mount.subdirectory: must not contain '.' or '..'".into(),
            ));
        }
        let c = &self.cache;
        for (key, mib) in [
            ("cache.read-ahead-max-mib", c.read_ahead_max_mib as u64),
            ("cache.read-memory-mib", c.read_memory_mib as u64),
            ("cache.file-cache-max-mib", c.file_cache_max_mib),
            ("cache.file-cache-min-free-mib", c.file_cache_min_free_mib),
            ("logging.max-size-mib", self.logging.max_size_mib),
            ("monitor.max-size-mib", self.monitor.max_size_mib),
        ] {
            mib_bytes(key, mib)?;
        }
        Ok(())
    }

    /// Every setting with a [`Range`](crate::settings::Range) in the settings table is
    /// within it: the error names the key, the value and the range.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let tree = serde_json::to_value(self)
            .map_err(|e| ConfigError(format!("config: cannot check ranges: {e}")))?;
        for s in crate::settings::SETTINGS {
            let Some(range) = s.range else { continue };
            let pointer = format!("/{}", s.key.replace('.', "/"));
            let Some(v) = tree.pointer(&pointer).filter(|v| !v.is_null()) else {
                continue;
            };
            if !v.as_f64().is_some_and(|x| range.contains(x)) {
                return Err(ConfigError(format!(
                    "{}: {v} is out of range ({range})",
                    s.key
                )));
            }
        }
        // Each configured plugin hook (`plugins.<hook>` mappings; `cache-dir` is a path).
        let hooks = tree.get("plugins").and_then(Value::as_object);
        for (hook, plugin) in hooks.into_iter().flatten() {
            for l in crate::settings::PLUGIN_LIMITS {
                let Some(v) = plugin.get(l.key) else { continue };
                if !v.as_f64().is_some_and(|x| l.range.contains(x)) {
                    return Err(ConfigError(format!(
                        "plugins.{hook}.{}: {v} is out of range ({})",
                        l.key, l.range
                    )));
                }
            }
        }
        Ok(())
    }

    /// The JSON Schema of the YAML config (descriptions of the daemon's own keys from the
    /// settings table).
    pub fn schema() -> Value {
        let mut schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(Value::Null);
        crate::settings::describe(&mut schema);
        schema
    }
}

pub(crate) fn parse_yaml(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let v: Value = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e.to_string()))?;
    match v {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(v),
        _ => Err("expected a mapping at the top level".into()),
    }
}

/// The parser's message without the lines of the file it quotes after it: those may hold a
/// secret (a typo next to `account-key:` printed the key). Line and column say where.
fn yaml_error(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("invalid YAML");
    first.trim_start_matches("error: ").to_string()
}

pub(crate) fn from_tree(tree: Value) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ConfigError(format!("config: {inner}"))
        } else {
            ConfigError(format!("config key {path}: {inner}"))
        }
    })
}

/// Apply `BLOBMOUNT_A__B_C=v` as `a.b-c: v` (values parsed as JSON scalars when they are
/// numbers or booleans, strings otherwise).
pub fn apply_env(
    tree: &mut Value,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let schema = Config::schema();
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest
            .split("__")
            .map(|s| s.to_ascii_lowercase().replace('_', "-"))
            .collect();
        // Variables without `__` (BLOBMOUNT_CONFIG) are not config keys. One with `__` names
        // a key: a misspelt section must be an error, not a setting silently dropped.
        if path.len() < 2 {
            continue;
        }
        if !SECTIONS.contains(&path[0].as_str()) {
            return Err(ConfigError(format!(
                "environment {k}: unknown section {:?} (sections: {})",
                path[0],
                SECTIONS.join(", ")
            )));
        }
        // A key whose schema type is a string keeps the text as given (an access key id
        // "0123456789" must not become a number); others are read as JSON scalars.
        let val = if schema_wants_string(&schema, &path) {
            Value::String(v.clone())
        } else {
            match v.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                s => s
                    .parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| s.parse::<f64>().map(Value::from))
                    .unwrap_or_else(|_| Value::String(s.to_string())),
            }
        };
        set_path(tree, &path, val)
            .map_err(|p| ConfigError(format!("environment {k}: {p} is not a section")))?;
    }
    Ok(())
}

/// Follow `$ref`s in the config schema.
fn resolve<'a>(schema: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..8 {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) => match r
                .strip_prefix("#/$defs/")
                .and_then(|n| schema.get("$defs")?.get(n))
            {
                Some(n) => node = n,
                None => break,
            },
            None => break,
        }
    }
    node
}

/// The JSON types a schema node allows (through `$ref` and `anyOf`).
fn schema_types(schema: &Value, node: &Value, out: &mut Vec<String>) {
    let node = resolve(schema, node);
    match node.get("type") {
        Some(Value::String(t)) => out.push(t.clone()),
        Some(Value::Array(ts)) => out.extend(ts.iter().filter_map(Value::as_str).map(String::from)),
        _ => {}
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(vs)) = node.get(key) {
            for v in vs {
                schema_types(schema, v, out);
            }
        }
    }
}

/// Whether config key `path` is a string (and never a number or boolean) in the schema.
fn schema_wants_string(schema: &Value, path: &[String]) -> bool {
    let mut node = schema;
    for seg in path {
        let n = resolve(schema, node);
        // Optional sections are `anyOf: [{$ref}, {type: null}]`.
        let n = match n.get("anyOf").and_then(Value::as_array) {
            Some(vs) => vs
                .iter()
                .map(|v| resolve(schema, v))
                .find(|v| v.get("properties").is_some())
                .unwrap_or(n),
            None => n,
        };
        match n.get("properties").and_then(|p| p.get(seg)) {
            Some(child) => node = child,
            None => return false,
        }
    }
    let mut types = Vec::new();
    schema_types(schema, node, &mut types);
    types.iter().any(|t| t == "string")
        && !types
            .iter()
            .any(|t| matches!(t.as_str(), "integer" | "number" | "boolean"))
}

fn set_path(tree: &mut Value, path: &[String], val: Value) -> Result<(), String> {
    let Value::Object(map) = tree else {
        return Err("(top)".into());
    };
    match path {
        [] => Ok(()),
        [last] => {
            map.insert(last.clone(), val);
            Ok(())
        }
        [first, rest @ ..] => {
            let child = map
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Default::default()));
            set_path(child, rest, val).map_err(|p| {
                if p == "(top)" {
                    first.clone()
                } else {
                    format!("{first}.{p}")
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A YAML syntax error names the line and column, never the text around it: a typo
    /// next to a secret printed the secret (the parser quotes the surrounding lines).
    #[test]
    fn a_yaml_syntax_error_does_not_print_the_file() {
        for text in [
            "store:\n  azure:\n    account-key: SUPERSECRETKEY==\n    sas-token: [oops\nmount:\n  read-only: true\n",
            "store:\n  azure:\n    account-key: \"SUPERSECRETKEY==\n  url: x\n",
            "store:\n  azure:\n    account-key: SUPERSECRETKEY==: x\n",
        ] {
            let e = parse_yaml(text).unwrap_err();
            assert!(!e.contains("SUPERSECRET"), "{e}");
            assert!(e.contains("line "), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn a_plugin_params_table_too_big_fails_validation() {
        let list: Vec<String> = (0..5000).map(|i| format!("'p{i}/'")).collect();
        let yaml = format!(
            "plugins:\n  filter:\n    path: /x.wasm\n    params:\n      prefix: [{}]\n",
            list.join(", ")
        );
        let e = load_str(&yaml, &[]).map(|_| ()).unwrap_err().0;
        assert_eq!(e, "plugins.filter: params has 5000 values (at most 4096)");
        let ok = "plugins:\n  filter:\n    path: /x.wasm\n    params:\n      prefix: ['a/']\n";
        assert!(load_str(ok, &[]).is_ok());
    }

    fn load_str(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut tree = parse_yaml(yaml).map_err(ConfigError)?;
        apply_env(
            &mut tree,
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )?;
        let c = from_tree(tree)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn misspelt_env_sections_are_errors_and_plain_variables_are_ignored() {
        let e = load_str("", &[("BLOBMOUNT_CAHCE__LIST_TTL_SECS", "5")]).unwrap_err();
        assert!(e.0.contains("unknown section \"cahce\""), "{}", e.0);
        let c = load_str(
            "",
            &[
                ("BLOBMOUNT_CONFIG", "/etc/x.yaml"),
                ("BLOBMOUNT_READ__MODE", "file-cache"),
            ],
        )
        .unwrap();
        assert_eq!(c.read.mode, ReadMode::FileCache);
    }

    #[test]
    fn full_config_and_env_overrides() {
        let c = load_str(
            "store:\n  url: az://acct/container/p\n  azure:\n    account-key: s3cret\nmount:\n  read-only: true\n  file-mode: \"0600\"\n  dir-mode: \"700\"\n",
            &[
                ("BLOBMOUNT_STORE__ENDPOINT", "http://127.0.0.1:1"),
                ("BLOBMOUNT_MOUNT__THREADS", "4"),
                ("BLOBMOUNT_STORE__S3__ACCESS_KEY_ID", "0123456789"),
                ("BLOBMOUNT_STORE__S3__REGION", "1234"),
            ],
        )
        .unwrap();
        assert_eq!(c.store.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(
            (
                c.mount.read_only,
                c.mount.threads,
                c.mount.file_mode,
                c.mount.dir_mode
            ),
            (true, 4, 0o600, 0o700)
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        // String keys keep digits as text.
        assert_eq!(c.store.s3.access_key_id.as_deref(), Some("0123456789"));
        assert_eq!(c.store.s3.region.as_deref(), Some("1234"));
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let e = load_str("store:\n  azure:\n    account-key: 987654321\n", &[])
            .unwrap_err()
            .0;
        assert!(e.contains("store.azure.account-key"), "{e}");
        assert!(!e.contains("987654321"), "{e}");
    }

    #[test]
    fn modes_must_be_octal_strings() {
        let e = load_str("mount:\n  file-mode: 0644\n", &[]).unwrap_err().0;
        assert!(
            e.contains("mount.file-mode") && e.contains("quoted octal string"),
            "{e}"
        );
        let c = load_str("", &[("BLOBMOUNT_MOUNT__FILE_MODE", "0640")]).unwrap();
        assert_eq!(c.mount.file_mode, 0o640);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_str("mount:\n  threads: lots\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mount.threads"), "{e}");
        let e = load_str("mount:\n  thread: 2\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("thread"), "{e}");
        let e = load_str("store:\n  retry:\n    max-retries: -1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.retry.max-retries"), "{e}");
        let e = load_str("mount:\n  file-mode: \"999\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mount.file-mode"), "{e}");
        let e = load_str("store:\n  url: ftp://x\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url"), "{e}");
        let e = load_str("store: [\n", &[]).unwrap_err().to_string();
        assert!(e.to_lowercase().contains("line"), "{e}");
    }

    #[test]
    fn schema_lists_sections() {
        let s = Config::schema().to_string();
        for k in [
            "store",
            "mount",
            "cache",
            "logging",
            "account-key",
            "rename-dir-limit",
        ] {
            assert!(s.contains(k), "{k}");
        }
    }
}
