//! BlobFuse2 configuration files, read as their users wrote them: every key BlobFuse2
//! documents (its `setup/baseConfig.yaml` and `advancedConfig.yaml`) is mapped onto
//! blobmount's own settings, accepted because blobmount already behaves that way, ignored
//! with one warning each, or refused when honouring it silently would change what the
//! mount means (docs/migrating-from-blobfuse2.md lists them all).
//!
//! Why a translation into the native configuration tree rather than a second config type:
//! everything after it (environment overrides, flags, validation, ranges, reload) stays the
//! one path every mount takes, and `blobmount config import` can print the result for users
//! who want to move to the native file.

use std::path::Path;

use serde_json::{Map, Value};

use crate::settings::SETTINGS;

/// The native configuration of a BlobFuse2 file and what could not be carried over.
#[derive(Debug, Default)]
pub struct Imported {
    /// The native config tree (`store`, `mount`, `read`, `cache`, ...).
    pub tree: Value,
    /// One line per BlobFuse2 key that was ignored or adjusted (never a value of a secret).
    pub warnings: Vec<String>,
    /// `mountall.container-allowlist` / `-denylist`, for `mount all`.
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// What happens to one BlobFuse2 key.
#[derive(Clone, Copy)]
enum Rule {
    /// The value goes to this native key as it is (numbers clamped to the key's range).
    To(&'static str),
    /// Whole seconds to a native key in milliseconds.
    SecsToMillis(&'static str),
    /// Handled with the context of the whole file (see [`Importer::special`]).
    Special,
    /// blobmount does this anyway: nothing to set, nothing to say.
    Same,
    /// Not carried over; the reason is the warning.
    Ignore(&'static str),
    /// Refused: honouring it silently would change what the mount means.
    Refuse(&'static str),
}

use Rule::{Ignore, Refuse, Same, SecsToMillis, Special, To};

const NO_DISK_TIER: &str =
    "blobmount's block cache is memory only (use read mode file-cache for a disk cache)";

/// Every key of BlobFuse2's documented configuration.
const RULES: &[(&str, Rule)] = &[
    ("foreground", To("mount.foreground")),
    ("allow-other", To("mount.allow-other")),
    ("read-only", To("mount.read-only")),
    ("nonempty", Same),
    ("disable-kernel-cache", Special),
    (
        "dynamic-profile",
        Ignore("no Go profiler; use /metrics and /status"),
    ),
    ("profiler-port", Ignore("no Go profiler")),
    ("profiler-ip", Ignore("no Go profiler")),
    ("components", Special),
    ("logging.type", Special),
    ("logging.level", Special),
    ("logging.file-path", Special),
    ("logging.max-file-size-mb", To("logging.max-size-mib")),
    ("logging.file-count", To("logging.max-files")),
    ("logging.goroutine-id", Ignore("no goroutines")),
    (
        "logging.compress",
        Ignore("rotated logs are not compressed"),
    ),
    ("libfuse.default-permission", Special),
    ("libfuse.attribute-expiration-sec", Special),
    ("libfuse.entry-expiration-sec", Special),
    (
        "libfuse.negative-entry-expiration-sec",
        To("cache.negative-ttl-secs"),
    ),
    ("libfuse.fuse-trace", Ignore("use logging.level debug")),
    (
        "libfuse.extension",
        Refuse(
            "native extension libraries cannot be loaded; write a WASM policy plugin instead (docs/plugins.md)",
        ),
    ),
    ("libfuse.direct-io", Special),
    (
        "libfuse.kernel-list-cache-expiration-sec",
        Ignore("the kernel is told the attribute timeout for entries"),
    ),
    ("libfuse.ignore-open-flags", Same),
    ("libfuse.network-share", Ignore("not needed on Linux")),
    (
        "libfuse.max-fuse-threads",
        Ignore("requests are served by an async runtime"),
    ),
    ("entry_cache.timeout-sec", To("cache.list-ttl-secs")),
    ("xload.path", To("cache.dir")),
    ("xload.block-size-mb", Ignore("files are preloaded whole")),
    (
        "xload.export-progress",
        Ignore("progress is in /status and `blobmount status`"),
    ),
    ("xload.validate-md5", Same),
    (
        "xload.cleanup-on-start",
        Ignore("the cache is revalidated, not wiped, at start"),
    ),
    ("block_cache.block-size-mb", Special),
    ("block_cache.mem-size-mb", To("cache.read-memory-mib")),
    ("block_cache.prefetch", Special),
    (
        "block_cache.parallelism",
        Ignore("parallel ranged GETs follow the prefetch depth"),
    ),
    ("block_cache.path", Ignore(NO_DISK_TIER)),
    ("block_cache.disk-size-mb", Ignore(NO_DISK_TIER)),
    ("block_cache.disk-timeout-sec", Ignore(NO_DISK_TIER)),
    ("block_cache.cleanup-on-start", Ignore(NO_DISK_TIER)),
    ("file_cache.path", To("cache.dir")),
    (
        "file_cache.timeout-sec",
        Ignore("the file cache evicts least recently used files by size, not by time"),
    ),
    ("file_cache.max-size-mb", To("cache.file-cache-max-mib")),
    ("file_cache.allow-non-empty-temp", Same),
    (
        "file_cache.cleanup-on-start",
        Ignore("the cache is revalidated, not wiped, at start"),
    ),
    ("file_cache.sync-to-flush", Same),
    (
        "file_cache.refresh-sec",
        Ignore("open revalidates against the store per the consistency policy"),
    ),
    (
        "file_cache.ignore-sync",
        Ignore("fsync always uploads (stricter than ignoring it)"),
    ),
    (
        "file_cache.hard-limit",
        Ignore("the size cap is enforced by eviction"),
    ),
    ("file_cache.offload-io", Ignore("not applicable")),
    ("file_cache.policy-trace", Ignore("not applicable")),
    (
        "file_cache.create-empty-file",
        Ignore("new files are created at their first upload"),
    ),
    ("attr_cache.timeout-sec", Special),
    (
        "attr_cache.no-symlinks",
        Ignore("symlinks are always supported"),
    ),
    (
        "attr_cache.max-size-mb",
        Ignore("caps are counted in entries (cache.list-cache-max-entries)"),
    ),
    (
        "attr_cache.no-cache-on-list",
        Ignore("listings always fill the attribute cache"),
    ),
    (
        "loopbackfs.path",
        Refuse("loopbackfs is BlobFuse2's test component; mount file:///PATH instead"),
    ),
    ("azstorage.type", Special),
    ("azstorage.account-name", Special),
    ("azstorage.container", Special),
    ("azstorage.endpoint", Special),
    ("azstorage.use-http", Special),
    ("azstorage.subdirectory", To("mount.subdirectory")),
    ("azstorage.mode", To("store.azure.mode")),
    ("azstorage.account-key", To("store.azure.account-key")),
    ("azstorage.sas", To("store.azure.sas-token")),
    ("azstorage.appid", To("store.azure.client-id")),
    ("azstorage.resid", To("store.azure.resource-id")),
    ("azstorage.objid", To("store.azure.object-id")),
    ("azstorage.tenantid", To("store.azure.tenant-id")),
    ("azstorage.clientid", To("store.azure.client-id")),
    ("azstorage.clientsecret", To("store.azure.client-secret")),
    ("azstorage.clientcert", To("store.azure.client-cert-path")),
    (
        "azstorage.oauth-token-path",
        To("store.azure.federated-token-file"),
    ),
    (
        "azstorage.workload-identity-token",
        Refuse(
            "give the token as a file: store.azure.federated-token-file (AKS sets AZURE_FEDERATED_TOKEN_FILE)",
        ),
    ),
    ("azstorage.aadendpoint", To("store.azure.authority-host")),
    ("azstorage.block-size-mb", To("write.part-size-mib")),
    ("azstorage.max-concurrency", To("write.parts-in-flight")),
    (
        "azstorage.tier",
        Ignore("uploads get the account's default access tier"),
    ),
    (
        "azstorage.block-list-on-mount-sec",
        Ignore("listings are cached per directory"),
    ),
    ("azstorage.max-retries", To("store.retry.max-retries")),
    (
        "azstorage.max-retry-timeout-sec",
        To("store.retry.request-timeout-secs"),
    ),
    (
        "azstorage.retry-backoff-sec",
        SecsToMillis("store.retry.initial-backoff-ms"),
    ),
    (
        "azstorage.max-retry-delay-sec",
        SecsToMillis("store.retry.max-backoff-ms"),
    ),
    (
        "azstorage.http-proxy",
        Ignore("set the HTTP_PROXY environment variable"),
    ),
    (
        "azstorage.https-proxy",
        Ignore("set the HTTPS_PROXY environment variable"),
    ),
    (
        "azstorage.fail-unsupported-op",
        Ignore("chmod and chown are supported (stored in metadata)"),
    ),
    (
        "azstorage.auth-resource",
        Ignore("tokens are asked for https://storage.azure.com/"),
    ),
    ("azstorage.update-md5", Same),
    ("azstorage.validate-md5", Same),
    ("azstorage.disable-compression", Same),
    ("azstorage.telemetry", Ignore("no telemetry is sent")),
    (
        "azstorage.honour-acl",
        Ignore(
            "ACLs are shown and set on HNS accounts (getfacl, setfacl) but not enforced by the mount; the store enforces them for its own callers",
        ),
    ),
    (
        "azstorage.preserve-acl",
        Ignore("on HNS accounts renames are native and keep the path's ACL already"),
    ),
    (
        "azstorage.cpk-enabled",
        Refuse(
            "customer-provided encryption keys are not supported: uploads would be stored without them",
        ),
    ),
    (
        "azstorage.cpk-encryption-key",
        Refuse("customer-provided encryption keys are not supported"),
    ),
    (
        "azstorage.cpk-encryption-key-sha256",
        Refuse("customer-provided encryption keys are not supported"),
    ),
    ("azstorage.cap-mbps-read", Ignore("no bandwidth cap")),
    ("azstorage.cap-iops", Ignore("no request-rate cap")),
    ("azstorage.virtual-directory", Special),
    ("azstorage.max-results-for-list", To("cache.list-page-size")),
    ("azstorage.sdk-trace", Ignore("use logging.level debug")),
    ("mountall.container-allowlist", Special),
    ("mountall.container-denylist", Special),
    ("health_monitor.enable-monitoring", To("monitor.enabled")),
    ("health_monitor.stats-poll-interval-sec", Special),
    ("health_monitor.process-monitor-interval-sec", Special),
    ("health_monitor.output-path", Special),
    ("health_monitor.monitor-disable-list", Special),
];

/// Sections whose keys are looked up as `section.key`.
const SECTIONS: &[&str] = &[
    "logging",
    "libfuse",
    "entry_cache",
    "xload",
    "block_cache",
    "file_cache",
    "attr_cache",
    "loopbackfs",
    "azstorage",
    "mountall",
    "health_monitor",
];

const COMPONENTS: &[&str] = &[
    "libfuse",
    "entry_cache",
    "xload",
    "block_cache",
    "file_cache",
    "attr_cache",
    "azstorage",
    "stream",
];

/// Read a BlobFuse2 configuration (`text`, already decrypted) into the native tree.
pub fn import(text: &str) -> Result<Imported, String> {
    import_with(text, &[])
}

/// [`import`] with BlobFuse2 keys set over the file (`section.key` or `key`: what
/// BlobFuse2's command-line flags set, `crate::blobfuse2_flags`).
pub fn import_with(text: &str, over: &[(String, Value)]) -> Result<Imported, String> {
    let src = crate::config::parse_yaml(text).map_err(|e| format!("blobfuse2 config: {e}"))?;
    let Value::Object(mut src) = src else {
        return Err("blobfuse2 config: expected a mapping".into());
    };
    for (key, v) in over {
        match key.split_once('.') {
            Some((section, k)) => {
                let s = src
                    .entry(section.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !s.is_object() {
                    *s = Value::Object(Map::new());
                }
                s[k] = v.clone();
            }
            None => {
                src.insert(key.clone(), v.clone());
            }
        }
    }
    import_map(src)
}

/// [`import`] of a BlobFuse2 configuration already read as a tree (what `mountv1` makes of
/// a BlobFuse v1 configuration, `crate::blobfuse_v1`).
pub fn import_map(src: Map<String, Value>) -> Result<Imported, String> {
    let mut i = Importer {
        out: Imported {
            tree: Value::Object(Map::new()),
            ..Default::default()
        },
        src: &src,
    };
    i.components()?;
    for (k, v) in &src {
        if SECTIONS.contains(&k.as_str()) {
            let Value::Object(m) = v else {
                if !v.is_null() {
                    i.warn(format!("{k}: expected a section; ignored"));
                }
                continue;
            };
            for (sk, sv) in m {
                i.key(&format!("{k}.{sk}"), sv)?;
            }
        } else {
            i.key(k, v)?;
        }
    }
    i.finish()?;
    Ok(i.out)
}

struct Importer<'a> {
    out: Imported,
    src: &'a Map<String, Value>,
}

impl Importer<'_> {
    fn warn(&mut self, w: String) {
        self.out.warnings.push(w);
    }

    fn get(&self, path: &str) -> Option<&Value> {
        let mut cur = self.src.get(path.split('.').next()?)?;
        for p in path.split('.').skip(1) {
            cur = cur.get(p)?;
        }
        (!cur.is_null()).then_some(cur)
    }

    fn set(&mut self, key: &str, v: Value) {
        let mut cur = &mut self.out.tree;
        let parts: Vec<&str> = key.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            if !cur.get(*p).is_some_and(Value::is_object) {
                cur[*p] = Value::Object(Map::new());
            }
            cur = &mut cur[*p];
        }
        cur[parts[parts.len() - 1]] = v;
    }

    /// A number for native `key`, clamped into its range with a warning.
    fn number(&mut self, from: &str, key: &str, n: u64) -> Value {
        let range = SETTINGS.iter().find(|s| s.key == key).and_then(|s| s.range);
        match range {
            Some(r) if n < r.min || n > r.max => {
                let c = n.clamp(r.min, r.max);
                self.warn(format!(
                    "{from}: {n} is outside {key}'s range {}..{}; using {c}",
                    r.min, r.max
                ));
                Value::from(c)
            }
            _ => Value::from(n),
        }
    }

    fn uint(&self, from: &str, v: &Value) -> Result<u64, String> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("blobfuse2 config {from}: expected a non-negative number"))
    }

