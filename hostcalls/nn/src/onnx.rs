//! The local backend: ONNX models run by ONNX Runtime, loaded at run time
//! from a shared library (`ort` with `load-dynamic`; nothing is linked at
//! build time).
//!
//! # Loading the library without panicking
//!
//! `ort` panics (inside `ort::api()`) when the library is missing, is not
//! ONNX Runtime, or is older than the C API it was built for. So before
//! handing the path to `ort`, [`load_runtime`] opens the library itself,
//! looks up `OrtGetApiBase`, reads the version and asks for the API version
//! `ort` needs; any failure disables the backend with a message and `ort` is
//! never touched. ONNX Runtime is process-global in `ort`: the first path
//! that loads wins, and a later [`crate::NnHost`] asking for another one gets
//! the backend disabled with a message rather than a silent mix.
//!
//! # Guarding the backend
//!
//! Graphs come from `wasmtime-wasi-nn`'s `OnnxBackend`, wrapped in
//! [`GuardedGraph`] because that backend trusts guest tensors in ways that
//! would panic the host: a non-`fp32` input reaches `unimplemented!`, and an
//! `fp32` input whose byte length is not a multiple of four reaches an
//! `unwrap`. The wrapper rejects such tensors with an error to the guest
//! (input type `fp32` only; `data.len() == 4 × product(dims)`), and catches
//! any other panic from the backend, turning it into an error too. A
//! poisoned session mutex after such a panic makes later calls on that graph
//! fail the same way instead of panicking.
//!
//! ONNX sessions are shared by every session of the worker (one load, many
//! sessions) behind `wasmtime-wasi-nn`'s mutex, so concurrent inferences on
//! the same model run one at a time.

use crate::config::ExecutionProvider;
use crate::error::{Failure, FailureCode};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner, Id,
    NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding, TensorType};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

/// The 255-byte classifier from `examples/nn-models`, used to probe whether
/// the CUDA provider really initialises.
const PROBE_MODEL: &[u8] = include_bytes!("../../../examples/nn-models/classify.onnx");

/// ONNX Runtime as loaded in this process.
#[derive(Clone, Debug)]
pub(crate) struct OrtRuntime {
    /// Canonical path of the library.
    pub library: PathBuf,
    /// Its version string (e.g. `1.22.1`).
    pub version: String,
}

struct Loaded {
    runtime: OrtRuntime,
    /// Keeps our handle open for the process's life, so the library is
    /// never unloaded under `ort`.
    _lib: libloading::Library,
}

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

/// Loads ONNX Runtime from `path` once per process (see the module docs).
/// Returns a message fit for [`crate::NnHost::report`] on failure.
pub(crate) fn load_runtime(path: &Path) -> Result<OrtRuntime, String> {
    let library = path.canonicalize().map_err(|e| {
        format!(
            "ONNX Runtime library {} not usable: {e} (run scripts/setup-ort.sh, or set ORT_DYLIB_PATH / onnx_library)",
            path.display()
        )
    })?;
    let mut loaded = LOADED
        .lock()
        .map_err(|_| "ONNX Runtime loader state poisoned".to_string())?;
    if let Some(l) = loaded.as_ref() {
        if l.runtime.library == library {
            return Ok(l.runtime.clone());
        }
        return Err(format!(
            "ONNX Runtime is already loaded from {} in this process; {} is ignored",
            l.runtime.library.display(),
            library.display()
        ));
    }
    let (lib, version) = precheck(&library)?;
    let committed = catch_unwind(|| {
        ort::init_from(library.display().to_string())
            .with_name("wasm-sandbox")
            .commit()
    });
    match committed {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(format!(
                "ONNX Runtime {} failed to initialise: {e}",
                library.display()
            ));
        }
        Err(_) => {
            return Err(format!(
                "ONNX Runtime {} panicked while initialising",
                library.display()
            ));
        }
    }
    let runtime = OrtRuntime { library, version };
    *loaded = Some(Loaded {
        runtime: runtime.clone(),
        _lib: lib,
    });
    Ok(runtime)
}

