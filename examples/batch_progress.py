"""Batch-process a generator of 20,000 jobs with a live progress line.

The generator is read lazily: while the queue is full the producer waits, so memory
stays flat however many jobs the generator yields. A reporter task redraws one
line with the jobs done and the rate. Runs on asyncio and on trio.

    uv run python examples/batch_progress.py
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator

import anyio

from sluicegate import QueueConfig, WorkQueue

JOBS = 20_000


def jobs(seed: int) -> Iterator[float]:
    """Yield each job's simulated duration: created one at a time, never a list."""
    rng = random.Random(seed)
    for _ in range(JOBS):
        yield rng.uniform(0.0, 0.002)


async def run_job(duration: float) -> None:
    await anyio.sleep(duration)


async def report_progress(queue: WorkQueue[float], started: float) -> None:
    """Redraw the progress line a few times a second until cancelled."""
    while True:
        done = queue.metrics["processed"]
        rate = done / max(time.perf_counter() - started, 1e-9)
        sys.stdout.write(f"\r  {done:>6}/{JOBS} jobs done  {rate:>8,.0f} jobs/s")
        sys.stdout.flush()
        await anyio.sleep(0.1)


async def main() -> None:
    queue: WorkQueue[float] = WorkQueue.from_config(
        QueueConfig(queue_capacity=256, concurrency_limit=64)
    )
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(report_progress, queue, started)
        await queue.batch_process(jobs(seed=1), run_job)  # 64 workers by default
        tg.cancel_scope.cancel()
    elapsed = time.perf_counter() - started
    m = queue.metrics
    print(
        f"\r  {m['processed']:>6}/{JOBS} jobs done  {m['processed'] / elapsed:>8,.0f}"
        f" jobs/s  ({elapsed:.2f} s, {m['errors']} errors, "
        f"{len(queue.unprocessed)} unprocessed)"
    )


if __name__ == "__main__":
    for backend in ("asyncio", "trio"):
        print(f"{backend}:")
        anyio.run(main, backend=backend)
