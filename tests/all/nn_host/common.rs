//! Shared test helpers: run the example guest components (built by `tests/build.rs`)
//! under wasmtime with WASI p2 and `wasm-sandbox-hostcalls-nn`'s wasi-nn, and find
//! ONNX Runtime.

#![allow(dead_code, reason = "each test module uses a subset")]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasm_sandbox_hostcalls_nn::{WasiNnCtx, WasiNnView, add_to_linker};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// A store's data, as an embedder would lay it out.
pub struct State {
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

/// What a guest run produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

pub struct Guests {
    pub engine: Engine,
    pub classify: CommandPre<State>,
    pub remote: CommandPre<State>,
}

/// The two example guests, compiled once per test binary.
pub fn guests() -> &'static Guests {
    static G: OnceLock<Guests> = OnceLock::new();
    G.get_or_init(|| {
        let engine = Engine::default();
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        add_to_linker(&mut linker, |s: &mut State| {
            WasiNnView::new(&mut s.table, &mut s.nn)
        })
        .unwrap();
        let pre = |path: &str| {
            let component = Component::from_file(&engine, path).unwrap();
            CommandPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
        };
        Guests {
            classify: pre(env!("NN_CLASSIFY_WASM")),
            remote: pre(env!("NN_REMOTE_WASM")),
            engine: engine.clone(),
        }
    })
}

/// Runs `pre` to completion with `args` (argv[0] is added), `stdin`, an
/// optional read-only preopen of `dir` at `/data`, and `nn`. A trap is a
/// test failure: the host must never trap the guest for an nn error.
pub fn run(
    pre: &CommandPre<State>,
    nn: WasiNnCtx,
    args: &[&str],
    stdin: &[u8],
    dir: Option<&Path>,
) -> Output {
    try_run(pre, nn, args, stdin, dir).unwrap_or_else(|e| panic!("the guest trapped: {e}"))
}

/// Like [`run`], but a trap is returned as its message (with stderr).
pub fn try_run(
    pre: &CommandPre<State>,
    nn: WasiNnCtx,
    args: &[&str],
    stdin: &[u8],
    dir: Option<&Path>,
) -> Result<Output, String> {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut b = WasiCtx::builder();
    b.arg("guest");
    for a in args {
        b.arg(a);
    }
    b.stdin(MemoryInputPipe::new(stdin.to_vec()))
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    if let Some(d) = dir {
        b.preopened_dir(d, "/data", FsPerms::ReadOnly).unwrap();
    }
    let mut store = Store::new(
        &guests().engine,
        State {
            wasi: b.build(),
            table: ResourceTable::new(),
            nn,
        },
    );
    let command = pre.instantiate(&mut store).unwrap();
    let code = match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => exit.0,
            None => {
                return Err(format!(
                    "{e:?}\nstderr: {}",
                    String::from_utf8_lossy(&stderr.contents())
                ));
            }
        },
    };
    Ok(Output {
        code,
        stdout: stdout.contents().to_vec(),
        stderr: String::from_utf8_lossy(&stderr.contents()).into_owned(),
    })
}

/// ONNX Runtime's library: `$ORT_DYLIB_PATH`, else `.ort/libonnxruntime.so.*`
/// at the repository root (made by `scripts/setup-ort.sh`).
pub fn ort_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ort");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("libonnxruntime.so.1.") && p.is_file()
        })
        .collect();
    libs.sort();
    libs.pop()
}

/// Like [`ort_library`], but a test failure with instructions when absent:
/// the CPU tests are part of CI, which runs `scripts/setup-ort.sh` first.
pub fn require_ort() -> PathBuf {
    ort_library().expect(
        "ONNX Runtime not found: run scripts/setup-ort.sh (puts it in .ort/) or set ORT_DYLIB_PATH",
    )
}

/// The classifier's weights, as in examples/nn-models/make_models.py.
pub const W: [[f32; 3]; 4] = [
    [0.5, -1.0, 0.25],
    [1.0, 0.5, -0.5],
    [-0.25, 0.75, 1.0],
    [2.0, -0.5, 0.125],
];
pub const B: [f32; 3] = [0.1, -0.2, 0.3];

/// logits and softmax probabilities of the classifier for `x`.
pub fn expected(x: [f32; 4]) -> (Vec<f32>, Vec<f32>) {
    let logits: Vec<f32> = (0..3)
        .map(|j| (0..4).map(|i| x[i] * W[i][j]).sum::<f32>() + B[j])
        .collect();
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    (logits, exps.iter().map(|e| e / sum).collect())
}

/// The `data` of output `name` in nn-classify's JSON line.
pub fn output(json: &serde_json::Value, name: &str) -> Vec<f32> {
    let outs = json["outputs"].as_array().expect("outputs array");
    let o = outs
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {json}"));
    o["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

pub fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "got {got:?}, want {want:?}"
        );
    }
}
