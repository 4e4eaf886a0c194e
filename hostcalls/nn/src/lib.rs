//! # wasi-nn for wasm-sandbox sessions
//!
//! Gives session components the `wasi:nn@0.2.0-rc-2024-10-28` interface
//! (graph, tensor, inference, errors) with two kinds of models, both loaded
//! by name (`graph::load-by-name`):
//!
//! * **local** ONNX models, run by ONNX Runtime loaded at run time from a
//!   shared library (the PyPI `onnxruntime` wheel's `libonnxruntime.so.1.x`,
//!   see `scripts/setup-ort.sh`), on the CPU or CUDA provider. They are
//!   loaded once by [`NnHost::new`] and shared by every session;
//! * **remote** models (`llm-*`, `whisper-*`, `ocr-*`, `tts-*`, `tensor-*`) whose
//!   `compute` is an HTTP call to a sister endpoint, with a per-call
//!   timeout, per-session call and byte quotas, and credentials that stay in
//!   the host.
//!
//! ## Wiring (embedder)
//!
//! ```ignore
//! let host = NnHost::new(config)?;             // once per worker
//! let nn = host.session();                     // once per agent session (quotas)
//! // per Store: state.nn = nn.ctx();
//! wasm_sandbox_hostcalls_nn::add_to_linker(&mut linker, |s: &mut SessionState| {
//!     WasiNnView::new(&mut s.table, &mut s.nn)
//! })?;
//! tracing::info!("{}", host.report());
//! ```
//!
//! ## Tensor convention for remote models
//!
//! For `chat`, `transcription`, `ocr` and `tts` models,
//! `compute` takes exactly one input tensor, of type `u8` with dimensions
//! `[len]` (its name is free; `input` by convention), and returns exactly one
//! tensor named `output`, type `u8`, dimensions `[len]`, holding the
//! endpoint's response body. What the input bytes are depends on the kind
//! ([`RemoteKind`]):
//!
//! | kind | name prefix | input bytes | request the host sends | output bytes |
//! |---|---|---|---|---|
//! | `chat` | `llm-` | UTF-8 JSON object, an OpenAI chat-completions body (`{"messages":[..]}`) | `POST url`, `application/json`; `"model"` set from the config (else kept, else the name) | the JSON response |
//! | `transcription` | `whisper-` | raw audio (wav, mp3, ...) | `POST url`, `multipart/form-data` with `file` (the bytes) and `model` | the JSON response (`{"text":..}`) |
//! | `ocr` | `ocr-` | raw image bytes | `POST url`, the bytes as the body (`content_type`, default `application/octet-stream`) | the response body |
//! | `tts` | `tts-` | UTF-8 JSON object (`{"input":..,"voice":..}`) | `POST url`, `application/json`, `"model"` as for chat | the audio bytes |
//!
//! `tensor` models (prefix `tensor-`) behave like local models instead: the
//! guest's named tensors (`fp32`, `fp64`, `i32`, `i64`, `u8`) go to a model
//! server as an Open Inference Protocol v2 request (`POST
//! /v2/models/<m>/infer`, as KServe, Triton and MLServer speak it) and the
//! server's named output tensors come back (see the `oip` module). This is
//! also how a GPU that the local ONNX backend cannot drive is reached: a
//! model server on the same machine (`scripts/gpu-check.sh`).
//!
//! A non-2xx answer is an error whose message quotes the start of the
//! body. Errors reach the guest as wasi-nn `error` resources with a code:
//! unknown name `not-found`; a malformed input `invalid-argument`; no answer
//! within the model's `timeout` `timeout`; a spent quota `security`; endpoint down or
//! failing `runtime-error`. None of them traps the guest or the host.
//!
//! ## Local models
//!
//! Local (ONNX) models take `fp32` tensors with the model's input names and
//! shapes and return `fp32` outputs by name (the limits of
//! `wasmtime-wasi-nn`'s ONNX backend, enforced here so a bad tensor is an
//! `invalid-argument` error rather than a host panic; see the `onnx` module).
//!
//! ## Blocking
//!
//! wasi-nn's `compute` is synchronous, so an inference or an HTTP call
//! blocks the thread that runs the guest. The runtime runs guest calls on
//! tokio's blocking pool (`spawn_blocking`), where that stalls no async
//! task; the HTTP client (`ureq`) uses no async runtime, so it is also safe
//! to call from a thread inside one. Remote calls are bounded by their
//! timeout.

pub mod config;
mod error;
mod oip;
mod onnx;
mod remote;
mod wit;

pub use config::{ExecutionProvider, NnConfig, PreloadModel, RemoteKind, RemoteModel};
pub use error::{Failure, FailureCode, NnError, Result};
pub use wit::{WasiNnCtx, WasiNnView, add_to_linker};

use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime_wasi_nn::Graph;

