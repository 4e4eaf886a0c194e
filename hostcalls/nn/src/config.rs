//! Configuration of the wasi-nn host binding ([`NnConfig`]), deserialised
//! from the worker's runtime configuration (unknown keys are rejected).
//!
//! ```toml
//! onnx_library = "/opt/ort/libonnxruntime.so.1.22.1"  # default: $ORT_DYLIB_PATH
//! execution_provider = "cpu"                          # or "cuda"
//! max_calls = 64                                      # remote calls per session
//! max_transfer = "64MiB"                              # remote bytes per session
//! max_tensor_size = "256MiB"                          # tensors one guest holds at once
//!
//! [[preload]]
//! name = "classify"
//! path = "models/classify.onnx"
//!
//! [[remote]]
//! name = "llm-small"
//! kind = "chat"
//! url = "http://llm.internal:8000/v1/chat/completions"
//! model = "qwen2.5-7b-instruct"
//! api_key_env = "LLM_API_KEY"
//! timeout = "60s"
//! ```
//!
//! Sizes and durations follow the config files' one unit convention
//! ([`wasm_sandbox_units`]): strings with their unit.
//!
//! Credentials are never written in the configuration: a remote model names
//! the *environment variable* that holds its key (`api_key_env`), which the
//! host reads once at start-up.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Default per-session limit on remote calls ([`NnConfig::max_calls`]).
pub const DEFAULT_MAX_CALLS: u64 = 64;
/// Default per-session limit on remote bytes ([`NnConfig::max_bytes`]): 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default budget for the tensors one store holds at once
/// ([`NnConfig::max_tensor_bytes`]): 256 MiB.
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 256 << 20;
/// Default per-call timeout of a remote model ([`RemoteModel::timeout_ms`]): 60 s.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// The wasi-nn host binding's configuration. Every field has a default, so
/// an empty table is valid (no models; ONNX from `$ORT_DYLIB_PATH` if set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NnConfig {
    /// Path of ONNX Runtime's shared library (`libonnxruntime.so.1.x`, e.g.
    /// from the PyPI `onnxruntime` wheel; see `scripts/setup-ort.sh`).
    /// Default: the `ORT_DYLIB_PATH` environment variable. When neither is
    /// set, or the file is missing or unusable, the ONNX backend is disabled
    /// (see [`crate::NnHost::report`]) and remote models still work.
    pub onnx_library: Option<PathBuf>,
    /// Where local ONNX models run. Default [`ExecutionProvider::Cpu`].
    pub execution_provider: ExecutionProvider,
    /// Local ONNX models loaded once at start-up and offered to every session
    /// under their names (`graph::load-by-name`). Default: none.
    pub preload: Vec<PreloadModel>,
    /// Remote models: names that forward `compute` to an HTTP endpoint.
    /// Default: none.
    pub remote: Vec<RemoteModel>,
    /// Per-session limit on remote `compute` calls (every attempt counts,
    /// failed ones too). Default [`DEFAULT_MAX_CALLS`].
    pub max_calls: u64,
    /// Per-session limit on bytes exchanged with remote endpoints (request
    /// bodies plus response bodies). Default [`DEFAULT_MAX_BYTES`]. File key
    /// `max_transfer = "64MiB"`.
    #[serde(rename = "max_transfer", with = "wasm_sandbox_units::size")]
    pub max_bytes: u64,
    /// Per-store limit on the bytes of tensors a guest holds at once (its own
    /// and the outputs it was given). Tensor data is copied out of guest
    /// memory into the host, so without it a guest could grow the worker's
    /// memory without bound; going over traps that guest. Default
    /// [`DEFAULT_MAX_TENSOR_BYTES`]. File key `max_tensor_size = "256MiB"`.
    #[serde(rename = "max_tensor_size", with = "wasm_sandbox_units::size")]
    pub max_tensor_bytes: u64,
    /// Whether guests may hand the host their own ONNX model bytes
    /// (`graph::load` with encoding `onnx`). Default `false`: model files are
    /// parsed by ONNX Runtime's native code, outside the wasm sandbox, so
    /// only operator-provided models (preloads) are accepted unless this is
    /// turned on deliberately.
    pub allow_guest_load: bool,
}