/// Opens the library and checks it is an ONNX Runtime that offers the C API
/// version `ort` was built for.
fn precheck(library: &Path) -> Result<(libloading::Library, String), String> {
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    let shown = library.display();
    // SAFETY: loading a shared library runs its initialisers; the path is the
    // operator's configured ONNX Runtime, which `ort` would load anyway. This
    // only moves the load earlier, where a failure is an error, not a panic.
    let lib = unsafe { libloading::Library::new(library) }
        .map_err(|e| format!("cannot load ONNX Runtime library {shown}: {e}"))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime
    // release (it is the C API's stable entry point).
    let get_base = unsafe { lib.get::<GetApiBase>(b"OrtGetApiBase\0") }
        .map_err(|e| format!("{shown} is not ONNX Runtime (no OrtGetApiBase): {e}"))?;
    // SAFETY: calling the entry point has no preconditions; it returns a
    // pointer to a static struct or null.
    let base = unsafe { get_base() };
    if base.is_null() {
        return Err(format!("{shown}: OrtGetApiBase returned null"));
    }
    // SAFETY: `base` is non-null and points at the library's static
    // `OrtApiBase`, whose two function pointers take no state.
    let (version, api) = unsafe {
        let base = &*base;
        let v = (base.GetVersionString)();
        let version = if v.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned()
        };
        (version, (base.GetApi)(ort::sys::ORT_API_VERSION))
    };
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if api.is_null() || minor < ort::MINOR_VERSION {
        return Err(format!(
            "ONNX Runtime {version} at {shown} is too old: version 1.{} or newer is needed",
            ort::MINOR_VERSION
        ));
    }
    Ok((lib, version))
}

/// Whether the CUDA provider really initialises: a session for the probe
/// model is created with the provider marked `error_on_failure`, so a
/// missing provider library, CUDA or cuDNN shows up here instead of as a
/// silent CPU fallback later. Returns why not on failure.
pub(crate) fn probe_cuda() -> Result<(), String> {
    use ort::execution_providers::{CUDAExecutionProvider, ExecutionProvider as _};
    let attempt = catch_unwind(|| -> Result<(), String> {
        let cuda = CUDAExecutionProvider::default();
        if !cuda.is_available().map_err(|e| e.to_string())? {
            return Err("this ONNX Runtime build has no CUDA execution provider".into());
        }
        ort::session::Session::builder()
            .and_then(|b| b.with_execution_providers([cuda.build().error_on_failure()]))
            .and_then(|b| b.commit_from_memory(PROBE_MODEL))
            .map(drop)
            .map_err(|e| format!("the CUDA execution provider failed to start: {e}"))
    });
    attempt.unwrap_or_else(|_| Err("the CUDA execution provider probe panicked".into()))
}

/// The wasi-nn execution target for a provider.
pub(crate) fn target(provider: ExecutionProvider) -> ExecutionTarget {
    match provider {
        ExecutionProvider::Cpu => ExecutionTarget::Cpu,
        ExecutionProvider::Cuda => ExecutionTarget::Gpu,
    }
}

/// Loads one operator-provided model (a `.onnx` file or a directory holding
/// `model.onnx`) and wraps it in [`GuardedGraph`].
pub(crate) fn load_model(path: &Path, provider: ExecutionProvider) -> Result<Graph, String> {
    let file = if path.is_dir() {
        path.join("model.onnx")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    load_bytes(&bytes, target(provider))
}

fn load_bytes(bytes: &[u8], target: ExecutionTarget) -> Result<Graph, String> {
    let mut backend = wasmtime_wasi_nn::backend::onnx::OnnxBackend::default();
    let graph = guard(|| backend.load(&[bytes], target))
        .map_err(|e| format!("{e}: {:#}", source_of(&e)))?;
    Ok(GuardedGraph::wrap(graph))
}

fn source_of(e: &BackendError) -> String {
    match e {
        BackendError::BackendAccess(inner) => format!("{inner:#}"),
        other => other.to_string(),
    }
}

/// Runs `f`, turning a panic into a [`BackendError`].
fn guard<T>(f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Failure::new(
            FailureCode::RuntimeError,
            "the ONNX backend failed (it panicked)",
        )
        .into_backend())
    })
}

fn invalid(msg: impl Into<String>) -> BackendError {
    Failure::new(FailureCode::InvalidArgument, msg).into_backend()
}

