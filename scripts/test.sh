#!/usr/bin/env bash
# The full test suite: set-up, then every test of the workspace and of the
# guest crates. `.ci/run` calls exactly this after the linters.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f .ort/env ] && . .ort/env

# Guest crates (own workspaces): their unit tests run natively.
(cd guests/file-tools && cargo test --locked --quiet)

cargo test --workspace --locked
