//! Skill components run from bash (`wasm-run`) vs the same program natively.
//!
//! `cargo bench -p wasm-sandbox-benches --bench skills` (after
//! `examples/skills/py-wordfreq/build.sh`) prints p50/p99 of one bash tool call
//! in a fresh session whose shell was prestarted (as the worker does at claim):
//! * `wasm-run` of the componentize-py `wordfreq.wasm`, first run in the
//!   session, compiled code already cached (by content) from earlier sessions
//!   and the file looked up at "skill install" as the worker does
//!   (`Runtime::command_for_file`);
//! * `python3 wordfreq.py` natively in the same bash sandbox (same script);
//! * `wasm-run` of the Rust `wordcount.wasm`, first run in the session;
//! * the one-off compile of each component (cache miss; the worker does it
//!   when a skill is installed).

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wasm_sandbox_benches::{header, iters, measure};
use wasm_sandbox_runtime::{Runtime, RuntimeConfig, Session, SessionSpec, ToolCall};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: PathBuf, hint: &str) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} ({hint})", path.display()))
}

fn main() {
    wasm_sandbox_native::run_as_init_if_invoked();
    wasm_sandbox_runtime::run_as_compiler_if_invoked();
    let n = iters(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = RuntimeConfig::default();
    config.bash.init_path = std::env::current_exe().ok();
    let rt = Runtime::new(config).expect("runtime");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let py_wasm = read(
        repo().join("target/skills/py-wordfreq/wordfreq.wasm"),
        "run examples/skills/py-wordfreq/build.sh",
    );
    let py_src = read(
        repo().join("examples/skills/py-wordfreq/wordfreq.py"),
        "source",
    );
    let rs_wasm = read(
        std::env::var_os("WORDCOUNT_WASM")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/guests/wasm32-wasip2/release/wordcount.wasm")),
        "built with the workspace (examples/guests)",
    );

    println!(
        "\n### Skill components: one-off compile (cache miss; the worker does it at skill install)\n"
    );
    for (name, wasm) in [
        ("compile wordfreq.wasm (componentize-py, 18 MB)", &py_wasm),
        ("compile wordcount.wasm (Rust)", &rs_wasm),
    ] {
        let t = Instant::now();
        rt.command_by_content(wasm).expect("compile");
        println!("- {name}: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    }

    let doc = "the quick brown fox jumps over the lazy dog\n".repeat(200);
    let mut k = 0u64;
    let mut session = || -> Session {
        k += 1;
        let s = rt
            .session(SessionSpec::new("s", dir.path().join(format!("s{k}"))))
            .expect("session");
        let skills = s.workspace_dir().join("skills");
        for (sub, file, bytes) in [
            ("py-wordfreq", "wordfreq.wasm", &py_wasm),
            ("py-wordfreq", "wordfreq.py", &py_src),
            ("rust-wordcount", "wordcount.wasm", &rs_wasm),
        ] {
            std::fs::create_dir_all(skills.join(sub)).expect("mkdir");
            std::fs::write(skills.join(sub).join(file), bytes).expect("write");
        }
        std::fs::write(s.workspace_dir().join("doc.txt"), &doc).expect("doc");
        // What the worker does when it installs a skill (in the background):
        // look the files' compiled forms up by identity, compiling on a miss.
        for file in ["py-wordfreq/wordfreq.wasm", "rust-wordcount/wordcount.wasm"] {
            let f = std::fs::File::open(skills.join(file)).expect("open");
            rt.command_for_file(&f, u64::MAX).expect("precompile");
        }
        tokio.block_on(s.prestart_bash());
        s
    };
    let cases = [
        (
            "wasm-run wordfreq.wasm (Python component), first run in a session",
            "wasm-run skills/py-wordfreq/wordfreq.wasm --top 3 doc.txt",
        ),
        (
            "python3 wordfreq.py natively in the bash sandbox",
            "python3 skills/py-wordfreq/wordfreq.py --top 3 doc.txt",
        ),
        (
            "wasm-run wordcount.wasm (Rust component), first run in a session",
            "wasm-run skills/rust-wordcount/wordcount.wasm --top 3 doc.txt",
        ),
    ];
    header("Skill run: one bash tool call in a fresh session (shell prestarted, compile cached)");
    for (label, command) in cases {
        let call = ToolCall::new("t", "bash", json!({ "command": command }));
        let sessions: Vec<Session> = (0..n + 2).map(|_| session()).collect();
        let mut it = sessions.iter();
        let stats = measure(label, 2, n, || {
            let s = it.next().expect("session");
            let r = tokio.block_on(s.call_tool(&call)).expect("tool");
            assert!(!r.is_error, "{command}: {}", r.text_content());
            assert!(r.text_content().contains("the"), "{}", r.text_content());
        });
        println!("{}", stats.row());
        for s in sessions {
            tokio.block_on(s.close());
        }
    }
    header("Skill run: warm (second and later runs in one session)");
    let s = session();
    for (label, command) in cases {
        let call = ToolCall::new("t", "bash", json!({ "command": command }));
        let stats = measure(&label.replace(", first run in a session", ""), 3, n, || {
            let r = tokio.block_on(s.call_tool(&call)).expect("tool");
            assert!(!r.is_error, "{}", r.text_content());
        });
        println!("{}", stats.row());
    }
    tokio.block_on(s.close());
    println!(
        "\ncommand compilations during the run: {}",
        rt.command_compilations()
    );
}
