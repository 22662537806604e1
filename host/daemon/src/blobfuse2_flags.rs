//! BlobFuse2's own mount flags (`--tmp-path`, `--container-name`, `--attr-timeout`, ...) on a
//! `blobmount mount DIR --config-file=F` command line: taken out of the arguments before
//! they reach the parser and applied to the BlobFuse2 file's keys, as BlobFuse2 applies them
//! over its file, so a BlobFuse2 command line works after changing only the command name.
//!
//! Why before the parser: these names are not blobmount's and would be refused as unknown
//! flags; flags that both tools have with the same meaning (`--foreground`, `--read-only`,
//! `--subdirectory`) stay with the parser.

use std::ffi::OsString;
use std::sync::OnceLock;

use serde_json::Value;

/// How a flag's value goes into the file.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Number,
    /// `--flag` alone means true; `--flag=false` is accepted.
    Switch,
    /// `--use-https=false` means `use-http: true`.
    Negated,
    /// `--use-adls` (true) means `type: adls`.
    Adls,
}

/// BlobFuse2 flag -> BlobFuse2 config key.
const FLAGS: &[(&str, &str, Kind)] = &[
    ("tmp-path", "file_cache.path", Kind::Text),
    ("container-name", "azstorage.container", Kind::Text),
    ("log-level", "logging.level", Kind::Text),
    ("log-type", "logging.type", Kind::Text),
    ("log-file-path", "logging.file-path", Kind::Text),
    (
        "attr-timeout",
        "libfuse.attribute-expiration-sec",
        Kind::Number,
    ),
    (
        "entry-timeout",
        "libfuse.entry-expiration-sec",
        Kind::Number,
    ),
    (
        "negative-timeout",
        "libfuse.negative-entry-expiration-sec",
        Kind::Number,
    ),
    ("allow-other", "allow-other", Kind::Switch),
    ("disable-kernel-cache", "disable-kernel-cache", Kind::Switch),
    ("file-cache-timeout", "file_cache.timeout-sec", Kind::Number),
    (
        "file-cache-timeout-in-seconds",
        "file_cache.timeout-sec",
        Kind::Number,
    ),
    ("cache-size-mb", "file_cache.max-size-mb", Kind::Number),
    (
        "block-cache-pool-size",
        "block_cache.mem-size-mb",
        Kind::Number,
    ),
    ("block-cache-path", "block_cache.path", Kind::Text),
    (
        "block-cache-disk-size",
        "block_cache.disk-size-mb",
        Kind::Number,
    ),
    (
        "block-cache-disk-timeout",
        "block_cache.disk-timeout-sec",
        Kind::Number,
    ),
    ("block-cache-prefetch", "block_cache.prefetch", Kind::Number),
    (
        "block-cache-parallelism",
        "block_cache.parallelism",
        Kind::Number,
    ),
    ("attr-cache-timeout", "attr_cache.timeout-sec", Kind::Number),
    ("no-symlinks", "attr_cache.no-symlinks", Kind::Switch),
    ("use-adls", "azstorage.type", Kind::Adls),
    ("use-https", "azstorage.use-http", Kind::Negated),
    ("max-concurrency", "azstorage.max-concurrency", Kind::Number),
    (
        "virtual-directory",
        "azstorage.virtual-directory",
        Kind::Switch,
    ),
    (
        "disable-compression",
        "azstorage.disable-compression",
        Kind::Switch,
    ),
    ("max-retry", "azstorage.max-retries", Kind::Number),
    (
        "max-retry-interval-in-seconds",
        "azstorage.max-retry-timeout-sec",
        Kind::Number,
    ),
    (
        "retry-delay-factor",
        "azstorage.retry-backoff-sec",
        Kind::Number,
    ),
    ("http-proxy", "azstorage.http-proxy", Kind::Text),
    ("https-proxy", "azstorage.https-proxy", Kind::Text),
    ("honour-acl", "azstorage.honour-acl", Kind::Switch),
    ("cpk-enabled", "azstorage.cpk-enabled", Kind::Switch),
    ("preserve-acl", "azstorage.preserve-acl", Kind::Switch),
    ("cap-mbps-read", "azstorage.cap-mbps-read", Kind::Number),
    ("cap-iops", "azstorage.cap-iops", Kind::Number),
    ("telemetry", "azstorage.telemetry", Kind::Text),
    ("sync-to-flush", "file_cache.sync-to-flush", Kind::Switch),
    ("ignore-sync", "file_cache.ignore-sync", Kind::Switch),
    ("hard-limit", "file_cache.hard-limit", Kind::Switch),
];

/// The BlobFuse2 keys the flags of this process's command line set, in order.
static GIVEN: OnceLock<Vec<(String, Value)>> = OnceLock::new();

/// `--secure-config` with its passphrase (`--passphrase`, `--passphrase-file`).
static SECURE: OnceLock<Option<crate::secure::Passphrase>> = OnceLock::new();

