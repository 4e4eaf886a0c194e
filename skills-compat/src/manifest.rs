//! `SKILL.md` front matter: parsing and validation.
//!
//! A skill's `SKILL.md` starts with YAML front matter between two `---` lines:
//!
//! ```text
//! ---
//! name: pdf
//! description: Extract text and tables from PDF files.
//! ---
//! # Body ...
//! ```
//!
//! The reference worker does not read `SKILL.md` at all (the API already validated it at
//! upload time); this module exists so a worker can report a broken bundle clearly. A bad
//! manifest does **not** stop installation: the files are there either way, exactly as the
//! reference would leave them, and the caller logs the problems.
//!
//! Rules (the Agent Skills format, as the Claude docs state them):
//!
//! - the file is UTF-8 (an optional BOM is ignored), at most [`MAX_SKILL_MD_BYTES`];
//! - the first line is `---`; the front matter ends at the next line that is `---`;
//! - the front matter is a YAML mapping with `name` and `description`, both strings;
//! - `name`: 1–64 characters of lowercase ASCII letters, digits and hyphens, neither starting
//!   nor ending with a hyphen and without `--`;
//! - `description`: not blank, at most 1024 characters, no XML tags (`<tag>`);
//! - optional `license`, `compatibility` (≤ 500 characters) and `allowed-tools` must be
//!   strings, `metadata` a mapping; other keys are kept but not interpreted.
//!
//! YAML is parsed by `serde_yaml_ng` (a maintained fork of `serde_yaml`, which bounds alias
//! expansion and nesting); the input is already bounded by the file size cap.
//!
//! The file is opened through a [`cap_std::fs::Dir`] with `O_NOFOLLOW` and `O_NONBLOCK` and
//! checked to be a regular file, so a symlink or FIFO named `SKILL.md` is reported, never
//! followed or blocked on.

use std::collections::BTreeMap;
use std::io::{self, Read};

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use serde_yaml_ng::Value;

/// The manifest's file name.
pub const SKILL_MD: &str = "SKILL.md";
/// Largest `SKILL.md` read (1 MiB).
pub const MAX_SKILL_MD_BYTES: u64 = 1024 * 1024;
/// Longest `name`.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest `description`.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest `compatibility`.
pub const MAX_COMPATIBILITY_CHARS: usize = 500;

/// A valid `SKILL.md` front matter.
#[derive(Clone, Debug, PartialEq)]
pub struct SkillManifest {
    /// The skill's kebab-case name.
    pub name: String,
    /// What the skill does and when to use it.
    pub description: String,
    /// `license`, when present.
    pub license: Option<String>,
    /// `compatibility`, when present.
    pub compatibility: Option<String>,
    /// `allowed-tools`, when present.
    pub allowed_tools: Option<String>,
    /// `metadata`, when present (values rendered as YAML scalars or kept as text).
    pub metadata: BTreeMap<String, String>,
    /// Every other top-level key, in order, for the caller to inspect.
    pub other_keys: Vec<String>,
    /// The markdown after the front matter.
    pub body: String,
}

/// Why a `SKILL.md` is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// No `SKILL.md` at the skill's root.
    #[error("SKILL.md is missing")]
    Missing,
    /// `SKILL.md` is a symlink, directory, FIFO or other non-regular file.
    #[error("SKILL.md is not a regular file")]
    NotRegularFile,
    /// `SKILL.md` is larger than [`MAX_SKILL_MD_BYTES`].
    #[error("SKILL.md is larger than {MAX_SKILL_MD_BYTES} bytes")]
    TooLarge,
    /// `SKILL.md` could not be read.
    #[error("SKILL.md could not be read: {0}")]
    Unreadable(String),
    /// `SKILL.md` is not UTF-8.
    #[error("SKILL.md is not valid UTF-8")]
    NotUtf8,
    /// The first line is not `---`.
    #[error("SKILL.md does not start with a '---' front matter line")]
    NoFrontMatter,
    /// No closing `---` line.
    #[error("SKILL.md front matter has no closing '---' line")]
    UnterminatedFrontMatter,
    /// The front matter is not valid YAML.
    #[error("SKILL.md front matter is not valid YAML: {0}")]
    Yaml(String),
    /// The front matter is not a mapping.
    #[error("SKILL.md front matter is not a YAML mapping")]
    NotAMapping,
    /// The front matter parsed, but fields are missing or invalid (all problems listed).
    #[error("SKILL.md front matter is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Reads and validates `SKILL.md` at the root of `skill_dir`.