/// Paths of the example models (`examples/nn-models`), for tests and benches on
/// the build machine. The example guest components that use them
/// (`examples/guests/nn-classify`, `nn-remote`) are built by `tests/build.rs` (as
/// `NN_CLASSIFY_WASM` / `NN_REMOTE_WASM`, for the tests and the `nn_overhead` bench),
/// not by this crate.
pub mod example_models {
    /// The tiny classifier model (`examples/nn-models/classify.onnx`).
    pub const CLASSIFY_ONNX: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/nn-models/classify.onnx"
    );
}

/// The worker-wide wasi-nn host: ONNX Runtime, the preloaded graphs and the
/// remote endpoints. Cheap to clone.
#[derive(Clone)]
pub struct NnHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    config: NnConfig,
    onnx: OnnxStatus,
    /// Guarded, shared graphs of the preloaded models.
    preloaded: HashMap<String, Graph>,
    /// Preloads skipped because ONNX Runtime is unavailable: (name, why).
    skipped: Vec<(String, String)>,
    remote: Vec<Arc<remote::Endpoint>>,
}

impl fmt::Debug for NnHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NnHost")
            .field("report", &self.report())
            .finish()
    }
}

impl NnHost {
    /// Starts the host from `config`:
    ///
    /// 1. ONNX Runtime: the library (`onnx_library`, else `$ORT_DYLIB_PATH`)
    ///    is checked and loaded once; when it is missing or unusable the
    ///    ONNX backend is disabled, preloads are skipped, and
    ///    [`NnHost::report`] says why. This never panics.
    /// 2. With `execution_provider = "cuda"`, the CUDA provider is probed;
    ///    when it cannot start, models run on the CPU and the report says so.
    /// 3. Each preload is read and compiled once; its graph is shared by
    ///    every session.
    /// 4. Remote models are validated and their keys read from the
    ///    environment.
    ///
    /// # Errors
    ///
    /// [`NnError::Config`] for an invalid configuration (bad or duplicate
    /// name, bad URL, unset key variable); [`NnError::Model`] when ONNX
    /// Runtime works but a preloaded model does not load.
    pub fn new(config: NnConfig) -> Result<NnHost> {
        let mut names = std::collections::HashSet::new();
        for name in config
            .preload
            .iter()
            .map(|p| &p.name)
            .chain(config.remote.iter().map(|r| &r.name))
        {
            if !config::valid_name(name) {
                return Err(NnError::Config(format!(
                    "model name {name:?} must be 1-64 characters of [a-z0-9._-]"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(NnError::Config(format!(
                    "model name {name:?} is used twice"
                )));
            }
        }
        let remote = config
            .remote
            .iter()
            .map(|m| remote::Endpoint::new(m).map(Arc::new))
            .collect::<Result<Vec<_>, String>>()
            .map_err(NnError::Config)?;

        let onnx = start_onnx(&config);
        let mut preloaded = HashMap::new();
        let mut skipped = Vec::new();
        match &onnx {
            OnnxStatus::Active { provider, .. } => {
                for p in &config.preload {
                    let graph =
                        onnx::load_model(&p.path, *provider).map_err(|message| NnError::Model {
                            name: p.name.clone(),
                            message,
                        })?;
                    preloaded.insert(p.name.clone(), graph);
                }
            }
            OnnxStatus::Disabled { reason } => {
                for p in &config.preload {
                    tracing::error!(model = %p.name, %reason, "wasi-nn: preloaded model skipped, ONNX Runtime unavailable");
                    skipped.push((p.name.clone(), reason.clone()));
                }
            }
        }
        let host = NnHost {
            inner: Arc::new(HostInner {
                config,
                onnx,
                preloaded,
                skipped,
                remote,
            }),
        };
        tracing::info!("{}", host.report());
        Ok(host)
    }

    /// A new agent session's wasi-nn state: its remote quotas start at zero
    /// and are shared by every store made with [`NnSession::ctx`].
    pub fn session(&self) -> NnSession {
        let c = &self.inner.config;
        NnSession {
            host: self.inner.clone(),
            quota: Arc::new(remote::Quota::new(c.max_calls, c.max_bytes)),
        }
    }

    /// Shorthand for `self.session().ctx()`: a store context with its own,
    /// fresh quotas.
    pub fn session_ctx(&self) -> WasiNnCtx {
        self.session().ctx()
    }

    /// Which backends are active, on which provider, and which models are
    /// offered; `Display` gives one log line.
    pub fn report(&self) -> NnReport {
        let i = &self.inner;
        let mut models: Vec<ModelReport> = i
            .config
            .preload
            .iter()
            .map(|p| {
                let reason = i
                    .skipped
                    .iter()
                    .find(|(n, _)| n == &p.name)
                    .map(|(_, r)| r.clone());
                ModelReport {
                    name: p.name.clone(),
                    backend: "onnx".into(),
                    available: reason.is_none(),
                    reason,
                }
            })
            .collect();
        models.extend(i.remote.iter().map(|e| ModelReport {
            name: e.name.clone(),
            backend: format!("remote-{}", e.kind.as_str()),
            available: true,
            reason: None,
        }));
        NnReport {
            onnx: i.onnx.clone(),
            guest_load: i.config.allow_guest_load && matches!(i.onnx, OnnxStatus::Active { .. }),
            models,
        }
    }
}

fn start_onnx(config: &NnConfig) -> OnnxStatus {
    let path = config
        .onnx_library
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return OnnxStatus::Disabled {
            reason: "no ONNX Runtime library configured (onnx_library / ORT_DYLIB_PATH; see scripts/setup-ort.sh)"
                .into(),
        };
    };
    let runtime = match onnx::load_runtime(&path) {
        Ok(r) => r,
        Err(reason) => {
            tracing::error!(%reason, "wasi-nn: ONNX backend disabled");
            return OnnxStatus::Disabled { reason };
        }
    };
    let (provider, note) = match config.execution_provider {
        ExecutionProvider::Cpu => (ExecutionProvider::Cpu, None),
        ExecutionProvider::Cuda => match onnx::probe_cuda() {
            Ok(()) => (ExecutionProvider::Cuda, None),
            Err(why) => {
                tracing::warn!(%why, "wasi-nn: CUDA requested, running ONNX models on the CPU");
                (
                    ExecutionProvider::Cpu,
                    Some(format!("cuda requested but unavailable: {why}")),
                )
            }
        },
    };
    OnnxStatus::Active {
        library: runtime.library,
        version: runtime.version,
        provider,
        note,
    }
}

/// One agent session's wasi-nn state (its remote quotas). Cheap to clone;
/// make one per session with [`NnHost::session`] and a [`WasiNnCtx`] per
/// store with [`NnSession::ctx`].
#[derive(Clone)]
pub struct NnSession {
    host: Arc<HostInner>,
    quota: Arc<remote::Quota>,
}

impl fmt::Debug for NnSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NnSession")
            .field("usage", &self.usage())
            .finish()
    }
}

