//! `blobmount mountv1 DIR --config-file=fuse_connection.cfg [v1 flags]`: a BlobFuse v1
//! command line and connection file (`key value` lines), as its users wrote them, mounted
//! or (`--convert-config-only=true --output-file=F`) converted to blobmount's native YAML.
//!
//! Why through BlobFuse2's keys: BlobFuse2's own `mountv1` turns v1 settings into a
//! BlobFuse2 configuration, and blobmount already reads those (`crate::blobfuse2`) with the
//! keep / map / warn-once / refuse policy. Each v1 key and flag here either names the
//! BlobFuse2 key it becomes (so what happens next is that key's rule, and its warning is
//! reworded to name the v1 spelling), sets a native key BlobFuse2 has no word for
//! (`msiEndpoint`, `-o uid=`), is accepted because blobmount behaves that way, or is
//! ignored with a warning. Unknown keys and flags and malformed values are errors naming
//! them (never a secret's value). docs/migrating-from-blobfuse2.md lists every one.

use std::ffi::OsString;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::blobfuse2::Imported;

/// What happens to one v1 key or flag.
#[derive(Clone, Copy)]
pub(crate) enum Rule {
    /// To this BlobFuse2 key as text.
    Bf2(&'static str),
    /// To this BlobFuse2 key as a number.
    Num(&'static str),
    /// To this BlobFuse2 key as `true`/`false`.
    Switch(&'static str),
    /// To this BlobFuse2 key, `true` and `false` swapped.
    Negated(&'static str),
    /// To this native key as text.
    Native(&'static str),
    /// Handled with the rest of the command line in view.
    Special,
    /// blobmount does this anyway.
    Same,
    /// Not carried over; the reason is the warning.
    Ignore(&'static str),
}

use Rule::{Bf2, Ignore, Native, Negated, Num, Same, Special, Switch};

const CA: &str = "no per-mount CA file: the system's trust store is used";
const DISK: &str = "the file cache evicts by size (cache.file-cache-max-mib) and keeps cache.file-cache-min-free-mib free";

/// Every key of v1's connection file (`blobfuse/blobfuse.cpp`, `read_config`).
pub(crate) const KEYS: &[(&str, Rule)] = &[
    ("accountName", Bf2("azstorage.account-name")),
    ("accountKey", Bf2("azstorage.account-key")),
    ("sasToken", Bf2("azstorage.sas")),
    ("containerName", Bf2("azstorage.container")),
    ("blobEndpoint", Special),
    ("authType", Special),
    ("accountType", Special),
    ("identityClientId", Bf2("azstorage.appid")),
    ("identityObjectId", Bf2("azstorage.objid")),
    ("identityResourceId", Bf2("azstorage.resid")),
    ("msiEndpoint", Native("store.azure.msi-endpoint")),
    ("servicePrincipalClientId", Bf2("azstorage.clientid")),
    ("servicePrincipalTenantId", Bf2("azstorage.tenantid")),
    (
        "servicePrincipalClientSecret",
        Bf2("azstorage.clientsecret"),
    ),
    ("aadEndpoint", Bf2("azstorage.aadendpoint")),
    ("logLevel", Special),
    ("caCertFile", Ignore(CA)),
    ("httpsProxy", Bf2("azstorage.https-proxy")),
    ("httpProxy", Bf2("azstorage.http-proxy")),
    ("dnsType", Special),
];

/// v1's environment variables (read when no config file is given, as v1 does; the two
/// secrets always) and the key each stands for.
pub(crate) const ENV: &[(&str, &str)] = &[
    ("AZURE_STORAGE_ACCOUNT", "accountName"),
    ("AZURE_STORAGE_ACCESS_KEY", "accountKey"),
    ("AZURE_STORAGE_SAS_TOKEN", "sasToken"),
    ("AZURE_STORAGE_BLOB_ENDPOINT", "blobEndpoint"),
    ("AZURE_STORAGE_IDENTITY_CLIENT_ID", "identityClientId"),
    ("AZURE_STORAGE_IDENTITY_OBJECT_ID", "identityObjectId"),
    ("AZURE_STORAGE_IDENTITY_RESOURCE_ID", "identityResourceId"),
    ("MSI_ENDPOINT", "msiEndpoint"),
    ("AZURE_STORAGE_SPN_CLIENT_ID", "servicePrincipalClientId"),
    ("AZURE_STORAGE_SPN_TENANT_ID", "servicePrincipalTenantId"),
    (
        "AZURE_STORAGE_SPN_CLIENT_SECRET",
        "servicePrincipalClientSecret",
    ),
    ("AZURE_STORAGE_AUTH_TYPE", "authType"),
    ("AZURE_STORAGE_AAD_ENDPOINT", "aadEndpoint"),
];

/// Every v1 flag (`--NAME=VALUE`), plus the FUSE timeouts v1's README gives as flags.
pub(crate) const FLAGS: &[(&str, Rule)] = &[
    ("config-file", Special),
    ("tmp-path", Native("cache.dir")),
    ("container-name", Bf2("azstorage.container")),
    ("use-https", Special),
    (
        "file-cache-timeout-in-seconds",
        Num("file_cache.timeout-sec"),
    ),
    ("log-level", Special),
    ("use-attr-cache", Same),
    ("use-adls", Special),
    ("no-symlinks", Switch("attr_cache.no-symlinks")),
    ("cache-on-list", Negated("attr_cache.no-cache-on-list")),
    ("max-concurrency", Num("azstorage.max-concurrency")),
    ("cache-size-mb", Num("file_cache.max-size-mb")),
    (
        "empty-dir-check",
        Ignore("a non-empty cache directory is revalidated, not refused"),
    ),
    ("upload-modified-only", Same),
    (
        "cancel-list-on-mount-seconds",
        Num("azstorage.block-list-on-mount-sec"),
    ),
    ("high-disk-threshold", Ignore(DISK)),
    ("low-disk-threshold", Ignore(DISK)),
    ("cache-poll-timeout-msec", Ignore("no eviction polling")),
    ("max-eviction", Ignore("eviction is not batched")),
    ("set-content-type", Same),
    ("ca-cert-file", Ignore(CA)),
    ("https-proxy", Bf2("azstorage.https-proxy")),
    ("http-proxy", Bf2("azstorage.http-proxy")),
    ("max-retry", Num("azstorage.max-retries")),
    (
        "max-retry-interval-in-seconds",
        Num("azstorage.max-retry-delay-sec"),
    ),
    ("retry-delay-factor", Special),
    ("basic-remount-check", Same),
    ("pre-mount-validate", Same),
    ("background-download", Same),
    (
        "invalidate-on-sync",
        Ignore("sync uploads; `blobmount refresh PATH` drops what the mount cached"),
    ),
    ("streaming", Special),
    ("stream-cache-mb", Special),
    ("max-blocks-per-file", Num("block_cache.prefetch")),
    ("block-size-mb", Num("block_cache.block-size-mb")),
    ("ignore-open-flags", Switch("libfuse.ignore-open-flags")),
    ("debug-libcurl", Ignore("use --log-level=LOG_DEBUG")),
    ("attr-timeout", Num("libfuse.attribute-expiration-sec")),
    ("entry-timeout", Num("libfuse.entry-expiration-sec")),
    (
        "negative-timeout",
        Num("libfuse.negative-entry-expiration-sec"),
    ),
    ("read-only", Switch("read-only")),
    ("output-file", Special),
    ("convert-config-only", Special),
];

/// The v1 flags that are switches: `--flag` alone means `true`.
const SWITCHES: &[&str] = &[
    "use-https",
    "use-attr-cache",
    "use-adls",
    "no-symlinks",
    "cache-on-list",
    "empty-dir-check",
    "upload-modified-only",
    "set-content-type",
    "basic-remount-check",
    "pre-mount-validate",
    "background-download",
    "invalidate-on-sync",
    "streaming",
    "ignore-open-flags",
    "debug-libcurl",
    "read-only",
    "convert-config-only",
];

/// FUSE `-o` options v1 passed to libfuse that blobmount has no use for (the kernel or
/// blobmount does what they ask, or they tune libfuse itself).
const FUSE_IGNORED: &[&str] = &[
    "big_writes",
    "hard_remove",
    "kernel_cache",
    "auto_cache",
    "max_read",
    "max_write",
    "max_readahead",
    "max_background",
    "fsname",
    "subtype",
    "auto_unmount",
    "use_ino",
    "readdir_ino",
    "sync_read",
    "async_read",
    "noatime",
    "atime",
    "allow_root",
    "direct_io",
];

/// A v1 command line read: the BlobFuse2 tree, native keys over it, and what is left for
/// blobmount's own parser.
#[derive(Default)]
pub struct V1 {
    bf2: Map<String, Value>,
    native: Vec<(String, Value)>,
    /// (BlobFuse2 key, the v1 spelling that set it), to reword BlobFuse2's warnings.
    origin: Vec<(String, String)>,
    warnings: Vec<String>,
    /// Arguments for `blobmount mount` (the mount point, blobmount's own flags).
    pub rest: Vec<OsString>,
    pub config_file: Option<PathBuf>,
    pub output_file: Option<PathBuf>,
    pub convert_only: bool,
    use_https: Option<bool>,
    streaming: bool,
}

fn err(what: &str, msg: impl std::fmt::Display) -> String {
    format!("blobfuse v1 {what}: {msg}")
}

fn switch(what: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(err(what, format!("expected true or false, got {v:?}"))),
    }
}

fn number(what: &str, v: &str) -> Result<Value, String> {
    let f: f64 = v
        .trim()
        .parse()
        .ok()
        .filter(|f: &f64| f.is_finite() && *f >= 0.0)
        .ok_or_else(|| err(what, format!("expected a non-negative number, got {v:?}")))?;
    Ok(if f.fract() == 0.0 {
        Value::from(f as u64)
    } else {
        Value::from(f)
    })
}

impl V1 {
    /// Whether BlobFuse2 key `section.key` is set.
    fn has(&self, key: &str) -> bool {
        key.split_once('.')
            .and_then(|(s, k)| self.bf2.get(s)?.get(k))
            .is_some_and(|v| !v.is_null())
    }

    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// BlobFuse2 key `key` (`section.key` or a top-level key) set from v1's `from`.
    fn put(&mut self, key: &str, v: Value, from: &str) {
        match key.split_once('.') {
            Some((section, k)) => {
                let s = self
                    .bf2
                    .entry(section.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                s[k] = v;
            }
            None => {
                self.bf2.insert(key.to_string(), v);
            }
        }
        self.origin.retain(|(k, _)| k != key);
        self.origin.push((key.to_string(), from.to_string()));
    }

    fn native(&mut self, key: &str, v: Value) {
        self.native.retain(|(k, _)| k != key);
        self.native.push((key.to_string(), v));
    }

    /// Apply one key (`from` is how the user spelt it, for messages; `secret` values are
    /// never shown).
    fn apply(&mut self, rule: Rule, name: &str, from: &str, v: &str) -> Result<(), String> {
        match rule {
            Bf2(k) => self.put(k, Value::from(v), from),
            Num(k) => {
                let n = number(from, v)?;
                self.put(k, n, from);
            }
            Switch(k) => {
                let b = switch(from, v)?;
                self.put(k, Value::from(b), from);
            }
            Negated(k) => {
                let b = switch(from, v)?;
                self.put(k, Value::from(!b), from);
            }
            // v1 expands a leading `~` of --tmp-path.
            Native(k) => match (v.strip_prefix("~/"), std::env::var("HOME")) {
                (Some(rest), Ok(home)) if k == "cache.dir" => {
                    self.native(k, Value::from(format!("{home}/{rest}")))
                }
                _ => self.native(k, Value::from(v)),
            },
            Same => {}
            Ignore(why) => self.warn(format!("{from}: ignored ({why})")),
            Special => self.special(name, from, v)?,
        }
        Ok(())
    }

    fn special(&mut self, name: &str, from: &str, v: &str) -> Result<(), String> {
        match name {
            "blobEndpoint" => self.native("v1.endpoint", Value::from(v)),
            "authType" => {
                let mode = v.trim().to_ascii_lowercase();
                if !["key", "sas", "msi", "spn"].contains(&mode.as_str()) {
                    return Err(err(
                        from,
                        format!("expected Key, SAS, MSI or SPN, got {v:?}"),
                    ));
                }
                self.put("azstorage.mode", Value::from(mode), from);
            }
            "accountType" => match v.trim() {
                "block" | "adls" => self.put("azstorage.type", Value::from(v.trim()), from),
                other => return Err(err(from, format!("expected block or adls, got {other:?}"))),
            },
            "use-adls" => {
                let t = if switch(from, v)? { "adls" } else { "block" };
                self.put("azstorage.type", Value::from(t), from);
            }
            "use-https" => self.use_https = Some(switch(from, v)?),
            "logLevel" | "log-level" => {
                let level = v.trim().to_ascii_lowercase();
                let known = ["log_off", "log_crit", "log_err", "log_warning", "log_info"];
                let level = match level.as_str() {
                    // v1's most verbose level; BlobFuse2's `log_debug` is beyond it.
                    "log_debug" => "log_trace".to_string(),
                    l if known.contains(&l) => level,
                    _ => {
                        return Err(err(
                            from,
                            format!(
                                "expected LOG_OFF, LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO or LOG_DEBUG, got {v:?}"
                            ),
                        ));
                    }
                };
                self.put("logging.level", Value::from(level), from);
            }
            "dnsType" => {
                if v.trim() == "zonal" {
                    self.warn(format!("{from}: zonal is not derived; give the zonal endpoint as blobEndpoint (it is used as written)"));
                }
            }
            "retry-delay-factor" => {
                let n = number(from, v)?.as_f64().unwrap_or(0.0);
                self.native(
                    "store.retry.initial-backoff-ms",
                    Value::from((n * 1000.0).round() as u64),
                );
            }
            "streaming" => self.streaming = switch(from, v)?,
            "stream-cache-mb" => {
                let n = number(from, v)?;
                self.native("cache.read-memory-mib", n);
            }
            "config-file" => self.config_file = Some(v.into()),
            "output-file" => self.output_file = Some(v.into()),
            "convert-config-only" => self.convert_only = switch(from, v)?,
            _ => return Err(err(from, "not handled")),
        }
        Ok(())
    }

    /// One line of v1's connection file: `key value` (a `#` starts a comment).
    fn line(&mut self, n: usize, line: &str) -> Result<(), String> {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            return Ok(());
        }
        let (key, value) = match line.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => (line, ""),
        };
        let Some((_, rule)) = KEYS.iter().find(|(k, _)| *k == key) else {
            return Err(format!(
                "blobfuse v1 config line {n}: unknown key {key:?} (the keys are {})",
                KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ));
        };
        if value.is_empty() {
            return Err(format!("blobfuse v1 config line {n}: {key} has no value"));
        }
        self.apply(*rule, key, key, value)
    }

    /// One `-o` option (FUSE mount options, as v1 passed them to libfuse).
    fn option(&mut self, o: &str) -> Result<(), String> {
        let (k, v) = o.split_once('=').map_or((o, None), |(k, v)| (k, Some(v)));
        let from = format!("-o {k}");
        let need = || v.ok_or_else(|| err(&from, "needs a value"));
        match k {
            "allow_other" => {
                let b = v.map_or(Ok(true), |v| switch(&from, v))?;
                self.put("allow-other", Value::from(b), &from);
            }
            "ro" => self.put("read-only", Value::from(true), &from),
            "rw" => self.put("read-only", Value::from(false), &from),
            "attr_timeout" => {
                self.apply(Num("libfuse.attribute-expiration-sec"), k, &from, need()?)?
            }
            "entry_timeout" => {
                self.apply(Num("libfuse.entry-expiration-sec"), k, &from, need()?)?
            }
            "negative_timeout" => self.apply(
                Num("libfuse.negative-entry-expiration-sec"),
                k,
                &from,
                need()?,
            )?,
            "uid" | "gid" => {
                let id: u32 = need()?
                    .parse()
                    .map_err(|_| err(&from, "expected a number"))?;
                self.native(&format!("mount.{k}"), Value::from(id));
            }
            "umask" => {
                let m = u16::from_str_radix(need()?, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| err(&from, "expected an octal mask such as 022"))?;
                let mode = Value::from(format!("{:04o}", 0o777 & !m));
                self.native("mount.file-mode", mode.clone());
                self.native("mount.dir-mode", mode);
            }
            "nonempty" | "default_permissions" => {}
            k if FUSE_IGNORED.contains(&k) => self.warn(format!(
                "{from}: ignored (a libfuse option blobmount has no use for)"
            )),
            _ => return Err(err(&from, "unknown FUSE option")),
        }
        Ok(())
    }
}

/// Read a v1 command line (the arguments after `mountv1`).
pub fn parse_args(args: Vec<OsString>) -> Result<V1, String> {
    let mut v1 = V1::default();
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        let Some(s) = a.to_str().map(str::to_string) else {
            v1.rest.push(a);
            continue;
        };
        if s == "-o" || (s.starts_with("-o") && s.len() > 2) {
            let list = match s.strip_prefix("-o").filter(|r| !r.is_empty()) {
                Some(r) => r.to_string(),
                None => it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or("blobfuse v1 -o: needs options")?,
            };
            for o in list.split(',').filter(|o| !o.is_empty()) {
                v1.option(o.trim())?;
            }
            continue;
        }
        if s == "-d" {
            // FUSE's debug switch: foreground, with the log on stderr.
            v1.native("mount.foreground", Value::from(true));
            v1.native("logging.output", Value::from("stderr"));
            v1.native("logging.level", Value::from("debug"));
            continue;
        }
        if s == "-s" {
            v1.warn("-s: ignored (requests are served by an async runtime)".into());
            continue;
        }
        let Some(flag) = s.strip_prefix("--") else {
            v1.rest.push(a);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.replace('_', "-"), Some(v.to_string())),
            None => (flag.replace('_', "-"), None),
        };
        let Some((_, rule)) = FLAGS.iter().find(|(f, _)| *f == name) else {
            // blobmount's own flags (`--foreground`, `--health-listen`, ...).
            v1.rest.push(a);
            continue;
        };
        let is_switch = SWITCHES.contains(&name.as_str());
        let value = match inline {
            Some(v) => v,
            None if is_switch => match it.peek().and_then(|n| n.to_str()) {
                Some(v @ ("true" | "false")) => {
                    let v = v.to_string();
                    it.next();
                    v
                }
                _ => "true".into(),
            },
            None => it
                .next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| err(&format!("--{name}"), "needs a value"))?,
        };
        v1.apply(*rule, &name, &format!("--{name}"), &value)?;
    }
    Ok(v1)
}

/// Read the connection file (or v1's environment variables when there is none) and turn
/// everything into the native configuration tree.
pub fn convert(mut v1: V1, env: &dyn Fn(&str) -> Option<String>) -> Result<Imported, String> {
    // The file's keys come first; the command line's flags were applied already and win.
    let flags = std::mem::take(&mut v1.bf2);
    let flag_origin = std::mem::take(&mut v1.origin);
    let flag_native = std::mem::take(&mut v1.native);
    match &v1.config_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("blobfuse v1 config file {}: {e}", f.display()))?;
            for (n, line) in text.lines().enumerate() {
                v1.line(n + 1, line)?;
            }
            // v1 reads the client secret from the environment, the file's winning.
            let var = "AZURE_STORAGE_SPN_CLIENT_SECRET";
            if let Some(v) = env(var).filter(|_| !v1.has("azstorage.clientsecret")) {
                v1.apply(Bf2("azstorage.clientsecret"), var, var, &v)?;
            }
        }
        None => {
            if env("AZURE_STORAGE_ACCOUNT").is_none() {
                return Err(
                    "blobfuse v1: no --config-file, and AZURE_STORAGE_ACCOUNT is not set".into(),
                );
            }
            for (var, key) in ENV {
                if let (Some(v), Some((_, rule))) = (env(var), KEYS.iter().find(|(k, _)| k == key))
                {
                    v1.apply(*rule, key, var, &v)?;
                }
            }
        }
    }
    if env("MSI_SECRET").is_some() {
        v1.warn("MSI_SECRET: ignored (a custom identity endpoint is called without a secret header; App Service's IDENTITY_ENDPOINT/IDENTITY_HEADER are used when set)".into());
    }
    // Flags over the file.
    for (section, v) in flags {
        match (v1.bf2.get_mut(&section), v) {
            (Some(Value::Object(m)), Value::Object(over)) => m.extend(over),
            (_, v) => {
                v1.bf2.insert(section, v);
            }
        }
    }
    for (k, f) in flag_origin {
        v1.origin.retain(|(o, _)| *o != k);
        v1.origin.push((k, f));
    }
    for (k, v) in flag_native {
        v1.native(&k, v);
    }
    v1.finish()
}