pub fn read_manifest(skill_dir: &Dir) -> Result<SkillManifest, ManifestError> {
    let file = skill_dir
        .open_with(
            SKILL_MD,
            OpenOptions::new()
                .read(true)
                .follow(FollowSymlinks::No)
                .custom_flags(libc::O_NONBLOCK),
        )
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ManifestError::Missing,
            _ if e.raw_os_error() == Some(libc::ELOOP) => ManifestError::NotRegularFile,
            _ => ManifestError::Unreadable(e.to_string()),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| ManifestError::Unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(ManifestError::NotRegularFile);
    }
    let mut bytes = Vec::new();
    file.take(MAX_SKILL_MD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ManifestError::Unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_SKILL_MD_BYTES {
        return Err(ManifestError::TooLarge);
    }
    let text = String::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
    parse_manifest(&text)
}

/// Splits `text` into (front matter, body) at the `---` lines.
fn split_front_matter(text: &str) -> Result<(&str, &str), ManifestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_fence = |line: &str| line.trim_end() == "---";
    let (first, rest) = match text.split_once('\n') {
        Some((first, rest)) => (first, rest),
        None => (text, ""),
    };
    if !is_fence(first) {
        return Err(ManifestError::NoFrontMatter);
    }
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if is_fence(line.trim_end_matches(['\n', '\r'])) {
            let yaml = &rest[..offset];
            let body = &rest[offset + line.len()..];
            return Ok((yaml, body));
        }
        offset += line.len();
    }
    Err(ManifestError::UnterminatedFrontMatter)
}

/// Parses and validates the text of a `SKILL.md`.
pub fn parse_manifest(text: &str) -> Result<SkillManifest, ManifestError> {
    let (yaml, body) = split_front_matter(text)?;
    let value: Value = if yaml.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml_ng::from_str(yaml).map_err(|e| ManifestError::Yaml(e.to_string()))?
    };
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => serde_yaml_ng::Mapping::new(),
        _ => return Err(ManifestError::NotAMapping),
    };

    let mut problems = Vec::new();
    let mut fields: BTreeMap<String, Value> = BTreeMap::new();
    let mut other_keys = Vec::new();
    for (key, value) in map {
        let Value::String(key) = key else {
            problems.push(format!("key {} is not a string", render(&key)));
            continue;
        };
        if !matches!(
            key.as_str(),
            "name" | "description" | "license" | "compatibility" | "allowed-tools" | "metadata"
        ) {
            other_keys.push(key.clone());
        }
        fields.insert(key, value);
    }

    let name = required_string(&fields, "name", &mut problems);
    if let Some(name) = &name {
        problems.extend(name_problems(name));
    }
    let description = required_string(&fields, "description", &mut problems);
    if let Some(description) = &description {
        if description.trim().is_empty() {
            problems.push("description is blank".into());
        }
        let chars = description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            problems.push(format!(
                "description is {chars} characters (limit {MAX_DESCRIPTION_CHARS})"
            ));
        }
        if has_xml_tag(description) {
            problems.push("description contains an XML tag".into());
        }
    }
    let license = optional_string(&fields, "license", &mut problems);
    let compatibility = optional_string(&fields, "compatibility", &mut problems);
    if let Some(c) = &compatibility {
        let chars = c.chars().count();
        if chars > MAX_COMPATIBILITY_CHARS {
            problems.push(format!(
                "compatibility is {chars} characters (limit {MAX_COMPATIBILITY_CHARS})"
            ));
        }
    }
    let allowed_tools = optional_string(&fields, "allowed-tools", &mut problems);
    let mut metadata = BTreeMap::new();
    match fields.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                metadata.insert(scalar_text(k), scalar_text(v));
            }
        }
        Some(other) => problems.push(format!(
            "metadata must be a mapping, got {}",
            kind_of(other)
        )),
    }

    match (name, description) {
        (Some(name), Some(description)) if problems.is_empty() => Ok(SkillManifest {
            name,
            description,
            license,
            compatibility,
            allowed_tools,
            metadata,
            other_keys,
            body: body.to_owned(),
        }),
        _ => Err(ManifestError::Invalid(problems)),
    }
}

