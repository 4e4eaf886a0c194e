#!/usr/bin/env python3
"""Side by side: our `wasm-sandbox serve` against the reference worker (the official
`anthropic` SDK 2.10.0 `EnvironmentWorker`), through the same fake control plane.

Usually run through `benches/side_by_side.sh`, which builds the release binaries first.

Every run starts a fresh `serve-fake` (tests/fake-control-plane), enqueues copies of one
scripted session (default `benches/scenarios/per-tool.json`), starts one worker process,
waits until every work item is stopped, and reads the fake's records. Runs are interleaved
reference, ours, reference, ours, … (`--rounds` rounds; each round first starts each worker
on an empty queue `--startup-probes` times, then runs both workers at concurrency 1 and then
at concurrency 8), so slow drift of this shared machine hits both alike. Ours runs with a
compile cache (`[runtime.engine] cache_dir`, primed once before round 1) unless
`--no-compile-cache`; the probes also start it without one. Reference at concurrency N = N `EnvironmentWorker` instances in one Python process
(as `run.py --workers N`); ours = `wasm-sandbox serve --concurrency N`.

Every time below is taken by the fake, on one clock, on loopback:

* claim -> first result: the worker's `ack` request -> the POST carrying the session's first
  accepted `user.tool_result`;
* per tool: the `processed_at` of the `agent.tool_use` event (the moment the fake appends it
  and writes it to the open event streams) -> the arrival of the POST carrying its result.
  The script emits the next call only after the previous one is answered, so calls never
  overlap within a session;
* sessions/s: sessions / (first `ack` -> last force-`stop` of the run);
* start -> first poll (probes): `Popen` of the worker process (driver's wall clock, same host
  clock) -> the fake's arrival time of the first `work/poll` request; idle RSS: VmRSS 0.5 s
  later;
* RSS: VmHWM (peak resident set) of the worker process from /proc/<pid>/status, read just
  before SIGTERM; plus the peak over 50 ms samples of the summed VmRSS of the worker and all
  its descendants (bash shells, bubblewrap sandboxes), reported separately.

Writes every raw sample to target/side-by-side/results.json, an SVG of the latency CDFs to
target/side-by-side/latency.svg, and prints a markdown table of ours/reference ratios.

**At a network distance** (`--rtt-ms N`, issue 16): each run also starts `delay-proxy`
(benches/delay_proxy.rs; loopback only) between the worker and the fake, delaying every byte
by N/2 ms each way and a new connection by one round trip, and the worker's base URL is the
proxy's. `--tls` makes the fake serve HTTPS with a CA made at start-up (ALPN h2 and
http/1.1); ours gets it with `--ca-cert`, the reference through `SSL_CERT_FILE`. The driver's
own admin calls go to the fake directly. A second table then gives, per worker: claim → first
result (p50/p99, ms and round trips = ms / N), per tool call in round trips, the whole
session (ack → force-stop), the connections and HTTP versions seen, and the requests on the
critical path from the ack to the first result. That path is inferred from the fake's
timestamps: from the first result's POST, step back to the request whose response was sent
last before it arrived, until the ack (a request sent only after another's answer came back
is taken to wait on it; on loopback the inference is noisy, at 150 ms it is not). Results go
to `results-rtt<N>-<plain|tls>.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SDK_VERSION = "2.10.0"
TOOLS = ["read", "write", "edit", "glob", "grep", "bash"]
REF, OURS = "reference", "ours"


def load_run_py() -> typing.Any:
    """tests/fake-control-plane/sdk_check/run.py as a module (its `Fake` class and `ts`)."""
    path = REPO / "tests" / "fake-control-plane" / "sdk_check" / "run.py"
    spec = importlib.util.spec_from_file_location("sdk_check_run", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SDK_CHECK = load_run_py()
Fake = SDK_CHECK.Fake
ts = SDK_CHECK.ts
ensure_venv = SDK_CHECK.ensure_venv  # the venv with anthropic==2.10.0, as run.py makes it


# --------------------------------------------------------------------------- /proc sampling


def proc_status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_rss_kib(root: int) -> int:
    """Summed VmRSS of `root` and every descendant (walks /proc/*/stat for parent ids)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += proc_status_kib(pid, "VmRSS") or 0
        todo.extend(children.get(pid, []))
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_tree_kib = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak_tree_kib = max(self.peak_tree_kib, tree_rss_kib(self.pid))
            self.halt.wait(self.interval)


# --------------------------------------------------------------------------- one run


def admin_get(fake: typing.Any, path: str) -> typing.Any:
    with urllib.request.urlopen(f"{fake.url}/_fake{path}", timeout=60, context=fake.ssl_context) as resp:
        return json.loads(resp.read())


class DelayProxy:
    """`delay-proxy` in front of a fake (loopback only): the URL workers are given."""

    def __init__(self, binary: Path, fake: typing.Any, rtt_ms: float):
        parts = urllib.parse.urlsplit(fake.url)
        host = parts.hostname or ""
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise SystemExit(f"refusing to proxy to a non-loopback address: {fake.url}")
        self.proc = subprocess.Popen([str(binary), "--upstream", parts.netloc, "--rtt-ms", str(rtt_ms)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit("delay-proxy printed nothing")
        self.url = f"{parts.scheme}://{json.loads(line)['listen']}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Endpoint:
    """A fake, and the delay proxy in front of it when `--rtt-ms` is given."""

    def __init__(self, args: argparse.Namespace):
        self.fake = Fake(args.fake_bin, ["--ping-interval-ms", "5000"], tls=args.tls)
        self.proxy = None
        try:
            if args.rtt_ms is not None:
                self.proxy = DelayProxy(args.proxy_bin, self.fake, args.rtt_ms)
        except BaseException:
            self.fake.close()
            raise
        self.url = self.proxy.url if self.proxy else self.fake.url

    def close(self) -> None:
        if self.proxy:
            self.proxy.close()
        self.fake.close()


def worker_command(kind: str, args: argparse.Namespace, concurrency: int, workdir: Path,
                   config: Path | None | str = "default", ca_file: str | None = None) -> list[str]:
    if kind == REF:
        return [str(args.venv_python), str(HERE / "sdk_worker.py")]
    if config == "default":
        config = args.ours_config
    cfg = ["--config", str(config)] if config else []
    ca = ["--ca-cert", ca_file] if ca_file else []
    return [str(args.ours_bin), "serve", *cfg, *ca, "--workdir", str(workdir), "--concurrency", str(concurrency),
            "--log-format", "json", *args.ours_arg]


def worker_env(ep: Endpoint, workdir: Path, concurrency: int) -> dict:
    fake = ep.fake
    env = dict(
        os.environ,
        ANTHROPIC_BASE_URL=ep.url,
        ANTHROPIC_ENVIRONMENT_ID=fake.environment_id,
        ANTHROPIC_ENVIRONMENT_KEY=fake.environment_key,
        ANTHROPIC_API_KEY=fake.api_key,
        WORKER_WORKDIR=str(workdir),
        WORKERS=str(concurrency),
    )
    if fake.ca_file:
        env["SSL_CERT_FILE"] = fake.ca_file  # httpx, under the reference's client, trusts it
    return env


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def startup_probe(kind: str, variant: str, args: argparse.Namespace, config: Path | None | str = "default") -> dict:
    """Start a worker on an empty queue; time to its first poll, and its RSS once polling."""
    ep = Endpoint(args)
    fake = ep.fake
    workdir = Path(tempfile.mkdtemp(prefix=f"sbs-probe-{kind}-"))
    proc = None
    try:
        with open(args.out / f"probe-{kind}-{variant}.log", "w") as log:
            t_start = time.time()
            proc = subprocess.Popen(worker_command(kind, args, 1, workdir, config, fake.ca_file),
                                    env=worker_env(ep, workdir, 1),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        first = None
        deadline = time.monotonic() + 30
        while first is None and time.monotonic() < deadline and proc.poll() is None:
            polls = [ts(r["at"]) for r in admin_get(fake, "/requests") if r["path"].endswith("/work/poll")]
            first = min(polls) if polls else None
            if first is None:
                time.sleep(0.01)
        time.sleep(0.5)  # settle: the first long-poll is in flight
        rss = proc_status_kib(proc.pid, "VmRSS")
    finally:
        if proc is not None:
            stop_process(proc)
        ep.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"worker": kind, "variant": variant,
            "start_to_first_poll_ms": round((first - t_start) * 1000, 3) if first else None,
            "idle_rss_kib": rss}


def one_run(kind: str, concurrency: int, sessions: int, rnd: int, args: argparse.Namespace) -> dict:
    ep = Endpoint(args)
    fake = ep.fake
    workdir = Path(tempfile.mkdtemp(prefix=f"sbs-{kind}-"))
    log_path = args.out / f"worker-{kind}-r{rnd}-c{concurrency}.log"
    proc = None
    try:
        # At a network distance, work arrives at a worker that is already polling (its
        # connections as warm as they get in production); on loopback it is queued up front.
        warm_first = args.rtt_ms is not None
        work = [] if warm_first else [fake.enqueue(args.scenario_obj) for _ in range(sessions)]
        env = worker_env(ep, workdir, concurrency)
        with open(log_path, "w") as log:
            t_start = time.time()
            proc = subprocess.Popen(worker_command(kind, args, concurrency, workdir, ca_file=fake.ca_file), env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = Sampler(proc.pid)
        sampler.start()
        if warm_first:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if any(r["path"].endswith("/work/poll") for r in admin_get(fake, "/requests")):
                    break
                time.sleep(0.05)
            time.sleep(1.0 + 4 * args.rtt_ms / 1000)  # settle: start-up requests done, polling
            work = [fake.enqueue(args.scenario_obj) for _ in range(sessions)]
        ids = {w for w, _ in work}
        deadline = time.monotonic() + args.run_timeout
        timed_out = False
        while True:
            state = admin_get(fake, "/state")
            if all(w["state"] == "stopped" for w in state["work"] if w["id"] in ids):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.1)
        vmhwm = proc_status_kib(proc.pid, "VmHWM")
        sampler.halt.set()
        sampler.join()
        requests = admin_get(fake, "/requests")
        connections = admin_get(fake, "/connections")
        per_session = [
            (w, sid, admin_get(fake, f"/sessions/{sid}/events"), admin_get(fake, f"/sessions/{sid}/results"),
             admin_get(fake, f"/sessions/{sid}/report")["failures"])
            for w, sid in work
        ]
    finally:
        if proc is not None:
            stop_process(proc)
        ep.close()
        shutil.rmtree(workdir, ignore_errors=True)

    at = {r["seq"]: ts(r["at"]) for r in requests}
    by_seq = {r["seq"]: r for r in requests}
    polls = [ts(r["at"]) for r in requests if r["path"].endswith("/work/poll")]
    run: dict = {
        "round": rnd, "worker": kind, "concurrency": concurrency, "sessions": sessions,
        "start_to_first_poll_ms": round((min(polls) - t_start) * 1000, 3) if polls else None,
        "vmhwm_kib": vmhwm, "tree_peak_rss_kib": sampler.peak_tree_kib,
        "claim_to_first_result_ms": [], "tool_ms": {t: [] for t in TOOLS}, "failures": [],
        "ack_to_stop_ms": [], "critical_path": [],
        # The driver's own admin calls open connections too; count those that carried the
        # worker's requests (admin requests are not in the request log).
        "connections": len({r.get("connection") for r in requests if r.get("connection")}),
        "new_connections_to_first_result": [],
        "http_versions": dict(Counter(r.get("http_version") for r in requests)),
        "alpn": dict(Counter(str(c.get("alpn")) for c in connections)),
        "log": str(log_path.relative_to(REPO)) if log_path.is_relative_to(REPO) else str(log_path),
    }
    if timed_out:
        run["failures"].append(f"not every item stopped (worker exit code {proc.returncode})")
    acks, stops = [], []
    for work_id, sid, events, results, failures in per_session:
        run["failures"].extend(f"{sid}: {f}" for f in failures)
        mine = [r for r in requests if f"/work/{work_id}/" in r["path"]]
        ack = [ts(r["at"]) for r in mine if r["path"].endswith("/ack")]
        stop = [ts(r["at"]) for r in mine if r["path"].endswith("/stop")]
        accepted = [r for r in results if r["accepted"]]
        if ack:
            acks.append(ack[0])
        if stop:
            stops.append(stop[-1])
        if ack and accepted:
            run["claim_to_first_result_ms"].append(round((at[accepted[0]["seq"]] - ack[0]) * 1000, 3))
            run["critical_path"].append(critical_path(requests, ack[0], by_seq[accepted[0]["seq"]]))
            used = {r.get("connection") for r in requests}
            first_at = at[accepted[0]["seq"]]
            run["new_connections_to_first_result"].append(
                sum(1 for c in connections if c["id"] in used and ack[0] - 0.001 <= ts(c["at"]) <= first_at))
        if ack and stop:
            run["ack_to_stop_ms"].append(round((stop[-1] - ack[0]) * 1000, 3))
        if ack:
            # Compact per-session timeline, ms from the ack: the worker's requests and the
            # fake's tool_use events (for reading where the time goes).
            mine_s = [r for r in requests if sid in r["path"] or f"/work/{work_id}/" in r["path"]]
            tl = [[round((ts(r["at"]) - ack[0]) * 1000, 3), r["method"], r["endpoint"] or r["path"], r["status"]]
                  for r in mine_s]
            tl += [[round((ts(e["processed_at"]) - ack[0]) * 1000, 3), "EVENT", e["type"], e.get("name")]
                   for e in events if e["type"] != "user.tool_result"]
            run.setdefault("timelines", {})[sid] = sorted(tl, key=lambda x: x[0])
        if accepted and stop:
            run.setdefault("last_result_to_stop_ms", []).append(round((stop[-1] - at[accepted[-1]["seq"]]) * 1000, 3))
        uses = {e["id"]: e for e in events if e["type"] == "agent.tool_use"}
        for r in accepted:
            ev = uses.get(r["tool_use_id"])
            if ev and ev["name"] in run["tool_ms"]:
                run["tool_ms"][ev["name"]].append(round((at[r["seq"]] - ts(ev["processed_at"])) * 1000, 3))
    if acks and stops and len(stops) == sessions:
        span = max(stops) - min(acks)
        run["sessions_per_s"] = round(sessions / span, 3) if span > 0 else None
        run["claim_to_last_stop_s"] = round(span, 3)
    return run


def critical_path(requests: list[dict], ack_at: float, result: dict) -> list[str]:
    """The requests the first result waited on, ack first, inferred from the fake's times.

    From the result's POST, step back to the request (not a poll; arrived at or after the
    ack) whose response was sent last before the current one arrived, until the ack. At
    concurrency 1 every such request is the session's own."""
    def name(r: dict) -> str:
        return r["endpoint"] or r["path"]

    cands = [r for r in requests if r.get("responded_at") and not r["path"].endswith("/work/poll")
             and ts(r["at"]) >= ack_at - 1e-6]
    chain, cur = [result], result
    while not cur["path"].endswith("/ack"):
        preds = [r for r in cands if r["seq"] != cur["seq"] and ts(r["responded_at"]) <= ts(cur["at"])]
        if not preds:
            break
        cur = max(preds, key=lambda r: ts(r["responded_at"]))
        chain.append(cur)
    return [name(r) for r in reversed(chain)]


# --------------------------------------------------------------------------- statistics


def pct(xs: list[float], p: float) -> float | None:
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def collect(runs: list[dict], kind: str, conc: int, key: str, tool: str | None = None) -> list[float]:
    out: list[float] = []
    for r in runs:
        if r["worker"] != kind or r["concurrency"] != conc:
            continue
        out.extend(r["tool_ms"][tool] if tool else r[key])
    return out


def per_round_p50_ratios(runs: list[dict], conc: int, key: str, tool: str | None = None) -> list[float]:
    out = []
    for rnd in sorted({r["round"] for r in runs}):
        rr = [r for r in runs if r["round"] == rnd]
        o = pct(collect(rr, OURS, conc, key, tool), 50)
        f = pct(collect(rr, REF, conc, key, tool), 50)
        if (x := ratio(o, f)) is not None:
            out.append(x)
    return out


def table(runs: list[dict], probes: list[dict]) -> tuple[str, list[dict]]:
    rows: list[dict] = []

    def latency_row(label: str, conc: int, key: str, tool: str | None, goal: str) -> None:
        o, f = collect(runs, OURS, conc, key, tool), collect(runs, REF, conc, key, tool)
        per_round = per_round_p50_ratios(runs, conc, key, tool)
        rows.append({
            "metric": label, "unit": "ms", "n_ours": len(o), "n_ref": len(f),
            "ours_p50": pct(o, 50), "ref_p50": pct(f, 50), "ratio_p50": ratio(pct(o, 50), pct(f, 50)),
            "ours_p99": pct(o, 99), "ref_p99": pct(f, 99), "ratio_p99": ratio(pct(o, 99), pct(f, 99)),
            "round_ratio_p50": [min(per_round), max(per_round)] if per_round else None,
            "goal": goal, "better": "lower",
        })

    def scalar_row(label: str, unit: str, values: typing.Callable[[str], list[float]], better: str,
                   what: str = "runs") -> None:
        o, f = values(OURS), values(REF)
        rows.append({
            "metric": label, "unit": unit, "n_ours": len(o), "n_ref": len(f),
            "ours_p50": pct(o, 50), "ref_p50": pct(f, 50), "ratio_p50": ratio(pct(o, 50), pct(f, 50)),
            "ours_p99": None, "ref_p99": None, "ratio_p99": None,
            "ours_max": max(o) if o else None, "ref_max": max(f) if f else None,
            "round_ratio_p50": None, "goal": "", "better": better, "what": what,
        })

    latency_row("claim (ack) → first tool result, c=1", 1, "claim_to_first_result_ms", None, "≤ 0.1×")
    for t in TOOLS:
        latency_row(f"`{t}` tool_use → result POST, c=1", 1, "", t, "≤ 0.5×")
    latency_row("claim (ack) → first tool result, c=8", 8, "claim_to_first_result_ms", None, "")
    for t in TOOLS:
        latency_row(f"`{t}` tool_use → result POST, c=8", 8, "", t, "")

    def runs_of(kind: str, conc: int | None = None) -> list[dict]:
        return [r for r in runs if r["worker"] == kind and (conc is None or r["concurrency"] == conc)]

    for conc in (1, 8):
        scalar_row(f"sessions per second, c={conc}", "sessions/s",
                   lambda k, c=conc: [r["sessions_per_s"] for r in runs_of(k, c) if r.get("sessions_per_s")], "higher")
    def probe_vals(kind: str, variant: str, key: str, scale: float = 1.0) -> list[float]:
        return [p[key] * scale for p in probes if p["worker"] == kind and p["variant"] == variant and p[key]]

    for variant, label in (("compile-cache", "compile cache warm"), ("no-cache", "no compile cache")):
        if probe_vals(OURS, variant, "start_to_first_poll_ms"):
            scalar_row(f"worker start → first poll request (ours: {label})", "ms",
                       lambda k, v=variant: probe_vals(k, v if k == OURS else "default", "start_to_first_poll_ms"),
                       "lower", "probes")
    if probe_vals(OURS, "compile-cache", "idle_rss_kib"):
        scalar_row("idle worker RSS, 0.5 s after its first poll", "MiB",
                   lambda k: probe_vals(k, "compile-cache" if k == OURS else "default", "idle_rss_kib", 1 / 1024),
                   "lower", "probes")
    for conc in (1, 8):
        scalar_row(f"worker process peak RSS (VmHWM), c={conc}", "MiB",
                   lambda k, c=conc: [r["vmhwm_kib"] / 1024 for r in runs_of(k, c) if r["vmhwm_kib"]], "lower")
        scalar_row(f"worker + children peak summed RSS, c={conc}", "MiB",
                   lambda k, c=conc: [r["tree_peak_rss_kib"] / 1024 for r in runs_of(k, c) if r["tree_peak_rss_kib"]],
                   "lower")

    lines = [
        "| metric | n ours / ref | ours p50 | ref p50 | **ratio p50** | per-round p50 ratio | ours p99 | ref p99 | **ratio p99** | goal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        unit = r["unit"]
        rr = r["round_ratio_p50"]
        rr_s = f"{fmt(rr[0])}–{fmt(rr[1])}×" if rr else "–"
        if r["n_ours"] == 0 and r["n_ref"] == 0:
            continue  # not measured in this run (e.g. --sessions-c8 0)
        if "what" in r:  # scalar rows: median over runs, max instead of p99
            lines.append(
                f"| {r['metric']} ({unit}; median of {r['what']}, max) | {r['n_ours']} / {r['n_ref']} {r['what']} | "
                f"{fmt(r['ours_p50'])} | {fmt(r['ref_p50'])} | **{fmt(r['ratio_p50'])}×** | – | "
                f"max {fmt(r['ours_max'])} | max {fmt(r['ref_max'])} | – | {r['better']} is better |")
        else:
            lines.append(
                f"| {r['metric']} ({unit}) | {r['n_ours']} / {r['n_ref']} | {fmt(r['ours_p50'])} | {fmt(r['ref_p50'])} | "
                f"**{fmt(r['ratio_p50'])}×** | {rr_s} | {fmt(r['ours_p99'])} | {fmt(r['ref_p99'])} | "
                f"**{fmt(r['ratio_p99'])}×** | {r['goal']} |")
    return "\n".join(lines), rows


def network_table(runs: list[dict], rtt_ms: float, tls: bool) -> str:
    """Per worker, at concurrency 1: the round-trip view of issue 16."""
    def rt(ms: float | None) -> str:
        return f"{ms / rtt_ms:.2f}" if ms is not None and rtt_ms > 0 else "–"

    transport = "TLS" if tls else "plain"
    lines = [
        "| RTT | transport | worker | sessions | claim → first result p50 / p99 (ms) | in round trips p50 / p99 "
        "| per tool call p50 / p99 (ms; round trips) | whole session ack → stop p50 (ms; round trips) "
        "| requests on the critical path (most common) | new connections ack → first result p50 "
        "| connections per run | HTTP |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for kind in (OURS, REF):
        rs = [r for r in runs if r["worker"] == kind and r["concurrency"] == 1]
        if not rs:
            continue
        c2f = [x for r in rs for x in r["claim_to_first_result_ms"]]
        tools = [x for r in rs for t in TOOLS for x in r["tool_ms"][t]]
        a2s = [x for r in rs for x in r.get("ack_to_stop_ms", [])]
        paths = Counter(" → ".join(p) for r in rs for p in r.get("critical_path", []))
        path, n_path = paths.most_common(1)[0] if paths else ("–", 0)
        n_req = len(path.split(" → ")) if paths else 0
        conns = sorted(r.get("connections", 0) for r in rs)
        newc = [x for r in rs for x in r.get("new_connections_to_first_result", [])]
        versions = Counter()
        for r in rs:
            versions.update({k: v for k, v in r.get("http_versions", {}).items() if k})
        label = "wasm-sandbox" if kind == OURS else "reference SDK"
        lines.append(
            f"| {rtt_ms:g} ms | {transport} | {label} | {len(c2f)} | {fmt(pct(c2f, 50))} / {fmt(pct(c2f, 99))} "
            f"| {rt(pct(c2f, 50))} / {rt(pct(c2f, 99))} "
            f"| {fmt(pct(tools, 50))} / {fmt(pct(tools, 99))}; {rt(pct(tools, 50))} / {rt(pct(tools, 99))} "
            f"| {fmt(pct(a2s, 50))}; {rt(pct(a2s, 50))} | {n_req}: {path} ({n_path}/{sum(paths.values())}) "
            f"| {fmt(pct(newc, 50), 1)} | {', '.join(str(c) for c in conns)} | {', '.join(f'{k} ×{v}' for k, v in versions.most_common())} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- SVG


def svg_cdfs(runs: list[dict], title: str) -> str:
    """ECDF panels (log-scale x, ms) of each latency metric at concurrency 1: ours vs reference."""
    panels = [("claim → first tool result", "claim_to_first_result_ms", None)] + [
        (f"{t}: tool_use → result POST", "", t) for t in TOOLS
    ] + [("any tool call, concurrency 8", "", "*")]
    colors = {OURS: "#1f77b4", REF: "#d62728"}
    cols, pw, ph = 4, 300, 220
    ml, mr, mt, mb = 46, 12, 28, 44
    width, height = cols * pw, 70 + math.ceil(len(panels) / cols) * ph + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">{esc(title)}</text>',
        f'<line x1="{width / 2 - 200}" y1="40" x2="{width / 2 - 175}" y2="40" stroke="{colors[OURS]}" stroke-width="2"/>',
        f'<text x="{width / 2 - 170}" y="44">ours: wasm-sandbox serve</text>',
        f'<line x1="{width / 2 + 20}" y1="40" x2="{width / 2 + 45}" y2="40" stroke="{colors[REF]}" stroke-width="2"/>',
        f'<text x="{width / 2 + 50}" y="44">reference: anthropic {SDK_VERSION} EnvironmentWorker</text>',
        f'<text x="{width / 2}" y="60" text-anchor="middle" fill="#555">empirical CDF, x = milliseconds '
        f'(log scale), concurrency 1 unless noted; dashed = median</text>',
    ]
    for i, (label, key, tool) in enumerate(panels):
        ox, oy = (i % cols) * pw, 70 + (i // cols) * ph
        data = {}
        for kind in (OURS, REF):
            if tool == "*":
                xs = [v for t in TOOLS for v in collect(runs, kind, 8, "", t)]
            else:
                xs = collect(runs, kind, 1, key, tool)
            data[kind] = sorted(x for x in xs if x > 0)
        allx = data[OURS] + data[REF]
        if not allx:
            continue
        lo = 10 ** math.floor(math.log10(min(allx)))
        hi = 10 ** math.ceil(math.log10(max(allx)))
        x0, x1, y0, y1 = ox + ml, ox + pw - mr, oy + ph - mb, oy + mt

        def sx(v: float, lo: float = lo, hi: float = hi, x0: float = x0, x1: float = x1) -> float:
            return x0 + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (x1 - x0)

        def sy(p: float, y0: float = y0, y1: float = y1) -> float:
            return y0 - p * (y0 - y1)

        out.append(f'<text x="{(x0 + x1) / 2}" y="{oy + 16}" text-anchor="middle" font-size="12">{esc(label)}</text>')
        out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#999"/>')
        d = lo
        while d <= hi * 1.0001:
            for m in range(1, 10):
                v = d * m
                if v > hi * 1.0001:
                    break
                x = sx(v)
                out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="{"#ccc" if m == 1 else "#eee"}"/>')
            out.append(f'<text x="{sx(d):.1f}" y="{y0 + 14}" text-anchor="middle">{d:g}</text>')
            d *= 10
        for p in (0, 0.5, 1):
            out.append(f'<text x="{x0 - 4}" y="{sy(p) + 4:.1f}" text-anchor="end">{p:g}</text>')
        out.append(f'<line x1="{x0}" y1="{sy(0.5):.1f}" x2="{x1}" y2="{sy(0.5):.1f}" stroke="#eee"/>')
        for kind in (REF, OURS):
            xs = data[kind]
            if not xs:
                continue
            n = len(xs)
            step = max(1, n // 300)  # at most ~300 steps per curve keeps the file small
            pts = [f"{sx(xs[0]):.1f},{sy(0):.1f}"]
            for j in sorted(set(range(0, n, step)) | {n - 1}):
                v = xs[j]
                pts.append(f"{sx(v):.1f},{sy(j / n):.1f}")
                pts.append(f"{sx(v):.1f},{sy((j + 1) / n):.1f}")
            out.append(f'<polyline fill="none" stroke="{colors[kind]}" stroke-width="1.6" points="{" ".join(pts)}"/>')
            med = pct(xs, 50)
            if med:
                out.append(f'<line x1="{sx(med):.1f}" y1="{y0}" x2="{sx(med):.1f}" y2="{y1}" '
                           f'stroke="{colors[kind]}" stroke-dasharray="3,3"/>')
        o50, f50 = pct(data[OURS], 50), pct(data[REF], 50)
        if o50 and f50:
            out.append(f'<text x="{(x0 + x1) / 2}" y="{y0 + 28}" text-anchor="middle" fill="#333">'
                       f'p50 ours {fmt(o50)} ms, reference {fmt(f50)} ms ({fmt(o50 / f50)}×)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def plot_title(meta: dict) -> str:
    return f"wasm-sandbox serve vs {meta['reference']} — {meta['date'][:10]}, {meta['cpus']}-core VM"


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("SBS_ROUNDS", 5)),
                    help="rounds; each runs reference and ours at concurrency 1 and 8 (default 5)")
    ap.add_argument("--sessions-c1", type=int, default=10, help="sessions per concurrency-1 run (default 10)")
    ap.add_argument("--sessions-c8", type=int, default=24, help="sessions per concurrency-8 run (default 24)")
    ap.add_argument("--scenario", type=Path, default=HERE / "scenarios" / "per-tool.json")
    ap.add_argument("--fake-bin", type=Path, default=REPO / "target" / "release" / "serve-fake")
    ap.add_argument("--ours-bin", type=Path, default=REPO / "target" / "release" / "wasm-sandbox")
    ap.add_argument("--ours-arg", action="append", default=[], help="extra `wasm-sandbox serve` argument (repeatable)")
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("SIDE_BY_SIDE_VENV", REPO / "target" / "side-by-side" / "venv")))
    ap.add_argument("--out", type=Path, default=REPO / "target" / "side-by-side")
    ap.add_argument("--run-timeout", type=float, default=120.0, help="seconds one run may take")
    ap.add_argument("--svg-copy", type=Path, help="also copy the SVG here (e.g. docs/img/side-by-side.svg)")
    ap.add_argument("--startup-probes", type=int, default=2, help="start-up probes per worker variant per round")
    ap.add_argument("--no-compile-cache", action="store_true",
                    help="runs start ours without a compile cache (it then compiles its component at every start)")
    ap.add_argument("--only", choices=[REF, OURS], help="run one worker only (for debugging)")
    ap.add_argument("--rtt-ms", type=float, default=None,
                    help="put delay-proxy between each worker and the fake, adding this round trip "
                         "(N/2 ms each way; 0 = the proxy without delay) and print the round-trip table")
    ap.add_argument("--tls", action="store_true",
                    help="the fake serves HTTPS (CA made at start-up; HTTP/2 and HTTP/1.1 by ALPN)")
    ap.add_argument("--proxy-bin", type=Path, default=REPO / "target" / "release" / "delay-proxy")
    ap.add_argument("--replot", type=Path, metavar="RESULTS_JSON",
                    help="run nothing: print the table and redraw the SVG from an earlier results.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads(args.replot.read_text())
        meta = saved["meta"]
        md, _ = table(saved["runs"], saved.get("startup_probes", []))
        svg = svg_cdfs(saved["runs"], plot_title(meta))
        (args.out / "latency.svg").write_text(svg)
        if args.svg_copy:
            args.svg_copy.parent.mkdir(parents=True, exist_ok=True)
            args.svg_copy.write_text(svg)
        print(md)
        if meta.get("rtt_ms") is not None:
            print()
            print(network_table(saved["runs"], meta["rtt_ms"], meta.get("tls", False)))
        return 0
    args.scenario_obj = json.loads(args.scenario.read_text())
    args.scenario_obj.setdefault("name", args.scenario.stem)
    for b in (args.fake_bin, args.ours_bin, *([args.proxy_bin] if args.rtt_ms is not None else [])):
        if not b.exists():
            sys.exit(f"missing {b}; run benches/side_by_side.sh (it builds them)")
    args.venv_python = ensure_venv(args.venv)
    sdk_version = subprocess.run([str(args.venv_python), "-c", "import anthropic; print(anthropic.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.strip()

    # Our worker compiles its file-tools component at start-up unless given a compile cache
    # (`[runtime.engine] cache_dir`); the runs use one, primed once here, and the start-up
    # probes measure both.
    args.ours_config = None
    if not args.no_compile_cache:
        cache = args.out / "cwasm-cache"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        args.ours_config = args.out / "ours.toml"
        args.ours_config.write_text(f'[runtime.engine]\ncache_dir = "{cache}"\n')
    order = [k for k in (REF, OURS) if args.only in (None, k)]
    started = time.monotonic()
    runs: list[dict] = []
    probes: list[dict] = []
    # One unrecorded start of each first: fills our compile cache, and the page cache for both.
    for kind in order:
        startup_probe(kind, "prime", args)
    for rnd in range(1, args.rounds + 1):
        for _ in range(args.startup_probes):
            for kind, variant, config in ((REF, "default", None), (OURS, "compile-cache", "default"),
                                          (OURS, "no-cache", None)):
                if kind not in order or (variant == "compile-cache" and not args.ours_config):
                    continue
                p = startup_probe(kind, variant, args, config)
                p["round"] = rnd
                probes.append(p)
                print(f"round {rnd}/{args.rounds} {kind:>9} start-up ({variant}): first poll after "
                      f"{p['start_to_first_poll_ms']} ms, RSS {p['idle_rss_kib']} KiB", flush=True)
        for conc, n in ((1, args.sessions_c1), (8, args.sessions_c8)):
            if n <= 0:
                continue
            for kind in order:
                t0 = time.monotonic()
                r = one_run(kind, conc, n, rnd, args)
                runs.append(r)
                tool_n = sum(len(v) for v in r["tool_ms"].values())
                print(f"round {rnd}/{args.rounds} {kind:>9} c={conc}: {n} sessions, {tool_n} tool results, "
                      f"{r.get('sessions_per_s', '-')} sessions/s, start→poll {r['start_to_first_poll_ms']} ms, "
                      f"VmHWM {r['vmhwm_kib']} KiB, {len(r['failures'])} failures "
                      f"({time.monotonic() - t0:.1f}s)", flush=True)
                for f in r["failures"][:5]:
                    print(f"  FAIL {f}", flush=True)
    wall = time.monotonic() - started

    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
        "loadavg_at_end": os.getloadavg(),
        "git_head": git, "worktree_dirty": dirty,
        "ours_bin": str(args.ours_bin),
        "ours_bin_mtime": dt.datetime.fromtimestamp(args.ours_bin.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
        "reference": f"anthropic {sdk_version} EnvironmentWorker, Python "
                     + subprocess.run([str(args.venv_python), "-c", "import platform; print(platform.python_version())"],
                                      capture_output=True, text=True).stdout.strip(),
        "scenario": str(args.scenario), "rounds": args.rounds,
        "sessions_c1": args.sessions_c1, "sessions_c8": args.sessions_c8,
        "ours_command": worker_command(OURS, args, 8, Path("WORKDIR")),
        "ours_config": args.ours_config.read_text() if args.ours_config else None,
        "wall_seconds": round(wall, 1),
        "rtt_ms": args.rtt_ms, "tls": args.tls, "argv": sys.argv[1:],
    }
    md, rows = table(runs, probes)
    results_name = "results.json" if args.rtt_ms is None else \
        f"results-rtt{args.rtt_ms:g}-{'tls' if args.tls else 'plain'}.json"
    (args.out / results_name).write_text(json.dumps({"meta": meta, "summary": rows, "startup_probes": probes,
                                                     "runs": runs}, indent=1))
    svg = svg_cdfs(runs, plot_title(meta))
    svg_name = "latency.svg" if args.rtt_ms is None else results_name.replace("results", "latency").replace(".json", ".svg")
    (args.out / svg_name).write_text(svg)
    if args.svg_copy:
        args.svg_copy.parent.mkdir(parents=True, exist_ok=True)
        args.svg_copy.write_text(svg)
    print()
    print(f"ours/reference, {args.rounds} interleaved rounds, {meta['reference']}, "
          f"git {git}{' (dirty tree)' if dirty else ''}, {meta['date']}, {wall:.0f}s")
    print()
    print(md)
    print()
    for kind in (OURS, REF):
        gaps = [g for r in runs if r["worker"] == kind for g in r.get("last_result_to_stop_ms", [])]
        slow = [g for g in gaps if g > 500]
        if gaps:
            print(f"{kind}: last result → stop p50 {fmt(pct(gaps, 50))} ms, p99 {fmt(pct(gaps, 99))} ms; "
                  f"{len(slow)} of {len(gaps)} sessions over 0.5 s (max {fmt(max(gaps))} ms)")
    if args.rtt_ms is not None:
        print()
        print(f"at {args.rtt_ms:g} ms round trip, {'TLS' if args.tls else 'plain HTTP'}, concurrency 1:")
        print()
        print(network_table(runs, args.rtt_ms, args.tls))
    print(f"raw samples: {args.out / results_name}; plot: {args.out / svg_name}")
    failures = [f for r in runs for f in r["failures"]]
    if failures:
        print(f"{len(failures)} scenario failure(s); see results.json", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