    fn key(&mut self, path: &str, v: &Value) -> Result<(), String> {
        let Some((_, rule)) = RULES.iter().find(|(k, _)| *k == path) else {
            self.warn(format!(
                "{path}: not a BlobFuse2 key blobmount knows; ignored"
            ));
            return Ok(());
        };
        match *rule {
            To(key) => {
                let value = match v {
                    Value::Number(_) => {
                        let n = self.uint(path, v)?;
                        self.number(path, key, n)
                    }
                    other => other.clone(),
                };
                self.set(key, value);
            }
            SecsToMillis(key) => {
                let n = self.uint(path, v)?.saturating_mul(1000);
                let value = self.number(path, key, n);
                self.set(key, value);
            }
            Same | Special => {}
            Ignore(why) => self.warn(format!("{path}: ignored ({why})")),
            Refuse(why) => return Err(format!("blobfuse2 config {path}: refused: {why}")),
        }
        Ok(())
    }

    /// The pipeline decides the read path.
    fn components(&mut self) -> Result<(), String> {
        let list: Vec<String> = match self.get("components") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            Some(_) => return Err("blobfuse2 config components: expected a list".into()),
            None => vec!["libfuse".into(), "azstorage".into()],
        };
        for c in &list {
            if c == "loopbackfs" {
                return Err("blobfuse2 config components: refused: loopbackfs is BlobFuse2's test component; mount file:///PATH instead".into());
            }
            if !COMPONENTS.contains(&c.as_str()) {
                return Err(format!(
                    "blobfuse2 config components: unknown component {c:?}"
                ));
            }
        }
        let has = |c: &str| list.iter().any(|x| x == c);
        if !has("azstorage") {
            return Err("blobfuse2 config components: azstorage is missing".into());
        }
        let mode = match (
            has("file_cache"),
            has("block_cache") || has("stream"),
            has("xload"),
        ) {
            (true, true, _) => {
                return Err("blobfuse2 config components: file_cache and block_cache cannot both be used (BlobFuse2 refuses this too)".into());
            }
            (true, false, _) => "file-cache",
            (false, true, _) => "block-cache",
            (false, false, true) => {
                self.set("read.preload", Value::Array(vec![Value::from("")]));
                "file-cache"
            }
            (false, false, false) => "direct",
        };
        if has("stream") {
            self.warn(
                "components: stream is deprecated in BlobFuse2 too; using the block cache".into(),
            );
        }
        self.set("read.mode", Value::from(mode));
        for section in [
            "file_cache",
            "block_cache",
            "xload",
            "attr_cache",
            "entry_cache",
        ] {
            if self.get(section).is_some() && !has(section) {
                self.warn(format!(
                    "{section}: section given but not in components; BlobFuse2 ignores it too"
                ));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        self.store()?;
        self.timeouts()?;
        self.logging();
        if let Some(p) = self.get("libfuse.default-permission").cloned() {
            let mode = octal(&p).ok_or(
                "blobfuse2 config libfuse.default-permission: expected an octal mode such as 0644",
            )?;
            self.set("mount.file-mode", Value::from(format!("{mode:04o}")));
            self.set("mount.dir-mode", Value::from(format!("{mode:04o}")));
        }
        self.block_cache()?;
        self.health_monitor()?;
        if self.get("azstorage.virtual-directory") == Some(&Value::Bool(false)) {
            self.warn("azstorage.virtual-directory: false ignored (directories without marker blobs are always shown)".into());
        }
        for (key, list) in [
            ("mountall.container-allowlist", 0),
            ("mountall.container-denylist", 1),
        ] {
            let names: Vec<String> = match self.get(key) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect(),
                Some(_) => return Err(format!("blobfuse2 config {key}: expected a list")),
                None => continue,
            };
            if list == 0 {
                self.out.allow = names;
            } else {
                self.out.deny = names;
            }
        }
        Ok(())
    }

