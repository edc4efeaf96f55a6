"""Quickstart: 2,000 simulated API calls through a 16-worker queue of 64.

Each call takes a few milliseconds and about 2% of them fail. The producer puts
calls with a short timeout; when the queue is full a put returns False (a
backpressure event) and the producer backs off and retries, so nothing is dropped.
The same program runs on asyncio and on trio.

    uv run python examples/quickstart.py
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import anyio

from sluicegate import BoundedQueue

CALLS = 2_000
WORKERS = 16
QUEUE_SIZE = 64


@dataclass
class ApiCall:
    id: int
    latency: float
    fails: bool


@dataclass
class Report:
    responses: int = 0
    failures: int = 0


async def call_api(call: ApiCall, report: Report) -> None:
    """Pretend to call a service: wait for its latency, sometimes fail."""
    await anyio.sleep(call.latency)
    if call.fails:
        raise ConnectionError(f"call {call.id}: service unavailable")
    report.responses += 1


async def run(seed: int) -> None:
    rng = random.Random(seed)
    calls = [
        ApiCall(i, latency=rng.uniform(0.001, 0.008), fails=rng.random() < 0.02)
        for i in range(CALLS)
    ]
    report = Report()

    async def worker(call: ApiCall) -> None:
        await call_api(call, report)

    async def on_error(exc: Exception, call: ApiCall) -> None:
        report.failures += 1

    started = time.perf_counter()
    async with BoundedQueue[ApiCall](maxsize=QUEUE_SIZE, timeout=0.002) as queue:
        await queue.start_workers(worker, WORKERS, on_error)
        for call in calls:
            # A full queue answers False after the put's timeout: back off, retry.
            while not await queue.put(call):  # noqa: ASYNC110
                await anyio.sleep(0.001)
    elapsed = time.perf_counter() - started

    m = queue.metrics
    print(f"  items:               {m['enqueued']:>6} accepted, {m['processed']} done")
    print(f"  responses / errors:  {report.responses:>6} / {m['errors']}", end="")
    print(f" (the error handler saw {report.failures})")
    print(f"  backpressure events: {m['backpressure_events']:>6}")
    print(f"  unprocessed:         {len(queue.unprocessed):>6}")
    print(f"  time taken:          {elapsed:>9.2f} s ({CALLS / elapsed:,.0f} calls/s)")


def main() -> None:
    for backend in ("asyncio", "trio"):
        print(f"{backend}:")
        anyio.run(run, 42, backend=backend)


if __name__ == "__main__":
    main()
