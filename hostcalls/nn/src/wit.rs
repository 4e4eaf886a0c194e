//! The `wasi:nn@0.2.0-rc-2024-10-28` host interface (WIT in `wit/`, the copy
//! shipped with `wasmtime-wasi-nn` 48.0.8), over `wasmtime-wasi-nn`'s backend
//! types.
//!
//! This crate has its own glue rather than `wasmtime_wasi_nn::wit` because
//! that one reports every inference failure as `runtime-error` with the text
//! "Failed while accessing backend", dropping the reason. Here a failure
//! keeps its code and message (see [`crate::Failure`]): an unknown name is
//! `not-found`, a bad tensor `invalid-argument`, a slow endpoint `timeout`,
//! a spent quota or a refused `load` `security`, anything else
//! `runtime-error`. Nothing a guest does through this interface makes the
//! host panic; the only traps are the guest's own misuse of handles and
//! going over the per-store tensor budget (`tensor` constructors cannot
//! return an error), which end that guest's call, not the worker.

use crate::error::{Failure, FailureCode};
use crate::onnx::GuestOnnxBackend;
use std::collections::HashMap;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi_nn::backend::{BackendError, BackendInner, NamedTensor as BackendNamedTensor};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

mod generated {
    wasmtime::component::bindgen!({
        world: "ml",
        path: "wit/wasi-nn.wit",
        with: {
            "wasi:nn/graph.graph": wasmtime_wasi_nn::Graph,
            "wasi:nn/tensor.tensor": wasmtime_wasi_nn::Tensor,
            "wasi:nn/inference.graph-execution-context": wasmtime_wasi_nn::ExecutionContext,
            "wasi:nn/errors.error": crate::error::Failure,
        },
        imports: { default: trappable },
    });
}

use generated::wasi::nn::{errors, graph, inference, tensor};

/// A store's wasi-nn state: the models its guest may load by name, the
/// optional guest-load backend, and the tensor budget. Made by
/// [`crate::NnSession::ctx`]; put one in each `Store`'s data.
pub struct WasiNnCtx {
    pub(crate) graphs: HashMap<String, Graph>,
    pub(crate) guest_backend: Option<GuestOnnxBackend>,
    pub(crate) max_tensor_bytes: u64,
    live_tensor_bytes: u64,
}

impl WasiNnCtx {
    pub(crate) fn new(
        graphs: HashMap<String, Graph>,
        guest_backend: Option<GuestOnnxBackend>,
        max_tensor_bytes: u64,
    ) -> WasiNnCtx {
        WasiNnCtx {
            graphs,
            guest_backend,
            max_tensor_bytes,
            live_tensor_bytes: 0,
        }
    }

    /// The names a guest can load, sorted.
    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.graphs.keys().cloned().collect();
        names.sort();
        names
    }
}

impl std::fmt::Debug for WasiNnCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiNnCtx")
            .field("models", &self.model_names())
            .field("guest_load", &self.guest_backend.is_some())
            .field("live_tensor_bytes", &self.live_tensor_bytes)
            .finish()
    }
}

/// Borrowed view of a store's wasi-nn state and resource table, handed to
/// [`add_to_linker`]'s closure.
pub struct WasiNnView<'a> {
    ctx: &'a mut WasiNnCtx,
    table: &'a mut ResourceTable,
}

impl<'a> WasiNnView<'a> {
    /// A view over `ctx` using the store's `table` (the same table WASI uses).
    pub fn new(table: &'a mut ResourceTable, ctx: &'a mut WasiNnCtx) -> Self {
        WasiNnView { ctx, table }
    }
}

struct HasWasiNnView;

impl HasData for HasWasiNnView {
    type Data<'a> = WasiNnView<'a>;
}

/// Adds `wasi:nn@0.2.0-rc-2024-10-28` (graph, tensor, inference, errors) to a
/// component linker; `f` projects a store's data to its [`WasiNnView`]:
///
/// ```ignore
/// wasm_sandbox_hostcalls_nn::add_to_linker(&mut linker, |s: &mut SessionState| {
///     WasiNnView::new(&mut s.table, &mut s.nn)
/// })?;
/// ```
pub fn add_to_linker<T: 'static>(
    l: &mut Linker<T>,
    f: fn(&mut T) -> WasiNnView<'_>,
) -> wasmtime::Result<()> {
    graph::add_to_linker::<T, HasWasiNnView>(l, f)?;
    tensor::add_to_linker::<T, HasWasiNnView>(l, f)?;
    inference::add_to_linker::<T, HasWasiNnView>(l, f)?;
    errors::add_to_linker::<T, HasWasiNnView>(l, f)?;
    Ok(())
}

