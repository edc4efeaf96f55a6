"""What the tests share, and the one place they reach into sluicegate's internals.

Tests use the public API. Where a test must see or change internal state (who is
parked in which line, slots in use, workers on their way, a patched
checkpoint), it goes through a named function here, so that moving that state
in src/ changes this file of tests and no other. The per-module
specifications (test_waiters.py, test_delay.py, test_clock.py) use their own
module's names directly.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from books import assert_books

import sluicegate._ledger
import sluicegate._queue
from sluicegate import BoundedQueue, Event, QueueStatus, RateLimiter, WorkQueue
from sluicegate._waiters import _COMPACT_AFTER, WaiterLine, _Waiter

__all__ = [
    "GUARD",
    "assert_books",
    "check_limiter_free",
    "check_line_compact",
    "check_line_idle",
    "check_nothing_lost",
    "claimed_by_an_executor",
    "getters_line",
    "idle_workers_line",
    "line_entries",
    "lost_wake",
    "noop",
    "patch_worker_checkpoint",
    "producers_line",
    "replace_inner_queue",
    "slot_count",
    "slots_in_use",
    "take_at",
    "taken_by_get",
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
    return queue._getters


def idle_workers_line(queue: BoundedQueue[Any]) -> WaiterLine:
    """The line of idle workers parked for an item (woken LIFO)."""
    return queue._idle_workers


def producers_line(queue: BoundedQueue[Any]) -> WaiterLine:
    """The line of producers blocked on a full queue."""
    return queue._producers


def slots_in_use(queue: BoundedQueue[Any]) -> int:
    """How many workers hold a slot of the concurrency limit now."""
    return queue._active


def slot_count(queue: BoundedQueue[Any]) -> float:
    """How many slots the concurrency limit gives (infinite for no limit)."""
    return queue._slots


def workers_starting(queue: BoundedQueue[Any]) -> int:
    """How many workers were started (from the reserve) and have not run yet."""
    return queue._starting


def workers_in_reserve(queue: BoundedQueue[Any]) -> int:
    """How many workers asked for are held in reserve, not started yet."""
    return queue._pool.reserved


def workers_looking(queue: BoundedQueue[Any]) -> int:
    """How many workers look at the buffer once more before they park."""
    return queue._looking


def taken_by_get(queue: BoundedQueue[Any]) -> int:
    """How many items ``get()`` callers took and have not called task_done for."""
    return queue._taken_by_get


def patch_worker_checkpoint(
    monkeypatch: pytest.MonkeyPatch, replacement: Callable[[], Awaitable[None]]
) -> None:
    """Make the worker loop await ``replacement`` where it awaits anyio's checkpoint.

    (The queue module's other checkpoints, in put and get, call it too.)
    """
    monkeypatch.setattr(sluicegate._queue, "checkpoint", replacement)


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