impl Default for NnConfig {
    fn default() -> Self {
        NnConfig {
            onnx_library: None,
            execution_provider: ExecutionProvider::Cpu,
            preload: Vec::new(),
            remote: Vec::new(),
            max_calls: DEFAULT_MAX_CALLS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_tensor_bytes: DEFAULT_MAX_TENSOR_BYTES,
            allow_guest_load: false,
        }
    }
}

/// ONNX Runtime execution provider for local models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider.
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA provider. Needs an ONNX Runtime build with it
    /// (`libonnxruntime_providers_cuda.so` beside the library, e.g. from the
    /// `onnxruntime-gpu` wheel) and a working CUDA + cuDNN; the host probes it
    /// at start-up and falls back to the CPU provider, saying so in
    /// [`crate::NnHost::report`], when it is not usable.
    Cuda,
}

/// A local ONNX model loaded at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadModel {
    /// The name guests load it by (`[a-z0-9._-]`, at most 64 characters).
    pub name: String,
    /// An `.onnx` file, or a directory holding `model.onnx`.
    pub path: PathBuf,
}

/// What kind of endpoint a remote model forwards to; fixes the request
/// shape (see the crate docs' tensor convention) and the name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteKind {
    /// OpenAI-compatible chat completions (`POST /v1/chat/completions`):
    /// JSON in, JSON out. Names start with `llm-`.
    Chat,
    /// Whisper-style transcription (`POST /v1/audio/transcriptions`,
    /// `multipart/form-data` with `file` and `model`): audio bytes in, JSON
    /// out. Names start with `whisper-`.
    Transcription,
    /// OCR: the image bytes are the request body; the response body comes
    /// back. Names start with `ocr-`.
    Ocr,
    /// Text to speech (`POST /v1/audio/speech`-style): JSON in, audio bytes
    /// out. Names start with `tts-`.
    Tts,
    /// A tensor model server speaking the Open Inference Protocol v2 (KServe,
    /// Triton, MLServer: `POST /v2/models/<model>/infer`): the guest's named
    /// tensors in, the server's named tensors out, like a local model. Names
    /// start with `tensor-`.
    Tensor,
}

impl RemoteKind {
    /// The name prefix models of this kind must carry, so a guest can tell
    /// the request convention from the name alone.
    pub fn prefix(self) -> &'static str {
        match self {
            RemoteKind::Chat => "llm-",
            RemoteKind::Transcription => "whisper-",
            RemoteKind::Ocr => "ocr-",
            RemoteKind::Tts => "tts-",
            RemoteKind::Tensor => "tensor-",
        }
    }

    /// The kind's name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteKind::Chat => "chat",
            RemoteKind::Transcription => "transcription",
            RemoteKind::Ocr => "ocr",
            RemoteKind::Tts => "tts",
            RemoteKind::Tensor => "tensor",
        }
    }
}

