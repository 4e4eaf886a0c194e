//! The local (ONNX Runtime, CPU) backend through the `nn-classify` guest
//! component: the numbers, sharing across sessions, and the errors a guest
//! can cause without harming the host.
//!
//! Needs ONNX Runtime: `scripts/setup-ort.sh` (CI runs it) or ORT_DYLIB_PATH.

use super::common::*;
use std::path::{Path, PathBuf};
use wasm_sandbox_hostcalls_nn::{
    ExecutionProvider, NnConfig, NnHost, OnnxStatus, PreloadModel, example_models,
};

fn classify_host(allow_guest_load: bool) -> NnHost {
    NnHost::new(NnConfig {
        onnx_library: Some(require_ort()),
        preload: vec![PreloadModel {
            name: "classify".into(),
            path: example_models::CLASSIFY_ONNX.into(),
        }],
        allow_guest_load,
        ..NnConfig::default()
    })
    .unwrap()
}

fn parse(out: &Output) -> serde_json::Value {
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let line = out.stdout_str();
    serde_json::from_str(line.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn classify_runs_on_cpu_through_the_guest_and_matches_the_weights() {
    let host = classify_host(false);
    let report = host.report();
    match &report.onnx {
        OnnxStatus::Active {
            provider, version, ..
        } => {
            assert_eq!(*provider, ExecutionProvider::Cpu);
            assert!(version.starts_with("1."), "{version}");
        }
        other => panic!("ONNX not active: {other:?}"),
    }
    assert!(report.to_string().contains("classify=onnx"), "{report}");

    for x in [
        [1.0, 2.0, 3.0, 4.0],
        [0.0, 0.0, 0.0, 0.0],
        [-1.5, 0.25, 2.0, -0.5],
    ] {
        let args: Vec<String> = x.iter().map(|v| v.to_string()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&guests().classify, host.session_ctx(), &args, b"", None);
        let json = parse(&out);
        let (logits, probs) = expected(x);
        assert_close(&output(&json, "logits"), &logits);
        assert_close(&output(&json, "probs"), &probs);
        let argmax = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        let outs = json["outputs"].as_array().unwrap();
        let p = outs.iter().find(|o| o["name"] == "probs").unwrap();
        assert_eq!(p["argmax"], argmax, "{json}");
        assert_eq!(p["dims"], serde_json::json!([1, 3]));
    }
    // [1,2,3,4] by hand: logits = [9.85, 0.05, 3.05].
    let out = run(
        &guests().classify,
        host.session_ctx(),
        &["1", "2", "3", "4"],
        b"",
        None,
    );
    assert_close(&output(&parse(&out), "logits"), &[9.85, 0.05, 3.05]);
}

#[test]
fn one_preloaded_graph_serves_many_sessions() {
    let host = classify_host(false);
    let sessions: Vec<_> = (0..4).map(|_| host.session()).collect();
    let (logits, _) = expected([4.0, 3.0, 2.0, 1.0]);
    std::thread::scope(|s| {
        for sess in &sessions {
            s.spawn(|| {
                for _ in 0..3 {
                    let out = run(
                        &guests().classify,
                        sess.ctx(),
                        &["4", "3", "2", "1"],
                        b"",
                        None,
                    );
                    assert_close(&output(&parse(&out), "logits"), &logits);
                }
            });
        }
    });
}

#[test]
fn bench_mode_reports_latencies() {
    let host = classify_host(false);
    let out = run(
        &guests().classify,
        host.session_ctx(),
        &["--bench", "20", "1", "2", "3", "4"],
        b"",
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout_str();
    let bench: serde_json::Value =
        serde_json::from_str(text.lines().nth(1).expect("bench line")).unwrap();
    assert_eq!(bench["bench"]["n"], 20);
    let p50 = bench["bench"]["p50_ns"].as_u64().unwrap();
    let p99 = bench["bench"]["p99_ns"].as_u64().unwrap();
    assert!(p50 > 0 && p99 >= p50, "{bench}");
}

#[test]
fn bad_tensors_are_errors_for_the_guest_not_host_panics() {
    let host = classify_host(false);
    // Wrong shape: five values for a [1,4] input.
    let out = run(
        &guests().classify,
        host.session_ctx(),
        &["1", "2", "3", "4", "5"],
        b"",
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("nn-classify: runtime-error:"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("dimensions"), "{}", out.stderr);
    // A u8 tensor (what nn-remote sends) to the ONNX model: wasmtime-wasi-nn's
    // backend would reach `unimplemented!` for a u8 model input and reject a
    // u8 tensor for an fp32 input; the guard answers first.
    let out = run(
        &guests().remote,
        host.session_ctx(),
        &["classify", "abcd"],
        b"",
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("invalid-argument: the ONNX backend takes fp32 input tensors"),
        "{}",
        out.stderr
    );
    // Unknown input name.
    let out = run(
        &guests().classify,
        host.session_ctx(),
        &["--input", "nope", "1", "2", "3", "4"],
        b"",
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    // The host still works afterwards.
    let out = run(
        &guests().classify,
        host.session_ctx(),
        &["1", "2", "3", "4"],
        b"",
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn unknown_model_is_not_found() {
    let host = classify_host(false);
    let out = run(
        &guests().classify,
        host.session_ctx(),
        &["--model", "no-such-model", "1"],
        b"",
        None,
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("nn-classify: not-found: no model named \"no-such-model\""),
        "{}",
        out.stderr
    );
}

fn models_dir() -> PathBuf {
    Path::new(example_models::CLASSIFY_ONNX)
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn guest_model_bytes_are_refused_unless_allowed() {
    let args = ["--onnx-file", "/data/classify.onnx", "1", "2", "3", "4"];
    let refused = classify_host(false);
    let out = run(
        &guests().classify,
        refused.session_ctx(),
        &args,
        b"",
        Some(&models_dir()),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("nn-classify: security: loading guest-provided models is disabled"),
        "{}",
        out.stderr
    );

    let allowed = classify_host(true);
    assert!(allowed.report().guest_load);
    let out = run(
        &guests().classify,
        allowed.session_ctx(),
        &args,
        b"",
        Some(&models_dir()),
    );
    assert_close(&output(&parse(&out), "logits"), &[9.85, 0.05, 3.05]);

    // Garbage bytes are an error, not a crash.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("classify.onnx"), b"definitely not protobuf").unwrap();
    let out = run(
        &guests().classify,
        allowed.session_ctx(),
        &args,
        b"",
        Some(dir.path()),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("nn-classify: invalid-argument:"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_library_disables_onnx_but_not_the_host() {
    let host = NnHost::new(NnConfig {
        onnx_library: Some("/nonexistent/libonnxruntime.so.1.22.1".into()),
        preload: vec![PreloadModel {
            name: "classify".into(),
            path: example_models::CLASSIFY_ONNX.into(),
        }],
        ..NnConfig::default()
    })
    .expect("a missing library is not a start-up error");
    let report = host.report();
    match &report.onnx {
        OnnxStatus::Disabled { reason } => assert!(
            reason.contains("/nonexistent/libonnxruntime.so.1.22.1"),
            "{reason}"
        ),
        other => panic!("expected disabled: {other:?}"),
    }
    assert!(!report.models[0].available);
    assert!(report.to_string().contains("onnx disabled"), "{report}");
    let out = run(
        &guests().classify,
        host.session_ctx(),
        &["1", "2", "3", "4"],
        b"",
        None,
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not-found"), "{}", out.stderr);
}

#[test]
fn a_broken_preload_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"nope").unwrap();
    let err = NnHost::new(NnConfig {
        onnx_library: Some(require_ort()),
        preload: vec![PreloadModel {
            name: "bad".into(),
            path: bad,
        }],
        ..NnConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("preloaded model \"bad\""), "{err}");
}

#[test]
fn guest_tensor_budget_traps_only_the_guest() {
    let host = NnHost::new(NnConfig {
        onnx_library: Some(require_ort()),
        preload: vec![PreloadModel {
            name: "classify".into(),
            path: example_models::CLASSIFY_ONNX.into(),
        }],
        max_tensor_bytes: 8,
        ..NnConfig::default()
    })
    .unwrap();
    // A 16-byte input tensor is over an 8-byte budget: the tensor constructor
    // cannot return an error, so the guest traps; the host carries on.
    let trap = try_run(
        &guests().classify,
        host.session_ctx(),
        &["1", "2", "3", "4"],
        b"",
        None,
    )
    .expect_err("the guest should have trapped");
    assert!(trap.contains("tensor") && trap.contains("budget"), "{trap}");
    let ok = classify_host(false);
    let out = run(
        &guests().classify,
        ok.session_ctx(),
        &["1", "2", "3", "4"],
        b"",
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}
