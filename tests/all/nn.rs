//! wasi-nn through a real session: a skill-style command component
//! (`nn-classify`) runs with the session's preopens and reaches a model the
//! runtime preloaded, by name. Needs ONNX Runtime (`scripts/setup-ort.sh`,
//! which `scripts/test.sh` runs and whose `.ort/env` sets `ORT_DYLIB_PATH`).

use std::path::PathBuf;
use wasm_sandbox_hostcalls_nn::{NnConfig, PreloadModel, example_models};
use wasm_sandbox_runtime::{Runtime, SessionSpec};

fn ort() -> PathBuf {
    let p = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.ort/libonnxruntime.so"
            ))
        });
    assert!(
        p.exists(),
        "ONNX Runtime not found at {}: run scripts/setup-ort.sh",
        p.display()
    );
    p
}

#[test]
fn a_session_command_component_runs_a_preloaded_model_by_name() {
    let mut config = crate::common::config();
    config.nn = NnConfig {
        onnx_library: Some(ort()),
        preload: vec![PreloadModel {
            name: "classify".into(),
            path: example_models::CLASSIFY_ONNX.into(),
        }],
        ..NnConfig::default()
    };
    let rt = Runtime::new(config).expect("runtime with nn");
    let dir = tempfile::tempdir().unwrap();
    let session = rt.session(SessionSpec::new("nn", dir.path())).unwrap();
    let wasm = std::fs::read(env!("NN_CLASSIFY_WASM")).unwrap();
    let classify = rt.load_command(&wasm).unwrap();
    let args: Vec<String> = ["nn-classify", "1", "2", "3", "4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = session.run_command(&classify, &args, b"").unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let logits = json["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "logits")
        .unwrap();
    let got: Vec<f64> = logits["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // [1,2,3,4] through the committed weights: logits = [9.85, 0.05, 3.05].
    for (g, e) in got.iter().zip([9.85, 0.05, 3.05]) {
        assert!((g - e).abs() < 1e-4, "{got:?}");
    }
    // An unknown model is an error for the guest, not a trap of the host.
    let args: Vec<String> = ["nn-classify", "--model", "nosuch", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = session.run_command(&classify, &args, b"").unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not-found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