impl V1 {
    fn finish(mut self) -> Result<Imported, String> {
        if !self.has("azstorage.account-name") {
            return Err("blobfuse v1: accountName is missing (in the config file, or AZURE_STORAGE_ACCOUNT)".into());
        }
        if !self.has("azstorage.container") {
            return Err(
                "blobfuse v1: containerName is missing (in the config file, or --container-name)"
                    .into(),
            );
        }
        self.auth_type();
        let https = self.use_https.unwrap_or(true);
        let endpoint = self
            .native
            .iter()
            .find(|(k, _)| k == "v1.endpoint")
            .and_then(|(_, v)| v.as_str().map(str::to_string));
        self.native.retain(|(k, _)| k != "v1.endpoint");
        match endpoint {
            Some(e) if e.contains("://") => {
                self.put("azstorage.endpoint", Value::from(e), "blobEndpoint")
            }
            Some(e) => {
                let scheme = if https { "https" } else { "http" };
                self.put(
                    "azstorage.endpoint",
                    Value::from(format!("{scheme}://{e}")),
                    "blobEndpoint",
                );
            }
            None if !https => self.put("azstorage.use-http", Value::from(true), "--use-https"),
            None => {}
        }
        // BlobFuse2's mountv1 pipeline: v1 caches files on disk unless it streams.
        let cache = if self.streaming {
            "block_cache"
        } else {
            "file_cache"
        };
        let mut components = vec!["libfuse", cache, "azstorage"];
        if self.bf2.contains_key("attr_cache") {
            components.insert(2, "attr_cache");
        }
        for (section, needs) in [
            ("file_cache", "--streaming=false"),
            ("block_cache", "--streaming=true"),
        ] {
            if section != cache && self.bf2.remove(section).is_some() {
                let flags: Vec<String> = self
                    .origin
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{section}.")))
                    .map(|(_, f)| f.clone())
                    .collect();
                self.warn(format!(
                    "{}: ignored (only used with {needs}, as in BlobFuse v1)",
                    flags.join(", ")
                ));
            }
        }
        self.bf2
            .insert("components".into(), Value::from(components));
        // v1 logs to syslog.
        let logging = self
            .bf2
            .entry("logging")
            .or_insert_with(|| Value::Object(Map::new()));
        logging["type"] = Value::from("syslog");
        let mut imported =
            crate::blobfuse2::import_map(self.bf2.clone()).map_err(|e| self.reword(&e))?;
        for (k, v) in &self.native {
            set(&mut imported.tree, k, v.clone());
        }
        let mut warnings: Vec<String> = std::mem::take(&mut self.warnings);
        warnings.extend(imported.warnings.iter().map(|w| self.reword(w)));
        imported.warnings = warnings;
        Ok(imported)
    }

