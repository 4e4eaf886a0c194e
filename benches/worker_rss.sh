#!/usr/bin/env bash
# Idle worker RSS: `wasm-sandbox serve` (release) polling an empty queue on the
# fake control plane (its `serve-fake` binary), measured after it settles (10 s: without a compile cache it first spends ~3-5 s compiling the file-tools component, so an earlier reading catches the compiler's memory).
# Usage: benches/worker_rss.sh   (prints one markdown table row)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p wasm-sandbox-cli -p wasm-sandbox-fake-control-plane --bins
fake_out=$(mktemp); work=$(mktemp -d)
target/release/serve-fake >"$fake_out" 2>/dev/null &
fake=$!
trap 'kill $fake ${worker:-} 2>/dev/null; rm -rf "$work" "$fake_out"' EXIT
for _ in $(seq 100); do [ -s "$fake_out" ] && break; sleep 0.05; done
url=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["url"])' "$fake_out")
env_id=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["environment_id"])' "$fake_out")
key=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["environment_key"])' "$fake_out")
ANTHROPIC_ENVIRONMENT_KEY="$key" target/release/wasm-sandbox serve --base-url "$url" \
  --environment-id "$env_id" --workdir "$work" --log-format json 2>/dev/null &
worker=$!
sleep 10
rss=$(awk '/^VmRSS:/ {print $2}' /proc/$worker/status)
echo "| idle worker RSS (release \`wasm-sandbox serve\`, empty queue, after 10 s: past the start-up compile) | ${rss} KiB |"
