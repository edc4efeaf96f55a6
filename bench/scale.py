"""Many workers: per-item cost with 16 to 10,000 workers, a low concurrency
limit, the cost of starting workers, and idle cost.

Every rate is timed after the workers have started and parked (``await
anyio.wait_all_tasks_blocked()``), from the first put until the last item's work
has run; the work per item is one ``checkpoint()``. Rounds are interleaved and the
median is reported.

- 1,000 workers against 16, per item (target >= 0.7);
- 10,000 workers against 1,000 (target >= 0.8);
- 10,000 workers under ``concurrency_limit=10`` against 10 workers without a
  limit (target >= 0.7);
- starting 10,000 workers against starting 1,000, per worker: the time from the
  first ``start_workers`` call until all have parked (target: 10,000 cost at
  most 1.25x as much per worker). Of the workers one call asks for, the first
  64 start at once and the rest when items need them, so this is the cost of
  asking for them; the cost of bringing every one of them into action at once
  (each given an item that waits until all are busy) is shown beside it, for
  information, not as a target;
- sluicegate with 1,000 workers against a hand-written AnyIO memory object stream
  with 1,000 workers (target >= 1.0);
- 1,000 idle sluicegate workers for 2 s: CPU time (``time.process_time``) while the
  main task sleeps (target < 0.05 s).

    uv run python bench/scale.py            # 200,000 items, 3 rounds, asyncio and trio
    uv run python bench/scale.py --quick
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from time import perf_counter

import anyio
from _common import (
    Backend,
    backend_named,
    format_table,
    machine_description,
    median,
    progress,
    verdict,
)
from anyio.abc import ObjectReceiveStream
from anyio.lowlevel import checkpoint

from sluicegate import BoundedQueue

BUFFER = 64
SMALL, FEW, MANY = 16, 1_000, 10_000
LIMIT = 10
DEFAULT_ITEMS = 200_000
DEFAULT_ROUNDS = 3
QUICK_ITEMS = 20_000
QUICK_ROUNDS = 1
IDLE_SECONDS = 2.0
IDLE_CPU_LIMIT = 0.05


class Counter:
    """The work: one checkpoint per item; ``done`` is set after the n-th item."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = anyio.Event()

    async def work(self, item: int) -> None:
        await checkpoint()
        self.count += 1
        if self.count == self.n:
            self.done.set()


async def sluicegate_rate(workers: int, n: int, limit: int | None = None) -> float:
    """Seconds for n items through a BoundedQueue whose workers are parked."""
    counter = Counter(n)
    async with BoundedQueue[int](maxsize=BUFFER, concurrency_limit=limit) as queue:
        await queue.start_workers(counter.work, workers)
        await anyio.wait_all_tasks_blocked()
        start = perf_counter()
        for i in range(n):
            await queue.put(i, timeout=None)
        await counter.done.wait()
        return perf_counter() - start


async def limited_rate(workers: int, n: int) -> float:
    """`sluicegate_rate` under ``concurrency_limit=LIMIT``."""
    return await sluicegate_rate(workers, n, LIMIT)


async def start_time(workers: int, n: int) -> float:
    """Seconds to start ``workers`` workers until all have parked, per worker,
    times ``n`` (so that the table shows workers started per second)."""
    async with BoundedQueue[int](maxsize=BUFFER) as queue:
        start = perf_counter()
        await queue.start_workers(Counter(1).work, workers)
        await anyio.wait_all_tasks_blocked()
        elapsed = perf_counter() - start
        await queue.stop_workers()
    return elapsed / workers * n


async def busy_start_time(workers: int, n: int) -> float:
    """Seconds to start ``workers`` workers and have every one busy with an
    item at once, per worker, times ``n`` (workers started per second)."""
    running = 0
    all_busy = anyio.Event()

    async def work(item: int) -> None:
        nonlocal running
        running += 1
        if running == workers:
            all_busy.set()
        await all_busy.wait()

    async with BoundedQueue[int](maxsize=workers) as queue:
        start = perf_counter()
        await queue.start_workers(work, workers)
        for i in range(workers):
            queue.put_nowait(i)
        await all_busy.wait()
        elapsed = perf_counter() - start
    return elapsed / workers * n


async def stream_rate(workers: int, n: int) -> float:
    """Seconds for n items through a memory object stream with parked workers."""
    counter = Counter(n)

    async def worker(receive: ObjectReceiveStream[int]) -> None:
        async with receive:
            async for item in receive:
                await counter.work(item)

    send, receive = anyio.create_memory_object_stream[int](BUFFER)
    async with anyio.create_task_group() as tg:
        async with receive:
            for _ in range(workers):
                tg.start_soon(worker, receive.clone())
        async with send:
            await anyio.wait_all_tasks_blocked()
            start = perf_counter()
            for i in range(n):
                await send.send(i)
            await counter.done.wait()
            elapsed = perf_counter() - start
    return elapsed


async def idle_cpu(workers: int, seconds: float) -> float:
    """CPU seconds the process uses while ``workers`` parked workers wait."""
    async with BoundedQueue[int](maxsize=BUFFER) as queue:
        await queue.start_workers(Counter(1).work, workers)
        await anyio.wait_all_tasks_blocked()
        start = time.process_time()
        await anyio.sleep(seconds)
        return time.process_time() - start


