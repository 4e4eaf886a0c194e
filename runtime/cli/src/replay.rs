//! `wasm-sandbox replay`: tool calls in, tool results out, as JSON lines.

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use wasm_sandbox_runtime::{
    Access, Cap, Mount, Runtime, RuntimeConfig, SessionSpec, Tool, ToolCall,
};
use wasm_sandbox_worker::proto::{ToolUse, lone_surrogate_reason, repair_lone_surrogates};

/// Replays tool calls against one fresh session sandbox.
///
/// Reads JSON lines `{"id": "...", "name": "read", "input": {...}}` from
/// stdin and writes, for each sandbox tool call, one line
/// `{"id": ..., "content": [...], "is_error": bool}` with the exact content
/// the worker would post. Calls to tools the worker does not own (e.g.
/// `web_fetch`) produce no line, as the reference posts nothing for them.
/// All calls share one session, so bash state persists between lines.
///
/// A line that is valid JSON text but holds a lone surrogate escape (`"\ud800"`), which a
/// strict parser refuses, is answered as the worker answers such a call: one `is_error` line
/// `invalid request: …`, without running anything (the input cannot be represented).
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  echo '{\"id\":\"1\",\"name\":\"read\",\"input\":{\"file_path\":\"a.txt\"}}' | wasm-sandbox replay --workdir ./ws"
)]
pub struct ReplayCommand {
    /// Host directory that becomes /workspace (created if missing).
    #[arg(long, value_name = "DIR")]
    workdir: PathBuf,
    /// Host directory that becomes /mnt/session/outputs (default: a temporary
    /// directory removed at exit).
    #[arg(long, value_name = "DIR")]
    outputs: Option<PathBuf>,
    /// Mount a memory store: /mnt/memory/NAME=HOSTDIR, with `:ro` appended
    /// for a read-only store. Repeatable.
    #[arg(long = "memory-store", value_name = "/mnt/memory/NAME=HOSTDIR[:ro]", value_parser = parse_memory_store)]
    memory_stores: Vec<Mount>,
    /// Cap for whole-file reads, ranged selections and edits: bytes, `none`
    /// or `default` (262144).
    #[arg(long, value_name = "BYTES|none", value_parser = Cap::parse, default_value = "default")]
    max_file_bytes: Cap,
    /// Cap on an image's base64 size: bytes, `none` or `default` (5 MiB).
    #[arg(long, value_name = "BYTES|none", value_parser = Cap::parse, default_value = "default")]
    max_image_base64_bytes: Cap,
    /// Cap on a PDF's raw size: bytes, `none` or `default` (20 MiB).
    #[arg(long, value_name = "BYTES|none", value_parser = Cap::parse, default_value = "default")]
    max_pdf_bytes: Cap,
    /// bash environment variable KEY=VALUE (repeatable). When any is given the
    /// bash environment is exactly these variables, like the reference's
    /// `AgentToolContext(env=...)`.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Config file (TOML), the schema `serve --config` reads: its `[runtime]` table applies;
    /// serve-only keys (concurrency, max_idle, …) are checked and ignored. Unknown keys are an
    /// error.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

impl ReplayCommand {
    /// Runs the replay; exit code 1 if any input line was invalid.
    pub fn execute(self) -> Result<ExitCode> {
        let config = match &self.config {
            // One schema for every command: the same loader and checks as `serve`.
            Some(path) => crate::serve::FileConfig::load(path)?
                .check()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            None => RuntimeConfig::default(),
        };
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        tokio.block_on(self.run(config))
    }

    async fn run(self, config: RuntimeConfig) -> Result<ExitCode> {
        let runtime = Runtime::new(config).context("failed to start the sandbox runtime")?;
        let scratch = tempfile::Builder::new()
            .prefix("wasm-sandbox-replay-")
            .tempdir()?;
        let outputs = self
            .outputs
            .clone()
            .unwrap_or_else(|| scratch.path().join("outputs"));
        let mut spec = SessionSpec::new("replay", scratch.path());
        spec.workspace = Some(self.workdir.clone());
        spec.outputs = Some(outputs);
        spec.memory_stores = self.memory_stores.clone();
        spec.max_file_bytes = self.max_file_bytes;
        spec.max_image_base64_bytes = self.max_image_base64_bytes;
        spec.max_pdf_bytes = self.max_pdf_bytes;
        if !self.env.is_empty() {
            spec.env = Some(self.env.iter().cloned().collect::<BTreeMap<_, _>>());
        }
        let session = runtime
            .session(spec)
            .context("failed to create the session sandbox")?;

        let stdin = std::io::stdin().lock();
        let mut stdout = std::io::stdout().lock();
        let mut bad_lines = 0u32;
        for (n, line) in stdin.lines().enumerate() {
            let line = line.context("failed to read stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = match serde_json::from_str(&line) {
                Ok(l) => l,
                Err(e) => {
                    // Valid JSON text with a lone surrogate escape: answer it with the error
                    // the worker posts (never run it with a repaired input).
                    let repaired = repair_lone_surrogates(&line).and_then(|(text, escape)| {
                        serde_json::from_str::<Line>(&text)
                            .ok()
                            .map(|l| (l, escape))
                    });
                    if let Some((l, escape)) = repaired {
                        let representable =
                            !l.id.contains('\u{fffd}') && !l.name.contains('\u{fffd}');
                        if representable && Tool::from_name(&l.name).is_some() {
                            let text =
                                ToolUse::invalid_input_result(&lone_surrogate_reason(&escape));
                            let out = json!({"id": l.id, "content": [{"type": "text", "text": text}], "is_error": true});
                            writeln!(stdout, "{out}")?;
                            stdout.flush()?;
                            continue;
                        }
                        if representable {
                            // A tool the worker does not own: no line, as for any such call.
                            continue;
                        }
                    }
                    eprintln!(
                        "error: line {}: not a tool call ({{\"id\", \"name\", \"input\"}}): {e}",
                        n + 1
                    );
                    bad_lines += 1;
                    continue;
                }
            };
            let call = ToolCall::new(parsed.id, parsed.name, parsed.input);
            if let Some(result) = session.call_tool(&call).await {
                let out =
                    json!({"id": call.id, "content": result.content, "is_error": result.is_error});
                writeln!(stdout, "{out}")?;
                stdout.flush()?;
            }
        }
        session.close().await;
        Ok(if bad_lines > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

fn parse_memory_store(s: &str) -> Result<Mount, String> {
    let (guest, rest) = s
        .split_once('=')
        .ok_or("expected /mnt/memory/NAME=HOSTDIR[:ro]")?;
    let (host, read_only) = match rest.strip_suffix(":ro") {
        Some(h) => (h, true),
        None => (rest.strip_suffix(":rw").unwrap_or(rest), false),
    };
    if host.is_empty() {
        return Err("expected /mnt/memory/NAME=HOSTDIR[:ro]".into());
    }
    // The one mount-path rule (`wasm_sandbox_fs::guest_path`), as the worker applies it.
    let guest =
        wasm_sandbox_fs::guest_path::MemoryMountPath::parse(guest).map_err(|e| e.to_string())?;
    Ok(Mount::memory_store(
        guest,
        PathBuf::from(host),
        Access::from_read_only(read_only),
    ))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".into()),
    }
}
