//! Tests that every shape of a mount setting agrees with the settings table: the YAML keys
//! and their schema descriptions, the defaults, the clap flags, the `-o` options, the
//! environment names, and the reference in docs/configuration.md.
//!
//! Why a module of its own: these tests need the table (`settings`), the flags (`args`) and
//! the structs (`config`) together; here none of those has to import the others for them.

use std::collections::BTreeSet;

use clap::{Args, Command, FromArgMatches};

use serde_json::Value;

use crate::args::{MountArgs, OPTIONS_HELP};
use crate::config::{Config, apply_env, from_tree};
use crate::settings::{Flag, Opt, PLUGIN_LIMITS, SETTINGS, Setting, Unit, find};

/// The config sections the daemon owns (`store` and `plugins` belong to other crates;
/// their keys with a flag have rows too).
const DAEMON_SECTIONS: [&str; 8] = [
    "mount", "read", "write", "cache", "health", "monitor", "logging", "policy",
];

fn pointer(key: &str) -> String {
    format!("/{}", key.replace('.', "/"))
}

/// The schema node of a key's property (`section.key` or `section.sub.key`).
fn property<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    let mut node = schema;
    for seg in key.split('.') {
        if let Some(def) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            node = schema.pointer(&format!("/$defs/{def}"))?;
        }
        node = node.get("properties")?.get(seg)?;
    }
    Some(node)
}

/// A value to give a setting on the command line or in the environment, and what the
/// loaded config then holds at its key.
fn sample(s: &Setting) -> (String, Value) {
    let text = |t: &str| (t.to_string(), Value::String(t.to_string()));
    match s.unit {
        Unit::Switch => ("true".into(), Value::Bool(true)),
        Unit::Count | Unit::MiB | Unit::KiB | Unit::WholeSecs | Unit::Millis => {
            ("3".into(), Value::from(3))
        }
        Unit::Id => ("7".into(), Value::from(7)),
        Unit::Octal => text("0600"),
        Unit::Seconds => ("2.5".into(), Value::from(2.5)),
        Unit::Path => text("/tmp/blobmount-x"),
        Unit::Text if s.key == "store.url" => text("s3://bucket/p"),
        Unit::Text => text("debug"),
        Unit::Choice(names) => text(names().last().unwrap().get_name()),
        Unit::List => ("a".into(), Value::Array(vec![Value::String("a".into())])),
        Unit::Mapping => ("{}".into(), Value::Null),
    }
}

fn loaded(args: &[String]) -> Value {
    let cmd = MountArgs::augment_args(Command::new("mount").no_binary_name(true));
    let m = cmd.try_get_matches_from(args).unwrap();
    let mut a = MountArgs::from_arg_matches(&m).unwrap();
    a.absorb_options().unwrap();
    let cfg = Config::load_with(None, &a.overrides()).unwrap();
    serde_json::to_value(&cfg).unwrap()
}

