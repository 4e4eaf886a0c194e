//! Guest vs native inference overhead on the CPU, printed as a markdown
//! table (p50 / p99 per inference, and the guest/native ratio).
//!
//! ```text
//! . .ort/env   # or scripts/setup-ort.sh first
//! cargo bench -p wasm-sandbox-tests --bench nn_overhead            # release
//! cargo test  -p wasm-sandbox-tests --bench nn_overhead -- 5000    # quicker build
//! ```
//!
//! The optional argument is the number of timed inferences per row (default
//! 2000, after 200 warm-ups). Rows, all on the 255-byte classifier
//! (`examples/nn-models/classify.onnx`, [1,4] -> [1,3] x2):
//!
//! * **native ort**: `ort::Session::run` in this process: build the input
//!   tensor, run, copy both outputs out;
//! * **host backend**: the same through `wasmtime-wasi-nn`'s ONNX backend as
//!   `wasm-sandbox-hostcalls-nn` wraps it, no wasm (what the host adds besides the
//!   guest);
//! * **guest**: the `nn-classify` component's `--bench` loop (built by
//!   `tests/build.rs` as `NN_CLASSIFY_WASM`), timed inside
//!   the guest: tensor creation, `compute`, reading both outputs;
//! * **guest, whole run**: a fresh store, instantiation, `load-by-name`, one
//!   inference, output printed, store dropped (per-call cost of running the
//!   skill component), timed by the host.

use std::time::{Duration, Instant};
use wasm_sandbox_hostcalls_nn::{
    NnConfig, NnHost, PreloadModel, WasiNnCtx, WasiNnView, add_to_linker, example_models,
};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    nn: WasiNnCtx,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

const X: [f32; 4] = [1.0, 2.0, 3.0, 4.0];
const WARMUP: usize = 200;

fn stats(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let pick = |p: usize| {
        t[((t.len() * p).div_ceil(100))
            .saturating_sub(1)
            .min(t.len() - 1)]
        .as_nanos() as f64
            / 1000.0
    };
    (pick(50), pick(99))
}

fn time(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..WARMUP {
        f();
    }
    (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect()
}

fn native(model: &[u8], n: usize) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    use ort::session::{Session, builder::GraphOptimizationLevel};
    let mut session = Session::builder()?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .commit_from_memory(model)?;
    let mut err = None;
    let times = time(n, || {
        let r = (|| -> ort::Result<Vec<f32>> {
            let input = ort::value::Tensor::<f32>::from_array((vec![1i64, 4], X.to_vec()))?;
            let out = session.run(ort::inputs!["x" => input])?;
            let (_, logits) = out["logits"].try_extract_tensor::<f32>()?;
            let (_, probs) = out["probs"].try_extract_tensor::<f32>()?;
            Ok(logits.iter().chain(probs).copied().collect())
        })();
        match r {
            Ok(v) => {
                std::hint::black_box(v);
            }
            Err(e) => err = Some(e),
        }
    });
    match err {
        Some(e) => Err(e.into()),
        None => Ok(times),
    }
}

fn host_backend(model: &[u8], n: usize) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    use wasmtime_wasi_nn::backend::{BackendInner, NamedTensor};
    use wasmtime_wasi_nn::wit::{ExecutionTarget, TensorType};
    let mut backend = wasmtime_wasi_nn::backend::onnx::OnnxBackend::default();
    let graph = backend.load(&[model], ExecutionTarget::Cpu)?;
    let mut ctx = graph.init_execution_context()?;
    let bytes: Vec<u8> = X.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut err = None;
    let times = time(n, || {
        let input = NamedTensor {
            name: "x".into(),
            tensor: wasmtime_wasi_nn::Tensor::new(vec![1, 4], TensorType::Fp32, bytes.clone()),
        };
        match ctx.compute_with_io(vec![input]) {
            Ok(out) => {
                std::hint::black_box(out);
            }
            Err(e) => err = Some(e),
        }
    });
    match err {
        Some(e) => Err(e.into()),
        None => Ok(times),
    }
}

fn run_guest(
    engine: &Engine,
    pre: &CommandPre<State>,
    nn: WasiNnCtx,
    args: &[&str],
) -> Result<String, String> {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut b = WasiCtx::builder();
    b.arg("nn-classify")
        .args(args)
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    let mut store = Store::new(
        engine,
        State {
            wasi: b.build(),
            table: ResourceTable::new(),
            nn,
        },
    );
    let cmd = pre.instantiate(&mut store).map_err(|e| e.to_string())?;
    match cmd.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => Ok(String::from_utf8_lossy(&stdout.contents()).into_owned()),
        _ => Err(String::from_utf8_lossy(&stderr.contents()).into_owned()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ort");
            std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so.1."))
                })
        })
        .ok_or("ONNX Runtime not found: run scripts/setup-ort.sh or set ORT_DYLIB_PATH")?;
    let host = NnHost::new(NnConfig {
        onnx_library: Some(lib),
        preload: vec![PreloadModel {
            name: "classify".into(),
            path: example_models::CLASSIFY_ONNX.into(),
        }],
        ..NnConfig::default()
    })?;
    let model = std::fs::read(example_models::CLASSIFY_ONNX)?;

    let native = stats(native(&model, n)?);
    let backend = stats(host_backend(&model, n)?);

    let engine = Engine::default();
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    add_to_linker(&mut linker, |s: &mut State| {
        WasiNnView::new(&mut s.table, &mut s.nn)
    })?;
    let component = Component::from_file(&engine, env!("NN_CLASSIFY_WASM"))?;
    let pre = CommandPre::new(linker.instantiate_pre(&component)?)?;
    let args = [
        "--bench".to_string(),
        n.to_string(),
        "1".into(),
        "2".into(),
        "3".into(),
        "4".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_guest(&engine, &pre, host.session_ctx(), &args)?;
    let line = out.lines().nth(1).ok_or("no bench line from the guest")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let guest = (
        v["bench"]["p50_ns"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        v["bench"]["p99_ns"].as_f64().unwrap_or(f64::NAN) / 1000.0,
    );
    let runs = (n / 10).max(50);
    let mut failed = None;
    let whole = stats(time(runs, || {
        if let Err(e) = run_guest(&engine, &pre, host.session_ctx(), &["1", "2", "3", "4"]) {
            failed = Some(e);
        }
    }));
    if let Some(e) = failed {
        return Err(e.into());
    }

    println!("{}\n", host.report());
    println!(
        "classify.onnx ([1,4] -> logits, probs [1,3]), CPU, {n} inferences per row after {WARMUP} warm-ups\n"
    );
    println!("| path | p50 µs | p99 µs | p50 / native |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, (p50, p99): (f64, f64)| {
        println!("| {name} | {p50:.2} | {p99:.2} | {:.2}x |", p50 / native.0);
    };
    row("native ort (Session::run)", native);
    row("host backend (wasi-nn ONNX, no wasm)", backend);
    row("guest (nn-classify, per inference)", guest);
    row(
        &format!("guest, whole run (instantiate + 1 inference; {runs} runs)"),
        whole,
    );
    Ok(())
}