    fn store(&mut self) -> Result<(), String> {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let adls = match text(self.get("azstorage.type")).as_deref() {
            None | Some("block") => false,
            // ADLS Gen2: renames, directories and access control through the DFS endpoint.
            Some("adls") => true,
            Some(other) => {
                return Err(format!(
                    "blobfuse2 config azstorage.type: expected block or adls, got {other:?}"
                ));
            }
        };
        if adls {
            self.set("store.azure.hns", Value::from("true"));
        }
        let account = text(self.get("azstorage.account-name"))
            .or_else(|| std::env::var("AZURE_STORAGE_ACCOUNT").ok())
            .ok_or(
                "blobfuse2 config azstorage.account-name is missing (or AZURE_STORAGE_ACCOUNT)",
            )?;
        // A mount without a container (mount all) gets one later.
        let container = text(self.get("azstorage.container"))
            .or_else(|| std::env::var("AZURE_STORAGE_BLOB_CONTAINER").ok())
            .unwrap_or_default();
        self.set(
            "store.url",
            Value::from(format!("az://{account}/{container}")),
        );
        let endpoint = text(self.get("azstorage.endpoint"));
        let http = self.get("azstorage.use-http") == Some(&Value::Bool(true));
        match (endpoint, http) {
            // BlobFuse2 takes either endpoint of an ADLS account and derives the other.
            (Some(e), _) if adls && e.contains(".dfs.") => {
                let e = e.trim_end_matches('/');
                self.set("store.azure.dfs-endpoint", Value::from(e));
                self.set(
                    "store.endpoint",
                    Value::from(e.replacen(".dfs.", ".blob.", 1)),
                );
            }
            // Neither cloud form (an emulator or a proxy): one address serves both APIs.
            (Some(e), _) if adls && !e.contains(".blob.") => {
                let e = e.trim_end_matches('/');
                self.set("store.azure.dfs-endpoint", Value::from(e));
                self.set("store.endpoint", Value::from(e));
            }
            (Some(e), _) => self.set("store.endpoint", Value::from(e.trim_end_matches('/'))),
            (None, true) => self.set(
                "store.endpoint",
                Value::from(format!("http://{account}.blob.core.windows.net")),
            ),
            (None, false) => {}
        }
        Ok(())
    }

