#!/usr/bin/env bash
# GPU check for the wasi-nn host binding (hostcalls/nn): a guest component
# classifies a tensor on the GPU, the same model runs natively on the same
# GPU, and the script prints both results, whether they match, and the
# overhead ratio.
#
# STATUS: NOT RUN ON A GPU YET. The task that wrote this script had no GPU
# machine; only its plumbing was exercised, with GPU_CHECK_DRY_RUN=1 (a
# pure-Python CPU stand-in for torch). It claims no GPU results.
#
# The GPU path, and why it is this one. The GPU machine (see
# shared/spec/platform-notes.md, "The GPU machine") has torch 2.11+cu130 and
# CUDA 13 + cuDNN 9, a CPU-only onnxruntime, no Rust, no network, and takes
# at most 64 MiB of carried files per call:
#   - ONNX Runtime's CUDA provider (the `execution_provider = "cuda"` path of
#     this crate) needs libonnxruntime_providers_cuda.so, hundreds of MB and
#     built for CUDA 12: it cannot be carried there.
#   - libtorch inside the host (wasmtime-wasi-nn's `pytorch` feature / tch)
#     pins an older libtorch and needs its headers and a C++ build here.
#   - What does run there is the installed torch. So the model is served on
#     127.0.0.1 by examples/nn-models/gpu_check.py (torch on cuda, Open
#     Inference Protocol v2, as KServe/Triton speak it), and the guest reaches
#     it through this crate's `tensor` remote model kind:
#       nn-classify.wasm -> wasi-nn compute -> host (nn-run) -> HTTP loopback
#       -> torch on the GPU -> outputs back to the guest.
#     "Native" is the same torch model called in-process on the same GPU. A
#     third row times a plain Python HTTP client against the same server, so
#     the HTTP hop and the wasm/host overhead can be told apart.
#
# Usage:
#   scripts/gpu-check.sh prepare      # on a build machine (Rust toolchain):
#                                     # release nn-run + guest + model files
#                                     # into target/gpu-check/ (about 25 MB)
#   scripts/gpu-check.sh run [N]      # on the GPU machine, from the repo root,
#                                     # with target/gpu-check/ carried there;
#                                     # N timed inferences per row (default 1000)
#   GPU_CHECK_DRY_RUN=1 scripts/gpu-check.sh run 200
#                                     # plumbing test anywhere, no GPU/torch;
#                                     # NOT a GPU result (labelled as such)
# With the device tool: run `scripts/gpu-check.sh run` with carry
# ["target/gpu-check"]. Exit status: 0 match, 1 mismatch, 2 no usable GPU/setup.
set -euo pipefail
cd "$(dirname "$0")/.."
D=target/gpu-check
PY="${PYTHON:-python3}"

prepare() {
  cargo build --release --locked -p wasm-sandbox-hostcalls-nn --example nn-run
  # The example guests (tests/build.rs builds them too; the nn crate does not).
  cargo build --release --locked --target wasm32-wasip2 \
    --manifest-path examples/guests/Cargo.toml --target-dir target/guests
  rm -rf "$D" && mkdir -p "$D"
  cp target/release/examples/nn-run "$D/"
  strip "$D/nn-run" 2>/dev/null || true
  cp target/guests/wasm32-wasip2/release/nn-classify.wasm "$D/"
  cp examples/nn-models/gpu_check.py examples/nn-models/classify.weights.json examples/nn-models/classify.onnx "$D/"
  du -sh "$D"
}

fail() { echo "gpu-check: $*" >&2; exit 2; }

run() {
  local n="${1:-1000}" engine=torch device=cuda
  [ -x "$D/nn-run" ] && [ -f "$D/nn-classify.wasm" ] || fail "$D/ is missing; run 'scripts/gpu-check.sh prepare' on a build machine and carry $D"
  if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then
    engine=python device=cpu
    echo "gpu-check: DRY RUN: pure-Python CPU stand-in, not a GPU result" >&2
  else
    command -v nvidia-smi >/dev/null && nvidia-smi -L || fail "no NVIDIA GPU visible (nvidia-smi)"
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
      || fail "$PY has no torch with CUDA"
  fi
  local out; out="$(mktemp -d)"
  "$PY" "$D/gpu_check.py" serve --engine "$engine" --device "$device" --port-file "$out/port" &
  local server=$!
  trap 'kill '"$server"' 2>/dev/null || true' EXIT
  for _ in $(seq 600); do [ -f "$out/port" ] && break; sleep 0.1; done
  [ -f "$out/port" ] || fail "the model server did not start"
  local port; port="$(cat "$out/port")"
  cat > "$out/nn.json" <<JSON
{"remote": [{"name": "tensor-classify", "kind": "tensor", "timeout": "30s",
             "url": "http://127.0.0.1:${port}/v2/models/classify/infer"}],
 "max_calls": $((n + 10)), "max_transfer": "1GB"}
JSON
  "$PY" "$D/gpu_check.py" native --engine "$engine" --device "$device" --n "$n" > "$out/native.json"
  "$PY" "$D/gpu_check.py" http --port "$port" --n "$n" > "$out/http.json"
  "$D/nn-run" --config "$out/nn.json" --report "$D/nn-classify.wasm" \
    --model tensor-classify --bench "$n" 1 2 3 4 < /dev/null > "$out/guest.txt"

  # Cross-check: the same guest on this machine's CPU ONNX Runtime, when the
  # Python onnxruntime package is there (its libonnxruntime.so.1.x).
  local cpu="" lib
  lib="$("$PY" -c 'import glob, importlib.util as u; d = u.find_spec("onnxruntime").submodule_search_locations[0]; print(sorted(glob.glob(d + "/capi/libonnxruntime.so.1.*"))[-1])' 2>/dev/null || true)"
  if [ -n "$lib" ]; then
    printf '{"onnx_library": "%s", "preload": [{"name": "classify", "path": "%s"}]}\n' \
      "$lib" "$PWD/$D/classify.onnx" > "$out/cpu.json"
    if "$D/nn-run" --config "$out/cpu.json" --report "$D/nn-classify.wasm" 1 2 3 4 < /dev/null > "$out/cpu.txt"; then
      cpu="$out/cpu.txt"
    fi
  fi
  "$PY" "$D/gpu_check.py" compare "$out/native.json" "$out/http.json" "$out/guest.txt" $cpu
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 prepare | run [N]   (see the header)" >&2; exit 2 ;;
esac
