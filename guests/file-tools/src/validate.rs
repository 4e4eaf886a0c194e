//! Input validation as the reference does it: `pydantic.validate_call` over
//! the tool function's signature, in lax mode, with the model's input passed
//! as keyword arguments (`func(**input)`).
//!
//! Any unknown key, missing required key or value that lax mode cannot
//! coerce fails the whole call with
//! `ValueError('Invalid arguments for function <tool>')`; an input that is
//! not a JSON object fails with `TypeError('Input must be a dictionary, got
//! <type>')`. Both are non-`ToolError` exceptions, so their text is the
//! `repr` of the exception.
//!
//! The coercions match pydantic 2 (checked against pydantic 2.14 /
//! pydantic-core 2.50 under the `anthropic` 2.10.0 SDK) on what `json.loads`
//! produces from the model's JSON:
//!
//! * `str`: strings only (no numbers, no booleans).
//! * `int`: integers (of any size); `true`/`false` (1/0); floats that are
//!   finite, integral and strictly inside ±2⁶³; strings that pydantic-core's
//!   `str_as_int` accepts: a JSON integer, or after trimming Unicode white
//!   space, a `+`, leading zeros, a `.000` tail and single `_` separators,
//!   at most 4300 digits (quirks included: `"0-52"` is -52).
//! * `bool`: booleans; the integers 0 and 1; the floats 0.0 and 1.0; the
//!   strings `0`, `1` and (ASCII case-insensitively) `f`, `n`, `no`, `off`,
//!   `false`, `t`, `y`, `on`, `yes`, `true`, untrimmed.
//! * `list[int]`: arrays only, every element an `int` as above.
//! * `Optional[...]`: also `null`.
//!
//! JSON numbers are classified the way `json.loads` does (a `.`, `e` or `E`
//! makes a float, anything else is an arbitrarily large int); the crate
//! enables `serde_json`'s `arbitrary_precision` so big integers keep their
//! digits.

use serde_json::{Map, Value};

use crate::result::ToolFail;

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

/// `read(file_path: str, view_range: Optional[List[int]] = None)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadInput {
    /// The path as given.
    pub file_path: String,
    /// `[start_line, end_line]` (any length passes validation; the tool
    /// checks it).
    pub view_range: Option<Vec<PyInt>>,
}

/// `write(file_path: str, content: str)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteInput {
    /// The path as given.
    pub file_path: String,
    /// The full new contents.
    pub content: String,
}

/// `edit(file_path: str, old_string: str, new_string: str,
/// replace_all: Optional[bool] = None)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditInput {
    /// The path as given.
    pub file_path: String,
    /// The exact text to find.
    pub old_string: String,
    /// The literal replacement.
    pub new_string: String,
    /// Replace every occurrence instead of requiring a unique one.
    pub replace_all: Option<bool>,
}

/// `glob(pattern: str, path: Optional[str] = None)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobInput {
    /// The relative glob pattern.
    pub pattern: String,
    /// The search root as given.
    pub path: Option<String>,
}

/// `grep(pattern: str, path: Optional[str] = None)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrepInput {
    /// The regular expression.
    pub pattern: String,
    /// The file or directory to search, as given.
    pub path: Option<String>,
}

/// Validates the input of `read`.
pub fn read_input(input: &Value) -> Result<ReadInput, ToolFail> {
    let tool = "read";
    let args = arguments(tool, input, &["file_path"], &["view_range"])?;
    Ok(ReadInput {
        file_path: req_str(tool, args, "file_path")?,
        view_range: match args.get("view_range") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(lax_int)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| invalid(tool))?,
            ),
            Some(_) => return Err(invalid(tool)),
        },
    })
}

/// Validates the input of `write`.
pub fn write_input(input: &Value) -> Result<WriteInput, ToolFail> {
    let tool = "write";
    let args = arguments(tool, input, &["file_path", "content"], &[])?;
    Ok(WriteInput {
        file_path: req_str(tool, args, "file_path")?,
        content: req_str(tool, args, "content")?,
    })
}

/// Validates the input of `edit`.
pub fn edit_input(input: &Value) -> Result<EditInput, ToolFail> {
    let tool = "edit";
    let args = arguments(
        tool,
        input,
        &["file_path", "old_string", "new_string"],
        &["replace_all"],
    )?;
    Ok(EditInput {
        file_path: req_str(tool, args, "file_path")?,
        old_string: req_str(tool, args, "old_string")?,
        new_string: req_str(tool, args, "new_string")?,
        replace_all: match args.get("replace_all") {
            None | Some(Value::Null) => None,
            Some(v) => Some(lax_bool(v).ok_or_else(|| invalid(tool))?),
        },
    })
}

