//! `nn-remote`: calls a model that the host registered by name (a remote
//! endpoint: `llm-*`, `whisper-*`, `ocr-*`, `tts-*`) through wasi-nn
//! (`wasi:nn@0.2.0-rc-2024-10-28`) and writes the response bytes to stdout.
//!
//! A `wasi:cli/command` component, usable as a skill component:
//!
//! ```text
//! nn-remote [--input NAME] MODEL [PAYLOAD]
//! nn-remote [--input NAME] MODEL --file PATH
//! ```
//!
//! The payload (the argument, the file's bytes, or else stdin) goes to the
//! host as one `u8` tensor named `input` (shape `[len]`): UTF-8 JSON for chat
//! and text-to-speech models, raw audio or image bytes for transcription and
//! OCR models. The host answers with one `u8` tensor `output` holding the
//! endpoint's response body, written here to stdout unchanged. The guest never
//! sees the endpoint's URL or credentials. Errors go to stderr as
//! `nn-remote: <wasi-nn error code>: <message>`, exit status 1 (2 for usage).

wit_bindgen::generate!({ path: "../../../hostcalls/nn/wit", world: "ml" });
include!("../../src/errors.rs");

use std::io::{Read, Write};
use std::process::ExitCode;
use wasi::nn::graph;
use wasi::nn::tensor::{Tensor, TensorType};

const USAGE: &str =
    "usage: nn-remote [--input NAME] MODEL [PAYLOAD | --file PATH]  (no payload: stdin)";

struct Args {
    input: String,
    model: String,
    payload: Option<Vec<u8>>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut input = "input".to_string();
    let mut positional = Vec::new();
    let mut payload = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--input" => input = it.next().ok_or("--input needs a value")?,
            "--file" => {
                let path = it.next().ok_or("--file needs a path")?;
                payload = Some(std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            _ => positional.push(a),
        }
    }
    let mut positional = positional.into_iter();
    let model = positional.next().ok_or("no model name")?;
    if let Some(p) = positional.next() {
        if payload.is_some() {
            return Err("give a payload or --file, not both".into());
        }
        payload = Some(p.into_bytes());
    }
    if positional.next().is_some() {
        return Err("too many arguments".into());
    }
    Ok(Args {
        input,
        model,
        payload,
    })
}

fn run(args: Args) -> Result<Vec<u8>, String> {
    let payload = match args.payload {
        Some(p) => p,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("stdin: {e}"))?;
            buf
        }
    };
    let graph = graph::load_by_name(&args.model).map_err(describe)?;
    let ctx = graph.init_execution_context().map_err(describe)?;
    let len = u32::try_from(payload.len()).map_err(|_| "payload over 4 GiB".to_string())?;
    let tensor = Tensor::new(&[len], TensorType::U8, &payload);
    let outputs = ctx.compute(vec![(args.input, tensor)]).map_err(describe)?;
    let (_, out) = outputs
        .into_iter()
        .find(|(name, _)| name == "output")
        .ok_or_else(|| "the host returned no `output` tensor".to_string())?;
    Ok(out.data())
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("nn-remote: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(bytes) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nn-remote: {e}");
            ExitCode::FAILURE
        }
    }
}