/// Rejects the tensors that would make the ONNX backend panic (see the
/// module docs).
fn check_input(t: &Tensor) -> Result<(), BackendError> {
    if t.ty != TensorType::Fp32 {
        return Err(invalid(format!(
            "the ONNX backend takes fp32 input tensors, not {:?}",
            t.ty
        )));
    }
    let elements = t
        .dimensions
        .iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(u64::from(*d)));
    let expected = elements.and_then(|n| n.checked_mul(4));
    if expected != Some(t.data.len() as u64) {
        return Err(invalid(format!(
            "tensor data is {} bytes but dimensions {:?} of fp32 need {}",
            t.data.len(),
            t.dimensions,
            expected.map_or_else(|| "more than u64::MAX".to_string(), |n| n.to_string())
        )));
    }
    Ok(())
}

/// An ONNX graph whose execution contexts validate guest tensors and turn
/// backend panics into errors.
pub(crate) struct GuardedGraph(Graph);

impl GuardedGraph {
    pub(crate) fn wrap(inner: Graph) -> Graph {
        let boxed: Box<dyn BackendGraph> = Box::new(GuardedGraph(inner));
        Graph::from(boxed)
    }
}

impl BackendGraph for GuardedGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let inner = guard(|| self.0.init_execution_context())?;
        let boxed: Box<dyn BackendExecutionContext> = Box::new(GuardedContext(inner));
        Ok(ExecutionContext::from(boxed))
    }
}

struct GuardedContext(ExecutionContext);

impl BackendExecutionContext for GuardedContext {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        check_input(tensor)?;
        guard(|| BackendExecutionContext::set_input(&mut *self.0, id, tensor))
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        guard(|| BackendExecutionContext::get_output(&mut *self.0, id))
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        if let Some(inputs) = &inputs {
            for input in inputs {
                check_input(&input.tensor)?;
            }
        }
        guard(|| BackendExecutionContext::compute(&mut *self.0, inputs))
    }
}

/// The backend behind `graph::load` for guests' own ONNX bytes, offered
/// only with [`crate::NnConfig::allow_guest_load`]. Its graphs are guarded
/// like preloaded ones; directory loading is not offered to guests.
pub(crate) struct GuestOnnxBackend {
    pub(crate) provider: ExecutionProvider,
}

impl BackendInner for GuestOnnxBackend {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Onnx
    }

    fn load(
        &mut self,
        builders: &[&[u8]],
        _target: ExecutionTarget,
    ) -> Result<Graph, BackendError> {
        // The operator's provider choice wins over the guest's target.
        match builders {
            [bytes] => load_bytes(bytes, target(self.provider))
                .map_err(|m| Failure::new(FailureCode::InvalidArgument, m).into_backend()),
            _ => Err(BackendError::InvalidNumberOfBuilders(1, builders.len())),
        }
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_checks_reject_what_would_panic_the_backend() {
        let ok = Tensor::new(vec![1, 4], TensorType::Fp32, vec![0; 16]);
        assert!(check_input(&ok).is_ok());
        let u8s = Tensor::new(vec![1, 4], TensorType::U8, vec![0; 4]);
        assert!(check_input(&u8s).is_err());
        let ragged = Tensor::new(vec![1, 4], TensorType::Fp32, vec![0; 15]);
        assert!(check_input(&ragged).is_err());
        let huge = Tensor::new(
            vec![u32::MAX, u32::MAX, u32::MAX],
            TensorType::Fp32,
            vec![0; 4],
        );
        assert!(check_input(&huge).is_err());
    }

    #[test]
    fn missing_library_is_an_error_not_a_panic() {
        let err = load_runtime(Path::new("/nonexistent/libonnxruntime.so.1")).unwrap_err();
        assert!(err.contains("/nonexistent/libonnxruntime.so.1"), "{err}");
    }

    #[test]
    fn a_library_that_is_not_onnx_runtime_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libonnxruntime.so.1.22.1");
        std::fs::write(&fake, b"not an ELF file").unwrap();
        let err = load_runtime(&fake).unwrap_err();
        assert!(err.contains("cannot load ONNX Runtime library"), "{err}");
    }
}
