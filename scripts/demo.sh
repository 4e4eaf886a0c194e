#!/usr/bin/env bash
# The demo: the worker serving a sample session from an embedded local
# control plane (no credentials, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh   # target and bubblewrap only: the demo needs no ONNX Runtime (no PyPI)
[ -f .ort/env ] && . .ort/env
exec cargo run --release --locked -p wasm-sandbox-cli -- serve --local "$@"