#[test]
fn every_yaml_key_has_a_setting_and_every_setting_a_key() {
    let schema = Config::schema();
    let mut keys = BTreeSet::new();
    for section in DAEMON_SECTIONS {
        let def = schema["properties"][section]["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .unwrap();
        for leaf in schema["$defs"][def]["properties"]
            .as_object()
            .unwrap()
            .keys()
        {
            keys.insert(format!("{section}.{leaf}"));
        }
    }
    let rows: BTreeSet<String> = SETTINGS
        .iter()
        .filter(|s| DAEMON_SECTIONS.contains(&s.path()[0].as_str()))
        .map(|s| s.key.to_string())
        .collect();
    assert_eq!(
        keys, rows,
        "YAML keys (left) and settings table (right) differ"
    );
    for s in SETTINGS {
        assert!(
            property(&schema, s.key).is_some(),
            "{} is no YAML key",
            s.key
        );
    }
    let unique: BTreeSet<_> = SETTINGS.iter().map(|s| s.key).collect();
    assert_eq!(unique.len(), SETTINGS.len(), "a key has two rows");
}

#[test]
fn defaults_are_the_config_defaults() {
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for s in SETTINGS {
        let want: Value = serde_json::from_str(s.default).unwrap();
        assert_eq!(defaults.pointer(&pointer(s.key)), Some(&want), "{}", s.key);
    }
}

#[test]
fn schema_descriptions_are_the_settings_help() {
    let schema = Config::schema();
    for s in SETTINGS {
        assert!(!s.help.is_empty(), "{} has no help", s.key);
        let d = property(&schema, s.key).and_then(|p| p.get("description"));
        assert_eq!(d.and_then(Value::as_str), Some(s.help), "{}", s.key);
    }
}

#[test]
fn every_flag_sets_its_key() {
    let mut argv = Vec::new();
    for s in SETTINGS {
        let (text, _) = sample(s);
        match (s.flag, s.unit) {
            (Flag::None, _) => {}
            (Flag::Positional { .. }, _) => argv.push(text),
            (Flag::Long { long, .. }, Unit::Switch) => argv.push(format!("--{long}")),
            (Flag::Long { long, .. }, _) => argv.extend([format!("--{long}"), text]),
        }
    }
    let cfg = loaded(&argv);
    for s in SETTINGS.iter().filter(|s| !matches!(s.flag, Flag::None)) {
        let (_, want) = sample(s);
        assert_eq!(cfg.pointer(&pointer(s.key)), Some(&want), "{}", s.key);
    }
}

#[test]
fn every_mount_option_sets_its_key() {
    let mut opts = Vec::new();
    for s in SETTINGS {
        let (text, _) = sample(s);
        match (s.opt, s.unit) {
            (Opt::None, _) => {}
            (Opt::Named(n), Unit::Switch) | (Opt::OnOff(n, _), _) => opts.push(n.to_string()),
            (Opt::Named(n), _) => opts.push(format!("{n}={text}")),
        }
    }
    let cfg = loaded(&["-o".into(), opts.join(",")]);
    for s in SETTINGS.iter().filter(|s| !matches!(s.opt, Opt::None)) {
        let (_, want) = sample(s);
        assert_eq!(cfg.pointer(&pointer(s.key)), Some(&want), "{}", s.key);
    }
    for s in SETTINGS {
        if let Opt::OnOff(_, off) = s.opt {
            let cfg = loaded(&["-o".into(), off.into()]);
            assert_eq!(cfg.pointer(&pointer(s.key)), Some(&Value::Bool(false)));
        }
        if let Opt::Named(n) | Opt::OnOff(n, _) = s.opt {
            assert!(OPTIONS_HELP.contains(n), "-o help lacks {n}");
        }
    }
}

#[test]
fn every_env_name_sets_its_key() {
    for s in SETTINGS {
        let Some(env) = s.env() else { continue };
        let (text, want) = sample(s);
        let mut tree = Value::Object(Default::default());
        apply_env(&mut tree, [(env.clone(), text)].into_iter()).unwrap();
        let cfg: Config = serde_json::from_value(tree).unwrap_or_else(|e| panic!("{env}: {e}"));
        let cfg = serde_json::to_value(cfg).unwrap();
        assert_eq!(cfg.pointer(&pointer(s.key)), Some(&want), "{env}");
    }
    assert_eq!(
        find("mount.attr-timeout-secs")
            .and_then(Setting::env)
            .as_deref(),
        Some("BLOBMOUNT_MOUNT__ATTR_TIMEOUT_SECS")
    );
}

#[test]
fn flag_and_option_spellings_are_kept() {
    let longs: Vec<&str> = SETTINGS
        .iter()
        .filter_map(|s| match s.flag {
            Flag::Long { long, .. } => Some(long),
            _ => None,
        })
        .collect();
    assert_eq!(
        longs,
        [
            "foreground",
            "read-only",
            "allow-other",
            "uid",
            "gid",
            "file-mode",
            "dir-mode",
            "subdirectory",
            "endpoint",
            "cache-dir",
            "attr-timeout",
            "fuse-fd-socket",
            "health-listen",
            "read-mode",
            "preload",
            "log-level",
            "log-format",
            "monitor",
        ]
    );
    let mut opts: Vec<&str> = SETTINGS
        .iter()
        .flat_map(|s| match s.opt {
            Opt::Named(n) => vec![n],
            Opt::OnOff(on, off) => vec![on, off],
            Opt::None => vec![],
        })
        .collect();
    opts.sort_unstable();
    assert_eq!(
        opts,
        [
            "allow_other",
            "attr_timeout",
            "cache_dir",
            "dir_mode",
            "endpoint",
            "file_mode",
            "foreground",
            "gid",
            "preload",
            "read_mode",
            "ro",
            "rw",
            "subdirectory",
            "uid",
        ]
    );
}

#[test]
fn docs_reference_lists_every_setting() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let docs = std::fs::read_to_string(path).unwrap();
    let section = |name: &str| {
        let start = docs.find(&format!("### `{name}`")).unwrap();
        let rest = &docs[start + 4..];
        &rest[..rest.find("\n### ").unwrap_or(rest.len())]
    };
    let flags = &docs[docs.find("## `blobmount mount` flags").unwrap()..];
    for s in SETTINGS {
        let (sec, leaf) = s.key.rsplit_once('.').unwrap();
        let p = [sec, leaf];
        assert!(
            section(p[0]).contains(&format!("| `{}", p[1])),
            "docs/configuration.md: no row for {}",
            s.key
        );
        match s.flag {
            Flag::Long { long, .. } => {
                assert!(flags.contains(&format!("`--{long}")), "docs: no --{long}")
            }
            Flag::Positional { value_name, .. } => {
                assert!(
                    flags.contains(&format!("`{value_name}`")),
                    "docs: {value_name}"
                )
            }
            Flag::None => {}
        }
        if let Opt::Named(n) | Opt::OnOff(n, _) = s.opt {
            assert!(flags.contains(&format!("`{n}")), "docs: no -o {n}");
        }
        if let Some(r) = s.range {
            let row = section(p[0])
                .lines()
                .find(|l| l.starts_with(&format!("| `{}`", p[1])))
                .unwrap_or_default();
            let says = row.match_indices(&r.to_string()).any(|(i, m)| {
                let after = row[i + m.len()..].chars().next();
                !after.is_some_and(|c| c.is_ascii_digit())
            });
            assert!(
                says,
                "docs/configuration.md: the row of {} does not say \"{r}\"",
                s.key
            );
        }
    }
}

