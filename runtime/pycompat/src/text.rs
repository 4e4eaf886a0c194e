//! Python's `str` predicates and the small parsers built on them:
//! `str.isspace()`, `str.strip()`, the line boundaries of `str.splitlines()`
//! and `int(s)` for ASCII digits.

/// Python's `str.isspace()`: Unicode White_Space plus the separators U+001C..U+001F,
/// which Python counts as whitespace and Rust does not.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// The line boundaries of Python's `str.splitlines()`.
pub fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Python's `int(s)` for ASCII digits (what `printf %d` writes): stripped, an
/// optional sign, digits with single underscores between them; `None` where
/// Python raises (or the value does not fit an `i64`).
pub fn parse_int(s: &str) -> Option<i64> {
    let (negative, clean) = int_literal(strip(s))?;
    let v: i64 = clean.parse().ok()?;
    Some(if negative { -v } else { v })
}

/// The sign and digits of an already-stripped integer literal in the spelling
/// `int()` and pydantic accept: an optional `+`/`-`, then ASCII digits with
/// single underscores between them. Returns whether it is negative and the
/// digits without underscores; `None` for anything else.
pub fn int_literal(s: &str) -> Option<(bool, String)> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    Some((negative, digits.chars().filter(|c| *c != '_').collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_uses_python_whitespace() {
        assert_eq!(strip(" \t\u{1c}a b\u{1f}\u{a0}\u{3000}\n"), "a b");
        assert_eq!(strip("\u{200b}a"), "\u{200b}a");
        assert!(is_space('\u{85}'));
        assert!(!is_space('\u{200b}'));
    }

    #[test]
    fn line_breaks_follow_splitlines() {
        let lines: Vec<&str> = "a\u{2028}b\rc\u{1e}d".split(is_line_break).collect();
        assert_eq!(lines, ["a", "b", "c", "d"]);
        assert!(!is_line_break('\u{1f}'));
    }

    #[test]
    fn ints_follow_python() {
        assert_eq!(parse_int(" 42\n"), Some(42));
        assert_eq!(parse_int("-1_0"), Some(-10));
        assert_eq!(parse_int("+7"), Some(7));
        for bad in ["", "-", "_1", "1_", "1__0", "0x1", "1.0"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }
}
