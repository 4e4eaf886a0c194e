#!/usr/bin/env bash
# Side by side with the reference worker (issue 7): our `wasm-sandbox serve` and the
# official `anthropic` SDK 2.10.0 `EnvironmentWorker` serve the same scripted sessions
# (benches/scenarios/per-tool.json) through the fake control plane, interleaved
# reference, ours, reference, ours, …; prints a markdown table of ours/reference ratios.
#
# Usage: benches/side_by_side.sh [--rounds N] [--sessions-c1 N] [--sessions-c8 N] [--no-build]
#          [--rtt-ms N] [--tls] [--debug] [...]
#   (every other argument goes to benches/side_by_side.py; see its --help)
#   --rtt-ms N: both workers reach the fake through benches/delay_proxy.rs (loopback only),
#     which delays every byte by N/2 ms each way; prints the round-trip table (issue 16).
#   --tls: the fake serves HTTPS with a CA made at start-up (HTTP/2 + HTTP/1.1 by ALPN).
#   --debug: build and use the dev-profile binaries (dependencies optimised, ours not) instead
#     of a release build; fine for round-trip counts, not for CPU-bound numbers.
# Network run used for BENCHMARKS.md ("Cold start in round trips"), a few minutes each:
#   benches/side_by_side.sh --rounds 1 --sessions-c1 3 --sessions-c8 0 --startup-probes 0 --rtt-ms 150 --tls
# Writes target/side-by-side/results.json (raw samples), target/side-by-side/latency.svg
# (latency CDFs) and the worker logs. Needs bubblewrap, and Python 3 with venv + PyPI
# access the first time (the SDK goes into target/side-by-side/venv).
# Default size: 5 rounds, ~3.5 minutes after the build on the project's 2-core VM.
# Results and how to read them: BENCHMARKS.md, "Side by side with the reference worker".
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
profile=release
args=()
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    --debug) profile=debug ;;
    *) args+=("$a") ;;
  esac
done
if [ "$build" = 1 ]; then
  if [ "$profile" = release ]; then
    cargo build --release -q -p wasm-sandbox-cli -p wasm-sandbox-fake-control-plane -p wasm-sandbox-benches --bins
  else
    cargo build -q -p wasm-sandbox-cli -p wasm-sandbox-fake-control-plane -p wasm-sandbox-benches --bins
  fi
fi
if [ "$profile" = debug ]; then
  args=(--fake-bin target/debug/serve-fake --ours-bin target/debug/wasm-sandbox
        --proxy-bin target/debug/delay-proxy ${args[@]+"${args[@]}"})
fi
py=python3
if command -v pyenv >/dev/null 2>&1 && [ -x "$(pyenv root)/versions/3.12.1/bin/python3" ]; then
  py="$(pyenv root)/versions/3.12.1/bin/python3"
fi
exec "$py" benches/side_by_side.py ${args[@]+"${args[@]}"}