type Outcome<T> = wasmtime::Result<Result<Resource<T>, Resource<Failure>>>;

impl WasiNnView<'_> {
    fn fail<T>(&mut self, code: FailureCode, message: impl Into<String>) -> Outcome<T> {
        let failure = Failure::new(code, message);
        tracing::debug!(code = ?failure.code, message = %failure.message, "wasi-nn failure returned to guest");
        Ok(Err(self.table.push(failure)?))
    }

    fn fail_list(
        &mut self,
        failure: Failure,
    ) -> wasmtime::Result<Result<Vec<inference::NamedTensor>, Resource<Failure>>> {
        tracing::debug!(code = ?failure.code, message = %failure.message, "wasi-nn failure returned to guest");
        Ok(Err(self.table.push(failure)?))
    }

    /// Accounts for `n` more bytes of live tensors; `false` when over budget.
    fn reserve(&mut self, n: usize) -> bool {
        let total = self.ctx.live_tensor_bytes.saturating_add(n as u64);
        if total > self.ctx.max_tensor_bytes {
            return false;
        }
        self.ctx.live_tensor_bytes = total;
        true
    }

    fn release(&mut self, n: usize) {
        self.ctx.live_tensor_bytes = self.ctx.live_tensor_bytes.saturating_sub(n as u64);
    }
}

/// The guest-facing form of a backend error: [`Failure`]s keep their code,
/// other errors (from ONNX Runtime) become `runtime-error` with their text.
fn to_failure(e: BackendError) -> Failure {
    match e {
        BackendError::BackendAccess(inner) => match inner.downcast::<Failure>() {
            Ok(f) => f,
            Err(inner) => Failure::new(FailureCode::RuntimeError, format!("{inner:#}")),
        },
        BackendError::InvalidNumberOfBuilders(..) | BackendError::UnsupportedTensorType(_) => {
            Failure::new(FailureCode::InvalidArgument, e.to_string())
        }
        other => Failure::new(FailureCode::RuntimeError, other.to_string()),
    }
}

impl graph::Host for WasiNnView<'_> {
    fn load(
        &mut self,
        builders: Vec<graph::GraphBuilder>,
        encoding: graph::GraphEncoding,
        _target: graph::ExecutionTarget,
    ) -> Outcome<Graph> {
        if encoding != graph::GraphEncoding::Onnx {
            return self.fail(
                FailureCode::InvalidEncoding,
                format!("no backend for {encoding:?} models on this host"),
            );
        }
        let Some(backend) = self.ctx.guest_backend.as_mut() else {
            return self.fail(
                FailureCode::Security,
                "loading guest-provided models is disabled on this host; use load-by-name",
            );
        };
        let slices: Vec<&[u8]> = builders.iter().map(Vec::as_slice).collect();
        // The target is ignored: the operator's execution provider applies.
        match backend.load(&slices, wasmtime_wasi_nn::wit::ExecutionTarget::Cpu) {
            Ok(graph) => Ok(Ok(self.table.push(graph)?)),
            Err(e) => {
                let failure = to_failure(e);
                Ok(Err(self.table.push(failure)?))
            }
        }
    }

    fn load_by_name(&mut self, name: String) -> Outcome<Graph> {
        match self.ctx.graphs.get(&name) {
            Some(graph) => {
                let graph = graph.clone();
                Ok(Ok(self.table.push(graph)?))
            }
            None => self.fail(
                FailureCode::NotFound,
                format!("no model named {name:?} on this host"),
            ),
        }
    }
}