/// The config tree `{section: {leaf: v}}` over a base where `cache.read-block-mib` is 1, so
/// that `cache.read-memory-mib` at its minimum meets its cross-check with the block size.
fn one_value(key: &str, v: Value) -> Value {
    let mut tree = serde_json::json!({"cache": {"read-block-mib": 1}});
    let mut node = &mut tree;
    for seg in key.split('.') {
        node = &mut node[seg];
    }
    *node = v;
    tree
}

/// Validate a tree as the daemon does (deserialise, then check).
fn validated(tree: Value) -> Result<Config, String> {
    let cfg = from_tree(tree).map_err(|e| e.0)?;
    cfg.validate().map_err(|e| e.0)?;
    Ok(cfg)
}

/// Every ranged setting: its minimum and maximum are accepted, one below and one above are
/// errors naming the key (and, where the type can hold the value, the value and the range).
#[test]
fn ranges_accept_their_edges_and_refuse_one_beyond() {
    let mut checked = 0;
    for s in SETTINGS {
        let Some(r) = s.range else { continue };
        checked += 1;
        for ok in [r.min, r.max] {
            let cfg = validated(one_value(s.key, Value::from(ok)))
                .unwrap_or_else(|e| panic!("{} = {ok}: {e}", s.key));
            let got = serde_json::to_value(cfg).unwrap();
            let got = got.pointer(&pointer(s.key)).and_then(Value::as_f64);
            assert_eq!(got, Some(ok as f64), "{}", s.key);
        }
        let below = r.min as i64 - 1;
        let above = r.max + 1;
        for bad in [Value::from(below), Value::from(above)] {
            let tree = one_value(s.key, bad.clone());
            let e = validated(tree.clone()).unwrap_err();
            match serde_json::from_value::<Config>(tree) {
                // The type holds the value: the range check refuses it, and says so.
                Ok(cfg) => {
                    let shown = serde_json::to_value(cfg).unwrap();
                    let shown = shown.pointer(&pointer(s.key)).unwrap();
                    assert_eq!(e, format!("{}: {shown} is out of range ({r})", s.key));
                }
                // -1 for an unsigned setting: the type refuses it, naming the key.
                Err(_) => assert!(e.contains(s.key), "{} = {bad}: {e}", s.key),
            }
        }
    }
    assert!(checked >= 23, "only {checked} ranged settings");
}

