//! Shared fixtures: one `Runtime` per test binary (compiled once), and
//! session helpers.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasm_sandbox_runtime::{
    Access, CommandComponent, MemoryMountPath, Mount, Runtime, RuntimeConfig, Session, SessionSpec,
    ToolCall, ToolResult,
};

/// The runtime shared by all tests of this binary.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(config()).expect("runtime"))
}

/// The default configuration, with the tests' own sandbox init helper.
pub fn config() -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config.bash.init_path = Some(env!("CARGO_BIN_EXE_test-sandbox-init").into());
    config.wasm_run.compiler_path = Some(env!("CARGO_BIN_EXE_test-compile").into());
    config
}

/// The raw filesystem probe guest, compiled once.
pub fn fs_probe() -> &'static CommandComponent {
    static C: OnceLock<CommandComponent> = OnceLock::new();
    C.get_or_init(|| {
        let wasm = std::fs::read(env!("FS_PROBE_WASM")).expect("fs_probe.wasm");
        runtime().load_command(&wasm).expect("load fs_probe")
    })
}

/// A session in a fresh temp dir, with the layout:
/// `<tmp>/root/{workspace,outputs}`, `<tmp>/notes` (read-only store at
/// /mnt/memory/notes), `<tmp>/scratch` (rw store at /mnt/memory/scratch) and
/// `<tmp>/secret.txt` outside every mount.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub session: Session,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        std::fs::write(base.join("secret.txt"), "TOP SECRET\n").unwrap();
        for d in ["notes", "scratch"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("notes/policy.md"), "be nice\n").unwrap();
        let mut spec = SessionSpec::new("test", base.join("root"));
        spec.memory_stores = vec![
            Mount::memory_store(
                MemoryMountPath::parse("/mnt/memory/notes").unwrap(),
                base.join("notes"),
                Access::ReadOnly,
            ),
            Mount::memory_store(
                MemoryMountPath::parse("/mnt/memory/scratch").unwrap(),
                base.join("scratch"),
                Access::ReadWrite,
            ),
        ];
        let session = runtime().session(spec).expect("session");
        Fixture { dir, session }
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    pub fn ws(&self) -> PathBuf {
        self.session.workspace_dir().to_path_buf()
    }

    /// Runs the probe: `fs_probe <op> <path> [arg]`; returns its one line.
    pub fn probe(&self, op: &str, path: &str, arg: &str) -> String {
        let args: Vec<String> = ["fs_probe", op, path, arg]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = self
            .session
            .run_command(fs_probe(), &args, b"")
            .expect("run fs_probe");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs a tool call on the current thread's runtime.
    pub fn tool(&self, name: &str, input: Value) -> ToolResult {
        let call = ToolCall::new("toolu_test", name, input);
        self.session
            .call_file_tool_blocking(&call)
            .expect("a file tool")
    }
}

/// Runs `command` with the bash tool of `session` on `rt`; returns (text, is_error).
pub fn bash(rt: &tokio::runtime::Runtime, session: &Session, command: &str) -> (String, bool) {
    let call = ToolCall::new("toolu_b", "bash", serde_json::json!({ "command": command }));
    let r = rt.block_on(session.call_tool(&call)).expect("bash is ours");
    (r.text_content(), r.is_error)
}