/// Validates the input of `glob`.
pub fn glob_input(input: &Value) -> Result<GlobInput, ToolFail> {
    let tool = "glob";
    let args = arguments(tool, input, &["pattern"], &["path"])?;
    Ok(GlobInput {
        pattern: req_str(tool, args, "pattern")?,
        path: opt_str(tool, args, "path")?,
    })
}

/// Validates the input of `grep`.
pub fn grep_input(input: &Value) -> Result<GrepInput, ToolFail> {
    let tool = "grep";
    let args = arguments(tool, input, &["pattern"], &["path"])?;
    Ok(GrepInput {
        pattern: req_str(tool, args, "pattern")?,
        path: opt_str(tool, args, "path")?,
    })
}

/// `ValueError('Invalid arguments for function <tool>')`.
pub fn invalid(tool: &str) -> ToolFail {
    ToolFail::Exception(format!(
        "ValueError('Invalid arguments for function {tool}')"
    ))
}

/// Python's `type(x).__name__` for what `json.loads` makes of `v`.
fn python_type_name(v: &Value) -> &'static str {
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

/// Checks the keyword set: an object, no unknown keys, every required key.
fn arguments<'a>(
    tool: &str,
    input: &'a Value,
    required: &[&str],
    optional: &[&str],
) -> Result<&'a Map<String, Value>, ToolFail> {
    let Value::Object(map) = input else {
        return Err(ToolFail::Exception(format!(
            "TypeError('Input must be a dictionary, got {}')",
            python_type_name(input)
        )));
    };
    let known = |k: &str| required.contains(&k) || optional.contains(&k);
    if map.keys().any(|k| !known(k)) || required.iter().any(|k| !map.contains_key(*k)) {
        return Err(invalid(tool));
    }
    Ok(map)
}

fn req_str(tool: &str, args: &Map<String, Value>, key: &str) -> Result<String, ToolFail> {
    match args.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(invalid(tool)),
    }
}

