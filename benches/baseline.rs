//! The file-tools component through bare wasmtime + wasmtime-wasi: a plain
//! engine (default config), `Linker`, `InstancePre`, one preopen. The delta
//! to the session numbers is wasm-sandbox's own overhead.

use std::path::Path;
use wasm_sandbox_benches::measure;
use wasm_sandbox_runtime::FILE_TOOLS_COMPONENT;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ path: "../hostcalls/wit", world: "tools" });

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasm_sandbox::tools::host::Host for State {
    fn read_link(&mut self, _path: String) -> Result<String, wasm_sandbox::tools::host::LinkError> {
        Err(wasm_sandbox::tools::host::LinkError::NotALink)
    }
}

fn store(engine: &Engine, ws: &Path) -> Store<State> {
    let mut b = WasiCtx::builder();
    b.allow_blocking_current_thread(true);
    b.preopened_dir(ws, "/workspace", FsPerms::ReadWrite)
        .expect("preopen");
    Store::new(
        engine,
        State {
            wasi: b.build(),
            table: ResourceTable::new(),
        },
    )
}

pub fn run(n: usize, ws: &Path) {
    let engine = Engine::default();
    let component = Component::new(&engine, FILE_TOOLS_COMPONENT).expect("compile");
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("link");
    wasm_sandbox::tools::host::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
        &mut linker,
        |s| s,
    )
    .expect("link host");
    let pre = ToolsPre::new(linker.instantiate_pre(&component).expect("pre")).expect("pre");

    let stats = measure("bare: store + preopen + instantiate", 50, n, || {
        let mut s = store(&engine, ws);
        let t = pre.instantiate(&mut s).expect("instantiate");
        std::hint::black_box(&t);
    });
    println!("{}", stats.row());

    let mut s = store(&engine, ws);
    let tools = pre.instantiate(&mut s).expect("instantiate");
    use exports::wasm_sandbox::tools::file_tools::{Block, Cap, Tool, ToolConfig};
    let config = ToolConfig {
        workdir: "/workspace".into(),
        allowed_roots: Vec::new(),
        read_only_roots: Vec::new(),
        max_file_bytes: Cap::Default,
        max_image_base64_bytes: Cap::Default,
        max_pdf_bytes: Cap::Default,
    };
    let input = r#"{"file_path":"file4k.txt"}"#;
    let stats = measure("bare: read 4 KiB", 100, n, || {
        let out = tools
            .wasm_sandbox_tools_file_tools()
            .call_call(&mut s, Tool::Read, input, &config)
            .expect("call");
        assert!(matches!(&out.content[..], [Block::Text(t)] if t.contains("abcdefghijklmno")));
    });
    println!("{}", stats.row());
}
