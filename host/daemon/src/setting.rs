//! What one row of the settings table ([`crate::settings::SETTINGS`]) is: its unit, range,
//! command-line flag and `-o` option, and how a key turns into its environment name.
//!
//! Why apart from the table: the table is long data; the types and their small logic are
//! read and changed for other reasons (a new unit, a new kind of flag).

use clap::builder::PossibleValue;

/// What a setting's number or text means.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// `true` or `false`; as a flag, present means `true`.
    Switch,
    /// A number of things (threads, objects, entries, jobs).
    Count,
    /// A user or group id.
    Id,
    /// Octal permission bits, written as a string (`"0644"`).
    Octal,
    /// Seconds, may have a fraction.
    Seconds,
    /// Whole seconds (the store's retry and timeout settings).
    WholeSecs,
    /// Milliseconds, whole.
    Millis,
    /// Mebibytes; converted to bytes with checked arithmetic (`config::mib_bytes`).
    MiB,
    /// Kibibytes.
    KiB,
    /// A file or directory path.
    Path,
    /// Free text (a URL, an address, a filter).
    Text,
    /// A list of strings; its flag and `-o` option are repeatable.
    List,
    /// One of a fixed set of names.
    Choice(fn() -> Vec<PossibleValue>),
    /// A mapping with keys of its own (see the schema); no flag, no env.
    Mapping,
}

/// The values a number setting accepts, both ends included; checked by
/// `Config::validate` for every setting that has one, and shown in docs/configuration.md
/// as `MIN to MAX` (a test keeps the two in step). Bounds are whole numbers (exact as
/// `f64` far beyond any bound here), in the setting's own unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    /// Whether `v` (a setting's value as a JSON number) is within the range.
    pub fn contains(&self, v: f64) -> bool {
        v >= self.min as f64 && v <= self.max as f64
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {}", self.min, self.max)
    }
}

/// How a setting is given on the `blobmount mount` command line.
#[derive(Clone, Copy, Debug)]
pub enum Flag {
    /// Config file and environment only.
    None,
    /// A positional argument (in table order).
    Positional {
        value_name: &'static str,
        help: &'static str,
    },
    /// `--long VALUE` (`--long` alone for a [`Unit::Switch`]).
    Long {
        long: &'static str,
        short: Option<char>,
        /// Shown as `<VALUE_NAME>`; default: the flag name in upper case.
        value_name: Option<&'static str>,
        help: &'static str,
    },
}

impl Flag {
    pub const fn positional(value_name: &'static str, help: &'static str) -> Flag {
        Flag::Positional { value_name, help }
    }

    pub const fn long(long: &'static str, help: &'static str) -> Flag {
        Flag::Long {
            long,
            short: None,
            value_name: None,
            help,
        }
    }

    pub(crate) const fn short(self, c: char) -> Flag {
        match self {
            Flag::Long {
                long,
                value_name,
                help,
                ..
            } => Flag::Long {
                long,
                short: Some(c),
                value_name,
                help,
            },
            other => other,
        }
    }

    pub(crate) const fn value_name(self, v: &'static str) -> Flag {
        match self {
            Flag::Long {
                long, short, help, ..
            } => Flag::Long {
                long,
                short,
                value_name: Some(v),
                help,
            },
            other => other,
        }
    }
}

/// How a setting is given as a mount(8)-style `-o` option.
#[derive(Clone, Copy, Debug)]
pub enum Opt {
    None,
    /// `-o NAME=VALUE` (`-o NAME` for a [`Unit::Switch`], which it turns on).
    Named(&'static str),
    /// A switch with an option for each state: `-o ON` and `-o OFF` (`ro` / `rw`).
    OnOff(&'static str, &'static str),
}

/// One mount setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The YAML key path, `section.key`.
    pub key: &'static str,
    pub unit: Unit,
    /// The built-in default as a JSON literal (`null`: unset).
    pub default: &'static str,
    /// What the key means (the schema description).
    pub help: &'static str,
    pub flag: Flag,
    pub opt: Opt,
    /// The accepted values of a number setting (every count, size and time has one).
    pub range: Option<Range>,
}

impl Setting {
    pub(crate) const fn new(
        key: &'static str,
        unit: Unit,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Setting {
            key,
            unit,
            default,
            help,
            flag: Flag::None,
            opt: Opt::None,
            range: None,
        }
    }

    pub(crate) const fn range(self, min: u64, max: u64) -> Self {
        Setting {
            range: Some(Range { min, max }),
            ..self
        }
    }

    pub(crate) const fn flag(self, flag: Flag) -> Self {
        Setting { flag, ..self }
    }

    pub(crate) const fn opt(self, opt: Opt) -> Self {
        Setting { opt, ..self }
    }

    /// The key's path: `["mount", "read-only"]`.
    pub fn path(&self) -> Vec<String> {
        self.key.split('.').map(str::to_string).collect()
    }

    /// The environment variable setting it, if one can (`BLOBMOUNT_MOUNT__READ_ONLY`); lists
    /// and mappings cannot be given as one variable.
    pub fn env(&self) -> Option<String> {
        match self.unit {
            Unit::List | Unit::Mapping => None,
            _ => Some(format!(
                "{}{}",
                crate::values::ENV_PREFIX,
                self.key
                    .to_ascii_uppercase()
                    .replace('.', "__")
                    .replace('-', "_")
            )),
        }
    }

    /// The clap id of its flag: the long name with `_` (what the derive used).
    pub fn id(&self) -> String {
        match self.flag {
            Flag::Long { long, .. } => long.replace('-', "_"),
            Flag::Positional { value_name, .. } => value_name.to_ascii_lowercase(),
            Flag::None => self.key.replace(['.', '-'], "_"),
        }
    }
}