/// Take BlobFuse2's flags out of a `mount ... --config-file` command line: the arguments
/// left for the parser, and the keys set (kept for [`given`]). Other command lines are
/// returned as they are.
pub fn take(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let is_bf2_mount = args.get(1).is_some_and(|a| a == "mount")
        && args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == "--config-file" || a.starts_with("--config-file="))
        });
    if !is_bf2_mount {
        return Ok(args);
    }
    let mut out = Vec::with_capacity(args.len());
    let mut given = Vec::new();
    let (mut secure, mut pass) = (false, crate::secure::Passphrase::default());
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        let Some(flag) = a.to_str().and_then(|s| s.strip_prefix("--")) else {
            out.push(a);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        match name.as_str() {
            "secure-config" => {
                secure = inline.as_deref() != Some("false");
                continue;
            }
            "passphrase" | "passphrase-file" => {
                let v = inline
                    .or_else(|| it.next().and_then(|v| v.into_string().ok()))
                    .ok_or(format!("--{name} needs a value"))?;
                if name == "passphrase" {
                    pass.value = Some(v);
                } else {
                    pass.file = Some(v.into());
                }
                continue;
            }
            _ => {}
        }
        let Some((_, key, kind)) = FLAGS.iter().find(|(f, _, _)| *f == name) else {
            out.push(a);
            continue;
        };
        let value = match (kind, inline) {
            (Kind::Switch | Kind::Negated | Kind::Adls, Some(v)) => Some(v),
            (Kind::Switch | Kind::Negated | Kind::Adls, None) => {
                // `--flag true|false` as a separate word, else the switch alone.
                match it.peek().and_then(|n| n.to_str()) {
                    Some(v @ ("true" | "false")) => {
                        let v = v.to_string();
                        it.next();
                        Some(v)
                    }
                    _ => Some("true".into()),
                }
            }
            (_, Some(v)) => Some(v),
            (_, None) => it.next().and_then(|v| v.into_string().ok()),
        };
        let Some(v) = value else {
            return Err(format!("--{name} needs a value"));
        };
        given.push(((*key).to_string(), convert(&name, *kind, &v)?));
    }
    let _ = GIVEN.set(given);
    let _ = SECURE.set(secure.then_some(pass));
    Ok(out)
}

fn convert(name: &str, kind: Kind, v: &str) -> Result<Value, String> {
    let switch = || match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("--{name}: expected true or false, got {v:?}")),
    };
    Ok(match kind {
        Kind::Text => Value::from(v),
        Kind::Number => Value::from(
            v.parse::<u64>()
                .map_err(|_| format!("--{name}: expected a number, got {v:?}"))?,
        ),
        Kind::Switch => Value::from(switch()?),
        Kind::Negated => Value::from(!switch()?),
        Kind::Adls => Value::from(if switch()? { "adls" } else { "block" }),
    })
}

/// The passphrase when the command line said `--secure-config`.
pub fn secure() -> Option<&'static crate::secure::Passphrase> {
    SECURE.get().and_then(Option::as_ref)
}

/// The BlobFuse2 keys this command line's BlobFuse2 flags set.
pub fn given() -> &'static [(String, Value)] {
    GIVEN.get().map(Vec::as_slice).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn blobfuse2_flags_become_keys_and_the_rest_stays() {
        let args = os(&[
            "blobmount",
            "mount",
            "/mnt/x",
            "--config-file=c.yaml",
            "--tmp-path",
            "/tmp/bf",
            "--container-name=data",
            "--use-https=false",
            "--use-adls",
            "--attr-timeout=30",
            "--foreground",
            "--allow-other",
            "false",
            "--read-only",
        ]);
        let left = {
            let mut out = Vec::new();
            for a in take(args).unwrap() {
                out.push(a.into_string().unwrap());
            }
            out
        };
        assert_eq!(
            left,
            [
                "blobmount",
                "mount",
                "/mnt/x",
                "--config-file=c.yaml",
                "--foreground",
                "--read-only"
            ]
        );
        let g = given();
        let get = |k: &str| g.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("file_cache.path"), Some(Value::from("/tmp/bf")));
        assert_eq!(get("azstorage.container"), Some(Value::from("data")));
        assert_eq!(get("azstorage.use-http"), Some(Value::from(true)));
        assert_eq!(get("azstorage.type"), Some(Value::from("adls")));
        assert_eq!(
            get("libfuse.attribute-expiration-sec"),
            Some(Value::from(30))
        );
        assert_eq!(get("allow-other"), Some(Value::from(false)));
        assert!(convert("attr-timeout", Kind::Number, "x").is_err());
        // Without --config-file nothing is touched.
        let plain = os(&["blobmount", "mount", "az://a/c", "/m", "--tmp-path", "/x"]);
        assert_eq!(take(plain.clone()).unwrap(), plain);
    }
}
