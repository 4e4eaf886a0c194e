#!/usr/bin/env python3
"""The reference worker as a process, for `benches/side_by_side.py`.

Runs `WORKERS` (default 1) instances of the official `anthropic` SDK's
`EnvironmentWorker` as asyncio tasks in this one process, exactly as
`tests/fake-control-plane/sdk_check/run.py --workers N` does in-process, so that the
benchmark can measure the reference worker's start-up and memory like those of our
`wasm-sandbox serve` process. Each instance serves one session at a time (the SDK's
`run()` handles the items it claims one after another), so N instances = concurrency N.

Environment: ANTHROPIC_BASE_URL, ANTHROPIC_ENVIRONMENT_ID, ANTHROPIC_ENVIRONMENT_KEY,
ANTHROPIC_API_KEY (the client's own key; the worker replaces it with the environment key
and each item's sessions token), WORKER_WORKDIR (instance i uses WORKER_WORKDIR/worker<i>),
WORKERS. Runs until SIGTERM/SIGINT. Needs anthropic==2.10.0 (the driver runs this file
with the interpreter of the venv it bootstraps).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from anthropic import AsyncAnthropic
from anthropic.lib.environments import EnvironmentWorker


async def main() -> None:
    n = int(os.environ.get("WORKERS", "1"))
    root = Path(os.environ["WORKER_WORKDIR"])
    tasks = []
    for i in range(n):
        workdir = root / f"worker{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        client = AsyncAnthropic(api_key=os.environ.get("ANTHROPIC_API_KEY", "unused"),
                                base_url=os.environ["ANTHROPIC_BASE_URL"])
        worker = EnvironmentWorker(
            client,
            environment_id=os.environ["ANTHROPIC_ENVIRONMENT_ID"],
            environment_key=os.environ["ANTHROPIC_ENVIRONMENT_KEY"],
            workdir=str(workdir),
            worker_id=f"sdk-bench-{i}",
        )
        tasks.append(asyncio.create_task(worker.run()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
