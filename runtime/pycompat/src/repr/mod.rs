//! Python's `repr()` of a `str`, and of a `float`.
//!
//! The reference quotes paths in its error texts with `{p!r}`, so
//! `read: path 'a\tb' is outside …` must come out exactly as CPython 3.12
//! prints it: single quotes unless the text holds a `'` and no `"`,
//! backslash escapes for the quote, `\`, `\t`, `\n`, `\r`, `\xNN` for the
//! other ASCII controls, and non-ASCII characters kept when
//! `str.isprintable()` says so (otherwise `\xNN`, `\uNNNN` or `\UNNNNNNNN`).
//!
//! The printable test uses a table generated from CPython 3.12.1
//! (`unicodedata.unidata_version == "15.0.0"`), so unassigned code points
//! are judged exactly as the reference judges them.

mod tables;

use std::fmt::Write as _;

use tables::NOT_PRINTABLE;

/// Returns `repr(s)` as CPython 3.12 writes it.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            _ if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if c < ' ' || c == '\x7f' => push_hex(&mut out, c),
            _ if c.is_ascii() => out.push(c),
            _ if is_printable(c) => out.push(c),
            _ => push_hex(&mut out, c),
        }
    }
    out.push(quote);
    out
}

fn push_hex(out: &mut String, c: char) {
    let cp = u32::from(c);
    // Writing to a String cannot fail.
    let _ = if cp <= 0xff {
        write!(out, "\\x{cp:02x}")
    } else if cp <= 0xffff {
        write!(out, "\\u{cp:04x}")
    } else {
        write!(out, "\\U{cp:08x}")
    };
}

/// `str.isprintable()` for one character, per CPython 3.12.1 (Unicode 15.0).
pub fn is_printable(c: char) -> bool {
    let cp = u32::from(c);
    NOT_PRINTABLE
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_err()
}

/// Returns `repr(f)` for a Python `float` (the shortest round-tripping
/// digits, with Python's switch to exponent notation below `1e-4` and from
/// `1e16` on, and `inf`/`nan` spelled as Python spells them).
pub fn repr_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "inf".to_string()
        } else {
            "-inf".to_string()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".to_string()
        } else {
            "0.0".to_string()
        };
    }
    // `{:e}` gives the shortest round-tripping digits as `d.ddde±x`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', (int_len - n) as usize));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len as usize]);
                out.push('.');
                out.push_str(&digits[int_len as usize..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.abs());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_follow_python() {
        assert_eq!(repr_str("a.txt"), "'a.txt'");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(repr_str("say \"hi\""), "'say \"hi\"'");
        assert_eq!(repr_str(""), "''");
        assert_eq!(repr_str("back\\slash"), "'back\\\\slash'");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(repr_str("a\tb\nc\rd"), "'a\\tb\\nc\\rd'");
        assert_eq!(repr_str("\x00\x1b\x7f"), "'\\x00\\x1b\\x7f'");
        assert_eq!(repr_str("\u{85}\u{a0}\u{ad}"), "'\\x85\\xa0\\xad'");
        assert_eq!(
            repr_str("\u{200b}\u{2028}\u{feff}"),
            "'\\u200b\\u2028\\ufeff'"
        );
        assert_eq!(repr_str("\u{e000}\u{10ffff}"), "'\\ue000\\U0010ffff'");
        // Unassigned in Unicode 15.0.
        assert_eq!(repr_str("\u{0378}"), "'\\u0378'");
    }

    #[test]
    fn printable_non_ascii_is_kept() {
        assert_eq!(repr_str("héllo ✓ 名前 😀"), "'héllo ✓ 名前 😀'");
        assert_eq!(repr_str("é"), "'é'");
    }

    #[test]
    fn floats_match_python() {
        assert_eq!(repr_float(0.7), "0.7");
        assert_eq!(repr_float(120.0), "120.0");
        assert_eq!(repr_float(-0.001), "-0.001");
        assert_eq!(repr_float(1e16), "1e+16");
        assert_eq!(repr_float(1234567890123456.0), "1234567890123456.0");
        assert_eq!(repr_float(0.0001), "0.0001");
        assert_eq!(repr_float(0.00001), "1e-05");
        assert_eq!(repr_float(1.5e-7), "1.5e-07");
        assert_eq!(repr_float(1e300), "1e+300");
        assert_eq!(repr_float(-0.0), "-0.0");
        assert_eq!(repr_float(f64::INFINITY), "inf");
        assert_eq!(repr_float(0.1 + 0.2), "0.30000000000000004");
    }

    /// The bash tool's timeout message cases (moved from `wasm-sandbox-native`).
    #[test]
    fn float_repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (120.0, "120.0"),
            (0.7, "0.7"),
            (-0.001, "-0.001"),
            (0.001, "0.001"),
            (2.5, "2.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.234e-7, "1.234e-07"),
            (12345.678, "12345.678"),
            (1e300, "1e+300"),
            (123_456_789_012_345.6, "123456789012345.6"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e22, "1e+22"),
            (-5e-324, "-5e-324"),
        ];
        for (x, want) in cases {
            assert_eq!(repr_float(*x), *want, "repr({x:e})");
        }
    }
}
