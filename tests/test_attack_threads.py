"""Attacks on puts from other threads while the queue stops.

Threads put through AnyIO's bridges (`anyio.from_thread.run` from threads that
`anyio.to_thread.run_sync` started, and a `BlockingPortal` from plain threads)
while the event loop's task stops the queue: with stop, stop(timeout=0),
stop_workers, and a stop followed by a restart. Each put is accepted and
accounted for, turned away on backpressure (a put with a timeout), or refused
with QueueStateError; no other outcome, nothing lost, nothing twice. The books
are checked at every suspension of the loop (tests/watch.py).

No fail_after here: trio's MockClock jumps ahead whenever the loop waits for
the threads, so a guard would fire at once (pytest's timeout guards instead).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from functools import partial

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from watch import assert_accounted, tasks, watching

from sluicegate import BoundedQueue, QueueStateError

THREADS = 4
PER_THREAD = 60


class Outcomes:
    """How each thread's puts ended (list.append is atomic across threads)."""

    def __init__(self) -> None:
        self.accepted: list[int] = []
        self.rejected: list[int] = []  # False: backpressure
        self.refused: list[int] = []  # QueueStateError
        self.other: list[BaseException] = []

    def record(self, item: int, put: Callable[[], bool]) -> None:
        try:
            (self.accepted if put() else self.rejected).append(item)
        except QueueStateError:
            self.refused.append(item)
        except BaseException as exc:  # reported by check()
            self.other.append(exc)

    def check(self, attempted: set[int]) -> None:
        assert self.other == []
        lists = [self.accepted, self.rejected, self.refused]
        ended = [item for outcomes in lists for item in outcomes]
        assert sorted(ended) == sorted(attempted), "a put ended twice or never"


class Handled:
    def __init__(self, queue: BoundedQueue[int], stop_after: int) -> None:
        self.queue = queue
        self.done: Counter[int] = Counter()
        self.enough = anyio.Event()
        self.stop_after = stop_after

    async def work(self, item: int) -> None:
        for _ in range(item % 3):
            await anyio.lowlevel.checkpoint()
        self.done[item] += 1
        if len(self.done) >= self.stop_after:
            self.enough.set()


STOPS = ["stop", "stop(timeout=0)", "stop_workers", "stop+restart"]


@pytest.mark.parametrize("how", STOPS)
async def test_puts_from_worker_threads_while_the_queue_stops(how: str) -> None:
    queue: BoundedQueue[int] = BoundedQueue(maxsize=4)
    handled = Handled(queue, stop_after=40)
    outcomes = Outcomes()

    def produce(first: int) -> None:
        for item in range(first, first + PER_THREAD):
            timeout = None if item % 4 else 0.0
            outcomes.record(
                item, partial(anyio.from_thread.run, queue.put, item, timeout)
            )

    async with watching(queue):
        before = tasks()
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(handled.work, 2, task_group=tg)
            async with anyio.create_task_group() as threads:
                for n in range(THREADS):
                    threads.start_soon(anyio.to_thread.run_sync, produce, n * 1000)
                await handled.enough.wait()
                if how == "stop+restart":
                    await queue.stop()
                    await queue.start()
                    await queue.start_workers(handled.work, 2, task_group=tg)
                elif how == "stop_workers":
                    await queue.stop_workers()
                    await queue.stop()  # the producers parked on a full queue
                else:
                    await queue.stop(0 if how == "stop(timeout=0)" else None)
            await queue.join()
            await queue.stop()
        assert tasks() == before
    attempted = {n * 1000 + i for n in range(THREADS) for i in range(PER_THREAD)}
    outcomes.check(attempted)
    assert outcomes.refused or how == "stop+restart"
    assert_accounted(queue, outcomes.accepted, handled.done)
    assert queue.metrics["backpressure_events"] == len(outcomes.rejected)


async def test_puts_and_put_nowaits_through_a_portal_while_the_queue_stops() -> None:
    """Plain threads, through a BlockingPortal: put_nowait (accepted, or
    WouldBlock, or refused) and put, while the loop stops the queue."""
    queue: BoundedQueue[int] = BoundedQueue(maxsize=3)
    handled = Handled(queue, stop_after=30)
    outcomes = Outcomes()

    async with watching(queue), anyio.from_thread.BlockingPortal() as portal:

        def put_nowait(item: int) -> bool:
            try:
                portal.call(queue.put_nowait, item)
            except anyio.WouldBlock:
                return False
            return True

        def produce(first: int) -> None:
            for item in range(first, first + PER_THREAD):
                if item % 2:
                    outcomes.record(item, partial(put_nowait, item))
                else:
                    outcomes.record(item, partial(portal.call, queue.put, item, None))

        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(handled.work, 2, task_group=tg)
            threads = [
                threading.Thread(target=produce, args=(n * 1000,))
                for n in range(THREADS)
            ]
            for thread in threads:
                thread.start()
            await handled.enough.wait()
            await queue.stop()
            for thread in threads:
                await anyio.to_thread.run_sync(thread.join)
    attempted = {n * 1000 + i for n in range(THREADS) for i in range(PER_THREAD)}
    outcomes.check(attempted)
    assert outcomes.refused
    assert_accounted(queue, outcomes.accepted, handled.done)
    assert queue.metrics["backpressure_events"] == len(outcomes.rejected)