    /// BlobFuse2 has a kernel timeout (libfuse) and its own attribute cache; blobmount has
    /// one attribute timeout for both, plus the listing TTL.
    fn timeouts(&mut self) -> Result<(), String> {
        let direct = self.get("libfuse.direct-io") == Some(&Value::Bool(true));
        let no_kernel = self.get("disable-kernel-cache") == Some(&Value::Bool(true));
        if direct {
            self.set("read.mode", Value::from("direct"));
            for k in [
                "mount.attr-timeout-secs",
                "cache.list-ttl-secs",
                "cache.negative-ttl-secs",
            ] {
                self.set(k, Value::from(0));
            }
            return Ok(());
        }
        let secs = |k: &str| -> Result<Option<u64>, String> {
            self.get(k).cloned().map(|v| self.uint(k, &v)).transpose()
        };
        let attr = secs("libfuse.attribute-expiration-sec")?;
        let entry = secs("libfuse.entry-expiration-sec")?;
        let cache = secs("attr_cache.timeout-sec")?;
        let kernel = match (attr, entry) {
            (Some(a), Some(e)) if a != e => {
                self.warn(format!("libfuse: attribute ({a} s) and entry ({e} s) expirations differ; blobmount has one attribute timeout, using {}", a.min(e)));
                Some(a.min(e))
            }
            (a, e) => a.or(e),
        };
        if let Some(c) = cache {
            if kernel.is_some_and(|k| k != c) {
                self.warn(format!("attr_cache.timeout-sec ({c} s) is blobmount's one attribute timeout; libfuse expirations are not used"));
            }
            // Not the listing TTL: a fresh listing answers lookups of names it lacks, and
            // BlobFuse2's attribute cache never does (a new object shows on its next lookup).
            let v = self.number("attr_cache.timeout-sec", "mount.attr-timeout-secs", c);
            self.set("mount.attr-timeout-secs", v);
        } else if let Some(k) = kernel {
            let v = self.number(
                "libfuse.attribute-expiration-sec",
                "mount.attr-timeout-secs",
                k,
            );
            self.set("mount.attr-timeout-secs", v);
        }
        if no_kernel {
            self.set("mount.attr-timeout-secs", Value::from(0));
        }
        Ok(())
    }

