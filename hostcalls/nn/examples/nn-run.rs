//! `nn-run`: runs a `wasi:cli/command` guest component with wasi-nn from a
//! JSON [`NnConfig`], the way a worker session would (WASI p2 + this crate's
//! `add_to_linker`), and passes on its stdout, stderr and exit status. Used
//! by `scripts/gpu-check.sh` on machines without a Rust toolchain, and handy
//! for trying a skill component against a configuration.
//!
//! ```text
//! nn-run [--config nn.json] [--report] GUEST.wasm [GUEST ARGS...]
//! cargo run -p wasm-sandbox-hostcalls-nn --example nn-run -- --config nn.json guest.wasm --model classify 1 2 3 4
//! ```
//!
//! The guest gets no preopens and no environment; stdin is the runner's.

use std::io::{Read, Write};
use std::process::ExitCode;
use wasm_sandbox_hostcalls_nn::{NnConfig, NnHost, WasiNnCtx, WasiNnView, add_to_linker};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
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

fn run() -> Result<u8, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let mut config = NnConfig::default();
    let mut report = false;
    while let Some(a) = args.peek() {
        match a.as_str() {
            "--config" => {
                args.next();
                let path = args.next().ok_or("--config needs a file")?;
                config = serde_json::from_slice(&std::fs::read(&path)?)
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            "--report" => {
                args.next();
                report = true;
            }
            _ => break,
        }
    }
    let wasm = args
        .next()
        .ok_or("usage: nn-run [--config nn.json] [--report] GUEST.wasm [ARGS...]")?;
    let host = NnHost::new(config)?;
    if report {
        eprintln!("{}", host.report());
    }
    let engine = Engine::default();
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    add_to_linker(&mut linker, |s: &mut State| {
        WasiNnView::new(&mut s.table, &mut s.nn)
    })?;
    let component = Component::from_file(&engine, &wasm)?;

    let mut stdin = Vec::new();
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        std::io::stdin().read_to_end(&mut stdin)?;
    }
    let stdout = MemoryOutputPipe::new(64 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut b = WasiCtx::builder();
    b.arg(&wasm).args(&args.collect::<Vec<_>>());
    b.stdin(MemoryInputPipe::new(stdin))
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    let mut store = Store::new(
        &engine,
        State {
            wasi: b.build(),
            table: ResourceTable::new(),
            nn: host.session_ctx(),
        },
    );
    let command = Command::instantiate(&mut store, &component, &linker)?;
    let code = match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => u8::try_from(exit.0).unwrap_or(1),
            None => {
                eprintln!("nn-run: the guest trapped: {e:?}");
                125
            }
        },
    };
    std::io::stdout().write_all(&stdout.contents())?;
    std::io::stderr().write_all(&stderr.contents())?;
    Ok(code)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("nn-run: {e}");
            ExitCode::from(126)
        }
    }
}
