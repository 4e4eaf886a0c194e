//! The request envelope and the per-session tool configuration.

use serde::Deserialize;
use serde_json::Value;

/// One tool call as the host sends it.
#[derive(Debug, Deserialize)]
pub struct Request {
    /// Tool name (`read`, `write`, `edit`, `glob`, `grep`).
    pub name: String,
    /// The model's raw input object (validated by the tool, like pydantic's
    /// `validate_call` in the reference).
    #[serde(default)]
    pub input: Value,
    /// The session's configuration.
    #[serde(default)]
    pub config: ToolConfig,
}

/// Default `max_file_bytes` (262,144), as in the reference.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 262_144;
/// Default `max_image_base64_bytes` (5 MiB of base64).
pub const DEFAULT_MAX_IMAGE_BASE64_BYTES: u64 = 5 * 1024 * 1024;
/// Default `max_pdf_bytes` (20 MiB raw).
pub const DEFAULT_MAX_PDF_BYTES: u64 = 20 * 1024 * 1024;

fn default_workdir() -> String {
    "/workspace".to_string()
}
fn default_max_file() -> Option<u64> {
    Some(DEFAULT_MAX_FILE_BYTES)
}
fn default_max_image() -> Option<u64> {
    Some(DEFAULT_MAX_IMAGE_BASE64_BYTES)
}
fn default_max_pdf() -> Option<u64> {
    Some(DEFAULT_MAX_PDF_BYTES)
}

/// The reference's `AgentToolContext` fields that the file tools read.
///
/// All paths are *guest* paths (what the model sees). A cap that is absent
/// takes the reference default; an explicit JSON `null` means uncapped.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawToolConfig")]
pub struct ToolConfig {
    /// The working directory (`/workspace`).
    pub workdir: String,
    /// Other roots the file tools may reach (`/mnt/session/outputs`, memory
    /// stores), in configured spelling.
    pub allowed_roots: Vec<String>,
    /// Roots that `write`/`edit` refuse (read-only memory stores), in
    /// configured spelling (they are echoed in the error text).
    pub read_only_roots: Vec<String>,
    /// Cap for whole-file reads, ranged-read selections and edits.
    pub max_file_bytes: Option<u64>,
    /// Whether `max_file_bytes` was configured explicitly (as a number). The
    /// reference lets an explicit cap also bind image/PDF reads, while the
    /// default one does not (`is_given(ctx.max_file_bytes)`).
    pub max_file_bytes_explicit: bool,
    /// Cap on the base64 size of an image read.
    pub max_image_base64_bytes: Option<u64>,
    /// Cap on the raw size of a PDF read.
    pub max_pdf_bytes: Option<u64>,
}

/// The wire form of [`ToolConfig`]: absent caps (`None`) and explicit
/// `null`s (`Some(None)`) are told apart.
#[derive(Deserialize)]
struct RawToolConfig {
    #[serde(default = "default_workdir")]
    workdir: String,
    #[serde(default)]
    allowed_roots: Vec<String>,
    #[serde(default)]
    read_only_roots: Vec<String>,
    #[serde(default, deserialize_with = "present")]
    max_file_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_image_base64_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_pdf_bytes: Option<Option<u64>>,
}

/// Marks a present field (even `null`) as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

impl From<RawToolConfig> for ToolConfig {
    fn from(r: RawToolConfig) -> Self {
        ToolConfig {
            workdir: r.workdir,
            allowed_roots: r.allowed_roots,
            read_only_roots: r.read_only_roots,
            max_file_bytes_explicit: matches!(r.max_file_bytes, Some(Some(_))),
            max_file_bytes: r.max_file_bytes.unwrap_or_else(default_max_file),
            max_image_base64_bytes: r.max_image_base64_bytes.unwrap_or_else(default_max_image),
            max_pdf_bytes: r.max_pdf_bytes.unwrap_or_else(default_max_pdf),
        }
    }
}

impl Default for ToolConfig {
    fn default() -> Self {
        ToolConfig {
            workdir: default_workdir(),
            allowed_roots: Vec::new(),
            read_only_roots: Vec::new(),
            max_file_bytes: default_max_file(),
            max_file_bytes_explicit: false,
            max_image_base64_bytes: default_max_image(),
            max_pdf_bytes: default_max_pdf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_null_and_explicit_caps_differ() {
        let c: ToolConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.workdir, "/workspace");
        assert_eq!(c.max_file_bytes, Some(DEFAULT_MAX_FILE_BYTES));
        assert!(!c.max_file_bytes_explicit);
        assert_eq!(c.max_pdf_bytes, Some(DEFAULT_MAX_PDF_BYTES));
        let c: ToolConfig =
            serde_json::from_str(r#"{"max_file_bytes": null, "max_image_base64_bytes": null}"#)
                .unwrap();
        assert_eq!(c.max_file_bytes, None);
        assert!(!c.max_file_bytes_explicit);
        assert_eq!(c.max_image_base64_bytes, None);
        let c: ToolConfig = serde_json::from_str(r#"{"max_file_bytes": 100}"#).unwrap();
        assert_eq!(c.max_file_bytes, Some(100));
        assert!(c.max_file_bytes_explicit);
    }
}
