//! `blobmount mount` arguments, generated from the settings table: the positional
//! arguments and flags (clap), the mount(8)-style `-o` options, and how both override the
//! config file and the environment (as key paths in the config tree, so a flag goes through
//! the same deserialisation and checks as the YAML key it sets).
//!
//! Why generated: a setting with a flag but no key (or the reverse) cannot be written; see
//! [`crate::settings`]. Only `--config`/`-c` (which file to read) and `-o` itself are not
//! settings.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, ValueParser};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, value_parser};
use serde_json::Value;

use crate::config::parse_mode;
use crate::settings::{Flag, Opt, SETTINGS, Setting, Unit};

/// Help of `-o`; every option of the table must appear in it (checked by a test).
pub(crate) const OPTIONS_HELP: &str = "Options in mount(8) style, comma separated (ro, allow_other, foreground, uid=N, gid=N, file_mode=0644, dir_mode=0755, config=FILE, subdirectory=P, endpoint=URL, cache_dir=D, read_mode=M, preload=DIR, attr_timeout=SECS)";
/// mount(8) options accepted for fstab compatibility; the kernel or mount(8) handles them.
const IGNORED_OPTIONS: [&str; 13] = [
    "defaults", "auto", "noauto", "user", "nouser", "_netdev", "nofail", "dev", "nodev", "suid",
    "nosuid", "exec", "noexec",
];

/// The arguments of `blobmount mount` (without its `list` subcommand).
#[derive(Debug, Default, Clone)]
pub struct MountArgs {
    /// YAML config file (`-c`, `BLOBMOUNT_CONFIG`, `-o config=`).
    pub config: Option<PathBuf>,
    /// A BlobFuse2 config file (`--config-file`, BlobFuse2's own flag), converted
    /// (`crate::blobfuse2`); the only positional argument is then the mount point.
    pub blobfuse2: Option<PathBuf>,
    /// `-o` options not yet folded into [`MountArgs::given`].
    pub options: Vec<String>,
    /// Settings given on the command line, in the order they apply (a later one wins; list
    /// settings accumulate).
    pub given: Vec<(&'static Setting, Value)>,
}

impl MountArgs {
    /// Fold `-o` options into the settings given (idempotent: the options are consumed).
    pub fn absorb_options(&mut self) -> Result<(), String> {
        for o in std::mem::take(&mut self.options) {
            let (k, v) = o
                .split_once('=')
                .map(|(k, v)| (k, Some(v)))
                .unwrap_or((o.as_str(), None));
            let need = || v.map(str::to_string).ok_or(format!("-o {k} needs a value"));
            if k == "config" {
                self.config = Some(need()?.into());
                continue;
            }
            if IGNORED_OPTIONS.contains(&k) {
                continue;
            }
            let Some((s, on)) = SETTINGS.iter().find_map(|s| match s.opt {
                Opt::Named(n) if n == k => Some((s, true)),
                Opt::OnOff(on, _) if on == k => Some((s, true)),
                Opt::OnOff(_, off) if off == k => Some((s, false)),
                _ => None,
            }) else {
                return Err(format!("unknown mount option -o {k}"));
            };
            let value = match s.unit {
                Unit::Switch => Value::Bool(on),
                _ => option_value(s, k, &o, &need()?)?,
            };
            self.give(s, value);
        }
        Ok(())
    }

    /// Record setting `s` as given with `value` (appended for lists).
    fn give(&mut self, s: &'static Setting, value: Value) {
        if let (Unit::List, Value::Array(more)) = (s.unit, &value)
            && let Some((_, Value::Array(list))) =
                self.given.iter_mut().find(|(g, _)| g.key == s.key)
        {
            list.extend(more.iter().cloned());
            return;
        }
        self.given.push((s, value));
    }

    /// The settings given, as config key paths and values, for [`crate::config::Config::load_with`].
    /// `blobmount mount DIR --config F` (and BlobFuse2's `mount DIR --config-file=F`): a
    /// first positional argument that is no store URL (it has no `scheme://`) while no
    /// mount point was given is the mount point, the store coming from the file.
    pub fn lone_positional_is_the_mountpoint(&mut self) {
        let url = self.given.iter().position(|(s, v)| {
            s.key == "store.url" && v.as_str().is_some_and(|u| !u.contains("://"))
        });
        let has_mountpoint = self.given.iter().any(|(s, _)| s.key == "mount.mountpoint");
        if let (Some(i), false) = (url, has_mountpoint)
            && let Some(mp) = SETTINGS.iter().find(|s| s.key == "mount.mountpoint")
        {
            let (_, dir) = self.given.remove(i);
            self.given.push((mp, dir));
        }
    }

