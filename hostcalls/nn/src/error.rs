//! Errors: [`NnError`] for the embedder (configuration, start-up), and
//! [`Failure`] for what a guest sees as a wasi-nn `error` resource.

use std::fmt;

/// Start-up errors of [`crate::NnHost::new`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnError {
    /// The configuration is invalid (bad name, URL, missing key variable...).
    #[error("wasi-nn config: {0}")]
    Config(String),
    /// A preloaded model failed to load while ONNX Runtime itself is usable.
    #[error("wasi-nn: preloaded model {name:?}: {message}")]
    Model {
        /// The model's registry name.
        name: String,
        /// Why it failed.
        message: String,
    },
}

/// `Result` with [`NnError`].
pub type Result<T, E = NnError> = std::result::Result<T, E>;

/// The wasi-nn `error-code` a [`Failure`] is reported with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCode {
    /// The guest passed a bad tensor or argument.
    InvalidArgument,
    /// The model's encoding has no backend here.
    InvalidEncoding,
    /// A remote endpoint did not answer in time.
    Timeout,
    /// Inference or the endpoint failed.
    RuntimeError,
    /// The operation is not offered.
    UnsupportedOperation,
    /// A result is larger than the host allows.
    TooLarge,
    /// No model by that name.
    NotFound,
    /// Refused by policy: a per-session quota is spent, or guest model
    /// loading is disabled.
    Security,
}

/// A guest-visible failure: a code and a message. Messages name models,
/// never endpoint URLs or credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The wasi-nn error code.
    pub code: FailureCode,
    /// The text of the error resource's `data`.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: FailureCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Wraps the failure into the backend traits' error type; the WIT glue
    /// unwraps it again to report the right code.
    pub(crate) fn into_backend(self) -> wasmtime_wasi_nn::backend::BackendError {
        wasmtime_wasi_nn::backend::BackendError::BackendAccess(wasmtime::Error::new(self))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}