impl NnSession {
    /// A store's wasi-nn context: the preloaded graphs (shared, not
    /// reloaded), this session's remote models, and guest loading if
    /// enabled.
    pub fn ctx(&self) -> WasiNnCtx {
        let h = &self.host;
        let mut graphs = h.preloaded.clone();
        for e in &h.remote {
            graphs.insert(
                e.name.clone(),
                remote::RemoteGraph::graph(e.clone(), self.quota.clone()),
            );
        }
        let guest_backend = match &h.onnx {
            OnnxStatus::Active { provider, .. } if h.config.allow_guest_load => {
                Some(onnx::GuestOnnxBackend {
                    provider: *provider,
                })
            }
            _ => None,
        };
        WasiNnCtx::new(graphs, guest_backend, h.config.max_tensor_bytes)
    }

    /// Remote calls and bytes this session has used.
    pub fn usage(&self) -> RemoteUsage {
        RemoteUsage {
            calls: self.quota.calls(),
            bytes: self.quota.bytes(),
        }
    }
}

/// A session's remote usage so far (see [`NnSession::usage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteUsage {
    /// Remote `compute` attempts.
    pub calls: u64,
    /// Request plus response bytes.
    pub bytes: u64,
}

/// State of the ONNX backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum OnnxStatus {
    /// ONNX Runtime is loaded.
    Active {
        /// The library in use.
        library: PathBuf,
        /// Its version.
        version: String,
        /// The provider models run on.
        provider: ExecutionProvider,
        /// Why the provider differs from the configured one, if it does.
        note: Option<String>,
    },
    /// No ONNX models on this host.
    Disabled {
        /// Why.
        reason: String,
    },
}

/// One offered model in a [`NnReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelReport {
    /// Registry name.
    pub name: String,
    /// `onnx` or `remote-<kind>`.
    pub backend: String,
    /// Whether guests can load it.
    pub available: bool,
    /// Why not, when unavailable.
    pub reason: Option<String>,
}

/// What [`NnHost::report`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NnReport {
    /// The ONNX backend.
    pub onnx: OnnxStatus,
    /// Whether guests may load their own ONNX models.
    pub guest_load: bool,
    /// Preloaded and remote models.
    pub models: Vec<ModelReport>,
}

impl fmt::Display for NnReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.onnx {
            OnnxStatus::Active {
                library,
                version,
                provider,
                note,
            } => {
                let p = match provider {
                    ExecutionProvider::Cpu => "cpu",
                    ExecutionProvider::Cuda => "cuda",
                };
                write!(
                    f,
                    "wasi-nn: onnx active (ONNX Runtime {version}, {p}, {})",
                    library.display()
                )?;
                if let Some(n) = note {
                    write!(f, " [{n}]")?;
                }
            }
            OnnxStatus::Disabled { reason } => write!(f, "wasi-nn: onnx disabled ({reason})")?,
        }
        write!(
            f,
            "; guest load {}",
            if self.guest_load { "on" } else { "off" }
        )?;
        f.write_str("; models:")?;
        if self.models.is_empty() {
            f.write_str(" none")?;
        }
        for m in &self.models {
            write!(f, " {}={}", m.name, m.backend)?;
            if !m.available {
                f.write_str("(unavailable)")?;
            }
        }
        Ok(())
    }
}