    fn logging(&mut self) {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let level = match text(self.get("logging.level")).as_deref() {
            None => None,
            Some("log_off") => Some("off"),
            Some("log_crit" | "log_err") => Some("error"),
            Some("log_warning") => Some("warn"),
            Some("log_info") => Some("info"),
            Some("log_trace") => Some("debug"),
            Some("log_debug") => Some("trace"),
            Some(other) => {
                self.warn(format!("logging.level: unknown level {other:?}; ignored"));
                None
            }
        };
        match text(self.get("logging.type")).as_deref() {
            Some("silent") => self.set("logging.level", Value::from("off")),
            Some("syslog") | None => {
                if self.get("logging.type").is_some() {
                    self.set("logging.output", Value::from("syslog"));
                }
            }
            Some("base") => {
                let file = text(self.get("logging.file-path")).unwrap_or_else(|| {
                    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                    Path::new(&home)
                        .join(".blobfuse2/blobfuse2.log")
                        .display()
                        .to_string()
                });
                self.set("logging.output", Value::from("file"));
                self.set("logging.file", Value::from(file));
            }
            Some(other) => self.warn(format!("logging.type: unknown type {other:?}; ignored")),
        }
        if let Some(l) = level
            && text(self.get("logging.type")).as_deref() != Some("silent")
        {
            self.set("logging.level", Value::from(l));
        }
    }