/// A model served by an HTTP endpoint, offered to guests by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteModel {
    /// The name guests load it by; must start with the kind's prefix
    /// ([`RemoteKind::prefix`]) and use only `[a-z0-9._-]` (64 at most).
    pub name: String,
    /// The endpoint's API shape.
    pub kind: RemoteKind,
    /// The full endpoint URL, `http://` or `https://` (e.g.
    /// `http://10.0.0.5:8000/v1/chat/completions`). Redirects are not
    /// followed and proxy environment variables are ignored: guest data goes
    /// to this URL only. Leave it out with [`RemoteModel::upstream`] (the
    /// runtime fills it in).
    #[serde(default)]
    pub url: String,
    /// Instead of `url` and `api_key_env`: the name of a
    /// `[[runtime.networking.upstreams]]` entry, so an endpoint (its base URL and
    /// credential headers) is configured once for both the sandbox's
    /// `http://<name>.internal/` alias and wasi-nn. The runtime sets `url` to the
    /// upstream's URL followed by [`RemoteModel::path`] and sends the upstream's
    /// headers ([`RemoteModel::header_env`]). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// With `upstream`: the path after the upstream's URL (e.g.
    /// `"/chat/completions"` for an upstream `https://api.example/v1`). Default:
    /// none (the upstream's URL itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Headers sent verbatim with every call, each as `(header, environment
    /// variable)`; the value is read once at start-up like `api_key_env`. Not a
    /// file key: the runtime fills it in from the upstream's `headers`.
    #[serde(skip)]
    pub header_env: Vec<(String, String)>,
    /// The upstream model id. For `chat` and `tts` it overrides the JSON
    /// body's `"model"`; for `transcription` it is the form's `model` field.
    /// Default: the guest's `"model"` if any, else [`RemoteModel::name`].
    #[serde(default)]
    pub model: Option<String>,
    /// Environment variable holding the endpoint's API key, read once at
    /// start-up (a missing variable is a configuration error). Default: no
    /// credentials.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Header that carries the key. Default `authorization`, sent as
    /// `Bearer <key>`; any other header gets the key verbatim (e.g.
    /// `x-api-key`).
    #[serde(default)]
    pub api_key_header: Option<String>,
    /// Per-call timeout covering connect, upload and the whole response, in
    /// milliseconds. Default [`DEFAULT_TIMEOUT_MS`]. File key `timeout = "60s"`.
    #[serde(
        rename = "timeout",
        default = "default_timeout_ms",
        with = "wasm_sandbox_units::duration_ms"
    )]
    pub timeout_ms: u64,
    /// `Content-Type` of `ocr` requests. Default `application/octet-stream`.
    #[serde(default)]
    pub content_type: Option<String>,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// Checks a model name: 1..=64 characters of `[a-z0-9._-]`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gets_documented_defaults() {
        let c: NnConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, NnConfig::default());
        assert_eq!(c.max_calls, DEFAULT_MAX_CALLS);
        assert_eq!(c.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(c.execution_provider, ExecutionProvider::Cpu);
        assert!(!c.allow_guest_load);
    }

    #[test]
    fn remote_model_parses_and_rejects_unknown_keys() {
        let c: NnConfig = serde_json::from_value(serde_json::json!({
            "execution_provider": "cuda",
            "remote": [{"name": "llm-a", "kind": "chat", "url": "http://127.0.0.1:1/v1/chat/completions"}]
        }))
        .unwrap();
        assert_eq!(c.execution_provider, ExecutionProvider::Cuda);
        assert_eq!(c.remote[0].kind, RemoteKind::Chat);
        assert_eq!(c.remote[0].timeout_ms, DEFAULT_TIMEOUT_MS);
        let bad = serde_json::from_value::<NnConfig>(serde_json::json!({
            "remote": [{"name": "llm-a", "kind": "chat", "url": "http://x", "api_key": "sk-inline"}]
        }));
        assert!(bad.is_err(), "inline keys are not a config field");
        assert!(serde_json::from_value::<NnConfig>(serde_json::json!({"gpu": true})).is_err());
    }

    /// The one unit convention: sizes and durations as strings; the old keys are refused.
    #[test]
    fn sizes_and_timeouts_are_strings_with_units() {
        let c: NnConfig = serde_json::from_value(serde_json::json!({
            "max_transfer": "1MiB",
            "max_tensor_size": "2GiB",
            "remote": [{"name": "llm-a", "kind": "chat", "url": "http://x", "timeout": "1500ms"}]
        }))
        .unwrap();
        assert_eq!(c.max_bytes, 1 << 20);
        assert_eq!(c.max_tensor_bytes, 2 << 30);
        assert_eq!(c.remote[0].timeout_ms, 1500);
        for old in [
            serde_json::json!({"max_bytes": 1}),
            serde_json::json!({"max_tensor_bytes": 1}),
            serde_json::json!({"max_transfer": 1048576}),
            serde_json::json!({"remote": [{"name": "llm-a", "kind": "chat", "url": "http://x", "timeout_ms": 1}]}),
        ] {
            assert!(
                serde_json::from_value::<NnConfig>(old.clone()).is_err(),
                "{old}"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("llm-small.v2_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("LLM"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
    }
}