impl graph::HostGraph for WasiNnView<'_> {
    fn init_execution_context(&mut self, graph: Resource<Graph>) -> Outcome<ExecutionContext> {
        let graph = self.table.get(&graph)?;
        match graph.init_execution_context() {
            Ok(ctx) => Ok(Ok(self.table.push(ctx)?)),
            Err(e) => {
                let failure = to_failure(e);
                Ok(Err(self.table.push(failure)?))
            }
        }
    }

    fn drop(&mut self, graph: Resource<Graph>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl inference::Host for WasiNnView<'_> {}

impl inference::HostGraphExecutionContext for WasiNnView<'_> {
    fn compute(
        &mut self,
        exec: Resource<ExecutionContext>,
        inputs: Vec<inference::NamedTensor>,
    ) -> wasmtime::Result<Result<Vec<inference::NamedTensor>, Resource<Failure>>> {
        let mut named = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            let tensor = self.table.delete(t)?;
            self.release(tensor.data.len());
            named.push(BackendNamedTensor { name, tensor });
        }
        let exec = self.table.get_mut(&exec)?;
        let outputs = match exec.compute_with_io(named) {
            Ok(outputs) => outputs,
            Err(e) => return self.fail_list(to_failure(e)),
        };
        let bytes: usize = outputs.iter().map(|o| o.tensor.data.len()).sum();
        if !self.reserve(bytes) {
            return self.fail_list(Failure::new(
                FailureCode::TooLarge,
                format!("the outputs ({bytes} bytes) exceed this store's tensor budget"),
            ));
        }
        let mut result = Vec::with_capacity(outputs.len());
        for BackendNamedTensor { name, tensor } in outputs {
            result.push((name, self.table.push(tensor)?));
        }
        Ok(Ok(result))
    }

    fn drop(&mut self, exec: Resource<ExecutionContext>) -> wasmtime::Result<()> {
        self.table.delete(exec)?;
        Ok(())
    }
}

impl tensor::Host for WasiNnView<'_> {}

impl tensor::HostTensor for WasiNnView<'_> {
    fn new(
        &mut self,
        dimensions: tensor::TensorDimensions,
        ty: tensor::TensorType,
        data: tensor::TensorData,
    ) -> wasmtime::Result<Resource<Tensor>> {
        if !self.reserve(data.len()) {
            wasmtime::bail!(
                "wasi-nn: the guest's live tensors would exceed this store's budget of {} bytes",
                self.ctx.max_tensor_bytes
            );
        }
        Ok(self
            .table
            .push(Tensor::new(dimensions, to_backend_type(ty), data))?)
    }

    fn dimensions(&mut self, t: Resource<Tensor>) -> wasmtime::Result<tensor::TensorDimensions> {
        Ok(self.table.get(&t)?.dimensions.clone())
    }

    fn ty(&mut self, t: Resource<Tensor>) -> wasmtime::Result<tensor::TensorType> {
        Ok(from_backend_type(self.table.get(&t)?.ty))
    }

    fn data(&mut self, t: Resource<Tensor>) -> wasmtime::Result<tensor::TensorData> {
        Ok(self.table.get(&t)?.data.clone())
    }

    fn drop(&mut self, t: Resource<Tensor>) -> wasmtime::Result<()> {
        let tensor = self.table.delete(t)?;
        self.release(tensor.data.len());
        Ok(())
    }
}

impl errors::Host for WasiNnView<'_> {}

impl errors::HostError for WasiNnView<'_> {
    fn code(&mut self, e: Resource<Failure>) -> wasmtime::Result<errors::ErrorCode> {
        use errors::ErrorCode as C;
        Ok(match self.table.get(&e)?.code {
            FailureCode::InvalidArgument => C::InvalidArgument,
            FailureCode::InvalidEncoding => C::InvalidEncoding,
            FailureCode::Timeout => C::Timeout,
            FailureCode::RuntimeError => C::RuntimeError,
            FailureCode::UnsupportedOperation => C::UnsupportedOperation,
            FailureCode::TooLarge => C::TooLarge,
            FailureCode::NotFound => C::NotFound,
            FailureCode::Security => C::Security,
        })
    }

    fn data(&mut self, e: Resource<Failure>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.message.clone())
    }

    fn drop(&mut self, e: Resource<Failure>) -> wasmtime::Result<()> {
        self.table.delete(e)?;
        Ok(())
    }
}

fn to_backend_type(t: tensor::TensorType) -> wasmtime_wasi_nn::wit::TensorType {
    use tensor::TensorType as G;
    use wasmtime_wasi_nn::wit::TensorType as B;
    match t {
        G::Fp16 => B::Fp16,
        G::Fp32 => B::Fp32,
        G::Fp64 => B::Fp64,
        G::Bf16 => B::Bf16,
        G::U8 => B::U8,
        G::I32 => B::I32,
        G::I64 => B::I64,
    }
}

fn from_backend_type(t: wasmtime_wasi_nn::wit::TensorType) -> tensor::TensorType {
    use tensor::TensorType as G;
    use wasmtime_wasi_nn::wit::TensorType as B;
    match t {
        B::Fp16 => G::Fp16,
        B::Fp32 => G::Fp32,
        B::Fp64 => G::Fp64,
        B::Bf16 => G::Bf16,
        B::U8 => G::U8,
        B::I32 => G::I32,
        B::I64 => G::I64,
    }
}
