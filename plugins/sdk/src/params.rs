//! Plugin parameters (`plugins.<hook>.params` in the mount config), with typed accessors so
//! plugins can reject bad configuration in `new` with a clear message.

/// The parameters given to `init`, in configuration order; keys may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The last value of `key` parsed as `T`; `Ok(None)` if absent, `Err` naming the key.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("parameter {key}: cannot parse {v:?}")),
        }
    }

    /// Fail with a clear message if any key is not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(format!(
                "unknown parameter {k:?} (known: {})",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// Parse an octal mode such as `0750` or `750`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_start_matches("0o");
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("bad mode {s:?} (octal, at most 7777)"))
}