    /// v1 picks the credential from what is given when `authType` is not (MSI first).
    fn auth_type(&mut self) {
        if self.has("azstorage.mode") {
            return;
        }
        let has = |k: &str| self.has(&format!("azstorage.{k}"));
        let msi = ["appid", "objid", "resid"].iter().any(|k| has(k))
            || self
                .native
                .iter()
                .any(|(k, _)| k == "store.azure.msi-endpoint");
        let mode = if msi {
            "msi"
        } else if has("account-key") {
            "key"
        } else if has("sas") {
            "sas"
        } else if has("clientsecret") && has("clientid") && has("tenantid") {
            "spn"
        } else {
            return;
        };
        self.put("azstorage.mode", Value::from(mode), "authType (inferred)");
    }

    /// A BlobFuse2 message about key `k` names the v1 spelling that set it.
    fn reword(&self, msg: &str) -> String {
        let mut out = msg.replace("blobfuse2 config ", "");
        for (k, from) in &self.origin {
            if out.starts_with(&format!("{k}:")) {
                out = format!("{from} (BlobFuse2 {k}){}", &out[k.len()..]);
                break;
            }
        }
        if msg.starts_with("blobfuse2 config ") {
            out = format!("blobfuse v1 {out}");
        }
        out
    }
}

/// Native key `key` (dotted) in `tree`.
fn set(tree: &mut Value, key: &str, v: Value) {
    let mut cur = tree;
    let parts: Vec<&str> = key.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if !cur.get(*p).is_some_and(Value::is_object) {
            cur[*p] = Value::Object(Map::new());
        }
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = v;
}

#[cfg(test)]
#[path = "blobfuse_v1_tests.rs"]
mod tests;
