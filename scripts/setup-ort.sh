#!/usr/bin/env bash
# Puts ONNX Runtime's shared library into .ort/ (git-ignored) and writes
# .ort/env, which exports ORT_DYLIB_PATH for the wasi-nn ONNX backend
# (hostcalls/nn loads the library at run time; nothing links it at build time).
#
# The library comes from the `onnxruntime` wheel on PyPI (`pip download
# --no-deps`), the only registry this project's machines reach; the wheel's
# onnxruntime/capi/ holds libonnxruntime.so.<version>.
#
# Idempotent: does nothing when .ort/env already points at the pinned version.
# Usage: scripts/setup-ort.sh            (then: . .ort/env)
set -euo pipefail
cd "$(dirname "$0")/.."

# The `ort` crate (=2.0.0-rc.10) is written against the ONNX Runtime 1.22 C API;
# newer libraries also work (the C API is versioned), older ones do not.
ORT_VERSION="${ORT_VERSION:-1.22.1}"
LIB=".ort/libonnxruntime.so.${ORT_VERSION}"
PY="${PYTHON:-python3}"

ENV_LINE="export ORT_DYLIB_PATH=\"$(pwd)/${LIB}\""
if [ -f "$LIB" ] && [ -f .ort/env ] && [ "$(cat .ort/env)" = "$ENV_LINE" ]; then
  exit 0
fi

echo "setup-ort: fetching onnxruntime==${ORT_VERSION} from PyPI" >&2
mkdir -p .whl .ort
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --dest .whl "onnxruntime==${ORT_VERSION}"
WHEEL="$(ls -1 .whl/onnxruntime-"${ORT_VERSION}"-*.whl | head -n 1)"

# Extract only the runtime library (a wheel is a zip; python's zipfile avoids
# depending on `unzip`).
"$PY" - "$WHEEL" "$ORT_VERSION" <<'PYEOF'
import os, shutil, sys, zipfile
wheel, version = sys.argv[1], sys.argv[2]
want = f"onnxruntime/capi/libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    if want not in names:
        sys.exit(f"setup-ort: {want} not in {wheel}: {[n for n in names if 'libonnxruntime' in n]}")
    tmp = f".ort/libonnxruntime.so.{version}.tmp"
    with z.open(want) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(tmp, 0o755)
    os.replace(tmp, f".ort/libonnxruntime.so.{version}")
PYEOF

# The library's SONAME is libonnxruntime.so.1; the symlinks let a plain
# dynamic link (-lonnxruntime) or LD_LIBRARY_PATH find it too.
ln -sfn "libonnxruntime.so.${ORT_VERSION}" .ort/libonnxruntime.so.1
ln -sfn "libonnxruntime.so.${ORT_VERSION}" .ort/libonnxruntime.so
printf '%s\n' "$ENV_LINE" > .ort/env
echo "setup-ort: ${LIB} ready; . .ort/env to export ORT_DYLIB_PATH" >&2
