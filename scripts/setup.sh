#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test wasm-sandbox.
# Idempotent and quiet when everything is already there.
#   - the wasm32-wasip2 Rust target (guest components are built for it)
#   - bubblewrap (the native sandbox for bash), curl, python3, e2fsprogs (tests)
# ONNX Runtime is NOT set up here: only the wasi-nn tests and benches need it, and they call
# scripts/setup-ort.sh themselves (scripts/test.sh does), so the demo needs no PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2
fi

# Debian packages by the command they provide: bubblewrap (the bash sandbox), curl and python3
# (the egress tests run them inside the sandbox, whose root is the host's /usr), mkfs.ext4 (the
# per-session disk cap formats an image; e2fsprogs).
missing=()
# (Absolute paths: the sandbox sees /usr, not a virtualenv earlier on PATH.)
for pair in /usr/bin/bwrap:bubblewrap /usr/bin/curl:curl /usr/bin/python3:python3 \
  /usr/sbin/mkfs.ext4:e2fsprogs; do
  [ -x "${pair%%:*}" ] || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
