//! A small glob matcher for plugins (no regex engine, so components stay small).

/// Match `text` against `pattern`: `?` is one character other than `/`, `*` any run of
/// characters other than `/`, `**` any run including `/` (`a/**/b` also matches `a/b`).
/// Everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    matches(&p, &t)
}

fn matches(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            // `**/` may also match nothing at all.
            if rest.first() == Some(&'/') && matches(&rest[1..], t) {
                return true;
            }
            if rest.is_empty() {
                return true;
            }
            (0..=t.len()).any(|i| matches(rest, &t[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if matches(rest, &t[i..]) {
                    return true;
                }
                if i < t.len() && t[i] == '/' {
                    break;
                }
            }
            false
        }
        Some('?') => !t.is_empty() && t[0] != '/' && matches(&p[1..], &t[1..]),
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
    }
}
