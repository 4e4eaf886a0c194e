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
//! digits. The scalar coercions themselves are
//! [`wasm_sandbox_pycompat::pydantic`].

use serde_json::{Map, Value};
use wasm_sandbox_pycompat::pydantic::{lax_bool, lax_int, python_type_name};

use crate::result::ToolFail;

pub use wasm_sandbox_pycompat::pydantic::PyInt;

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
