#!/usr/bin/env bash
# The demo: the worker serving a sample session from an embedded local
# control plane (no credentials, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f .ort/env ] && . .ort/env
exec cargo run --release --locked -p wasm-sandbox-cli -- serve --local "$@"
