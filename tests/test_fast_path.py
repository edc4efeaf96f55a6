"""The nowait fast paths: fair to other tasks, and cancellable at every await.

put and get complete without a trip through the event loop when they can, and the
Executor takes rate tokens without yielding when they are there. These tests pin
down what that must not cost: a producer or worker that never blocks still lets
other tasks run, and cancellation at each await leaves nothing half-done.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import anyio
import pytest
from fake_clock import FakeClock
from support import GUARD

from sluicegate import (
    BoundedQueue,
    Event,
    ExecutionStatus,
    Executor,
    QueueConfig,
    RateLimiter,
    WorkQueue,
)


async def test_a_producer_that_never_blocks_lets_workers_run() -> None:
    """A huge buffer never makes put wait; workers run long before it is done."""
    enqueued_at_first_item: list[int] = []

    async def work(item: int) -> None:
        if not enqueued_at_first_item:
            enqueued_at_first_item.append(queue.metrics["enqueued"])

    queue: BoundedQueue[int] = BoundedQueue(maxsize=100_000)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 1)
            for i in range(10_000):
                assert await queue.put(i)  # never waits: there is always room
    assert enqueued_at_first_item[0] < 200
    assert queue.metrics["processed"] == 10_000


async def test_retrying_put_with_zero_timeout_does_not_starve_workers() -> None:
    """`while not await put(x, timeout=0)` spins on a full queue; it must yield."""

    async def work(item: int) -> None:
        pass

    queue: BoundedQueue[int] = BoundedQueue(maxsize=1)
    refused = 0
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 1)
            for i in range(100):
                while not await queue.put(i, timeout=0):
                    refused += 1
    assert queue.metrics["processed"] == 100
    assert queue.metrics["backpressure_events"] == refused


async def test_a_worker_that_never_yields_lets_others_run() -> None:
    """A worker function with no await in it still yields every so often."""

    async def work(item: int) -> None:
        pass  # never yields

    queue: BoundedQueue[int] = BoundedQueue(maxsize=10_000, timeout=None)
    gap = await _largest_run_without_yielding(queue, work, 1)
    # 64 items a turn; trio shuffles the tasks of a scheduling round, so the
    # ticker can see two of the worker's turns between two of its own.
    assert gap <= 2 * 64, "the worker ran too many items without yielding"


async def _largest_run_without_yielding(
    queue: BoundedQueue[int], work: Callable[[int], Awaitable[None]], workers: int
) -> int:
    """Put 5,000 items, start ``workers`` workers running ``work``, and return
    the most items they finished between two turns of another task."""
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(queue.metrics["processed"])
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            for i in range(5_000):
                await queue.put(i)
            tg.start_soon(ticker)
            await queue.start_workers(work, workers)
            await queue.join()
            tg.cancel_scope.cancel()
    return max(b - a for a, b in itertools.pairwise(ticks))


async def test_put_cancelled_at_its_fairness_checkpoint_accepts_nothing() -> None:
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1_000)
    await queue.start()
    accepted = 0
    with anyio.CancelScope() as scope:
        scope.cancel()  # every await in here raises at once
        for i in range(200):
            await queue.put(i)  # only the periodic checkpoint can notice
            accepted += 1
    assert 0 < accepted < 200
    assert queue.metrics["enqueued"] == accepted == queue.size
    await queue.stop()
    assert queue.unprocessed == list(range(accepted))


async def test_get_completes_without_yielding_when_an_item_is_ready() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        assert await queue.get() == 1  # taken and returned: nothing lost
    queue.task_done()
    await queue.stop()
    assert queue.metrics["processed"] == 1


class Stamp(Event):
    async def invoke(self) -> None:
        await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("binding", ["start rate", "rate limiter"])
async def test_executor_cancelled_while_waiting_for_a_token(binding: str) -> None:
    """An event cancelled before it got its token is CANCELLED, never run, and
    its reservation is given back."""
    clock = FakeClock()
    limiter = RateLimiter(1, 1, burst=1, clock=clock)
    if binding == "start rate":
        config = QueueConfig(queue_capacity=1, capacity_refresh_time=1.0)
        executor = Executor(Stamp, config, clock=clock)
    else:
        config = QueueConfig(capacity_refresh_time=1e-6, concurrency_limit=2)
        executor = Executor(Stamp, config, rate_limiter=limiter, clock=clock)
    first, second = Stamp(), Stamp()
    with anyio.fail_after(GUARD):
        async with executor:
            await executor.put(first)
            await executor.put(second)
            await anyio.wait_all_tasks_blocked()  # second waits for a token
            await executor.stop(timeout=0)
    assert first.execution.status is ExecutionStatus.COMPLETED
    assert second.execution.status is ExecutionStatus.CANCELLED
    assert second.execution.duration is None
    assert executor.queue.unprocessed == [second]
    if binding == "rate limiter":
        assert limiter.available == 0  # the cancelled reservation was given back


async def test_a_batch_with_room_for_everything_lets_workers_run() -> None:
    """batch_process puts without awaiting while there is room, yet yields."""
    enqueued_at_first_item: list[int] = []

    async def work(item: int) -> None:
        if not enqueued_at_first_item:
            enqueued_at_first_item.append(queue.metrics["enqueued"])

    queue: WorkQueue[int] = WorkQueue(maxsize=100_000)
    with anyio.fail_after(GUARD):
        await queue.batch_process(range(10_000), work, num_workers=1)
    assert enqueued_at_first_item[0] < 200
    assert queue.metrics["processed"] == 10_000


async def test_workers_that_never_yield_still_let_others_run() -> None:
    """Two workers whose calls never yield: neither can see the other run, so
    each still yields every so often."""

    async def work(item: int) -> None:
        pass  # never yields

    queue: BoundedQueue[int] = BoundedQueue(maxsize=10_000)
    gap = await _largest_run_without_yielding(queue, work, 2)
    # Each worker runs at most 64 items a turn; trio may run both, and one of
    # them twice, between two turns of the ticker.
    assert gap <= 4 * 64, "the workers ran too many items without yielding"


async def test_a_worker_that_puts_without_yielding_still_lets_others_run() -> None:
    """A worker function that never yields but puts into its own queue (with
    put_nowait): the puts must not count as a sign that it yielded."""

    async def work(item: int) -> None:
        if item < 5_000:
            queue.put_nowait(item + 10_000)  # never yields

    queue: BoundedQueue[int] = BoundedQueue(maxsize=20_000)
    gap = await _largest_run_without_yielding(queue, work, 1)
    assert gap <= 2 * 64, "the worker ran too many items without yielding"
