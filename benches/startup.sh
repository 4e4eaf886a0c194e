#!/usr/bin/env bash
# Worker start → first poll, with a cold and a warm compile cache (issue 17).
#
# Starts the fake control plane (`serve-fake`, release), then `wasm-sandbox serve` (release) on
# an empty queue with the default compile cache redirected to a fresh directory
# (CACHE_DIRECTORY): the first start finds it empty (cold: it compiles the file-tools component
# and stores it), the next ones load it (warm). The time is from spawning the worker to the
# fake's record of its first `work/poll` (`/_fake/requests`); both clocks are this host's.
# Usage: benches/startup.sh [RUNS]   (default 5 warm runs; prints markdown table rows)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
cargo build --release --locked -q -p wasm-sandbox-cli -p wasm-sandbox-fake-control-plane --bins
python3 - "$RUNS" <<'PY'
import datetime, json, os, signal, statistics, subprocess, sys, tempfile, time, urllib.request

runs = int(sys.argv[1])
fake = subprocess.Popen(["target/release/serve-fake"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
info = json.loads(fake.stdout.readline())
url = info["url"]

def polls():
    with urllib.request.urlopen(f"{url}/_fake/requests", timeout=10) as r:
        reqs = json.loads(r.read())
    return [datetime.datetime.fromisoformat(q["at"].replace("Z", "+00:00")).timestamp()
            for q in reqs if q["path"].endswith("/work/poll")]

def start(cache):
    seen = len(polls())
    work = tempfile.mkdtemp(prefix="startup-work-")
    env = dict(os.environ, ANTHROPIC_ENVIRONMENT_KEY=info["environment_key"], CACHE_DIRECTORY=cache)
    t0 = time.time()
    w = subprocess.Popen(["target/release/wasm-sandbox", "serve", "--base-url", url,
                          "--environment-id", info["environment_id"], "--workdir", work],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    deadline = time.monotonic() + 60
    while first is None and time.monotonic() < deadline:
        p = polls()
        if len(p) > seen:
            first = sorted(p)[seen]
        else:
            time.sleep(0.005)
    w.send_signal(signal.SIGTERM); w.wait(timeout=30)
    subprocess.run(["rm", "-rf", work])
    return (first - t0) * 1000

try:
    cache = tempfile.mkdtemp(prefix="startup-cache-")
    cold = start(cache)
    warm = [start(cache) for _ in range(runs)]
    print(f"| start → first poll, cold compile cache (first start: compiles and stores) | {cold:.0f} ms |")
    print(f"| start → first poll, warm compile cache (median of {runs}; max) | {statistics.median(warm):.0f} ms (max {max(warm):.0f}) |")
    subprocess.run(["rm", "-rf", cache])
finally:
    fake.terminate()
PY
