//! A small glob matcher for plugins (no regex engine, so components stay small).

/// Match `text` against `pattern`: `?` is one character other than `/`, `*` any run of
/// characters other than `/`, `**` any run including `/` (`a/**/b` also matches `a/b`).
/// Everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        // The common case, without allocating: a filter call is on the listing's hot path
        // and every allocation inside the sandbox costs.
        return matches(pattern.as_bytes(), text.as_bytes());
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    matches(&p, &t)
}

/// One character of a pattern or a text: bytes for ASCII, `char`s otherwise.
trait Unit: Copy + PartialEq {
    fn is(self, c: char) -> bool;
}

impl Unit for u8 {
    fn is(self, c: char) -> bool {
        u32::from(self) == u32::from(c)
    }
}

impl Unit for char {
    fn is(self, c: char) -> bool {
        self == c
    }
}

fn matches<U: Unit>(p: &[U], t: &[U]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(c) if c.is('*') && p.get(1).is_some_and(|c| c.is('*')) => {
            let rest = &p[2..];
            // `**/` may also match nothing at all.
            if rest.first().is_some_and(|c| c.is('/')) && matches(&rest[1..], t) {
                return true;
            }
            if rest.is_empty() {
                return true;
            }
            (0..=t.len()).any(|i| matches(rest, &t[i..]))
        }
        Some(c) if c.is('*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if matches(rest, &t[i..]) {
                    return true;
                }
                if i < t.len() && t[i].is('/') {
                    break;
                }
            }
            false
        }
        Some(c) if c.is('?') => !t.is_empty() && !t[0].is('/') && matches(&p[1..], &t[1..]),
        Some(c) => t.first() == Some(c) && matches(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*.csv", "a.csv"));
        assert!(!glob_match("*.csv", "d/a.csv"));
        assert!(glob_match("**/*.csv", "d/e/a.csv"));
        assert!(glob_match("**/*.csv", "a.csv"));
        assert!(glob_match("logs/**", "logs/x/y"));
        assert!(glob_match("a/**/b", "a/b"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        // Non-ASCII text or pattern: `?` is one character, not one byte.
        assert!(glob_match("?.tmp", "é.tmp"));
        assert!(glob_match("*.tmp", "données.tmp"));
        assert!(!glob_match("é?", "é"));
        assert!(glob_match("é*", "été") && !glob_match("é*", "été/x"));
    }
}