/// Problems with a skill `name`, empty when it is valid.
pub fn name_problems(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let chars = name.chars().count();
    if chars == 0 {
        problems.push("name is empty".into());
        return problems;
    }
    if chars > MAX_NAME_CHARS {
        problems.push(format!(
            "name is {chars} characters (limit {MAX_NAME_CHARS})"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        problems.push(format!(
            "name {name:?} may only contain lowercase letters, digits and hyphens"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        problems.push(format!(
            "name {name:?} must not start or end with a hyphen or contain '--'"
        ));
    }
    problems
}

fn has_xml_tag(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| {
        *b == b'<'
            && bytes
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'/')
            && bytes[i + 1..].contains(&b'>')
    })
}

fn required_string(
    fields: &BTreeMap<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match fields.get(key) {
        None | Some(Value::Null) => {
            problems.push(format!("{key} is missing"));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(format!("{key} must be a string, got {}", kind_of(other)));
            None
        }
    }
}

fn optional_string(
    fields: &BTreeMap<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match fields.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(format!("{key} must be a string, got {}", kind_of(other)));
            None
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => render(other),
    }
}

fn render(value: &Value) -> String {
    serde_yaml_ng::to_string(value)
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| kind_of(value).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_valid_manifest() {
        let m = parse_manifest(
            "---\nname: pdf-tools\ndescription: Extract text from PDFs.\nlicense: MIT\nmetadata:\n  version: 1\nx-extra: true\n---\n# PDF\nbody\n",
        )
        .unwrap();
        assert_eq!(m.name, "pdf-tools");
        assert_eq!(m.description, "Extract text from PDFs.");
        assert_eq!(m.license.as_deref(), Some("MIT"));
        assert_eq!(m.metadata.get("version").map(String::as_str), Some("1"));
        assert_eq!(m.other_keys, vec!["x-extra".to_owned()]);
        assert_eq!(m.body, "# PDF\nbody\n");
    }

    #[test]
    fn accepts_bom_crlf_and_a_quoted_multiline_description() {
        let m = parse_manifest(
            "\u{feff}---\r\nname: a1\r\ndescription: >\r\n  two\r\n  lines\r\n---\r\n",
        )
        .unwrap();
        assert_eq!(m.name, "a1");
        assert_eq!(m.description.trim_end(), "two lines");
        assert_eq!(m.body, "");
    }

    #[test]
    fn structural_errors_are_specific() {
        assert_eq!(
            parse_manifest("# no front matter"),
            Err(ManifestError::NoFrontMatter)
        );
        assert_eq!(parse_manifest(""), Err(ManifestError::NoFrontMatter));
        assert_eq!(
            parse_manifest("---\nname: a\ndescription: b\n"),
            Err(ManifestError::UnterminatedFrontMatter)
        );
        assert_eq!(
            parse_manifest("---\n- a\n- b\n---\n"),
            Err(ManifestError::NotAMapping)
        );
        assert!(matches!(
            parse_manifest("---\nname: [unclosed\n---\n"),
            Err(ManifestError::Yaml(_))
        ));
    }

    #[test]
    fn lists_every_field_problem() {
        let Err(ManifestError::Invalid(problems)) =
            parse_manifest("---\nname: Bad_Name-\nlicense: 3\n---\n")
        else {
            panic!("expected Invalid");
        };
        assert!(
            problems.iter().any(|p| p.contains("lowercase letters")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("hyphen")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p == "description is missing"),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("license must be a string")),
            "{problems:?}"
        );
        let err = parse_manifest("---\nname: ok\ndescription: 5\n---\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SKILL.md front matter is invalid: description must be a string, got a number"
        );
    }

    #[test]
    fn name_and_description_limits() {
        assert!(name_problems(&"a".repeat(64)).is_empty());
        assert!(!name_problems(&"a".repeat(65)).is_empty());
        assert!(!name_problems("a--b").is_empty());
        assert!(!name_problems("").is_empty());
        assert!(name_problems("a-1-b").is_empty());
        let long = format!("---\nname: a\ndescription: {}\n---\n", "d".repeat(1025));
        assert!(matches!(
            parse_manifest(&long),
            Err(ManifestError::Invalid(_))
        ));
        let xml = "---\nname: a\ndescription: use <script>x</script>\n---\n";
        assert!(matches!(
            parse_manifest(xml),
            Err(ManifestError::Invalid(_))
        ));
        let lt = "---\nname: a\ndescription: a < b and c > d\n---\n";
        assert!(parse_manifest(lt).is_ok());
        assert!(matches!(
            parse_manifest("---\nname: a\ndescription: '  '\n---\n"),
            Err(ManifestError::Invalid(_))
        ));
    }
}
