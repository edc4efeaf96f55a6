"""Timeout storm: N parked waiters whose timeouts expire at random within 1 s.

Leaving a line of waiters must cost O(1): a task that gives up waiting (timeout or
cancellation) must not pay for the length of the line it leaves, or a storm of
timeouts stalls the event loop for a time that grows with the square of N.

- sluicegate BoundedQueue, blocked put(): a started ``BoundedQueue(maxsize=1)``
  holding one item, so it is full, and no workers; N producer tasks each ``await
  queue.put(i, timeout=t)``. Every put must return False, and
  ``metrics["backpressure_events"]`` must be N.
- sluicegate BoundedQueue, parked get(): a started, empty ``BoundedQueue`` with no
  workers; N tasks each ``with anyio.move_on_after(t): await queue.get()``. No get
  may return an item.
- plain anyio Event per waiter (baseline): N tasks each ``with
  anyio.move_on_after(t): await anyio.Event().wait()``; the cost of parking N tasks
  and expiring their timeouts, with no line to leave.

The timeouts ``t`` are uniform in (0, 1] s, drawn from a seeded generator; every
case gets the same list. The N tasks are spawned first and wait at a gate (not
timed, and with the garbage collector off: spawning 100,000 tasks takes seconds,
the same in every case). The clock starts when the gate opens: all N tasks go to
park in one pass of the event loop, in spawn order, each starting its timeout as
it parks, and the clock stops when the last has returned. The CPU time the
process used meanwhile is reported too: unlike the wall time, it leaves out other
work on the machine. A heartbeat task that sleeps 10 ms at a time records the
longest gap between its wake-ups: how long the event loop went without serving a
timer. Rounds are interleaved; medians are reported.

When that pass takes longer than the timeouts (3 to 7 s for 100,000 waiters on a
2-core machine), the timeouts run out roughly in the order the waiters parked,
give or take 1 s: a leave that scans the line then finds itself among the
waiters of the last second or so, and a storm costs it less than N squared.

Target, per backend: each sluicegate case takes at most 1.5x the baseline's wall
time.

    uv run python bench/storm.py                # 100,000 waiters, 3 rounds, 3 backends
    uv run python bench/storm.py --quick        # 10,000 waiters
    uv run python bench/storm.py --n 50000 --rounds 3 --backend asyncio --case put
"""

from __future__ import annotations

import argparse
import gc
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from time import perf_counter, process_time
from typing import Any

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

from sluicegate import BoundedQueue

DEFAULT_N = 100_000
QUICK_N = 10_000
DEFAULT_ROUNDS = 3
QUICK_ROUNDS = 1
SEED = 20_795
TICK = 0.01
#: sluicegate may take at most this many times the plain-Event baseline.
MAX_RATIO = 1.5


@dataclass(frozen=True)
class Run:
    """One timed storm, in seconds from the release of the waiters."""

    seconds: float  # until the last waiter returned
    cpu: float  # CPU time of the process meanwhile
    parked: float  # until the last waiter went to park
    longest_gap: float  # longest gap between heartbeats


#: A waiter task: ``waiter(i, timeout)``; it awaits `Storm.gate` before it parks.
Waiter = Callable[[int, float], Coroutine[Any, Any, None]]


