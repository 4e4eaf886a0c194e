#!/usr/bin/env bash
# Side by side with the reference worker (issue 7): our `wasm-sandbox serve` and the
# official `anthropic` SDK 2.10.0 `EnvironmentWorker` serve the same scripted sessions
# (benches/scenarios/per-tool.json) through the fake control plane, interleaved
# reference, ours, reference, ours, …; prints a markdown table of ours/reference ratios.
#
# Usage: benches/side_by_side.sh [--rounds N] [--sessions-c1 N] [--sessions-c8 N] [--no-build] [...]
#   (every other argument goes to benches/side_by_side.py; see its --help)
# Writes target/side-by-side/results.json (raw samples), target/side-by-side/latency.svg
# (latency CDFs) and the worker logs. Needs bubblewrap, and Python 3 with venv + PyPI
# access the first time (the SDK goes into target/side-by-side/venv).
# Default size: 5 rounds, ~3.5 minutes after the build on the project's 2-core VM.
# Results and how to read them: BENCHMARKS.md, "Side by side with the reference worker".
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
args=()
for a in "$@"; do
  if [ "$a" = "--no-build" ]; then build=0; else args+=("$a"); fi
done
if [ "$build" = 1 ]; then
  cargo build --release -q -p wasm-sandbox-cli -p wasm-sandbox-fake-control-plane --bins
fi
py=python3
if command -v pyenv >/dev/null 2>&1 && [ -x "$(pyenv root)/versions/3.12.1/bin/python3" ]; then
  py="$(pyenv root)/versions/3.12.1/bin/python3"
fi
exec "$py" benches/side_by_side.py ${args[@]+"${args[@]}"}
