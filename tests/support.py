"""What the tests share, and the one place they reach into sluicegate's internals.

Tests use the public API. Where a test must see or change internal state (who is
parked in which line, slots in use, workers on their way, a patched
checkpoint), it goes through a named function here, so that moving that state
in src/ changes this file of tests and no other. The per-module
specifications (test_waiters.py, test_delay.py, test_clock.py) use their own
module's names directly.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import uvloop
from books import assert_books
from fake_clock import FakeClock, all_blocked
from trio.testing import MockClock

import sluicegate._core
import sluicegate._ledger
import sluicegate._worker_loop
from sluicegate import (
    BoundedQueue,
    Event,
    QueueStatus,
    RateLimiter,
    RetryPolicy,
    WorkQueue,
)
from sluicegate._books import Books
from sluicegate._queue import core_of
from sluicegate._waiters import _COMPACT_AFTER, WaiterLine, _Waiter

__all__ = [
    "GUARD",
    "NO_JITTER",
    "SEEDS",
    "SWEEP_LIMIT",
    "Recorder",
    "Source",
    "assert_books",
    "assert_settled",
    "asyncio_only",
    "cancel_after",
    "cancel_at",
    "check_limiter_free",
    "check_line_compact",
    "check_line_idle",
    "check_nothing_lost",
    "checkpoint_step",
    "claimed_by_an_executor",
    "clock_step",
    "delay_each",
    "double",
    "get_one",
    "getters_line",
    "idle_workers_line",
    "ignore",
    "in_virtual_time",
    "line_entries",
    "lost_wake",
    "noop",
    "patch_worker_checkpoint",
    "producers_line",
    "put_all",
    "replace_inner_queue",
    "run_cancelled",
    "run_on",
    "set_when_blocked",
    "slot_count",
    "slots_in_use",
    "stray_cancelled_error",
    "sweep",
    "take_at",
    "taken_by_get",
    "virtual_time",
    "workers_in_reserve",
    "workers_looking",
    "workers_starting",
]

#: seconds: a fail_after guard against hangs, never a timing assertion (on
#: trio's mock clock it is virtual time).
GUARD = 10


async def noop(item: object) -> None:
    """A worker function that does nothing but yield once."""
    await anyio.lowlevel.checkpoint()


# -- a BoundedQueue's dispatch state --------------------------------------------------


def getters_line(queue: BoundedQueue[Any]) -> WaiterLine:
    """The line of ``get()`` callers parked on an empty queue."""
    return core_of(queue).dispatch.getters


def idle_workers_line(queue: BoundedQueue[Any]) -> WaiterLine:
    """The line of idle workers parked for an item (woken LIFO)."""
    return core_of(queue).dispatch.idle_workers


def producers_line(queue: BoundedQueue[Any]) -> WaiterLine:
    """The line of producers blocked on a full queue."""
    return core_of(queue).dispatch.producers


def slots_in_use(queue: BoundedQueue[Any]) -> int:
    """How many workers hold a slot of the concurrency limit now."""
    return core_of(queue).dispatch.active


def slot_count(queue: BoundedQueue[Any]) -> float:
    """How many slots the concurrency limit gives (infinite for no limit)."""
    return core_of(queue).dispatch.slots


def workers_starting(queue: BoundedQueue[Any]) -> int:
    """How many workers were started (from the reserve) and have not run yet."""
    return core_of(queue).dispatch.starting


def workers_in_reserve(queue: BoundedQueue[Any]) -> int:
    """How many workers asked for are held in reserve, not started yet."""
    return core_of(queue).dispatch.pool.reserved


def workers_looking(queue: BoundedQueue[Any]) -> int:
    """How many workers look at the buffer once more before they park."""
    return core_of(queue).dispatch.looking


def taken_by_get(queue: BoundedQueue[Any]) -> int:
    """How many items ``get()`` callers took and have not called task_done for."""
    return core_of(queue).books.taken_by_get


def books_of(queue: BoundedQueue[Any]) -> Books[Any]:
    """The books of ``queue``: its buffer and counts (tests may unbalance them)."""
    return core_of(queue).books


def delay_line_empty(queue: BoundedQueue[Any]) -> bool:
    """Whether nothing at all (retry, deadline, hold's end) waits in ``queue``'s
    delay line, entries withdrawn but not yet dropped included."""
    return not core_of(queue).timers.line._heap


def patch_worker_checkpoint(
    monkeypatch: pytest.MonkeyPatch, replacement: Callable[[], Awaitable[None]]
) -> None:
    """Make the worker loop await ``replacement`` where it awaits anyio's checkpoint.

    (The core's other checkpoints, in put, call it too.)
    """
    monkeypatch.setattr(sluicegate._worker_loop, "checkpoint", replacement)
    monkeypatch.setattr(sluicegate._core, "checkpoint", replacement)


# -- other objects' internals ---------------------------------------------------------


def line_entries(line: WaiterLine) -> deque[_Waiter]:
    """The entries of ``line``, those of waiters that left and are not dropped yet
    included (each has the one-shot ``event`` it waits on)."""
    return line._entries


def limiter_line(limiter: RateLimiter) -> WaiterLine:
    """The line of tasks waiting behind ``limiter``'s head."""
    return limiter._line


def take_at(limiter: RateLimiter, now: float, tokens: float) -> bool:
    """Take ``tokens`` from ``limiter`` at time ``now`` if a newcomer may, without
    waiting: what ``acquire`` tries first."""
    return limiter.take_at(now, tokens)


def claimed_by_an_executor(event: Event) -> bool:
    """Whether an Executor accepted ``event`` (a cancelled put accepts nothing)."""
    return sluicegate._ledger.claimed(event)


def replace_inner_queue(work_queue: WorkQueue[Any], queue: Any) -> None:
    """Make ``work_queue`` forward to ``queue`` (a mock) instead of its own."""
    work_queue._queue = queue


# -- shared checks --------------------------------------------------------------------


def check_line_compact(line: WaiterLine) -> None:
    """Entries of waiters that left never outnumber the live ones by much."""
    entries = len(line_entries(line))
    assert entries <= 2 * line.parked + _COMPACT_AFTER + 1, (entries, line)


def check_line_idle(line: WaiterLine) -> None:
    """Nobody is parked in ``line`` or woken and on the way, and it is compact."""
    assert line.parked == 0, line
    assert line.woken == 0, line
    check_line_compact(line)


def check_limiter_free(limiter: RateLimiter) -> None:
    """``limiter`` has no head and nobody waiting in its line."""
    assert not limiter._has_head
    check_line_idle(limiter_line(limiter))


def check_nothing_lost(
    queue: BoundedQueue[int], accepted: set[int], handled: Counter[int]
) -> None:
    """The queue has stopped; every accepted item was handled exactly once or is
    listed unprocessed, never both; no other item was handled."""
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0
    assert_books(queue)
    # Only items taken by get() callers that never called task_done are in flight.
    assert queue.in_flight == taken_by_get(queue)
    assert [item for item, n in handled.items() if n > 1] == []
    unprocessed = queue.unprocessed
    assert len(unprocessed) == len(set(unprocessed))
    assert set(handled).isdisjoint(unprocessed)
    assert set(handled) | set(unprocessed) == accepted, (accepted, handled, unprocessed)
    for line in (getters_line(queue), idle_workers_line(queue), producers_line(queue)):
        check_line_idle(line)


def lost_wake(queue: BoundedQueue[Any]) -> str | None:
    """Call when every task is blocked: what a buffered item waits for in vain."""
    starting = workers_starting(queue)
    if starting:
        # Every started worker has run by now: none is still on its way.
        return f"{starting} workers counted as starting"
    if queue.status is not QueueStatus.PROCESSING or not queue.size:
        return None
    getters = getters_line(queue).parked
    if getters:
        return f"size={queue.size} with {getters} get() parked"
    idle = idle_workers_line(queue).parked + workers_in_reserve(queue)
    if idle and slots_in_use(queue) < slot_count(queue):
        return f"size={queue.size} with {idle} idle workers (parked or in reserve)"
    return None


# -- workers, handlers and sources ----------------------------------------------------


async def ignore(exc: Exception, item: object) -> None:
    """An error handler that takes every failure and does nothing with it."""


async def double(item: int) -> int:
    await anyio.lowlevel.checkpoint()
    return item * 2


async def get_one(queue: BoundedQueue[int], got: list[int]) -> None:
    got.append(await queue.get())
    queue.task_done()


async def put_all(queue: BoundedQueue[int], items: range, accepted: set[int]) -> None:
    for item in items:
        if await queue.put(item):
            accepted.add(item)


async def set_when_blocked(event: anyio.Event) -> None:
    await all_blocked()
    event.set()


class Recorder(Iterator[int]):
    """An iterator over range(n) that remembers what was drawn from it."""

    def __init__(self, n: int) -> None:
        self._items = iter(range(n))
        self.drawn: list[int] = []

    def __next__(self) -> int:
        item = next(self._items)
        self.drawn.append(item)
        return item


class Source(Iterator[int]):
    """range(n), remembering how many items were drawn."""

    def __init__(self, n: int) -> None:
        self._items = iter(range(n))
        self.drawn = 0

    def __next__(self) -> int:
        item = next(self._items)
        self.drawn += 1
        return item


def assert_settled(queue: BoundedQueue[Any], accepted: int | None = None) -> None:
    """STOPPED, no workers, and every accepted item processed or unprocessed."""
    m = queue.metrics
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0
    assert queue.size == 0
    assert m["in_flight"] == 0
    assert m["enqueued"] == m["processed"] + len(queue.unprocessed)
    if accepted is not None:
        assert m["enqueued"] == accepted


# -- retries in virtual time ----------------------------------------------------------

NO_JITTER = RetryPolicy(attempts=3, backoff=1.0, multiplier=2.0, jitter=False)


@asynccontextmanager
async def virtual_time() -> AsyncIterator[FakeClock]:
    clock = FakeClock()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            yield clock
            tg.cancel_scope.cancel()


async def delay_each(queue: BoundedQueue[int], *items: int) -> None:
    """Put ``items`` through one worker whose calls all fail, under a policy
    that retries after 1 s, then end the worker: the items wait in the delay
    line, all due at the same moment."""

    async def fails(item: int) -> None:
        raise ConnectionError

    await queue.start_workers(fails, 1, retry=RetryPolicy(backoff=1, jitter=False))
    for item in items:
        await queue.put(item)
    await all_blocked()
    await queue.stop_workers()


# -- backends -------------------------------------------------------------------------

asyncio_only = pytest.mark.parametrize(
    "anyio_backend",
    [("asyncio", {}), ("asyncio", {"loop_factory": uvloop.new_event_loop})],
    ids=["asyncio", "asyncio+uvloop"],
)


async def stray_cancelled_error() -> None:
    """Raise CancelledError the way `await some_cancelled_task` does."""
    task = asyncio.ensure_future(asyncio.sleep(10))
    await asyncio.sleep(0)
    task.cancel()
    await task


def run_on(backend: str, func: Callable[[], Any]) -> None:
    """anyio.run on one of the three backends (for tests that must run it)."""
    if backend == "trio":
        clock = MockClock(autojump_threshold=0)
        anyio.run(func, backend="trio", backend_options={"clock": clock})
    elif backend == "asyncio+uvloop":
        options = {"loop_factory": uvloop.new_event_loop}
        anyio.run(func, backend="asyncio", backend_options=options)
    else:
        anyio.run(func, backend="asyncio")


# -- cancelling at the k-th step, and virtual time ------------------------------------

#: A cancellation sweep gives up (and fails) if the operation has not completed
#: after this many steps.
SWEEP_LIMIT = 200
#: The seeds of the randomised attacks.
SEEDS = range(8)


async def checkpoint_step() -> None:
    await anyio.lowlevel.checkpoint()


def clock_step(clock: FakeClock, seconds: float) -> Callable[[], Awaitable[None]]:
    """A step that moves ``clock`` on by ``seconds``, then yields once.

    For operations that wait on a clock: a virtual one that steps with the
    sweep (trio's autojump never fires while the cancelling task runs).
    """

    async def step() -> None:
        clock.advance(seconds)
        await anyio.lowlevel.checkpoint()

    return step


async def cancel_at(
    clock: FakeClock, deadline: float, scope: anyio.CancelScope
) -> None:
    """Cancel ``scope`` once ``clock`` reaches ``deadline``: a virtual timeout."""
    await clock.sleep_until(deadline)
    scope.cancel()


async def in_virtual_time(
    clock: FakeClock, operation: Callable[[], Awaitable[object]]
) -> None:
    """Await ``operation()`` while ``clock`` jumps ahead whenever all wait."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.autojump)
        await operation()
        tg.cancel_scope.cancel()


async def cancel_after(
    k: int, scope: anyio.CancelScope, step: Callable[[], Awaitable[None]]
) -> None:
    for _ in range(k):
        await step()
    scope.cancel()


async def run_cancelled(
    k: int,
    target: Callable[[], Awaitable[object]],
    step: Callable[[], Awaitable[None]] = checkpoint_step,
) -> bool:
    """Run ``target`` in a scope cancelled after ``k`` steps; True if it completed."""
    completed = False
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:
            tg.start_soon(cancel_after, k, scope, step)
            await target()
            completed = True
        tg.cancel_scope.cancel()
    return completed


async def sweep(attack: Callable[[int], Awaitable[bool]]) -> None:
    """Run ``attack(k)`` for k = 0, 1, 2, ... until the operation it cancels at
    step k completes first: a cancellation at every step the operation takes.
    """
    for k in range(SWEEP_LIMIT):
        with anyio.fail_after(GUARD):
            if await attack(k):
                return
    raise AssertionError(f"not completed after {SWEEP_LIMIT} steps")