class Storm:
    """N waiter tasks released at once from a gate, and a heartbeat beside them.

    The gate keeps the spawning out of the timed span: it takes seconds for
    100,000 tasks, the same in every case, and would only dilute the ratios. Once
    the gate opens, every waiter parks in one pass of the event loop. The
    heartbeat sleeps ``TICK`` at a time and records the longest gap between its
    wake-ups after the gate opens.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._arrived = 0
        self._all_arrived = anyio.Event()
        self._open = anyio.Event()
        self._parking = 0
        self._parked_at = 0.0
        self._watching = False
        self._last = 0.0
        self._longest_gap = 0.0

    async def gate(self) -> None:
        """Wait until all N waiters have arrived and the gate opens."""
        self._arrived += 1
        if self._arrived == self.n:
            self._all_arrived.set()
        await self._open.wait()
        self._parking += 1
        if self._parking == self.n:
            self._parked_at = perf_counter()

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(TICK)
            now = perf_counter()
            if self._watching:
                self._longest_gap = max(self._longest_gap, now - self._last)
            self._last = now

    async def run(self, waiter: Waiter, timeouts: list[float]) -> Run:
        """Spawn ``waiter(i, timeout)`` for each timeout, open the gate, time."""
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._heartbeat)
            async with anyio.create_task_group() as tg:
                gc.disable()  # spawning is not timed; spare it the collector
                try:
                    for i, timeout in enumerate(timeouts):
                        tg.start_soon(waiter, i, timeout)
                    await self._all_arrived.wait()
                finally:
                    gc.enable()
                gc.collect()
                start = self._last = perf_counter()
                cpu_start = process_time()
                self._watching = True
                self._open.set()
            elapsed = perf_counter() - start
            cpu = process_time() - cpu_start
            outer.cancel_scope.cancel()
        check("storm", "waiters parked", self._parking, self.n)
        return Run(elapsed, cpu, self._parked_at - start, self._longest_gap)


def check(case: str, what: str, got: int, expected: int) -> None:
    if got != expected:
        raise RuntimeError(f"{case}: {what} is {got:,}, expected {expected:,}")


async def sluicegate_put(timeouts: list[float]) -> Run:
    n = len(timeouts)
    storm = Storm(n)
    refused = 0

    async with BoundedQueue[int](maxsize=1) as queue:
        await queue.put(-1, timeout=0)
        check("put", "items in the queue", queue.size, 1)

        async def producer(i: int, timeout: float) -> None:
            nonlocal refused
            await storm.gate()
            if not await queue.put(i, timeout=timeout):
                refused += 1

        run = await storm.run(producer, timeouts)
        check("put", "puts that returned False", refused, n)
        check("put", "backpressure_events", queue.metrics["backpressure_events"], n)
    return run


async def sluicegate_get(timeouts: list[float]) -> Run:
    storm = Storm(len(timeouts))
    taken = 0

    async with BoundedQueue[int](maxsize=1) as queue:

        async def consumer(i: int, timeout: float) -> None:
            nonlocal taken
            await storm.gate()
            with anyio.move_on_after(timeout):
                await queue.get()
                taken += 1

        run = await storm.run(consumer, timeouts)
        check("get", "items taken", taken, 0)
    return run


async def plain_events(timeouts: list[float]) -> Run:
    storm = Storm(len(timeouts))
    expired = 0

    async def waiter(i: int, timeout: float) -> None:
        nonlocal expired
        await storm.gate()
        with anyio.move_on_after(timeout) as scope:
            await anyio.Event().wait()
        expired += scope.cancelled_caught

    run = await storm.run(waiter, timeouts)
    check("events", "timeouts expired", expired, len(timeouts))
    return run


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    func: Callable[[list[float]], Awaitable[Run]]


CASES = [
    Case("put", "sluicegate BoundedQueue, blocked put()", sluicegate_put),
    Case("get", "sluicegate BoundedQueue, parked get()", sluicegate_get),
    Case("events", "plain anyio Event per waiter (baseline)", plain_events),
]
BASELINE = "events"
LABELS = {case.key: case.label for case in CASES}

#: Runs by (case key, backend name), one per round.
Runs = dict[tuple[str, str], list[Run]]


def timeouts_for(n: int) -> list[float]:
    rng = random.Random(SEED)
    return [1.0 - rng.random() for _ in range(n)]  # (0, 1]: never the 0 fast path


def measure(backends: list[Backend], cases: list[Case], n: int, rounds: int) -> Runs:
    timeouts = timeouts_for(n)
    runs: Runs = {}
    for round_number in range(1, rounds + 1):
        for backend in backends:
            for case in cases:
                run = backend.run(case.func, timeouts)
                runs.setdefault((case.key, backend.name), []).append(run)
                progress(
                    f"round {round_number}/{rounds} {backend.name:15} {case.key:7}"
                    f"{run.seconds:8.2f} s, CPU {run.cpu:.2f} s, all parked by "
                    f"{run.parked:.2f} s, longest gap {run.longest_gap:.2f} s"
                )
    return runs


def figure(runs: Runs, key: str, backend: str, field: str) -> float | None:
    """The median of one `Run` field over the rounds; None if the case did not run."""
    if (key, backend) not in runs:
        return None
    return median([getattr(run, field) for run in runs[key, backend]])


def figure_table(runs: Runs, keys: list[str], names: list[str], field: str) -> str:
    rows = []
    for key in keys:
        values = [figure(runs, key, name, field) for name in names]
        rows.append(
            [LABELS[key], *("n/a" if v is None else f"{v:.2f} s" for v in values)]
        )
    return format_table(["seconds", *names], rows)


def target_table(runs: Runs, keys: list[str], names: list[str]) -> tuple[str, bool]:
    rows = []
    all_pass = True
    for key in keys:
        for name in names:
            mine = figure(runs, key, name, "seconds")
            base = figure(runs, BASELINE, name, "seconds")
            if key == BASELINE or mine is None or base is None:
                continue
            ratio = mine / base
            ok = ratio <= MAX_RATIO
            all_pass = all_pass and ok
            label = f"{LABELS[key]} <= {MAX_RATIO:g}x baseline"
            rows.append([label, name, f"{ratio:.2f}x", verdict(ok)])
    if not rows:
        return "no target: the baseline or every sluicegate case was left out", False
    table = format_table(["target", "backend", "measured", "result"], rows)
    return table + f"\n\nOverall: {verdict(all_pass)}", all_pass


def report(runs: Runs, backends: list[Backend], n: int, rounds: int) -> str:
    names = [b.name for b in backends]
    keys = [case.key for case in CASES if any((case.key, b) in runs for b in names)]
    targets, _ = target_table(runs, keys, names)
    median_of = f"median of {rounds} interleaved rounds" if rounds > 1 else "one round"
    return "\n\n".join(
        [
            "# sluicegate timeout storm",
            f"`uv run python bench/storm.py --n {n} --rounds {rounds}`: {n:,} "
            "waiters, timeouts uniform in (0, 1] s, timed from the opening of the "
            f"gate until the last waiter has returned; {median_of}.",
            "## Wall time\n\n" + figure_table(runs, keys, names, "seconds"),
            "## CPU time of the process (other load on the machine does not count)"
            "\n\n" + figure_table(runs, keys, names, "cpu"),
            "## Until the last waiter went to park (one pass of the event loop)\n\n"
            + figure_table(runs, keys, names, "parked"),
            f"## Longest gap between {TICK * 1000:g} ms heartbeats\n\n"
            + figure_table(runs, keys, names, "longest_gap"),
            "## Target\n\n" + targets,
            "## Machine\n\n" + format_table(["machine", ""], machine_description()),
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few waiters, one round")
    parser.add_argument("--n", type=int, help=f"waiters per storm ({DEFAULT_N:,})")
    parser.add_argument("--rounds", type=int, help=f"rounds ({DEFAULT_ROUNDS})")
    parser.add_argument(
        "--backend",
        action="append",
        help="asyncio, asyncio+uvloop or trio; repeat for several (default all)",
    )
    parser.add_argument(
        "--case",
        action="append",
        choices=[case.key for case in CASES],
        help="put, get or events; repeat for several (default all)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    if args.backend:
        backends = [backend_named(name) for name in args.backend]
    else:
        backends = all_backends()
    cases = [case for case in CASES if not args.case or case.key in args.case]
    runs = measure(backends, cases, n, rounds)
    print(report(runs, backends, n, rounds))


if __name__ == "__main__":
    main()
