#!/usr/bin/env bash
# The full test suite: set-up, then every test of the workspace and of the
# guest crates. `.ci/run` calls exactly this after the linters.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The wasi-nn tests run ONNX models: ONNX Runtime's library (from PyPI) is set up for them.
scripts/setup-ort.sh
[ -f .ort/env ] && . .ort/env

# Guest crates (own workspaces): their unit tests run natively.
(cd guests/file-tools && cargo test --locked --quiet)

# The componentize-py skill component (pinned componentize-py from PyPI into
# target/tools; tests/all/wasm_run.rs runs it from bash in the sandbox).
examples/skills/py-wordfreq/build.sh

# --no-fail-fast: every suite runs, so one failure does not hide the others.
cargo test --workspace --locked --no-fail-fast
