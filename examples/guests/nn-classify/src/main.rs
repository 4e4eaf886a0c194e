//! `nn-classify`: runs a host-preloaded model by name through wasi-nn
//! (`wasi:nn@0.2.0-rc-2024-10-28`) and prints its outputs as one JSON line.
//!
//! A `wasi:cli/command` component, so it runs as a skill component or under
//! any host that links wasi-nn (see `hostcalls/nn`):
//!
//! ```text
//! nn-classify [--model NAME | --onnx-file PATH] [--input NAME] [--dims D1,D2,..] [--bench N] X1 X2 ...
//! ```
//!
//! * `--model`: the registry name the host preloaded the model under
//!   (default `classify`);
//! * `--onnx-file`: instead, hand the host this ONNX file's bytes
//!   (`graph::load`), which hosts refuse unless they allow guest models;
//! * `--input`: the model's input tensor name (default `x`);
//! * `--dims`: the input shape (default `1,<number of values>`);
//! * `X1 X2 ...`: the input values, `f32`;
//! * `--bench N`: after the first inference, runs N more and prints a second
//!   line `{"bench":{"n":..,"p50_ns":..,"p99_ns":..,"mean_ns":..,"min_ns":..}}`
//!   timed inside the guest (tensor creation, `compute`, reading every output).
//!
//! Output: `{"model":"classify","outputs":[{"name":"probs","dims":[1,3],
//! "type":"fp32","data":[..],"argmax":2}, ..]}`. Errors go to stderr as
//! `nn-classify: <wasi-nn error code>: <message>`, exit status 1 (2 for usage).

wit_bindgen::generate!({ path: "../../../hostcalls/nn/wit", world: "ml" });
include!("../../src/errors.rs");

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use wasi::nn::graph;
use wasi::nn::inference::GraphExecutionContext;
use wasi::nn::tensor::{Tensor, TensorType};

const USAGE: &str = "usage: nn-classify [--model NAME | --onnx-file PATH] [--input NAME] [--dims D1,D2,..] [--bench N] X1 X2 ...";

struct Args {
    model: String,
    onnx_file: Option<String>,
    input: String,
    dims: Option<Vec<u32>>,
    bench: u32,
    values: Vec<f32>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        model: "classify".into(),
        onnx_file: None,
        input: "x".into(),
        dims: None,
        bench: 0,
        values: vec![],
    };
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--model" => args.model = value("--model")?,
            "--input" => args.input = value("--input")?,
            "--onnx-file" => args.onnx_file = Some(value("--onnx-file")?),
            "--dims" => {
                let v = value("--dims")?;
                let dims = v
                    .split(',')
                    .map(|d| d.trim().parse::<u32>())
                    .collect::<Result<Vec<_>, _>>();
                args.dims = Some(dims.map_err(|e| format!("bad --dims {v:?}: {e}"))?);
            }
            "--bench" => {
                let v = value("--bench")?;
                args.bench = v.parse().map_err(|e| format!("bad --bench {v:?}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            _ => args
                .values
                .push(a.parse().map_err(|e| format!("bad value {a:?}: {e}"))?),
        }
    }
    if args.values.is_empty() {
        return Err("no input values".into());
    }
    Ok(args)
}

struct Output {
    name: String,
    dims: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

/// One inference: builds the input tensor, computes, reads every output.
fn infer(
    ctx: &GraphExecutionContext,
    args: &Args,
    dims: &[u32],
    bytes: &[u8],
) -> Result<Vec<Output>, String> {
    let tensor = Tensor::new(dims, TensorType::Fp32, bytes);
    let outputs = ctx
        .compute(vec![(args.input.clone(), tensor)])
        .map_err(describe)?;
    Ok(outputs
        .into_iter()
        .map(|(name, t)| Output {
            name,
            dims: t.dimensions(),
            ty: t.ty(),
            data: t.data(),
        })
        .collect())
}

fn json_f32(out: &mut String, v: f32) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn render(model: &str, outputs: &[Output]) -> String {
    let mut s = String::from("{\"model\":");
    json_str(&mut s, model);
    s.push_str(",\"outputs\":[");
    for (i, o) in outputs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"name\":");
        json_str(&mut s, &o.name);
        let dims: Vec<String> = o.dims.iter().map(u32::to_string).collect();
        let _ = write!(s, ",\"dims\":[{}]", dims.join(","));
        if o.ty == TensorType::Fp32 {
            let values: Vec<f32> = o
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            s.push_str(",\"type\":\"fp32\",\"data\":[");
            for (j, v) in values.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                json_f32(&mut s, *v);
            }
            s.push(']');
            let argmax = values
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k);
            if let Some(k) = argmax {
                let _ = write!(s, ",\"argmax\":{k}");
            }
        } else {
            let bytes: Vec<String> = o.data.iter().map(u8::to_string).collect();
            let _ = write!(
                s,
                ",\"type\":\"{:?}\",\"bytes\":[{}]",
                o.ty,
                bytes.join(",")
            );
        }
        s.push('}');
    }
    s.push_str("]}\n");
    s
}

fn percentile(sorted: &[Duration], p: usize) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = (sorted.len() * p)
        .div_ceil(100)
        .saturating_sub(1)
        .min(sorted.len() - 1);
    sorted[idx].as_nanos()
}

fn run(args: &Args) -> Result<String, String> {
    let dims = args
        .dims
        .clone()
        .unwrap_or_else(|| vec![1, args.values.len() as u32]);
    let bytes: Vec<u8> = args.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let graph = match &args.onnx_file {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            graph::load(
                &[bytes],
                graph::GraphEncoding::Onnx,
                graph::ExecutionTarget::Cpu,
            )
            .map_err(describe)?
        }
        None => graph::load_by_name(&args.model).map_err(describe)?,
    };
    let ctx = graph.init_execution_context().map_err(describe)?;
    let outputs = infer(&ctx, args, &dims, &bytes)?;
    let mut text = render(&args.model, &outputs);
    if args.bench > 0 {
        let mut times = Vec::with_capacity(args.bench as usize);
        for _ in 0..args.bench {
            let start = Instant::now();
            let out = infer(&ctx, args, &dims, &bytes)?;
            times.push(start.elapsed());
            std::hint::black_box(out);
        }
        times.sort();
        let total: u128 = times.iter().map(Duration::as_nanos).sum();
        let _ = writeln!(
            text,
            "{{\"bench\":{{\"n\":{},\"p50_ns\":{},\"p99_ns\":{},\"mean_ns\":{},\"min_ns\":{}}}}}",
            times.len(),
            percentile(&times, 50),
            percentile(&times, 99),
            total / times.len() as u128,
            times[0].as_nanos()
        );
    }
    Ok(text)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("nn-classify: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nn-classify: {e}");
            ExitCode::FAILURE
        }
    }
}
