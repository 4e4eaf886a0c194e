//! The per-session tool configuration and the reference's defaults.
//!
//! The host passes the configuration as the WIT `tool-config` record, with each
//! size cap as a `cap` variant (`default`, `unlimited`, `bytes`); the defaults
//! below are the only place the reference's values are written down.

/// Default `max_file_bytes` (262,144), as in the reference.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 262_144;
/// Default `max_image_base64_bytes` (5 MiB of base64).
pub const DEFAULT_MAX_IMAGE_BASE64_BYTES: u64 = 5 * 1024 * 1024;
/// Default `max_pdf_bytes` (20 MiB raw).
pub const DEFAULT_MAX_PDF_BYTES: u64 = 20 * 1024 * 1024;
/// Default working directory.
pub const DEFAULT_WORKDIR: &str = "/workspace";

/// A configured size cap (the WIT `cap` variant): the reference tells an
/// absent setting (its default) from `None` (uncapped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cap {
    /// Not configured: the reference default.
    #[default]
    Default,
    /// The reference's `None`: no cap.
    Unlimited,
    /// An explicit number of bytes.
    Bytes(u64),
}

impl Cap {
    /// The effective cap: [`Cap::Default`] takes `default` (the reference's value),
    /// [`Cap::Unlimited`] is `None`.
    fn resolve(self, default: u64) -> Option<u64> {
        match self {
            Cap::Default => Some(default),
            Cap::Unlimited => None,
            Cap::Bytes(n) => Some(n),
        }
    }
}

/// The configuration as the host sends it (the WIT `tool-config` record).
#[derive(Clone, Debug)]
pub struct ConfigInput {
    /// The working directory.
    pub workdir: String,
    /// Other roots the file tools may reach.
    pub allowed_roots: Vec<String>,
    /// Roots that `write`/`edit` refuse.
    pub read_only_roots: Vec<String>,
    /// `max_file_bytes`.
    pub max_file_bytes: Cap,
    /// `max_image_base64_bytes`.
    pub max_image_base64_bytes: Cap,
    /// `max_pdf_bytes`.
    pub max_pdf_bytes: Cap,
}

/// The reference's `AgentToolContext` fields that the file tools read, with
/// the defaults applied.
///
/// All paths are *guest* paths (what the model sees). A cap that was not
/// configured takes the reference default; an unlimited one is `None`.
#[derive(Debug, Clone)]
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

impl From<ConfigInput> for ToolConfig {
    fn from(c: ConfigInput) -> Self {
        ToolConfig {
            workdir: c.workdir,
            allowed_roots: c.allowed_roots,
            read_only_roots: c.read_only_roots,
            max_file_bytes_explicit: matches!(c.max_file_bytes, Cap::Bytes(_)),
            max_file_bytes: c.max_file_bytes.resolve(DEFAULT_MAX_FILE_BYTES),
            max_image_base64_bytes: c
                .max_image_base64_bytes
                .resolve(DEFAULT_MAX_IMAGE_BASE64_BYTES),
            max_pdf_bytes: c.max_pdf_bytes.resolve(DEFAULT_MAX_PDF_BYTES),
        }
    }
}

/// The reference's defaults: workdir `/workspace`, no other roots, every cap its default.
impl Default for ConfigInput {
    fn default() -> Self {
        ConfigInput {
            workdir: DEFAULT_WORKDIR.to_string(),
            allowed_roots: Vec::new(),
            read_only_roots: Vec::new(),
            max_file_bytes: Cap::Default,
            max_image_base64_bytes: Cap::Default,
            max_pdf_bytes: Cap::Default,
        }
    }
}

impl Default for ToolConfig {
    fn default() -> Self {
        ConfigInput::default().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_unlimited_and_explicit_caps_differ() {
        let c = ToolConfig::default();
        assert_eq!(c.workdir, "/workspace");
        assert_eq!(c.max_file_bytes, Some(DEFAULT_MAX_FILE_BYTES));
        assert!(!c.max_file_bytes_explicit);
        assert_eq!(c.max_pdf_bytes, Some(DEFAULT_MAX_PDF_BYTES));
        assert_eq!(
            c.max_image_base64_bytes,
            Some(DEFAULT_MAX_IMAGE_BASE64_BYTES)
        );
        let c: ToolConfig = ConfigInput {
            max_file_bytes: Cap::Unlimited,
            max_image_base64_bytes: Cap::Unlimited,
            ..ConfigInput::default()
        }
        .into();
        assert_eq!(c.workdir, "/workspace");
        assert_eq!(c.max_file_bytes, None);
        assert!(!c.max_file_bytes_explicit);
        assert_eq!(c.max_image_base64_bytes, None);
        let c: ToolConfig = ConfigInput {
            max_file_bytes: Cap::Bytes(100),
            ..ConfigInput::default()
        }
        .into();
        assert_eq!(c.max_file_bytes, Some(100));
        assert!(c.max_file_bytes_explicit);
    }
}