RateFunc = Callable[[int, int], Awaitable[float]]
RATE_CASES: list[tuple[str, RateFunc, int]] = [
    (f"sluicegate, {SMALL:,} workers", sluicegate_rate, SMALL),
    (f"sluicegate, {FEW:,} workers", sluicegate_rate, FEW),
    (f"sluicegate, {MANY:,} workers", sluicegate_rate, MANY),
    (f"sluicegate, {LIMIT:,} workers", sluicegate_rate, LIMIT),
    (f"sluicegate, {MANY:,} workers, limit {LIMIT}", limited_rate, MANY),
    (f"memory object stream, {FEW:,} workers", stream_rate, FEW),
    (f"starting {FEW:,} workers (workers/s)", start_time, FEW),
    (f"starting {MANY:,} workers (workers/s)", start_time, MANY),
    (f"starting {FEW:,} workers, all busy (workers/s)", busy_start_time, FEW),
    (f"starting {MANY:,} workers, all busy (workers/s)", busy_start_time, MANY),
]


def measure_rates(backends: list[Backend], n: int, rounds: int) -> dict[str, float]:
    """items/s by "case|backend", median of interleaved rounds."""
    seconds: dict[str, list[float]] = {}
    for round_number in range(1, rounds + 1):
        for backend in backends:
            for label, func, workers in RATE_CASES:
                elapsed = backend.run(func, workers, n)
                seconds.setdefault(f"{label}|{backend.name}", []).append(elapsed)
                progress(
                    f"round {round_number}/{rounds} {backend.name:8} {label:36} "
                    f"{n / elapsed:12,.0f} items/s"
                )
    return {key: n / median(values) for key, values in seconds.items()}


def target_rows(
    rates: dict[str, float], idle_seconds: float, name: str
) -> list[list[str]]:
    """The targets on one backend: label, backend, measured, verdict."""
    (small, few, many, ten, limited, stream, start_few, start_many, _, _) = (
        f"{label}|{name}" for label, _, _ in RATE_CASES
    )

    def row(label: str, value: float, ok: bool) -> list[str]:
        return [label, name, f"{value:.2f}x", verdict(ok)]

    flat = rates[few] / rates[small]
    scaling = rates[many] / rates[few]
    limit = rates[limited] / rates[ten]
    # Per-worker start cost of 10,000 against 1,000 (rates are workers/s).
    start_cost = rates[start_few] / rates[start_many]
    against = rates[few] / rates[stream]
    return [
        row(f"{FEW:,} / {SMALL} workers, per item >= 0.7", flat, flat >= 0.7),
        row(f"{MANY:,} / {FEW:,} workers, per item >= 0.8", scaling, scaling >= 0.8),
        row(
            f"{MANY:,} workers limit {LIMIT} / {LIMIT} workers >= 0.7",
            limit,
            limit >= 0.7,
        ),
        row(
            f"start cost per worker, {MANY:,} / {FEW:,} <= 1.25",
            start_cost,
            start_cost <= 1.25,
        ),
        row(f"sluicegate / stream, {FEW:,} workers >= 1.0", against, against >= 1.0),
        [
            f"{FEW:,} idle workers, {IDLE_SECONDS:g} s: CPU < {IDLE_CPU_LIMIT} s",
            name,
            f"{idle_seconds:.4f} s",
            verdict(idle_seconds < IDLE_CPU_LIMIT),
        ],
    ]


def report(
    rates: dict[str, float], idle: dict[str, float], backends: list[Backend], n: int
) -> str:
    names = [b.name for b in backends]
    rate_rows = [
        [label, *(rates[f"{label}|{name}"] for name in names)]
        for label, _, _ in RATE_CASES
    ]
    targets = [row for name in names for row in target_rows(rates, idle[name], name)]
    all_pass = all(row[-1] == verdict(True) for row in targets)
    busy_few, busy_many = (label for label, _, _ in RATE_CASES[-2:])
    information = [
        [
            f"start cost per worker, all busy, {MANY:,} / {FEW:,}",
            name,
            f"{rates[f'{busy_few}|{name}'] / rates[f'{busy_many}|{name}']:.2f}x",
        ]
        for name in names
    ]
    return "\n\n".join(
        [
            f"{n:,} items after the workers parked; work per item one checkpoint()",
            format_table(["items/s", *names], rate_rows),
            format_table(["target", "backend", "measured", "result"], targets),
            f"Overall: {verdict(all_pass)}",
            format_table(
                ["for information (not a target)", "backend", "measured"], information
            ),
            format_table(["machine", ""], machine_description()),
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few items, one round")
    parser.add_argument("--items", type=int, help=f"items per run ({DEFAULT_ITEMS:,})")
    parser.add_argument("--rounds", type=int, help=f"rounds ({DEFAULT_ROUNDS})")
    parser.add_argument(
        "--backend",
        action="append",
        help="asyncio, asyncio+uvloop or trio; repeat for several "
        "(default asyncio and trio)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    n = args.items or (QUICK_ITEMS if args.quick else DEFAULT_ITEMS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    backends = [backend_named(name) for name in args.backend or ["asyncio", "trio"]]
    rates = measure_rates(backends, n, rounds)
    idle = {b.name: b.run(idle_cpu, FEW, IDLE_SECONDS) for b in backends}
    print(report(rates, idle, backends, n))


if __name__ == "__main__":
    main()