    /// BlobFuse2's `health_monitor` section (`crate::monitor::from_blobfuse2`).
    fn health_monitor(&mut self) -> Result<(), String> {
        let hm = crate::monitor::from_blobfuse2(self.src.get("health_monitor"))?;
        for w in hm.warnings {
            self.warn(w);
        }
        if let Some((from, n)) = hm.interval {
            let v = self.number(from, "monitor.interval-secs", n);
            self.set("monitor.interval-secs", v);
        }
        for (k, v) in hm.keys {
            self.set(k, v);
        }
        Ok(())
    }

    fn block_cache(&mut self) -> Result<(), String> {
        let block = match self.get("block_cache.block-size-mb").cloned() {
            Some(v) => {
                let b = self.uint("block_cache.block-size-mb", &v)?;
                let c = self.number("block_cache.block-size-mb", "cache.read-block-mib", b);
                self.set("cache.read-block-mib", c.clone());
                c.as_u64().unwrap_or(16)
            }
            None => 16,
        };
        if let Some(v) = self.get("block_cache.prefetch").cloned() {
            let n = self.uint("block_cache.prefetch", &v)?;
            let ahead = self.number(
                "block_cache.prefetch",
                "cache.read-ahead-max-mib",
                n.saturating_mul(block),
            );
            self.set("cache.read-ahead-max-mib", ahead);
        }
        Ok(())
    }
}

/// A mode as BlobFuse2 users write it: `0644` (a YAML number 644 or a string) means octal.
fn octal(v: &Value) -> Option<u16> {
    let s = match v {
        // YAML reads `0644` as a number; its digits are the octal mode.
        Value::Number(n) => match n.as_u64() {
            Some(u) => u.to_string(),
            None => format!("{}", n.as_f64()? as u64),
        },
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
}

/// BlobFuse2's (and v1's) default log is syslog; a container often has no syslog socket:
/// then the log goes to stderr, with a warning.
pub fn syslog_fallback(imported: &mut Imported) {
    if imported.tree["logging"]["output"] == "syslog"
        && !Path::new(crate::logsink::SYSLOG_SOCKET).exists()
    {
        imported.tree["logging"]["output"] = Value::from("stderr");
        imported
            .warnings
            .push("logging.type: syslog, but there is no /dev/log here; logging to stderr".into());
    }
}

/// The native YAML of an import, with the warnings as comments on top.
pub fn to_yaml(i: &Imported) -> Result<String, String> {
    let body = serde_saphyr::to_string(&i.tree).map_err(|e| e.to_string())?;
    let mut out =
        String::from("# Converted from a BlobFuse2 configuration by `blobmount config import`.\n");
    for w in &i.warnings {
        out.push_str(&format!("# warning: {w}\n"));
    }
    out.push_str(&body);
    Ok(out)
}

#[cfg(test)]
#[path = "blobfuse2_tests.rs"]
mod tests;