fn opt_str(tool: &str, args: &Map<String, Value>, key: &str) -> Result<Option<String>, ToolFail> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(tool)),
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
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn ints(s: &str) -> Option<Vec<String>> {
        match read_input(&parse(&format!(
            r#"{{"file_path": "f", "view_range": {s}}}"#
        ))) {
            Ok(r) => Some(
                r.view_range
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.text)
                    .collect(),
            ),
            Err(e) => {
                assert_eq!(e, invalid("read"));
                None
            }
        }
    }

    #[test]
    fn keyword_set_is_checked() {
        assert_eq!(
            read_input(&json!({"file_path": "a"})).unwrap(),
            ReadInput {
                file_path: "a".into(),
                view_range: None
            }
        );
        assert_eq!(
            read_input(&json!({"file_path": "a", "extra": 1})),
            Err(invalid("read"))
        );
        assert_eq!(read_input(&json!({})), Err(invalid("read")));
        assert_eq!(
            write_input(&json!({"file_path": "a"})),
            Err(invalid("write"))
        );
        assert_eq!(
            read_input(&json!([])),
            Err(ToolFail::Exception(
                "TypeError('Input must be a dictionary, got list')".into()
            ))
        );
        assert_eq!(
            grep_input(&Value::Null),
            Err(ToolFail::Exception(
                "TypeError('Input must be a dictionary, got NoneType')".into()
            ))
        );
        assert_eq!(
            edit_input(&parse("1.0")),
            Err(ToolFail::Exception(
                "TypeError('Input must be a dictionary, got float')".into()
            ))
        );
        assert_eq!(
            invalid("glob"),
            ToolFail::Exception("ValueError('Invalid arguments for function glob')".into())
        );
    }

    #[test]
    fn strings_are_strict() {
        assert_eq!(
            write_input(&json!({"file_path": "a", "content": 123})),
            Err(invalid("write"))
        );
        assert_eq!(
            write_input(&json!({"file_path": "a", "content": true})),
            Err(invalid("write"))
        );
        assert_eq!(
            write_input(&json!({"file_path": null, "content": ""})),
            Err(invalid("write"))
        );
        assert_eq!(
            write_input(&json!({"file_path": "", "content": ""})).unwrap(),
            WriteInput {
                file_path: String::new(),
                content: String::new()
            }
        );
        assert_eq!(
            glob_input(&json!({"pattern": "*", "path": null}))
                .unwrap()
                .path,
            None
        );
        assert_eq!(
            glob_input(&json!({"pattern": "*", "path": 1})),
            Err(invalid("glob"))
        );
        assert_eq!(
            grep_input(&json!({"pattern": "x", "path": "sub"}))
                .unwrap()
                .path
                .as_deref(),
            Some("sub")
        );
        assert_eq!(grep_input(&json!({"pattern": ["x"]})), Err(invalid("grep")));
    }

    #[test]
    fn ints_follow_pydantic_lax_mode() {
        let v = |xs: &[&str]| Some(xs.iter().map(|s| (*s).to_string()).collect::<Vec<_>>());
        assert_eq!(ints("[]"), v(&[]));
        assert_eq!(ints("null"), v(&[]));
        assert_eq!(ints("[1, 2]"), v(&["1", "2"]));
        assert_eq!(ints(r#"["1", "2"]"#), v(&["1", "2"]));
        assert_eq!(
            ints("[1.0, -0.0, 1e16]"),
            v(&["1", "0", "10000000000000000"])
        );
        assert_eq!(ints("[true, false]"), v(&["1", "0"]));
        assert_eq!(
            ints("[99999999999999999999, -0]"),
            v(&["99999999999999999999", "0"])
        );
        assert_eq!(
            ints(
                r#"["  3 ", "1_000", "+5", "-5", "1.0", "00012", "1_0.0", "\u00a05", "-0.00", "1.000"]"#
            ),
            v(&["3", "1000", "5", "-5", "1", "12", "10", "5", "0", "1"])
        );
        assert_eq!(
            ints(r#"["-99999999999999999999999"]"#),
            v(&["-99999999999999999999999"])
        );
        for bad in [
            "[1.5]",
            "[1e20]",
            "[-9223372036854775808.0]",
            "[9223372036854775808.0]",
            "[1e400]",
            r#"["0x10"]"#,
            r#"["1e3"]"#,
            r#"["1."]"#,
            r#"[".0"]"#,
            r#"["1__0"]"#,
            r#"["_1"]"#,
            r#"["1_"]"#,
            r#"["+_1"]"#,
            r#"["1._0"]"#,
            r#"["1.5"]"#,
            r#"["١٢"]"#,
            r#"["\u001c5"]"#,
            r#"["\u200b5"]"#,
            r#"["--5"]"#,
            r#"[""]"#,
            "[null]",
            "[[1]]",
            r#""12""#,
            "{}",
            "5",
        ] {
            assert_eq!(ints(bad), None, "{bad}");
        }
        assert_eq!(ints("[9.2e18]"), v(&["9200000000000000000"]));
        // pydantic-core quirks: leading zeros are stripped before the sign.
        assert_eq!(ints(r#"["0-52", "0-_82", "0_0"]"#), v(&["-52", "-82", "0"]));
        let max = format!(r#"["{}"]"#, "1".repeat(4300));
        assert!(ints(&max).is_some());
        let over = format!(r#"["{}"]"#, "1".repeat(4301));
        assert_eq!(ints(&over), None);
        let zeros = format!(r#"["{}1"]"#, "0".repeat(4400));
        assert_eq!(ints(&zeros), v(&["1"]));
    }

    #[test]
    fn saturated_values_keep_their_digits() {
        let r = read_input(&json!({"file_path": "f", "view_range": ["-99999999999999999999", "99999999999999999999"]}))
            .unwrap();
        let vr = r.view_range.unwrap();
        assert_eq!(vr[0].value, i64::MIN);
        assert_eq!(vr[1].value, i64::MAX);
        assert_eq!(vr[1].text, "99999999999999999999");
    }

    #[test]
    fn bools_follow_pydantic_lax_mode() {
        let b = |s: &str| match edit_input(&parse(&format!(
            r#"{{"file_path": "f", "old_string": "a", "new_string": "b", "replace_all": {s}}}"#
        ))) {
            Ok(e) => Some(e.replace_all),
            Err(e) => {
                assert_eq!(e, invalid("edit"));
                None
            }
        };
        assert_eq!(b("null"), Some(None));
        for t in [
            "true",
            "1",
            "1.0",
            r#""yes""#,
            r#""TrUe""#,
            r#""on""#,
            r#""t""#,
            r#""Y""#,
            r#""1""#,
        ] {
            assert_eq!(b(t), Some(Some(true)), "{t}");
        }
        for f in [
            "false", "0", "-0", "0.0", "-0.0", r#""no""#, r#""OFF""#, r#""f""#, r#""n""#, r#""0""#,
        ] {
            assert_eq!(b(f), Some(Some(false)), "{f}");
        }
        for bad in [
            "2",
            "-1",
            "0.5",
            "2.0",
            r#""maybe""#,
            r#"" true ""#,
            r#""01""#,
            r#""""#,
            "[]",
            "{}",
        ] {
            assert_eq!(b(bad), None, "{bad}");
        }
    }
}
