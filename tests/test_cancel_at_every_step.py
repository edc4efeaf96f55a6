"""Cancelled at every step: nothing lost, repeated or left stuck afterwards.

put, get, stop, stop_workers, join, batch_process and the rate limiter's
acquire are cancelled at the k-th scheduling step, for every k up to the step
at which the operation completes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest
from fake_clock import FakeClock, all_blocked
from support import (
    assert_books,
    check_limiter_free,
    check_nothing_lost,
    clock_step,
    put_all,
    run_cancelled,
    sweep,
)

from sluicegate import (
    BoundedQueue,
    QueueStateError,
    QueueStatus,
    RateLimiter,
    WorkQueue,
)

# The attacks make workers fail on purpose: keep the log quiet meanwhile.
pytestmark = pytest.mark.usefixtures("quiet_worker_errors")

# -- the queue's calls -----------------------------------------------------------------


class Handled:
    """A worker function that counts the items it handled; every 7th one fails."""

    def __init__(self) -> None:
        self.counter: Counter[int] = Counter()

    async def work(self, item: int) -> None:
        for _ in range(item % 3):
            await anyio.lowlevel.checkpoint()
        self.counter[item] += 1
        if item % 7 == 3:
            raise KeyError(item)


QueueTarget = Callable[[BoundedQueue[int], set[int]], Awaitable[object]]


async def cancel_beside_workers(
    k: int, target: QueueTarget, *, maxsize: int, workers: int
) -> bool:
    """Run ``target(queue, accepted)`` beside running workers, cancelled at step
    ``k``. Then the queue must run on (started again if it stopped) and, once
    stopped, have lost nothing."""
    queue: BoundedQueue[int] = BoundedQueue(maxsize=maxsize)
    handled = Handled()
    accepted: set[int] = set()
    async with anyio.create_task_group() as tg:
        await queue.start()
        await queue.start_workers(handled.work, workers, task_group=tg)
        completed = await run_cancelled(k, lambda: target(queue, accepted))
        assert_books(queue)
        await all_blocked()
        # a cancelled stop does not leave the queue STOPPING
        assert queue.status in (QueueStatus.STOPPED, QueueStatus.PROCESSING)
        await queue.start()
        await queue.start_workers(handled.work, 2, task_group=tg)
        await put_all(queue, range(100, 108), accepted)
        await queue.join()
        await queue.stop()
    check_nothing_lost(queue, accepted, handled.counter)
    return completed


LIFECYCLE_CALLS: dict[str, Callable[[BoundedQueue[int]], Awaitable[None]]] = {
    "stop": lambda queue: queue.stop(),
    "stop(timeout=0)": lambda queue: queue.stop(timeout=0),
    "stop(timeout=1ms)": lambda queue: queue.stop(timeout=0.001),
    "stop_workers": lambda queue: queue.stop_workers(),
    "stop_workers(timeout=0.5ms)": lambda queue: queue.stop_workers(timeout=0.0005),
    "join": lambda queue: queue.join(),
}


async def test_puts_cancelled_at_every_step_lose_and_repeat_nothing() -> None:
    async def puts(queue: BoundedQueue[int], accepted: set[int]) -> None:
        for i in range(12):
            if await queue.put(i, timeout=None if i % 2 else 0.001):
                accepted.add(i)
            assert_books(queue)

    await sweep(lambda k: cancel_beside_workers(k, puts, maxsize=2, workers=2))


async def test_gets_cancelled_at_every_step_lose_and_repeat_nothing() -> None:
    async def attack(k: int) -> bool:
        queue: BoundedQueue[int] = BoundedQueue(maxsize=3)
        handled = Handled()
        accepted: set[int] = set()

        async def producer() -> None:
            for i in range(10):
                await anyio.lowlevel.checkpoint()
                try:
                    if await queue.put(i):
                        accepted.add(i)
                except QueueStateError:
                    return

        async def target() -> None:
            for _ in range(10):
                item = await queue.get()
                handled.counter[item] += 1
                try:
                    for _ in range(item % 3):
                        await anyio.lowlevel.checkpoint()
                finally:
                    queue.task_done()
                assert_books(queue)

        async with anyio.create_task_group() as tg:
            await queue.start()
            tg.start_soon(producer)
            completed = await run_cancelled(k, target)
            assert_books(queue)
            await all_blocked()
            await queue.stop()
        check_nothing_lost(queue, accepted, handled.counter)
        return completed

    await sweep(attack)


@pytest.mark.parametrize("call", list(LIFECYCLE_CALLS))
async def test_lifecycle_call_cancelled_at_every_step_loses_nothing(call: str) -> None:
    """Puts, then stop, stop_workers or join, cancelled anywhere: the queue
    runs on (a stopped one starts again), and a stop still ends it with every
    item accounted for."""

    async def puts_then_call(queue: BoundedQueue[int], accepted: set[int]) -> None:
        await put_all(queue, range(8), accepted)
        await LIFECYCLE_CALLS[call](queue)

    await sweep(
        lambda k: cancel_beside_workers(k, puts_then_call, maxsize=4, workers=3)
    )


@pytest.mark.parametrize("inside", [False, True], ids=["plain", "inside-async-with"])
async def test_batch_process_cancelled_at_every_step_loses_nothing(
    inside: bool,
) -> None:
    async def attack(k: int) -> bool:
        wq: WorkQueue[int] = WorkQueue(maxsize=2)
        handled = Handled()
        drawn: list[int] = []

        def items() -> Iterator[int]:
            for i in range(15):
                drawn.append(i)
                yield i

        async def target() -> None:
            await wq.batch_process(items(), handled.work, 2)

        if inside:
            async with wq:
                completed = await run_cancelled(k, target)
                assert_books(wq.queue)
        else:
            completed = await run_cancelled(k, target)
            await wq.stop()
        check_nothing_lost(wq.queue, set(drawn), handled.counter)
        return completed

    await sweep(attack)


async def test_fast_puts_cancelled_at_every_fairness_checkpoint_lose_nothing() -> None:
    """Puts into a queue with room never wait, except for the checkpoint they
    take every so often so as not to starve other tasks: cancel at each."""

    async def attack(k: int) -> bool:
        queue: BoundedQueue[int] = BoundedQueue(maxsize=1000)
        accepted: set[int] = set()
        handled = Handled()
        async with anyio.create_task_group() as tg:
            await queue.start()
            completed = await run_cancelled(
                k, lambda: put_all(queue, range(500), accepted)
            )
            assert_books(queue)
            assert queue.metrics["enqueued"] == len(accepted)
            await queue.start_workers(handled.work, 2, task_group=tg)
            await queue.join()
            await queue.stop()
        check_nothing_lost(queue, accepted, handled.counter)
        return completed

    await sweep(attack)


# -- the rate limiter's acquire --------------------------------------------------------


async def test_acquires_cancelled_at_every_step_leave_the_limiter_free() -> None:
    """Six tasks wait for one token each while the clock advances half a token's
    time per step; all are cancelled at step k, for every k until they are
    served. The limiter must then have no head and no waiter left."""

    async def attack(k: int) -> bool:
        clock = FakeClock()
        limiter = RateLimiter(1000, 1, burst=2, clock=clock)
        limiter.acquire_nowait(2)

        async def acquirers() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(limiter.acquire)

        completed = await run_cancelled(k, acquirers, clock_step(clock, 0.0005))
        await all_blocked()
        check_limiter_free(limiter)
        clock.advance(1)
        await limiter.acquire()  # at once: the bucket is full again
        return completed

    await sweep(attack)
