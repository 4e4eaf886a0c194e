#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test wasm-sandbox.
# Idempotent and quiet when everything is already there.
#   - the wasm32-wasip2 Rust target (guest components are built for it)
#   - bubblewrap (the native sandbox for bash)
# ONNX Runtime is NOT set up here: only the wasi-nn tests and benches need it, and they call
# scripts/setup-ort.sh themselves (scripts/test.sh does), so the demo needs no PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2
fi

if ! command -v bwrap >/dev/null 2>&1; then
  echo "setup: installing bubblewrap" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq bubblewrap >/dev/null
  fi
fi
