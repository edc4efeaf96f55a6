"""Delay line: what an item waiting out a backoff costs, with 1,000 to 100,000 held.

A retried item waits in the queue's delay line (``sluicegate._delay.DelayLine``): a
heap of entries under one sleeper task that sleeps until the earliest is due. An
``add`` costs O(log n), a ``withdraw`` O(1) (amortized: withdrawn entries are
dropped in bulk), releasing a due entry O(log n) (a heap pop). So the cost per
item of a line holding n items should grow like log2(n): from 1,000 to 100,000
items, by about 1.7x, where a line that scanned its entries would grow 100x.
(Measured, it grows by about 2.4x: each comparison costs more once the heap no
longer fits in the CPU's caches.)

Both parts run on a clock the benchmark drives (``FakeClock``: ``current_time``
and an ``async sleep_until`` that parks until the clock is moved), so no real
time is waited and every item is held at once:

- the line alone: add n entries with random due times in (0, 1] (timed), let the
  sleeper park, move the clock to 1 and wait until the n-th entry is released
  (timed); then add n more, due later, and withdraw them one by one (timed). Small
  lines are repeated on fresh lines until at least ``--items`` entries are timed.
- through a queue: a ``BoundedQueue(maxsize=n, clock=FakeClock())`` with 16
  workers and ``retry=RetryPolicy(attempts=2, backoff=1.0, jitter=True)``; every
  item's first call raises, so all n items wait in the delay line at once
  (checked: ``queue.delayed == n``). Timed: putting the n items until all of them
  are delayed (first attempts: put, call, raise, into the line); then, after
  moving the clock past every backoff, until the queue is joined (second
  attempts: out of the line, back to the front of the buffer, call). A baseline
  runs the same queue with calls that never fail (one attempt each).

The garbage collector is off during the timed parts (the line alone), so that a
collection triggered by 100,000 new objects does not hide the shape of the cost.
Rounds are interleaved; medians are reported.

Targets, per backend: the cost per item with 100,000 held is at most 3x the cost
with 1,000 (for add + release, for withdraw, and for a retry through the queue).

    uv run python bench/delay.py                 # 3 rounds, three backends
    uv run python bench/delay.py --quick         # 1 round, asyncio and trio
    uv run python bench/delay.py --backend trio --sizes 1000 --sizes 100000
"""

from __future__ import annotations

import argparse
import gc
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter

import anyio
from _common import (
    Backend,
    all_backends,
    backend_named,
    format_table,
    machine_description,
    median,
    progress,
    verdict,
)
from anyio.lowlevel import checkpoint

from sluicegate import BoundedQueue, RetryPolicy
from sluicegate._delay import DelayLine

SIZES = [1_000, 10_000, 100_000]
#: Small lines are repeated until at least this many entries are timed.
DEFAULT_ITEMS = 100_000
#: Through the queue, small runs are repeated until this many items are timed.
QUEUE_ITEMS = 20_000
DEFAULT_ROUNDS = 3
QUICK_ROUNDS = 1
QUICK_BACKENDS = ["asyncio", "trio"]
WORKERS = 16
SEED = 20_795
#: The cost per item with the largest line may be at most this many times the
#: cost with the smallest.
MAX_GROWTH = 3.0
RETRY = RetryPolicy(attempts=2, backoff=1.0, multiplier=1.0, jitter=True)


