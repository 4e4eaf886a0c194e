#!/usr/bin/env python3
"""Drive the fake control plane with the official `anthropic` SDK 2.10.0.

Two phases, against one `serve-fake` process:

1. **shapes** - the SDK's own client calls every endpoint a worker uses (poll, ack,
   heartbeat incl. a 412, stop incl. a 409, stats, list, retrieve, session retrieve, event
   list/send/stream, skill version + download, memory list/create/update/delete). Every JSON
   body is validated with the SDK's pydantic models (`model_validate`, not the SDK's lenient
   constructor), so a field the fake names or types differently fails here.
2. **worker** - the SDK's real `EnvironmentWorker` (default tools: the agent toolset) serves
   `examples/sessions/all-tools.json` plus a generated skills + memory session end to end. The
   fake's scenario reports must pass (every expected result posted once, nothing posted for
   `web_fetch`, no refused post), every item must end force-stopped, and the request log must
   show the protocol (first beat `NO_HEARTBEAT`, version and beta headers, worker id).

`--worker-command` runs another worker (e.g. ours) instead of the SDK's for phase 2, with
`ANTHROPIC_BASE_URL`, `ANTHROPIC_ENVIRONMENT_ID`, `ANTHROPIC_ENVIRONMENT_KEY` and
`WORKER_WORKDIR` set; `--scenario`, `--repeat` and `--workers` size the run for benchmarks.
A JSON summary with per-session timings can be written with `--json-out`.

The script bootstraps its own venv (CPython 3.12 + anthropic==2.10.0) when the running
interpreter lacks that SDK; see README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing
import urllib.request
import uuid
import zipfile
from datetime import datetime
from pathlib import Path

SDK_VERSION = "2.10.0"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
EXAMPLES = REPO / "examples" / "sessions"

FAILURES: list[str] = []


def fail(msg: str) -> None:
    FAILURES.append(msg)
    print(f"  FAIL {msg}", flush=True)


def check(cond: bool, msg: str) -> None:
    if not cond:
        fail(msg)


# --------------------------------------------------------------------------- bootstrap


def ensure_venv(venv: Path) -> Path:
    """Creates `venv` (CPython 3.12 from pyenv when present, else `SDK_CHECK_PYTHON` or this
    interpreter) and installs anthropic==2.10.0 (or `ANTHROPIC_WHEEL`) unless present; returns
    its python. Shared with benches/side_by_side.py."""
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        base = os.environ.get("SDK_CHECK_PYTHON")
        if not base:
            try:
                root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
                cand = Path(root) / "versions" / "3.12.1" / "bin" / "python3"
                base = str(cand) if cand.exists() else sys.executable
            except (OSError, subprocess.CalledProcessError):
                base = sys.executable
        print(f"creating venv {venv} with {base}", flush=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    have = subprocess.run(
        [str(vpy), "-c", "import importlib.metadata as m; print(m.version('anthropic'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if have != SDK_VERSION:
        spec = os.environ.get("ANTHROPIC_WHEEL") or f"anthropic=={SDK_VERSION}"
        print(f"installing {spec} into {venv}", flush=True)
        subprocess.run([str(vpy), "-m", "pip", "install", "-q", spec], check=True)
    return vpy


def ensure_sdk() -> None:
    """Re-exec under a venv holding anthropic==2.10.0 if this interpreter lacks it."""
    try:
        if importlib.metadata.version("anthropic") == SDK_VERSION:
            return
    except importlib.metadata.PackageNotFoundError:
        pass
    if os.environ.get("SDK_CHECK_BOOTSTRAPPED"):
        sys.exit(f"anthropic=={SDK_VERSION} is not importable even inside the bootstrapped venv")
    venv = Path(os.environ.get("SDK_CHECK_VENV", REPO / ".venv"))
    vpy = ensure_venv(venv)
    env = dict(os.environ, SDK_CHECK_BOOTSTRAPPED="1")
    os.execve(str(vpy), [str(vpy), __file__, *sys.argv[1:]], env)


# --------------------------------------------------------------------------- fake process


class Fake:
    """A `serve-fake` process. With `tls=True` it serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN)
    with a CA made at start-up: `ca_file` is that CA's PEM, for clients to trust (the SDK's
    httpx client reads `SSL_CERT_FILE`; `wasm-sandbox serve --ca-cert FILE`); `ssl_context`
    trusts it for the admin calls."""

    def __init__(self, binary: Path, extra_args: list[str], tls: bool = False):
        self.ca_dir = tempfile.mkdtemp(prefix="fake-ca-") if tls else None
        self.ca_file: str | None = os.path.join(self.ca_dir, "ca.pem") if self.ca_dir else None
        tls_args = ["--tls", "--ca-cert-out", self.ca_file] if self.ca_file else []
        self.proc = subprocess.Popen(
            [str(binary), *tls_args, *extra_args],
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit("serve-fake printed nothing")
        info = json.loads(line)
        self.url: str = info["url"]
        self.environment_id: str = info["environment_id"]
        self.environment_key: str = info["environment_key"]
        self.api_key: str = info["api_key"]
        self.ssl_context = None
        if self.ca_file:
            import ssl

            self.ssl_context = ssl.create_default_context(cafile=self.ca_file)

    def admin(self, method: str, path: str, body: object | bytes | None = None) -> typing.Any:
        data = None
        headers = {}
        if isinstance(body, bytes):
            data = body
        elif body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        req = urllib.request.Request(f"{self.url}/_fake{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30, context=self.ssl_context) as resp:
            return json.loads(resp.read())

    def enqueue(self, scenario: dict) -> tuple[str, str]:
        r = self.admin("POST", "/sessions", scenario)
        return r["work_id"], r["session_id"]

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.ca_dir:
            shutil.rmtree(self.ca_dir, ignore_errors=True)


def build_fake() -> Path:
    print("building serve-fake", flush=True)
    subprocess.run(
        ["cargo", "build", "-q", "-p", "wasm-sandbox-fake-control-plane", "--bin", "serve-fake"],
        cwd=REPO,
        check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "serve-fake"


# --------------------------------------------------------------------------- validation helpers


def validate(model: typing.Any, raw: object, what: str) -> None:
    from pydantic import ValidationError

    try:
        model.model_validate(raw)
    except ValidationError as e:
        fail(f"{what}: does not validate as {model.__name__}: {e}")


def union_members(alias: typing.Any) -> dict[str, typing.Any]:
    """Maps `type` literal -> model class for an SDK `Annotated[Union[...], ...]` alias."""
    inner = typing.get_args(alias)[0] if typing.get_origin(alias) is typing.Annotated else alias
    out = {}
    for cls in typing.get_args(inner):
        lit = cls.model_fields["type"].annotation
        for v in typing.get_args(lit):
            out[v] = cls
    return out


def validate_union(members: dict[str, typing.Any], raw: dict, what: str) -> None:
    cls = members.get(raw.get("type"))
    if cls is None:
        fail(f"{what}: type {raw.get('type')!r} is not a member of the SDK union")
        return
    validate(cls, raw, f"{what} ({raw.get('type')})")


def skill_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pdf/SKILL.md", "---\nname: pdf\n---\nfake pdf skill: use scripts/run.sh\n")
        info = zipfile.ZipInfo("pdf/scripts/run.sh")
        info.external_attr = (0o100755 << 16) | (3 << 8)
        info.create_system = 3
        z.writestr(info, "#!/bin/sh\necho pdf-run\n")
    return buf.getvalue()


# --------------------------------------------------------------------------- phase 1: shapes


def phase_shapes(fake: Fake) -> None:
    print("phase 1: endpoint shapes through the SDK client", flush=True)
    import anthropic
    from anthropic import Anthropic
    from anthropic.lib.environments._worker import _sessions_token_from_secret
    from anthropic.types.beta import BetaManagedAgentsSession
    from anthropic.types.beta.environments import (
        BetaSelfHostedWork,
        BetaSelfHostedWorkHeartbeatResponse,
        BetaSelfHostedWorkListResponse,
        BetaSelfHostedWorkQueueStats,
        BetaHeartbeatPreconditionFailedErrorDetails,
        BetaWorkLeaseState,
    )
    from anthropic.types.beta.memory_stores import (
        BetaManagedAgentsDeletedMemory,
        BetaManagedAgentsMemory,
        BetaManagedAgentsMemoryListItem,
    )
    from anthropic.types.beta.sessions import (
        BetaManagedAgentsSendSessionEvents,
        BetaManagedAgentsSessionEvent,
        BetaManagedAgentsStreamSessionEvents,
    )
    from anthropic.types.beta.skills import BetaSkillVersion
    from anthropic.types.shared import ErrorResponse

    env = fake.environment_id
    skill_id = "skill_sdkcheck" + uuid.uuid4().hex[:8]
    archive = skill_zip()
    fake.admin("POST", f"/skills/{skill_id}?name=pdf", archive)
    work_id, session_id = fake.enqueue(
        {
            "name": "sdk-shapes",
            "start": "immediately",
            "prompt": "shape check",
            "session": {"skills": [{"type": "custom", "skill_id": skill_id, "version": "latest"}]},
            "memory_stores": [{"name": "notes", "memories": {"/a.md": "alpha", "/dir/b.md": "beta"}}],
            "steps": [
                {"tool_use": {"label": "t", "name": "bash", "input": {"command": "true"},
                              "expect": {"is_error": False, "contains": ["ok"]}}},
                {"message": "done"},
                {"idle": {"stop_reason": "end_turn"}},
                "terminate",
            ],
        }
    )
    envc = Anthropic(api_key=fake.environment_key, base_url=fake.url, max_retries=0)
    apic = Anthropic(api_key=fake.api_key, base_url=fake.url, max_retries=0)

    raw = envc.beta.environments.work.with_raw_response.stats(env)
    validate(BetaSelfHostedWorkQueueStats, raw.json(), "stats")
    check(raw.parse().depth == 1, f"stats depth 1, got {raw.parse().depth}")

    raw = envc.beta.environments.work.with_raw_response.poll(env, block_ms=999, anthropic_worker_id="sdk-check")
    body = raw.json()
    validate(BetaSelfHostedWork, body, "poll")
    item = raw.parse()
    check(item is not None and item.id == work_id, "poll returns the enqueued item")
    token = _sessions_token_from_secret(item.secret)
    check(bool(token), "the SDK decodes a sessions token from the secret")
    empty = envc.beta.environments.work.poll(env, block_ms=10)
    check(empty is None, f"empty poll parses as None, got {empty!r}")

    raw = envc.beta.environments.work.with_raw_response.ack(work_id, environment_id=env)
    validate(BetaSelfHostedWork, raw.json(), "ack")
    check(raw.parse().state == "starting", "ack -> starting")

    tokc = Anthropic(api_key=token, base_url=fake.url, max_retries=0)
    raw = tokc.beta.environments.work.with_raw_response.heartbeat(
        work_id, environment_id=env, expected_last_heartbeat="NO_HEARTBEAT"
    )
    validate(BetaSelfHostedWorkHeartbeatResponse, raw.json(), "heartbeat")
    hb = raw.parse()
    check(hb.state == "active" and hb.lease_extended, "first beat -> active, extended")
    hb2 = tokc.beta.environments.work.heartbeat(work_id, environment_id=env, expected_last_heartbeat=hb.last_heartbeat)
    check(hb2.last_heartbeat != hb.last_heartbeat, "echoed beat stores a new value")
    try:
        tokc.beta.environments.work.heartbeat(work_id, environment_id=env, expected_last_heartbeat=hb.last_heartbeat)
        fail("stale heartbeat was accepted")
    except anthropic.APIStatusError as e:
        check(e.status_code == 412, f"stale heartbeat -> 412, got {e.status_code}")
        check(e.error_code == "heartbeat_precondition_failed", f"error_code, got {e.error_code}")
        validate(ErrorResponse, e.body, "412 envelope")
        details = e.body["error"]["details"]
        validate(BetaHeartbeatPreconditionFailedErrorDetails, details, "412 details")
        validate(BetaWorkLeaseState, details["current_state"], "412 current_state")
        check(e.request_id is not None, "request-id header on errors")

    raw = tokc.beta.sessions.with_raw_response.retrieve(session_id)
    validate(BetaManagedAgentsSession, raw.json(), "session retrieve")
    session = raw.parse()
    check(session.agent.skills[0].skill_id == skill_id, "session lists the skill")
    store_id = session.resources[0].memory_store_id

    event_types = union_members(BetaManagedAgentsSessionEvent)
    stream_types = union_members(BetaManagedAgentsStreamSessionEvents)
    page = tokc.beta.sessions.events.list(session_id, limit=1000)
    events = [ev.to_dict() for ev in page.data]
    for ev in events:
        validate_union(event_types, ev, "events.list item")
    tool_use = next((ev for ev in events if ev["type"] == "agent.tool_use"), None)
    if tool_use is None:
        # The script may not have emitted yet; wait through the admin API.
        for _ in range(100):
            evs = fake.admin("GET", f"/sessions/{session_id}/events")
            tool_use = next((ev for ev in evs if ev["type"] == "agent.tool_use"), None)
            if tool_use:
                break
            time.sleep(0.05)
    if tool_use is None:
        fail("the shape scenario never emitted its tool call")
        return
    validate_union(event_types, tool_use, "agent.tool_use")

    # Open the stream before answering, then read the echo, idle and termination live.
    stream = tokc.beta.sessions.events.stream(session_id)
    raw = tokc.beta.sessions.events.with_raw_response.send(
        session_id,
        events=[{"type": "user.tool_result", "tool_use_id": tool_use["id"], "is_error": False,
                 "content": [{"type": "text", "text": "ok"}]}],
    )
    validate(BetaManagedAgentsSendSessionEvents, raw.json(), "events.send")
    seen = []
    for ev in stream:
        d = ev.to_dict()
        validate_union(stream_types, d, "stream event")
        seen.append(d["type"])
        if d["type"] == "session.status_terminated":
            break
    stream.close()
    check(
        seen[:1] == ["user.tool_result"] and seen[-1] == "session.status_terminated",
        f"stream order {seen}",
    )
    try:
        tokc.beta.sessions.events.send(
            session_id,
            events=[{"type": "user.tool_result", "tool_use_id": tool_use["id"],
                     "content": [{"type": "text", "text": "again"}]}],
        )
        fail("duplicate result accepted")
    except anthropic.BadRequestError as e:
        check(e.error_code == "tool_result_duplicate", f"duplicate error_code {e.error_code}")

    raw = tokc.beta.skills.versions.with_raw_response.retrieve("latest", skill_id=skill_id)
    validate(BetaSkillVersion, raw.json(), "skill version")
    version = raw.parse()
    data = tokc.beta.skills.versions.download(version.id, skill_id=skill_id).read()
    check(data == archive, "skill download returns the archive bytes")

    raw = tokc.beta.memory_stores.memories.with_raw_response.list(store_id, view="full", limit=20)
    listing = raw.json()
    for m in listing["data"]:
        validate_union(union_members(BetaManagedAgentsMemoryListItem), m, "memory list item")
    check(sorted(m["path"] for m in listing["data"]) == ["/a.md", "/dir/b.md"], "memory listing")
    created = tokc.beta.memory_stores.memories.with_raw_response.create(store_id, path="/new.md", content="agent wrote")
    validate(BetaManagedAgentsMemory, created.json(), "memory create")
    mem = created.parse()
    updated = tokc.beta.memory_stores.memories.update(
        mem.id, memory_store_id=store_id, content="v2",
        precondition={"type": "content_sha256", "content_sha256": mem.content_sha256},
    )
    try:
        tokc.beta.memory_stores.memories.update(
            mem.id, memory_store_id=store_id, content="v3",
            precondition={"type": "content_sha256", "content_sha256": mem.content_sha256},
        )
        fail("stale memory precondition accepted")
    except anthropic.ConflictError:
        pass
    deleted = tokc.beta.memory_stores.memories.with_raw_response.delete(
        mem.id, memory_store_id=store_id, expected_content_sha256=updated.content_sha256
    )
    validate(BetaManagedAgentsDeletedMemory, deleted.json(), "memory delete")
    try:
        envc.beta.memory_stores.memories.list(store_id)
        fail("memory list accepted the environment key")
    except anthropic.PermissionDeniedError:
        pass

    raw = envc.beta.environments.work.with_raw_response.list(env, limit=10)
    validate(BetaSelfHostedWorkListResponse, raw.json(), "work list")
    raw = apic.beta.environments.work.with_raw_response.retrieve(work_id, environment_id=env)
    validate(BetaSelfHostedWork, raw.json(), "work retrieve")
    check(raw.parse().secret is None, "secret is null outside poll")

    stopped = tokc.beta.environments.work.stop(work_id, environment_id=env, force=True)
    check(stopped in ("", None), f"204 stop parses as empty, got {stopped!r}")
    try:
        tokc.beta.environments.work.stop(work_id, environment_id=env, force=True)
        fail("second stop accepted")
    except anthropic.ConflictError:
        pass
    report = fake.admin("GET", f"/sessions/{session_id}/report")
    # The duplicate post above is expected here; everything else must hold.
    rest = [f for f in report["failures"] if "already has a result" not in f]
    check(not rest, f"shape scenario report: {rest}")


# --------------------------------------------------------------------------- phase 2: worker


def skills_memory_scenario(skill_id: str, mount: Path) -> dict:
    return {
        "name": "sdk-skills-memory",
        "description": "skills download and a memory store round trip",
        "prompt": "Use the pdf skill and the notes store.",
        "session": {"skills": [{"type": "custom", "skill_id": skill_id, "version": "latest"}]},
        "memory_stores": [{"name": "notes", "mount_path": str(mount), "memories": {"/readme.md": "remember the milk\n"}}],
        "steps": [
            {"tool_use": {"label": "skill", "name": "bash", "input": {"command": "cat skills/pdf/SKILL.md && skills/pdf/scripts/run.sh"},
                          "expect": {"is_error": False, "contains": ["fake pdf skill", "pdf-run"]}}},
            {"tool_use": {"label": "mem_read", "name": "read", "input": {"file_path": str(mount / "readme.md")},
                          "expect": {"is_error": False, "contains": ["remember the milk"]}}},
            {"tool_use": {"label": "mem_write", "name": "write",
                          "input": {"file_path": str(mount / "new.md"), "content": "written by the agent\n"},
                          "expect": {"is_error": False}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate",
        ],
    }


def ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


async def wait_all_stopped(fake: Fake, work_ids: list[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = await asyncio.to_thread(fake.admin, "GET", "/state")
        states = {w["id"]: w["state"] for w in state["work"]}
        if all(states.get(w) == "stopped" for w in work_ids):
            return state
        if time.monotonic() > deadline:
            pending = {w: states.get(w) for w in work_ids if states.get(w) != "stopped"}
            fail(f"timed out after {timeout:.0f}s; not stopped: {pending}")
            return state
        await asyncio.sleep(0.2)


async def run_sdk_workers(fake: Fake, args: argparse.Namespace, root: Path, work_ids: list[str]) -> dict:
    from anthropic import AsyncAnthropic
    from anthropic.lib.environments import EnvironmentWorker

    tasks = []
    for i in range(args.workers):
        workdir = root / f"worker{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        client = AsyncAnthropic(api_key=fake.api_key, base_url=fake.url)
        worker = EnvironmentWorker(
            client,
            environment_id=fake.environment_id,
            environment_key=fake.environment_key,
            workdir=str(workdir),
            max_idle=args.max_idle,
            memory_sync_interval=5.0,
            worker_id=f"sdk-check-{i}",
        )
        tasks.append(asyncio.create_task(worker.run()))
    try:
        return await wait_all_stopped(fake, work_ids, args.timeout)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_command_workers(fake: Fake, args: argparse.Namespace, root: Path, work_ids: list[str]) -> dict:
    procs = []
    for i in range(args.workers):
        workdir = root / f"worker{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            ANTHROPIC_BASE_URL=fake.url,
            ANTHROPIC_ENVIRONMENT_ID=fake.environment_id,
            ANTHROPIC_ENVIRONMENT_KEY=fake.environment_key,
            WORKER_WORKDIR=str(workdir),
            WORKER_INDEX=str(i),
        )
        procs.append(subprocess.Popen(args.worker_command, shell=True, env=env, start_new_session=True))
    try:
        return await wait_all_stopped(fake, work_ids, args.timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def phase_worker(fake: Fake, args: argparse.Namespace) -> dict:
    label = "the SDK EnvironmentWorker" if not args.worker_command else f"`{args.worker_command}`"
    print(f"phase 2: {label} serves the scenarios", flush=True)
    root = Path(tempfile.mkdtemp(prefix="sdk-check-"))
    scenarios = []
    for path in args.scenario:
        s = json.loads(Path(path).read_text())
        s.setdefault("name", Path(path).stem)
        scenarios.append(s)
    sessions: list[tuple[str, str, str]] = []
    extra_checks: list[tuple[str, Path]] = []
    for _ in range(args.repeat):
        for s in scenarios:
            w, sid = fake.enqueue(s)
            sessions.append((w, sid, s["name"]))
        if not args.no_extras:
            skill_id = "skill_sdk" + uuid.uuid4().hex[:8]
            fake.admin("POST", f"/skills/{skill_id}?name=pdf", skill_zip())
            mount = root / "mnt" / "memory" / uuid.uuid4().hex[:8]
            mount.parent.mkdir(parents=True, exist_ok=True)
            w, sid = fake.enqueue(skills_memory_scenario(skill_id, mount))
            sessions.append((w, sid, "sdk-skills-memory"))
            extra_checks.append((sid, mount))
    work_ids = [w for w, _, _ in sessions]
    first_seq = len(fake.admin("GET", "/requests")) + 1
    started = time.monotonic()
    runner = run_command_workers if args.worker_command else run_sdk_workers
    state = asyncio.run(runner(fake, args, root, work_ids))
    wall = time.monotonic() - started

    requests = fake.admin("GET", "/requests")
    by_seq = {r["seq"]: r for r in requests}
    summary = {"wall_seconds": wall, "sessions": []}
    for work_id, sid, name in sessions:
        report = fake.admin("GET", f"/sessions/{sid}/report")
        for f in report["failures"]:
            fail(f"{name} {sid}: {f}")
        results = fake.admin("GET", f"/sessions/{sid}/results")
        mine = [r for r in requests if f"/work/{work_id}/" in r["path"]]
        beats = [r for r in mine if r["path"].endswith("/heartbeat")]
        stops = [r for r in mine if r["path"].endswith("/stop")]
        acks = [r for r in mine if r["path"].endswith("/ack")]
        # (A worker may stop an item of an already-terminated session before its first beat.)
        check(not beats or beats[0]["query"] == [["expected_last_heartbeat", "NO_HEARTBEAT"]],
              f"{name}: first heartbeat sends NO_HEARTBEAT ({beats[:1]})")
        check(any(s["body"] == {"force": True} and s["status"] == 204 for s in stops),
              f"{name}: item force-stopped with 204 ({[(s['body'], s['status']) for s in stops]})")
        accepted = [r for r in results if r["accepted"]]
        row = {"scenario": name, "work_id": work_id, "session_id": sid, "results": len(accepted)}
        if acks and accepted:
            row["ack_to_first_result_ms"] = round((ts(by_seq[accepted[0]["seq"]]["at"]) - ts(acks[0]["at"])) * 1000, 1)
        if acks and stops:
            row["ack_to_stop_ms"] = round((ts(stops[-1]["at"]) - ts(acks[0]["at"])) * 1000, 1)
        summary["sessions"].append(row)
    for sid, mount in extra_checks:
        stores = fake.admin("GET", f"/sessions/{sid}/memory")
        mems = {m["path"]: m["content"] for m in stores[0]["memories"]} if stores else {}
        check(mems.get("/new.md") == "written by the agent\n", f"memory write synced back ({mems})")
        check(not mount.exists(), f"memory mount {mount} removed at teardown")

    for r in requests:
        if r["seq"] < first_seq:
            continue  # phase 1's own calls
        path = r["path"]
        check("anthropic-version" in r["headers"], f"{r['method']} {path}: no anthropic-version")
        beta = r["headers"].get("anthropic-beta", "")
        if path.startswith(("/v1/environments", "/v1/sessions")):
            check("managed-agents-2026-04-01" in beta, f"{r['method']} {path}: beta header {beta!r}")
        if path.endswith("/work/poll"):
            check("anthropic-worker-id" in r["headers"], "poll without Anthropic-Worker-ID")
    if fake.ca_file:
        conns = fake.admin("GET", "/connections")
        check(bool(conns) and all(c["tls"] and not c["handshake_failed"] for c in conns),
              f"every connection is TLS with a completed handshake ({conns[:3]})")
        versions = sorted({r["http_version"] for r in requests if r["seq"] >= first_seq})
        print(f"  over TLS: {len(conns)} connections, ALPN {sorted({str(c['alpn']) for c in conns})}, "
              f"HTTP versions {versions}", flush=True)
    check(all(w["state"] == "stopped" for w in state["work"] if w["id"] in work_ids), "all items stopped")
    shutil.rmtree(root, ignore_errors=True)
    return summary


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fake-bin", type=Path, default=os.environ.get("FAKE_BIN"), help="prebuilt serve-fake")
    ap.add_argument("--scenario", action="append", help="scenario file for phase 2 (repeatable)")
    ap.add_argument("--repeat", type=int, default=1, help="enqueue the phase-2 scenarios this many times")
    ap.add_argument("--workers", type=int, default=1, help="concurrent workers in phase 2")
    ap.add_argument("--worker-command", help="run this shell command as the worker instead of the SDK's")
    ap.add_argument("--max-idle", type=float, default=5.0, help="SDK worker max_idle seconds")
    ap.add_argument("--timeout", type=float, default=180.0, help="phase-2 deadline in seconds")
    ap.add_argument("--skip-shapes", action="store_true", help="skip phase 1")
    ap.add_argument("--no-extras", action="store_true", help="skip the generated skills+memory session")
    ap.add_argument("--json-out", type=Path, help="write the phase-2 summary here")
    ap.add_argument("--tls", action="store_true",
                    help="the fake serves HTTPS with a CA made at start-up (HTTP/2 and HTTP/1.1 by ALPN); "
                         "the SDK trusts it through SSL_CERT_FILE, a --worker-command gets SSL_CERT_FILE "
                         "and CA_CERT_FILE")
    ap.add_argument("--fake-arg", action="append", default=[],
                    help="extra serve-fake argument, e.g. --fake-arg=--lease-ttl-seconds=4 (repeatable)")
    args = ap.parse_args()
    if not args.scenario:
        args.scenario = [str(EXAMPLES / "all-tools.json")]
    ensure_sdk()
    import anthropic

    print(f"anthropic {anthropic.__version__} on Python {sys.version.split()[0]}", flush=True)
    binary = args.fake_bin or build_fake()
    fake = Fake(Path(binary), ["--ping-interval-ms", "5000", *args.fake_arg], tls=args.tls)
    if fake.ca_file:
        # httpx (under the SDK's clients, made after this) trusts SSL_CERT_FILE's roots.
        os.environ["SSL_CERT_FILE"] = fake.ca_file
        os.environ["CA_CERT_FILE"] = fake.ca_file
    print(f"fake at {fake.url} environment {fake.environment_id}", flush=True)
    summary: dict = {}
    try:
        if not args.skip_shapes:
            phase_shapes(fake)
        summary = phase_worker(fake, args)
    finally:
        fake.close()
    summary["failures"] = FAILURES
    summary["sdk"] = anthropic.__version__
    summary["worker"] = args.worker_command or "anthropic.lib.environments.EnvironmentWorker"
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))
    for row in summary.get("sessions", []):
        print(f"  {row['scenario']:<22} results={row['results']:<3} "
              f"ack->first result={row.get('ack_to_first_result_ms', '-')} ms  ack->stop={row.get('ack_to_stop_ms', '-')} ms")
    if FAILURES:
        print(f"SDK CHECK FAILED: {len(FAILURES)} problem(s)", flush=True)
        return 1
    print(f"SDK CHECK PASSED ({summary.get('wall_seconds', 0):.1f}s for phase 2)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
