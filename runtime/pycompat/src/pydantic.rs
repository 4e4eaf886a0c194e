//! pydantic 2's lax-mode scalars, as `pydantic.validate_call` applies them to
//! what `json.loads` produces from the model's JSON.
//!
//! The coercions match pydantic 2 (checked against pydantic 2.14 /
//! pydantic-core 2.50 under the `anthropic` 2.10.0 SDK):
//!
//! * `int`: integers (of any size); `true`/`false` (1/0); floats that are
//!   finite, integral and strictly inside ±2⁶³; strings that pydantic-core's
//!   `str_as_int` accepts: a JSON integer, or after trimming Unicode white
//!   space, a `+`, leading zeros, a `.000` tail and single `_` separators,
//!   at most 4300 digits (quirks included: `"0-52"` is -52).
//! * `bool`: booleans; the integers 0 and 1; the floats 0.0 and 1.0; the
//!   strings `0`, `1` and (ASCII case-insensitively) `f`, `n`, `no`, `off`,
//!   `false`, `t`, `y`, `on`, `yes`, `true`, untrimmed.
//!
//! JSON numbers are classified the way `json.loads` does (a `.`, `e` or `E`
//! makes a float, anything else is an arbitrarily large int). Big integers
//! keep their digits only when the caller's `serde_json` has the
//! `arbitrary_precision` feature (the file-tools guest enables it); this
//! crate does not enable it, so it does not change `serde_json` for the host
//! workspace.

use serde_json::Value;

/// A validated Python `int`: its value saturated to `i64` (the tools only
/// compare it with line counts, for which saturation is exact) and its
/// decimal spelling as Python's `str(int)` prints it (for error texts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyInt {
    /// The value, saturated to the `i64` range.
    pub value: i64,
    /// `str(value)` in Python: the exact decimal digits.
    pub text: String,
}

impl PyInt {
    fn from_i64(value: i64) -> Self {
        PyInt {
            value,
            text: value.to_string(),
        }
    }

    /// Builds from a sign and ASCII digits (leading zeros allowed).
    fn from_digits(negative: bool, digits: &str) -> Self {
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Self::from_i64(0);
        }
        let text = if negative {
            format!("-{digits}")
        } else {
            digits.to_string()
        };
        let value = text
            .parse::<i64>()
            .unwrap_or(if negative { i64::MIN } else { i64::MAX });
        PyInt { value, text }
    }
}

/// Python's `type(x).__name__` for what `json.loads` makes of `v`.
pub fn python_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if is_json_float(&n.to_string()) => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `json.loads` makes a float of a number with a fraction or exponent.
fn is_json_float(text: &str) -> bool {
    text.contains(['.', 'e', 'E'])
}

/// Python `float` of a JSON float literal (correctly rounded; overflow
/// gives infinity, as in `json.loads`).
fn json_float(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

/// Lax `int` validation of one value (`None`: rejected).
pub fn lax_int(v: &Value) -> Option<PyInt> {
    match v {
        Value::Bool(b) => Some(PyInt::from_i64(i64::from(*b))),
        Value::Number(n) => {
            let text = n.to_string();
            if is_json_float(&text) {
                float_as_int(json_float(&text)?)
            } else {
                let (negative, digits) = match text.strip_prefix('-') {
                    Some(d) => (true, d),
                    None => (false, text.as_str()),
                };
                digits
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| PyInt::from_digits(negative, digits))
            }
        }
        Value::String(s) => str_as_int(s),
        _ => None,
    }
}

/// pydantic's `float_as_int`: finite, integral, strictly inside ±2⁶³.
fn float_as_int(f: f64) -> Option<PyInt> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if !f.is_finite() || f.fract() != 0.0 || f >= LIMIT || f <= -LIMIT {
        return None;
    }
    // In range and integral, so the conversion is exact.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked integral and inside the i64 range above"
    )]
    Some(PyInt::from_i64(f as i64))
}

/// pydantic's lax `str` → `int` (`str_as_int`): the text as a JSON
/// integer, else the text after `clean_int_str` as a JSON integer.
fn str_as_int(s: &str) -> Option<PyInt> {
    json_int(s).or_else(|| json_int(&clean_int_str(s)?))
}

/// jiter's `NumberInt::try_from`: the whole text is `-?(0|[1-9][0-9]*)`
/// with at most 4300 digits.
fn json_int(s: &str) -> Option<PyInt> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let ok = !digits.is_empty()
        && digits.len() <= 4300
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    ok.then(|| PyInt::from_digits(negative, digits))
}