class FakeClock:
    """A clock that moves only when told: ``sleep_until`` parks until then."""

    def __init__(self) -> None:
        self._now = 0.0
        self._moved: anyio.Event | None = None

    def current_time(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if self._now >= deadline:
            await checkpoint()
            return
        while self._now < deadline:
            if self._moved is None:
                self._moved = anyio.Event()
            await self._moved.wait()

    def move_to(self, now: float) -> None:
        self._now = now
        if self._moved is not None:
            self._moved.set()
            self._moved = None


@contextmanager
def no_gc() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def settle() -> None:
    """Give the sleeper a few passes of the event loop to park (not timed)."""
    for _ in range(3):
        await checkpoint()


def repeats(n: int, items: int) -> int:
    return max(1, math.ceil(items / n))


def check(case: str, what: str, got: int, expected: int) -> None:
    if got != expected:
        raise RuntimeError(f"{case}: {what} is {got:,}, expected {expected:,}")


# -- the line alone ----------------------------------------------------------------


@dataclass(frozen=True)
class LineRun:
    """Seconds per entry."""

    add: float
    release: float
    withdraw: float

    @property
    def held(self) -> float:
        """What holding an item costs: its add and its release."""
        return self.add + self.release


class ReleaseCounter:
    """The line's ``release``: counts, and says when the n-th value is out."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.released = 0
        self.all_released = anyio.Event()

    def release(self, value: float) -> None:
        self.released += 1
        if self.released == self.n:
            self.all_released.set()


async def line_alone(n: int, items: int) -> LineRun:
    rng = random.Random(SEED)
    reps = repeats(n, items)
    add = release = withdraw = 0.0
    for _ in range(reps):
        dues = [1.0 - rng.random() for _ in range(n)]  # (0, 1]: none due at 0
        clock = FakeClock()
        counter = ReleaseCounter(n)
        line = DelayLine[float](clock, counter.release)
        gc.collect()
        async with anyio.create_task_group() as tg:
            tg.start_soon(line.run)
            await settle()
            with no_gc():
                start = perf_counter()
                for due in dues:
                    line.add(due, due)
                add += perf_counter() - start
                await settle()  # the sleeper sleeps until the earliest
                start = perf_counter()
                clock.move_to(1.0)
                await counter.all_released.wait()
                release += perf_counter() - start
            check("line", "released", counter.released, n)
            gc.collect()
            entries = [line.add(due, 1.0 + due) for due in dues]
            await settle()
            with no_gc():
                start = perf_counter()
                for entry in entries:
                    line.withdraw(entry)
                withdraw += perf_counter() - start
            check("line", "entries left after withdrawing", len(line), 0)
            tg.cancel_scope.cancel()
    total = n * reps
    return LineRun(add / total, release / total, withdraw / total)


# -- through a queue ---------------------------------------------------------------


@dataclass(frozen=True)
class QueueRun:
    """Seconds per item."""

    first: float  # put, call, raise, into the delay line
    retry: float  # out of the line, back into the buffer, call
    baseline: float  # the same queue, one attempt that succeeds

    @property
    def overhead(self) -> float:
        """What the failed attempt and its wait in the line add to an item."""
        return self.first + self.retry - self.baseline


class FirstAttemptError(Exception):
    """What the first call of every item raises."""


async def through_queue(n: int, *, fail_first: bool) -> tuple[float, float]:
    """One run: seconds for the first attempts and for the retries (0 if none)."""
    clock = FakeClock()
    failed = bytearray(n)

    async def work(item: int) -> None:
        if fail_first and not failed[item]:
            failed[item] = 1
            raise FirstAttemptError
        await checkpoint()

    async with BoundedQueue[int](maxsize=n, clock=clock) as queue:
        await queue.start_workers(work, WORKERS, retry=RETRY)
        start = perf_counter()
        for i in range(n):
            await queue.put(i, timeout=None)  # never waits: room for all n
        if fail_first:
            # Not parked on anything: the first attempts are still running.
            while queue.delayed < n:
                await checkpoint()
        else:
            await queue.join()
        first = perf_counter() - start
        retry = 0.0
        if fail_first:
            check("queue", "items waiting in the delay line at once", queue.delayed, n)
            start = perf_counter()
            clock.move_to(RETRY.max_backoff + 1.0)  # past every backoff
            await queue.join()
            retry = perf_counter() - start
    metrics = queue.metrics
    check("queue", "processed", metrics["processed"], n)
    check("queue", "errors", metrics["errors"], 0)
    check("queue", "retries", metrics["retries"], n if fail_first else 0)
    return first, retry


async def queue_retries(n: int, items: int) -> QueueRun:
    reps = repeats(n, min(items, QUEUE_ITEMS))
    first = retry = baseline = 0.0
    for _ in range(reps):
        gc.collect()
        run_first, run_retry = await through_queue(n, fail_first=True)
        first += run_first
        retry += run_retry
        gc.collect()
        baseline += (await through_queue(n, fail_first=False))[0]
    total = n * reps
    return QueueRun(first / total, retry / total, baseline / total)


# -- measuring, reporting -----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    func: Callable[[int, int], Awaitable[LineRun | QueueRun]]


CASES = [
    Case("line", "DelayLine alone", line_alone),
    Case("queue", "BoundedQueue, every first call fails", queue_retries),
]

#: Runs by (case key, backend name, n), one per round.
Runs = dict[tuple[str, str, int], list[LineRun | QueueRun]]


def measure(backends: list[Backend], sizes: list[int], items: int, rounds: int) -> Runs:
    runs: Runs = {}
    for round_number in range(1, rounds + 1):
        for backend in backends:
            for case in CASES:
                for n in sizes:
                    run = backend.run(case.func, n, items)
                    runs.setdefault((case.key, backend.name, n), []).append(run)
                    progress(
                        f"round {round_number}/{rounds} {backend.name:15} "
                        f"{case.key:6} {n:>8,}  " + describe(run)
                    )
    return runs


def describe(run: LineRun | QueueRun) -> str:
    us = 1e6
    if isinstance(run, LineRun):
        return (
            f"add {run.add * us:.2f} us, release {run.release * us:.2f} us, "
            f"withdraw {run.withdraw * us:.2f} us per entry"
        )
    return (
        f"first {run.first * us:.2f} us, retry {run.retry * us:.2f} us, "
        f"baseline {run.baseline * us:.2f} us per item"
    )


def figure(runs: Runs, key: str, backend: str, n: int, field: str) -> float:
    """Median over the rounds of one field (or property), in microseconds."""
    return median([getattr(run, field) for run in runs[key, backend, n]]) * 1e6


def line_table(runs: Runs, backend: str, sizes: list[int]) -> str:
    smallest = sizes[0]
    held_small = figure(runs, "line", backend, smallest, "held")
    rows = []
    for n in sizes:
        held = figure(runs, "line", backend, n, "held")
        rows.append(
            [
                n,
                f"{figure(runs, 'line', backend, n, 'add'):.2f}",
                f"{figure(runs, 'line', backend, n, 'release'):.2f}",
                f"{held:.2f}",
                f"{held * 1000 / math.log2(n):.0f}",
                f"{held / held_small:.2f}x",
                f"{math.log2(n) / math.log2(smallest):.2f}x",
                f"{n / smallest:,.0f}x",
                f"{figure(runs, 'line', backend, n, 'withdraw'):.2f}",
            ]
        )
    headers = [
        "entries held",
        "add µs",
        "release µs",
        "add + release µs",
        "ns per log2(n)",
        "growth",
        "log n growth",
        "linear growth",
        "withdraw µs",
    ]
    return format_table(headers, rows)


def queue_table(runs: Runs, backend: str, sizes: list[int]) -> str:
    smallest = sizes[0]
    overhead_small = figure(runs, "queue", backend, smallest, "overhead")
    rows = []
    for n in sizes:
        overhead = figure(runs, "queue", backend, n, "overhead")
        rows.append(
            [
                n,
                f"{figure(runs, 'queue', backend, n, 'first'):.2f}",
                f"{figure(runs, 'queue', backend, n, 'retry'):.2f}",
                f"{figure(runs, 'queue', backend, n, 'baseline'):.2f}",
                f"{overhead:.2f}",
                f"{overhead * 1000 / math.log2(n):.0f}",
                f"{overhead / overhead_small:.2f}x",
            ]
        )
    headers = [
        "items delayed at once",
        "first call, into the line µs",
        "out of the line, retry µs",
        "no failure (baseline) µs",
        "retry overhead µs",
        "ns per log2(n)",
        "growth",
    ]
    return format_table(headers, rows)


@dataclass(frozen=True)
class Target:
    case: str
    field: str
    label: str


TARGETS = [
    Target("line", "held", "DelayLine add + release"),
    Target("line", "withdraw", "DelayLine withdraw"),
    Target("queue", "overhead", "BoundedQueue retry overhead"),
]


def target_table(
    runs: Runs, backends: list[Backend], sizes: list[int]
) -> tuple[str, bool]:
    small, large = sizes[0], sizes[-1]
    if small == large:
        return "no target: it needs two sizes", False
    rows = []
    all_pass = True
    for target in TARGETS:
        for backend in backends:
            growth = figure(runs, target.case, backend.name, large, target.field)
            growth /= figure(runs, target.case, backend.name, small, target.field)
            ok = growth <= MAX_GROWTH
            all_pass = all_pass and ok
            label = (
                f"{target.label}: per item at {large:,} <= {MAX_GROWTH:g}x at {small:,}"
            )
            rows.append([label, backend.name, f"{growth:.2f}x", verdict(ok)])
    table = format_table(["target", "backend", "measured", "result"], rows)
    return table + f"\n\nOverall: {verdict(all_pass)}", all_pass


def report(
    runs: Runs, backends: list[Backend], sizes: list[int], items: int, rounds: int
) -> str:
    median_of = f"median of {rounds} interleaved rounds" if rounds > 1 else "one round"
    sections = [
        "# sluicegate delay line: cost per item against items held",
        f"`uv run python bench/delay.py --items {items} --rounds {rounds}`: "
        f"{', '.join(f'{n:,}' for n in sizes)} items held at once, on a clock the "
        f"benchmark moves; {median_of}. Costs in µs per item.",
    ]
    for backend in backends:
        sections.append(
            f"## DelayLine alone, {backend.name}\n\n"
            + line_table(runs, backend.name, sizes)
        )
    for backend in backends:
        sections.append(
            f"## Through a BoundedQueue (16 workers, every first call fails), "
            f"{backend.name}\n\n" + queue_table(runs, backend.name, sizes)
        )
    targets, _ = target_table(runs, backends, sizes)
    sections += [
        "## Targets\n\n" + targets,
        "## Machine\n\n" + format_table(["machine", ""], machine_description()),
    ]
    return "\n\n".join(sections)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one round, asyncio and trio only"
    )
    parser.add_argument(
        "--sizes",
        type=int,
        action="append",
        help="items held at once; repeat for several (default 1,000 10,000 100,000)",
    )
    parser.add_argument(
        "--items",
        type=int,
        help=f"small lines are repeated up to this many entries ({DEFAULT_ITEMS:,})",
    )
    parser.add_argument("--rounds", type=int, help=f"rounds ({DEFAULT_ROUNDS})")
    parser.add_argument(
        "--backend",
        action="append",
        help="asyncio, asyncio+uvloop or trio; repeat for several (default all)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sizes = sorted(set(args.sizes or SIZES))
    items = args.items or DEFAULT_ITEMS
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    if args.backend:
        backends = [backend_named(name) for name in args.backend]
    elif args.quick:
        backends = [backend_named(name) for name in QUICK_BACKENDS]
    else:
        backends = all_backends()
    runs = measure(backends, sizes, items, rounds)
    print(report(runs, backends, sizes, items, rounds))


if __name__ == "__main__":
    main()
