//! GPU: the classifier on ONNX Runtime's CUDA execution provider, through
//! the `nn-classify` guest, checked against the CPU numbers.
//!
//! Without a usable CUDA provider (no NVIDIA GPU, or an ONNX Runtime built
//! without it, like the PyPI `onnxruntime` wheel CI uses) the test prints
//! `SKIPPED: <why>` and passes; with `WASM_SANDBOX_REQUIRE_GPU=1` it fails
//! instead, so a GPU machine cannot silently test the CPU.

use super::common::*;
use wasm_sandbox_hostcalls_nn::{
    ExecutionProvider, NnConfig, NnHost, OnnxStatus, PreloadModel, example_models,
};

fn skip_or_fail(why: &str) {
    if std::env::var("WASM_SANDBOX_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("WASM_SANDBOX_REQUIRE_GPU=1 but there is no usable GPU path: {why}");
    }
    eprintln!("SKIPPED classify_on_cuda_matches_cpu: {why}");
}

#[test]
fn classify_on_cuda_matches_cpu() {
    let Some(lib) = ort_library() else {
        return skip_or_fail("ONNX Runtime not found (scripts/setup-ort.sh or ORT_DYLIB_PATH)");
    };
    let host = NnHost::new(NnConfig {
        onnx_library: Some(lib),
        execution_provider: ExecutionProvider::Cuda,
        preload: vec![PreloadModel {
            name: "classify".into(),
            path: example_models::CLASSIFY_ONNX.into(),
        }],
        ..NnConfig::default()
    })
    .unwrap();
    match host.report().onnx {
        OnnxStatus::Active {
            provider: ExecutionProvider::Cuda,
            ..
        } => {}
        OnnxStatus::Active { note, .. } => {
            return skip_or_fail(note.as_deref().unwrap_or("CUDA provider not active"));
        }
        OnnxStatus::Disabled { reason } => return skip_or_fail(&reason),
    }
    eprintln!("{}", host.report());
    let out = run(
        &guests().classify,
        host.session_ctx(),
        &["1", "2", "3", "4"],
        b"",
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value =
        serde_json::from_str(out.stdout_str().lines().next().unwrap()).unwrap();
    let (logits, probs) = expected([1.0, 2.0, 3.0, 4.0]);
    assert_close(&output(&json, "logits"), &logits);
    assert_close(&output(&json, "probs"), &probs);
}
