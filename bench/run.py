"""Throughput of sluicegate's queues against hand-written AnyIO and aiometer.

Every case pushes ``--items`` integers through 16 workers and a buffer of 64; the
work per item is one ``await anyio.lowlevel.checkpoint()``, so what is measured is
the cost of the queue itself. Every case calls the same ``work(item)`` per item,
the hand-written baselines too (a real program calls its own function per item).
The ``map`` cases (sluicegate's ``WorkQueue.map`` and ``aiometer.amap``) also hand
every item's result to a reader that takes them all. Rounds are interleaved (each
round runs every case on every backend once), so drift on the machine affects all
cases alike; the median of the rounds is reported.

    uv run python bench/run.py             # 200,000 items, 5 rounds; writes results.md
    uv run python bench/run.py --quick     # a smoke run; writes nothing by default
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import aiometer
from _common import (
    Backend,
    all_backends,
    format_table,
    machine_description,
    median,
    progress,
    verdict,
)
from anyio import create_memory_object_stream, create_task_group
from anyio.abc import ObjectReceiveStream
from anyio.lowlevel import checkpoint

from sluicegate import (
    BoundedQueue,
    Event,
    Executor,
    QueueConfig,
    RateLimiter,
    WorkQueue,
)

WORKERS = 16
BUFFER = 64
DEFAULT_ITEMS = 200_000
DEFAULT_ROUNDS = 5
QUICK_ITEMS = 20_000
QUICK_ROUNDS = 2
RESULTS = Path(__file__).with_name("results.md")

#: A case runs ``n`` items and returns the seconds its timed part took.
CaseFunc = Callable[[int], Awaitable[float]]


async def work(item: int) -> None:
    await checkpoint()


def expect(case: str, done: int, n: int) -> None:
    if done != n:
        raise RuntimeError(f"{case}: processed {done} items, expected {n}")


# -- sluicegate ------------------------------------------------------------------


async def bounded_queue(n: int, concurrency_limit: int | None = None) -> float:
    start = perf_counter()
    async with BoundedQueue[int](
        maxsize=BUFFER, concurrency_limit=concurrency_limit
    ) as queue:
        await queue.start_workers(work, WORKERS)
        for i in range(n):
            await queue.put(i, timeout=None)
    elapsed = perf_counter() - start
    expect("BoundedQueue", queue.metrics["processed"], n)
    return elapsed


async def bounded_queue_limited(n: int) -> float:
    return await bounded_queue(n, concurrency_limit=WORKERS)


async def work_queue_map(n: int, *, ordered: bool = False) -> float:
    """`WorkQueue.map`; the reader takes every outcome."""
    queue = WorkQueue[int](maxsize=BUFFER)
    outcomes = 0
    start = perf_counter()
    async with queue.map(
        work, range(n), ordered=ordered, num_workers=WORKERS
    ) as results:
        async for _ in results:
            outcomes += 1
    elapsed = perf_counter() - start
    expect("WorkQueue.map", outcomes, n)
    expect("WorkQueue.map", queue.metrics["processed"], n)
    return elapsed


async def work_queue_map_ordered(n: int) -> float:
    return await work_queue_map(n, ordered=True)


async def work_queue_batch(n: int) -> float:
    queue = WorkQueue[int](maxsize=BUFFER)
    start = perf_counter()
    await queue.batch_process(range(n), work, num_workers=WORKERS)
    elapsed = perf_counter() - start
    expect("WorkQueue", queue.metrics["processed"], n)
    return elapsed


class Tick(Event):
    """An event whose work is one checkpoint."""

    async def invoke(self) -> None:
        await checkpoint()


async def executor_batch(n: int) -> float:
    events = [Tick() for _ in range(n)]  # not timed
    config = QueueConfig(
        queue_capacity=BUFFER, concurrency_limit=WORKERS, capacity_refresh_time=1e-9
    )
    executor = Executor(Tick, config, rate_limiter=RateLimiter(1e12, burst=1e12))
    start = perf_counter()
    await executor.batch_process(events)
    elapsed = perf_counter() - start
    expect("Executor", executor.metrics["completed"], n)
    return elapsed


# -- baselines -------------------------------------------------------------------


async def memory_stream(n: int) -> float:
    async def worker(receive: ObjectReceiveStream[int]) -> None:
        async with receive:
            async for item in receive:
                await work(item)

    start = perf_counter()
    send, receive = create_memory_object_stream[int](BUFFER)
    async with create_task_group() as tg:
        async with receive:
            for _ in range(WORKERS):
                tg.start_soon(worker, receive.clone())
        async with send:
            for i in range(n):
                await send.send(i)
    return perf_counter() - start


async def aiometer_run_on_each(n: int) -> float:
    start = perf_counter()
    await aiometer.run_on_each(work, range(n), max_at_once=WORKERS)
    return perf_counter() - start


async def aiometer_amap(n: int) -> float:
    """`aiometer.amap`: results as they come (it has no ordered mode)."""
    results = 0
    start = perf_counter()
    async with aiometer.amap(work, range(n), max_at_once=WORKERS) as outcomes:
        async for _ in outcomes:
            results += 1
    elapsed = perf_counter() - start
    expect("aiometer.amap", results, n)
    return elapsed


async def asyncio_queue(n: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue(BUFFER)

    async def worker() -> None:
        while True:
            item = await queue.get()
            await work(item)
            queue.task_done()

    start = perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    for i in range(n):
        await queue.put(i)
    await queue.join()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return perf_counter() - start


async def bare_loop(n: int) -> float:
    start = perf_counter()
    for _ in range(n):
        await checkpoint()
    return perf_counter() - start


# -- the cases, the targets --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    func: CaseFunc
    asyncio_only: bool = False

    def runs_on(self, backend: Backend) -> bool:
        return backend.is_asyncio or not self.asyncio_only


CASES = [
    Case("bq", "sluicegate BoundedQueue", bounded_queue),
    Case(
        "bq_limit",
        "sluicegate BoundedQueue, concurrency_limit=16",
        bounded_queue_limited,
    ),
    Case("wq", "sluicegate WorkQueue.batch_process", work_queue_batch),
    Case("map", "sluicegate WorkQueue.map (unordered)", work_queue_map),
    Case("map_ordered", "sluicegate WorkQueue.map (ordered)", work_queue_map_ordered),
    Case("executor", "sluicegate Executor.batch_process", executor_batch),
    Case("stream", "AnyIO memory object stream (hand-written)", memory_stream),
    Case("aiometer", "aiometer.run_on_each", aiometer_run_on_each),
    Case("amap", "aiometer.amap", aiometer_amap),
    Case("asyncio_queue", "asyncio.Queue + 16 tasks", asyncio_queue, asyncio_only=True),
    Case("floor", "bare loop of checkpoints (floor)", bare_loop),
]
#: The ratio table: each sluicegate case against the baselines it is judged by.
COMPARISONS = [
    *(
        (case, against)
        for case in ["bq", "bq_limit", "wq", "executor"]
        for against in ["stream", "aiometer"]
    ),
    *(
        (case, against)
        for case in ["map", "map_ordered"]
        for against in ["amap", "wq", "stream"]
    ),
]
LABELS = {case.key: case.label for case in CASES}
#: How the ratio table names a baseline.
SHORT = {
    "stream": "stream",
    "aiometer": "aiometer",
    "amap": "amap",
    "wq": "batch_process",
}


ASYNCIO_BACKENDS = ("asyncio", "asyncio+uvloop")
EVERY_BACKEND = ("asyncio", "asyncio+uvloop", "trio")


@dataclass(frozen=True)
class Target:
    case: str
    against: str
    at_least: float
    backends: tuple[str, ...] = ("asyncio", "trio")

    @property
    def label(self) -> str:
        return f"{LABELS[self.case]} >= {self.at_least:g}x {LABELS[self.against]}"


TARGETS = [
    Target("bq", "stream", 3.0),
    Target("bq", "aiometer", 4.0),
    Target("bq_limit", "stream", 2.5),
    Target("wq", "stream", 2.5),
    Target("bq", "asyncio_queue", 1.0, ASYNCIO_BACKENDS),
    Target("executor", "bq", 0.7, EVERY_BACKEND),
    Target("map", "amap", 5.0),
    Target("map", "wq", 0.8),
    Target("map_ordered", "amap", 3.0),
]

#: items/s by (case key, backend name)
Rates = dict[tuple[str, str], float]


def measure(
    backends: list[Backend], items: int, rounds: int, cases: list[Case]
) -> Rates:
    """Run each case on every backend ``rounds`` times, round-robin; median rates."""
    seconds: dict[tuple[str, str], list[float]] = {}
    for round_number in range(1, rounds + 1):
        for backend in backends:
            for case in cases:
                if not case.runs_on(backend):
                    continue
                elapsed = backend.run(case.func, items)
                seconds.setdefault((case.key, backend.name), []).append(elapsed)
                progress(
                    f"round {round_number}/{rounds} {backend.name:15} "
                    f"{case.key:14} {items / elapsed:12,.0f} items/s"
                )
    return {key: items / median(values) for key, values in seconds.items()}


def ratio(rates: Rates, case: str, against: str, backend: str) -> float | None:
    if (case, backend) not in rates or (against, backend) not in rates:
        return None
    return rates[case, backend] / rates[against, backend]


def rate_table(rates: Rates, backends: list[Backend]) -> str:
    rows = [
        [case.label, *(rates.get((case.key, b.name), "n/a") for b in backends)]
        for case in CASES
    ]
    return format_table(["items/s", *(b.name for b in backends)], rows)


def ratio_table(rates: Rates, backends: list[Backend]) -> str:
    rows = []
    for case, against in COMPARISONS:
        ratios = [ratio(rates, case, against, b.name) for b in backends]
        rows.append(
            [
                f"{LABELS[case]} / {SHORT[against]}",
                *(f"{r:.2f}x" if r is not None else "n/a" for r in ratios),
            ]
        )
    return format_table(["ratio", *(b.name for b in backends)], rows)


def target_table(rates: Rates) -> tuple[str, bool]:
    rows = []
    all_pass = True
    for target in TARGETS:
        for backend in target.backends:
            value = ratio(rates, target.case, target.against, backend)
            if value is None:
                continue
            ok = value >= target.at_least
            all_pass = all_pass and ok
            rows.append([target.label, backend, f"{value:.2f}x", verdict(ok)])
    return format_table(["target", "backend", "measured", "result"], rows), all_pass


def report(rates: Rates, backends: list[Backend], items: int, rounds: int) -> str:
    targets, all_pass = target_table(rates)
    machine = format_table(["machine", ""], machine_description())
    return "\n\n".join(
        [
            "# sluicegate throughput benchmark",
            f"`uv run python bench/run.py --items {items} --rounds {rounds}`: "
            f"{items:,} items, {WORKERS} workers, a buffer of {BUFFER}, work per "
            f"item one `checkpoint()`; median of {rounds} interleaved rounds.",
            "## Throughput\n\n" + rate_table(rates, backends),
            "## sluicegate against the baselines\n\n" + ratio_table(rates, backends),
            "## Targets\n\n" + targets + f"\n\nOverall: {verdict(all_pass)}",
            "## Machine\n\n" + machine,
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few items, few rounds")
    parser.add_argument("--items", type=int, help=f"items per run ({DEFAULT_ITEMS:,})")
    parser.add_argument("--rounds", type=int, help=f"rounds ({DEFAULT_ROUNDS})")
    parser.add_argument(
        "--cases",
        help="comma-separated case keys to run, say bq,executor (default: all: "
        + ",".join(case.key for case in CASES)
        + ")",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"markdown report (default {RESULTS.name}; none for --quick)",
    )
    return parser.parse_args()


def cases_named(keys: str | None) -> list[Case]:
    """The cases of a ``--cases`` list, in the table's order (None: all)."""
    if keys is None:
        return CASES
    wanted = set(keys.split(","))
    unknown = wanted - {case.key for case in CASES}
    if unknown:
        raise SystemExit(f"unknown cases: {', '.join(sorted(unknown))}")
    return [case for case in CASES if case.key in wanted]


def main() -> None:
    args = parse_args()
    items = args.items or (QUICK_ITEMS if args.quick else DEFAULT_ITEMS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    output = args.output or (None if args.quick else RESULTS)
    backends = all_backends()
    rates = measure(backends, items, rounds, cases_named(args.cases))
    text = report(rates, backends, items, rounds)
    print(text)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
        progress(f"wrote {output}")


if __name__ == "__main__":
    main()