    pub fn overrides(&self) -> Vec<(Vec<String>, Value)> {
        self.given
            .iter()
            .map(|(s, v)| (s.path(), v.clone()))
            .collect()
    }
}

/// The value of `-o NAME=VALUE` for setting `s` (`o` is the whole option, for messages).
fn option_value(s: &Setting, k: &str, o: &str, v: &str) -> Result<Value, String> {
    let not_a_number = || format!("-o {k}: not a number: {o}");
    Ok(match s.unit {
        Unit::Octal => mode_value(parse_mode(v)?),
        Unit::Id => Value::from(v.parse::<u32>().map_err(|_| not_a_number())?),
        Unit::Count | Unit::MiB | Unit::KiB | Unit::WholeSecs | Unit::Millis => {
            Value::from(v.parse::<u64>().map_err(|_| not_a_number())?)
        }
        Unit::Seconds => Value::from(v.parse::<f64>().map_err(|_| not_a_number())?),
        Unit::Choice(names) => {
            let names = names();
            if !names.iter().any(|n| n.matches(v, false)) {
                let names: Vec<&str> = names.iter().map(|n| n.get_name()).collect();
                return Err(format!("-o {k}: expected {}, got {v:?}", one_of(&names)));
            }
            Value::String(v.to_string())
        }
        Unit::List => Value::Array(vec![Value::String(v.to_string())]),
        Unit::Switch | Unit::Path | Unit::Text | Unit::Mapping => Value::String(v.to_string()),
    })
}

/// `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Modes are octal strings in the config tree.
fn mode_value(m: u16) -> Value {
    Value::String(format!("{m:04o}"))
}

/// The clap argument of a setting with a flag.
fn arg(s: &Setting) -> Option<Arg> {
    let arg = match s.flag {
        Flag::None => return None,
        Flag::Positional { value_name, help } => Arg::new(s.id()).value_name(value_name).help(help),
        Flag::Long {
            long,
            short,
            value_name,
            help,
        } => {
            let vn = value_name.map_or_else(|| s.id().to_ascii_uppercase(), str::to_string);
            let a = Arg::new(s.id()).long(long).help(help).value_name(vn);
            match short {
                Some(c) => a.short(c),
                None => a,
            }
        }
    };
    Some(match s.unit {
        Unit::Switch => arg.action(ArgAction::SetTrue),
        Unit::List => arg.action(ArgAction::Append),
        _ => arg.action(ArgAction::Set).value_parser(parser(s.unit)),
    })
}

/// How a flag's value is parsed (clap reports a bad one, naming the flag).
fn parser(unit: Unit) -> ValueParser {
    match unit {
        Unit::Id => value_parser!(u32).into(),
        Unit::Octal => ValueParser::new(parse_mode),
        Unit::Seconds => value_parser!(f64).into(),
        Unit::Count | Unit::MiB | Unit::KiB | Unit::WholeSecs | Unit::Millis => {
            value_parser!(u64).into()
        }
        Unit::Choice(names) => PossibleValuesParser::new(names()).into(),
        Unit::Switch | Unit::Path | Unit::Text | Unit::List | Unit::Mapping => {
            ValueParser::string()
        }
    }
}

/// The value a flag gave, as it goes into the config tree.
fn flag_value(s: &Setting, m: &ArgMatches) -> Option<Value> {
    let id = s.id();
    match s.unit {
        Unit::Switch => m.get_flag(&id).then_some(Value::Bool(true)),
        Unit::Id => m.get_one::<u32>(&id).map(|v| Value::from(*v)),
        Unit::Octal => m.get_one::<u16>(&id).map(|v| mode_value(*v)),
        Unit::Seconds => m.get_one::<f64>(&id).map(|v| seconds_value(*v)),
        Unit::Count | Unit::MiB | Unit::KiB | Unit::WholeSecs | Unit::Millis => {
            m.get_one::<u64>(&id).map(|v| Value::from(*v))
        }
        Unit::List => {
            let list: Vec<Value> = m
                .get_many::<String>(&id)?
                .map(|v| Value::String(v.clone()))
                .collect();
            (!list.is_empty()).then_some(Value::Array(list))
        }
        Unit::Choice(_) | Unit::Path | Unit::Text | Unit::Mapping => {
            m.get_one::<String>(&id).map(|v| Value::String(v.clone()))
        }
    }
}

/// JSON has no NaN or infinity: such a value stays text and fails as the key's type error.
fn seconds_value(v: f64) -> Value {
    if v.is_finite() {
        Value::from(v)
    } else {
        Value::String(v.to_string())
    }
}

impl FromArgMatches for MountArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = MountArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            blobfuse2: m.get_one::<PathBuf>("config_file").cloned(),
            options: m
                .get_many::<String>("options")
                .map(|o| o.cloned().collect())
                .unwrap_or_default(),
            given: Vec::new(),
        };
        for s in SETTINGS {
            if !matches!(s.flag, Flag::None)
                && let Some(v) = flag_value(s, m)
            {
                args.give(s, v);
            }
        }
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = MountArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for MountArgs {
    fn augment_args(cmd: Command) -> Command {
        let positional = |s: &&Setting| matches!(s.flag, Flag::Positional { .. });
        let long = |s: &&Setting| matches!(s.flag, Flag::Long { .. });
        let cmd = cmd.args(SETTINGS.iter().filter(positional).filter_map(arg));
        let cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .short('c')
                .env("BLOBMOUNT_CONFIG")
                .value_name("CONFIG")
                .value_parser(value_parser!(PathBuf))
                .action(ArgAction::Set)
                .help("YAML config file (flags override it; BLOBMOUNT_* environment overrides it too)"),
        );
        let cmd = cmd.arg(
            Arg::new("config_file")
                .long("config-file")
                .value_name("BLOBFUSE2_CONFIG")
                .value_parser(value_parser!(PathBuf))
                .action(ArgAction::Set)
                .conflicts_with("config")
                .help("A BlobFuse2 config file, as BlobFuse2 takes it: `blobmount mount DIR --config-file=F` (docs/migrating-from-blobfuse2.md)"),
        );
        cmd.args(SETTINGS.iter().filter(long).filter_map(arg)).arg(
            Arg::new("options")
                .short('o')
                .value_name("OPTIONS")
                .value_delimiter(',')
                .action(ArgAction::Append)
                .help(OPTIONS_HELP),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        MountArgs::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command, FromArgMatches};

    use super::*;
    use crate::config::Config;

    fn load(args: &[&str]) -> Result<Config, String> {
        let cmd = MountArgs::augment_args(Command::new("mount").no_binary_name(true));
        let m = cmd.try_get_matches_from(args).map_err(|e| e.to_string())?;
        let mut a = MountArgs::from_arg_matches(&m).map_err(|e| e.to_string())?;
        a.absorb_options()?;
        Config::load_with(a.config.as_deref(), &a.overrides()).map_err(|e| e.to_string())
    }

    #[test]
    fn read_only_switches_both_ways_and_the_last_option_wins() {
        let ro = |args: &[&str]| load(args).unwrap().mount.read_only;
        assert!(!ro(&[]));
        assert!(ro(&["--read-only"]));
        assert!(ro(&["-o", "ro"]));
        assert!(!ro(&["--read-only", "-o", "rw"]));
        // `-o` options apply after the flags, whatever their place on the line.
        assert!(!ro(&["-o", "rw", "--read-only"]));
        assert!(!ro(&["-o", "ro,rw"]));
        assert!(ro(&["-o", "rw,ro"]));
    }

    #[test]
    fn options_override_flags_and_preloads_accumulate() {
        let c = load(&[
            "--uid",
            "1",
            "-o",
            "uid=2",
            "--preload",
            "a",
            "-o",
            "preload=b",
        ])
        .unwrap();
        assert_eq!(c.mount.uid, Some(2));
        assert_eq!(c.read.preload, ["a", "b"]);
        let c = load(&["--file-mode", "640", "--read-mode", "direct", "-f"]).unwrap();
        assert_eq!(
            (c.mount.file_mode, c.read.mode, c.mount.foreground),
            (0o640, crate::config::ReadMode::Direct, true)
        );
    }

    #[test]
    fn option_errors_name_the_option() {
        let e = |o: &str| load(&["-o", o]).unwrap_err();
        assert_eq!(e("uid=x"), "-o uid: not a number: uid=x");
        assert_eq!(e("gid"), "-o gid needs a value");
        assert_eq!(e("bogus"), "unknown mount option -o bogus");
        assert_eq!(e("threads=3"), "unknown mount option -o threads");
        assert_eq!(
            e("attr_timeout=soon"),
            "-o attr_timeout: not a number: attr_timeout=soon"
        );
        assert_eq!(
            e("read_mode=fast"),
            "-o read_mode: expected direct, block-cache or file-cache, got \"fast\""
        );
        assert!(e("file_mode=999").contains("invalid mode \"999\""));
        assert!(load(&["-o", "defaults,nofail,_netdev"]).is_ok());
    }

    #[test]
    fn option_config_wins_over_the_flag() {
        let dir = std::env::temp_dir().join(format!("bm-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.yaml"), dir.join("b.yaml"));
        std::fs::write(&a, "mount:\n  threads: 3\n").unwrap();
        std::fs::write(&b, "mount:\n  threads: 5\n").unwrap();
        let opt = format!("config={}", b.display());
        let c = load(&["-c", a.to_str().unwrap(), "-o", &opt]).unwrap();
        assert_eq!(c.mount.threads, 5);
        let _ = std::fs::remove_dir_all(dir);
    }
}