/// pydantic-core's `clean_int_str`: trims white space, a `+`, leading
/// zeros (and underscores among them), a `.0…` tail and single
/// underscores; `None` when nothing could be cleaned. Its quirks are kept
/// (`"0-52"` cleans to `"-52"`).
fn clean_int_str(original: &str) -> Option<String> {
    let mut s = original.trim();
    if let Some(rest) = s.strip_prefix('+') {
        if rest.starts_with('-') {
            return None;
        }
        s = rest;
    }
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        if rest.starts_with('-') || rest.starts_with('+') {
            return None;
        }
        negative = true;
        s = rest;
    }
    s = strip_leading_zeros(s)?;
    if let Some(i) = s.find('.') {
        let decimals = &s[i + 1..];
        if !decimals.is_empty() && decimals.bytes().all(|b| b == b'0') {
            s = &s[..i];
        }
    }
    let sign = if negative { "-" } else { "" };
    if !s.starts_with('_') && !s.ends_with('_') && s.contains('_') && !s.contains("__") {
        return Some(format!("{sign}{}", s.replace('_', "")));
    }
    if original.len() == s.len() {
        return None;
    }
    Some(format!("{sign}{s}"))
}

/// pydantic-core's `strip_leading_zeros` (keeps one zero before a `.`, and
/// the last character of an all-zero run).
fn strip_leading_zeros(s: &str) -> Option<&str> {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, '0')) => {}
        Some((_, c)) if c.is_ascii_digit() || c == '-' => return Some(s),
        _ => return None,
    }
    for (i, c) in chars {
        match c {
            '0' | '_' => {}
            '1'..='9' | '-' => return Some(&s[i..]),
            '.' => return Some(&s[i - 1..]),
            _ => return None,
        }
    }
    Some(&s[s.len() - 1..])
}

/// Lax `bool` validation of one value (`None`: rejected).
pub fn lax_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => {
            let text = n.to_string();
            if is_json_float(&text) {
                let f = json_float(&text)?;
                if f == 0.0 {
                    Some(false)
                } else if f == 1.0 {
                    Some(true)
                } else {
                    None
                }
            } else {
                match PyInt::from_digits(text.starts_with('-'), text.trim_start_matches('-'))
                    .text
                    .as_str()
                {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            }
        }
        Value::String(s) => {
            let is = |w: &str| s.eq_ignore_ascii_case(w);
            if s == "0" || is("f") || is("n") || is("no") || is("off") || is("false") {
                Some(false)
            } else if s == "1" || is("t") || is("y") || is("on") || is("yes") || is("true") {
                Some(true)
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! The tool-level cases (big integers, which need `arbitrary_precision`)
    //! are in the file-tools guest's `validate.rs`.

    use super::*;
    use serde_json::json;

    fn int(v: &Value) -> Option<String> {
        lax_int(v).map(|i| i.text)
    }

    #[test]
    fn ints_follow_pydantic_lax_mode() {
        for (v, want) in [
            (json!(1), "1"),
            (json!(true), "1"),
            (json!(1.0), "1"),
            (json!(-0.0), "0"),
            (json!("  3 "), "3"),
            (json!("1_000"), "1000"),
            (json!("+5"), "5"),
            (json!("00012"), "12"),
            (json!("1_0.0"), "10"),
            (json!("\u{a0}5"), "5"),
            (json!("-0.00"), "0"),
            (json!("0-52"), "-52"),
            (
                json!("-99999999999999999999999"),
                "-99999999999999999999999",
            ),
        ] {
            assert_eq!(int(&v).as_deref(), Some(want), "{v}");
        }
        for bad in [
            json!(1.5),
            json!(1e20),
            json!("0x10"),
            json!("1e3"),
            json!("1."),
            json!(".0"),
            json!("1__0"),
            json!("_1"),
            json!("\u{1c}5"),
            json!(""),
            json!(null),
            json!([1]),
        ] {
            assert_eq!(int(&bad), None, "{bad}");
        }
        let saturated = lax_int(&json!("99999999999999999999")).unwrap();
        assert_eq!(saturated.value, i64::MAX);
        assert_eq!(saturated.text, "99999999999999999999");
        assert!(lax_int(&json!("1".repeat(4300))).is_some());
        assert_eq!(lax_int(&json!("1".repeat(4301))), None);
    }

    #[test]
    fn bools_follow_pydantic_lax_mode() {
        for t in [
            json!(true),
            json!(1),
            json!(1.0),
            json!("TrUe"),
            json!("y"),
            json!("1"),
        ] {
            assert_eq!(lax_bool(&t), Some(true), "{t}");
        }
        for f in [
            json!(false),
            json!(0),
            json!(-0.0),
            json!("OFF"),
            json!("n"),
            json!("0"),
        ] {
            assert_eq!(lax_bool(&f), Some(false), "{f}");
        }
        for bad in [
            json!(2),
            json!(0.5),
            json!(" true "),
            json!("01"),
            json!(""),
            json!(null),
        ] {
            assert_eq!(lax_bool(&bad), None, "{bad}");
        }
    }

    #[test]
    fn type_names_follow_json_loads() {
        assert_eq!(python_type_name(&json!(null)), "NoneType");
        assert_eq!(python_type_name(&json!(1)), "int");
        assert_eq!(python_type_name(&json!(1.0)), "float");
        assert_eq!(python_type_name(&json!(1e16)), "float");
        assert_eq!(python_type_name(&json!([])), "list");
        assert_eq!(python_type_name(&json!({})), "dict");
    }
}