/// Counts, sizes and times all have a range (a new one cannot be added unbounded).
#[test]
fn every_number_setting_has_a_range() {
    for s in SETTINGS {
        let number = matches!(
            s.unit,
            Unit::Count | Unit::MiB | Unit::KiB | Unit::Seconds | Unit::WholeSecs | Unit::Millis
        );
        assert_eq!(number, s.range.is_some(), "{}", s.key);
        if let Some(r) = s.range {
            assert!(r.min <= r.max, "{}", s.key);
            let default: Value = serde_json::from_str(s.default).unwrap();
            assert!(r.contains(default.as_f64().unwrap()), "{}: default", s.key);
        }
    }
}

#[test]
fn huge_mib_values_are_errors_naming_the_key() {
    for s in SETTINGS.iter().filter(|s| matches!(s.unit, Unit::MiB)) {
        let mut tree = Value::Object(Default::default());
        let env = s.env().unwrap();
        apply_env(&mut tree, [(env, i64::MAX.to_string())].into_iter()).unwrap();
        let cfg: Config = serde_json::from_value(tree).unwrap();
        let e = cfg.validate().unwrap_err().0;
        assert!(e.starts_with(s.key), "{}: {e}", s.key);
    }
}

/// A config with a filter plugin whose limit `key` is `v` (the plugin file is not read by
/// validation).
fn plugin_value(key: &str, v: Value) -> Value {
    let mut tree = serde_json::json!({"plugins": {"filter": {"path": "/x.wasm"}}});
    tree["plugins"]["filter"][key] = v;
    tree
}

/// The plugin limits: defaults are the policy crate's, the docs state each range, and
/// min, max pass while min-1 and max+1 are refused naming `plugins.<hook>.<key>`.
#[test]
fn plugin_limits_have_ranges_checked_at_validation() {
    let defaults = serde_json::to_value(
        serde_json::from_value::<Config>(plugin_value("fuel", Value::from(10_000_000))).unwrap(),
    )
    .unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let docs = std::fs::read_to_string(path).unwrap();
    for l in PLUGIN_LIMITS {
        assert_eq!(
            defaults["plugins"]["filter"][l.key],
            Value::from(l.default),
            "{}",
            l.key
        );
        assert!(l.range.contains(l.default as f64), "{}", l.key);
        let row = docs
            .lines()
            .find(|r| r.starts_with(&format!("| `<hook>.{}`", l.key)))
            .unwrap_or_default();
        assert!(
            row.contains(&format!("{}.", l.range)),
            "docs: <hook>.{} lacks {}",
            l.key,
            l.range
        );
        for ok in [l.range.min, l.range.max] {
            validated(plugin_value(l.key, Value::from(ok)))
                .unwrap_or_else(|e| panic!("{} = {ok}: {e}", l.key));
        }
        if let Some(below) = l.range.min.checked_sub(1) {
            let e = validated(plugin_value(l.key, Value::from(below))).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "plugins.filter.{}: {below} is out of range ({})",
                    l.key, l.range
                )
            );
        }
        let above = l.range.max + 1;
        let e = validated(plugin_value(l.key, Value::from(above))).unwrap_err();
        assert_eq!(
            e,
            format!(
                "plugins.filter.{}: {above} is out of range ({})",
                l.key, l.range
            )
        );
    }
}

/// `write.content-types` and `write.content-type-default`: types must look like
/// `type/subtype`, extensions like extensions, and the mapping is capped; errors name the
/// keys.
#[test]
fn content_type_settings_are_checked() {
    let ok = validated(one_value(
        "write.content-types",
        serde_json::json!({".Parquet": "application/vnd.apache.parquet", "log": "text/plain"}),
    ))
    .unwrap();
    let types = ok.write.content_types().unwrap();
    assert_eq!(
        types.for_name("x.PARQUET"),
        "application/vnd.apache.parquet"
    );
    assert_eq!(types.for_name("x.log"), "text/plain");
    for bad in [
        one_value("write.content-types", serde_json::json!({".x": "text"})),
        one_value("write.content-types", serde_json::json!({"": "text/plain"})),
        one_value("write.content-type-default", serde_json::json!("octets")),
    ] {
        let e = validated(bad).unwrap_err();
        assert!(e.contains("write.content-type"), "{e}");
    }
    let many: serde_json::Map<String, Value> = (0..=blobmount_core::contenttype::MAX_OVERRIDES)
        .map(|i| (format!(".e{i}"), Value::String("text/plain".into())))
        .collect();
    let e = validated(one_value("write.content-types", Value::Object(many))).unwrap_err();
    assert!(e.contains("at most"), "{e}");
}
