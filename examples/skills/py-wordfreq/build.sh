#!/usr/bin/env bash
# Builds wordfreq.wasm (a wasi:cli/command component) from wordfreq.py with
# componentize-py, pinned, installed into a private venv under target/.
#
#   examples/skills/py-wordfreq/build.sh [OUT_DIR]   (default target/skills/py-wordfreq)
#
# The output directory then is a complete skill folder: SKILL.md, wordfreq.py
# (the source, for the agent to read) and wordfreq.wasm.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-$repo/target/skills/py-wordfreq}"
version=0.25.1
venv="$repo/target/tools/componentize-py-$version"
if [[ ! -x "$venv/bin/componentize-py" ]]; then
  py="${PYTHON:-}"
  if [[ -z "$py" ]]; then
    if command -v pyenv >/dev/null && [[ -x "$(pyenv root)/versions/3.12.1/bin/python3" ]]; then
      py="$(pyenv root)/versions/3.12.1/bin/python3"
    else
      py=python3
    fi
  fi
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi
mkdir -p "$out"
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp "$here/wordfreq.py" "$src/"
(cd "$src" && "$venv/bin/componentize-py" -q -d "$here/wit" -w skill componentize wordfreq -o "$out/wordfreq.wasm")
cp "$here/SKILL.md" "$here/wordfreq.py" "$out/"
echo "built $out/wordfreq.wasm ($(stat -c %s "$out/wordfreq.wasm") bytes)"
