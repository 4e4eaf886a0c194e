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

# A real S3-compatible server for the session-snapshot tests (runtime/persist/tests/s3.rs,
# benches/persist.rs): s3s-fs from crates.io into target/tools (0.14.1: the last release that
# builds on Rust 1.95). The tests skip with a printed reason when it is missing.
[ -x target/tools/bin/s3s-fs ] ||
  cargo install --locked --root target/tools s3s-fs@0.14.1 --features binary
# Installed: the S3 tests must run, not skip.
export WASM_SANDBOX_REQUIRE_S3=1

# --no-fail-fast: every suite runs, so one failure does not hide the others.
cargo test --workspace --locked --no-fail-fast
