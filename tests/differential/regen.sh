#!/usr/bin/env bash
# Regenerates the differential test data (cases*.jsonl, fixtures/, base_config.json)
# from the reference: anthropic==2.10.0 on CPython 3.12 (walker grep, no rg).
# Creates ./.venv on first use. Needs root (unshare --mount --pid) or working
# unprivileged user namespaces. Extra arguments go to gen.py
# (e.g. --check, --only read-0, --out DIR).
set -euo pipefail
cd "$(dirname "$0")"
PY312="${PY312:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/3.12.1/bin/python3}"
if ! .venv/bin/python -c 'import anthropic, sys; assert anthropic.__version__ == "2.10.0" and sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    rm -rf .venv
    "$PY312" -m venv .venv
    .venv/bin/pip install --quiet -r requirements.txt
fi
exec .venv/bin/python gen.py "$@"
