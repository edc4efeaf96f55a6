"""The books: every accepted item is accounted for, and processed once, at its end.

``enqueued == processed + size + in_flight + delayed + unprocessed`` at every
moment; an item is processed at its final outcome, once its error handler has
returned (docs/guarantees.rst, "The books").
"""

from __future__ import annotations

import random
from collections import Counter

import anyio
import attrs
import pytest
from fake_clock import FakeClock, all_blocked
from support import GUARD, assert_books

from sluicegate import BoundedQueue, QueueStatistics, RetryPolicy

# -- the books balance at every moment -------------------------------------------------


async def concurrency_limit_probe(exc: Exception, item: int) -> None:
    assert isinstance(exc, RuntimeError)


@pytest.mark.parametrize("seed", range(5))
async def test_books_balance_with_random_failures(seed: int) -> None:
    rng = random.Random(seed)
    done: Counter[int] = Counter()

    async def work(item: int) -> None:
        assert_books(queue)
        await anyio.sleep(rng.random() / 1000)
        if rng.random() < 0.2:
            raise RuntimeError(item)
        done[item] += 1

    queue: BoundedQueue[int] = BoundedQueue(maxsize=8, timeout=0.0005)
    accepted: list[int] = []
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 4, concurrency_limit_probe)
            for i in range(300):
                if await queue.put(i):
                    accepted.append(i)
                assert_books(queue)
    m = queue.metrics
    assert m["enqueued"] == len(accepted)
    assert m["processed"] == len(accepted)
    assert m["processed"] - m["errors"] == sum(done.values())
    assert all(n == 1 for n in done.values())
    assert set(done) <= set(accepted)
    assert_books(queue)


async def test_delayed_items_are_in_the_books_and_listed_when_stopped() -> None:
    clock = FakeClock()  # time stands still: the backoffs never end
    with anyio.fail_after(GUARD):

        async def work(item: int) -> None:
            raise ConnectionError

        policy = RetryPolicy(backoff=100, max_backoff=100, jitter=False)
        queue: BoundedQueue[int] = BoundedQueue(maxsize=3, clock=clock)
        async with queue:
            await queue.start_workers(work, 2, retry=policy)
            for i in range(3):
                await queue.put(i)
            await all_blocked()
            assert (queue.delayed, queue.size, queue.in_flight) == (3, 0, 0)
            assert_books(queue)
            assert queue.is_full  # delayed items take room
            assert not await queue.put(9, timeout=0)
            await queue.stop()
    assert sorted(queue.unprocessed) == [0, 1, 2]
    assert (queue.metrics["processed"], queue.delayed) == (0, 0)
    assert_books(queue)


async def test_statistics_is_a_frozen_snapshot_of_who_waits_and_the_limit() -> None:
    gate = anyio.Event()

    async def work(item: int) -> None:
        await gate.wait()

    queue: BoundedQueue[int] = BoundedQueue(2, concurrency_limit=1)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, queue:
            await queue.start_workers(work, 3)
            for i in range(3):
                await queue.put(i)  # one handled, two buffered: full
            tg.start_soon(queue.put, 3)  # blocked on the full queue
            await anyio.wait_all_tasks_blocked()
            stats = queue.statistics()
            assert stats == QueueStatistics(
                enqueued=3,
                processed=0,
                errors=0,
                backpressure_events=0,
                retries=0,
                in_flight=1,
                delayed=0,
                unprocessed=0,
                size=2,
                maxsize=2,
                workers=3,
                idle_workers=2,
                tasks_waiting_put=1,
                tasks_waiting_get=0,
                concurrency_limit=1,
                slots_in_use=1,
            )
            with pytest.raises(attrs.exceptions.FrozenInstanceError):
                stats.size = 0  # type: ignore[misc]
            gate.set()
    final = queue.statistics()
    assert (final.processed, final.workers, final.slots_in_use) == (4, 0, 0)
    assert stats.processed == 0  # a snapshot: it did not change


# -- an item is processed once its error handler has returned --------------------------


@pytest.mark.plan("R2-11")
async def test_join_waits_for_the_error_handler() -> None:
    in_handler = anyio.Event()
    release = anyio.Event()
    joined = False

    async def work(item: int) -> None:
        raise ValueError(item)

    async def on_error(exc: Exception, item: int) -> None:
        in_handler.set()
        await release.wait()

    async def join() -> None:
        nonlocal joined
        await queue.join()
        joined = True

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.start_workers(work, 1, on_error)
            await queue.put(1)
            await in_handler.wait()
            tg.start_soon(join)
            await all_blocked()
            assert not joined
            assert (queue.metrics["processed"], queue.metrics["errors"]) == (0, 0)
            assert queue.in_flight == 1
            release.set()
    assert joined
    assert (queue.metrics["processed"], queue.metrics["errors"]) == (1, 1)
