"""``concurrency_limit=`` given an `anyio.CapacityLimiter`: one limit shared by
several queues and by code outside them, borrowed per item on behalf of the
worker and released on every path."""

from __future__ import annotations

import random

import anyio
import pytest
from anyio import CapacityLimiter
from support import GUARD, assert_books

from sluicegate import BoundedQueue, QueueStateError, RetryPolicy, WorkQueue


class Peak:
    """Counts the calls running at once, across every queue that shares it."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def call(self, item: object) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
        finally:
            self.now -= 1


async def test_one_limiter_bounds_two_queues_together() -> None:
    limiter = CapacityLimiter(3)
    peak = Peak()
    first = WorkQueue[int](maxsize=10, concurrency_limit=limiter)
    second = WorkQueue[int](maxsize=10, concurrency_limit=limiter)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.batch_process, range(100), peak.call, 8)
            tg.start_soon(second.batch_process, range(100), peak.call, 8)
    assert peak.most == 3
    assert first.metrics["processed"] == second.metrics["processed"] == 100
    assert limiter.borrowed_tokens == 0  # every token given back
    assert_books(first)
    assert_books(second)


async def test_code_outside_the_queue_holding_tokens_leaves_the_rest() -> None:
    limiter = CapacityLimiter(4)
    peak = Peak()
    outside = anyio.Event()
    seen: list[int] = []

    async def hold_one(task_status: anyio.abc.TaskStatus[None]) -> None:
        async with limiter:  # code outside the queue, borrowing for its task
            task_status.started()
            await outside.wait()

    async def call(item: int) -> None:
        seen.append(limiter.borrowed_tokens)
        await peak.call(item)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await tg.start(hold_one)
            async with BoundedQueue[int](maxsize=20, concurrency_limit=limiter) as q:
                await q.start_workers(call, 8)
                for n in range(40):
                    await q.put(n)
                await q.join()
            outside.set()
    assert peak.most == 3  # 4 tokens, one held outside
    assert max(seen) <= 4
    assert limiter.borrowed_tokens == 0


async def test_the_default_worker_count_is_the_limiters_total() -> None:
    queue = WorkQueue[int](concurrency_limit=CapacityLimiter(5))
    assert queue.concurrency_limit == 5
    async with queue:
        await queue.process(Peak().call)
        assert queue.worker_count == 5
    assert queue.statistics().concurrency_limit == 5


@pytest.mark.usefixtures("quiet_worker_errors")
async def test_tokens_come_back_on_failure_retry_and_timeout() -> None:
    limiter = CapacityLimiter(2)
    calls: dict[int, int] = {}

    async def flaky(item: int) -> None:
        calls[item] = calls.get(item, 0) + 1
        assert limiter.borrowed_tokens <= 2
        if item % 3 == 0 and calls[item] == 1:
            raise KeyError(item)  # retried
        if item % 3 == 1:
            await anyio.sleep_forever()  # timed out, for good
        await anyio.lowlevel.checkpoint()

    queue = WorkQueue[int](
        maxsize=5,
        concurrency_limit=limiter,
        retry=RetryPolicy(
            attempts=2, backoff=0.001, jitter=False, retry_timeouts=False
        ),
        item_timeout=0.01,
    )
    with anyio.fail_after(GUARD):
        await queue.batch_process(range(12), flaky)
    assert queue.metrics["processed"] == 12
    assert queue.metrics["errors"] == 4  # the timeouts
    assert limiter.borrowed_tokens == 0
    assert_books(queue)


async def test_a_stop_cancels_calls_and_waiters_and_returns_every_token() -> None:
    limiter = CapacityLimiter(2)
    started = 0
    two_running = anyio.Event()

    async def hang(item: int) -> None:
        nonlocal started
        started += 1
        if started == 2:
            two_running.set()
        await anyio.sleep_forever()

    queue = BoundedQueue[int](maxsize=10, concurrency_limit=limiter)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(hang, 5)
            for n in range(6):
                await queue.put(n)
            await two_running.wait()
            await queue.stop(timeout=0)
    assert started == 2  # the other workers never got a token
    assert limiter.borrowed_tokens == 0
    assert sorted(queue.unprocessed) == list(range(6))
    assert_books(queue)


async def test_cancelled_while_waiting_for_a_token_loses_no_item() -> None:
    limiter = CapacityLimiter(1)
    release = anyio.Event()
    done: list[int] = []

    async def call(item: int) -> None:
        if item == 0:
            await release.wait()
        done.append(item)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as outer:
            queue = BoundedQueue[int](maxsize=10, concurrency_limit=limiter)
            await queue.start()
            async with anyio.create_task_group() as crew:
                await queue.start_workers(call, 3, task_group=crew)
                for n in range(3):
                    await queue.put(n)
                await anyio.wait_all_tasks_blocked()
                crew.cancel_scope.cancel()  # item 0 running; others waiting
            outer.cancel_scope.cancel()
    await queue.stop()
    assert done == []
    assert limiter.borrowed_tokens == 0
    assert sorted(queue.unprocessed) == [0, 1, 2]
    assert_books(queue)


async def test_setting_an_int_limit_over_a_shared_limiter_is_refused() -> None:
    queue = BoundedQueue[int](concurrency_limit=CapacityLimiter(2))
    with pytest.raises(ValueError, match=r"CapacityLimiter.*total_tokens"):
        queue.concurrency_limit = 4


def test_a_limiter_with_no_limit_means_no_limit() -> None:
    queue = BoundedQueue[int](concurrency_limit=CapacityLimiter(float("inf")))
    assert queue.concurrency_limit is None


def test_bad_concurrency_limits_name_the_argument() -> None:
    with pytest.raises(TypeError, match=r"concurrency_limit.*CapacityLimiter"):
        BoundedQueue[int](concurrency_limit="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency_limit"):
        BoundedQueue[int](concurrency_limit=0)


@pytest.mark.usefixtures("quiet_worker_errors")
@pytest.mark.parametrize("seed", range(20))
async def test_a_storm_of_queues_stopped_from_several_tasks_returns_every_token(
    seed: int,
) -> None:
    """Three queues share a limiter; their workers fail and retry at random,
    producers put with and without timeouts, and each queue is stopped by up to
    three tasks at once, with or without a timeout: the limit always held,
    every token back, and the books balanced."""
    rng = random.Random(seed)
    limiter = CapacityLimiter(rng.randint(1, 4))
    peak = Peak()

    async def call(item: int) -> None:
        await peak.call(item)
        if rng.random() < 0.2:
            raise KeyError(item)

    queues = [
        BoundedQueue[int](maxsize=rng.randint(1, 5), concurrency_limit=limiter)
        for _ in range(3)
    ]

    async def produce(queue: BoundedQueue[int]) -> None:
        for item in range(30):
            try:
                await queue.put(item, timeout=0 if rng.random() < 0.3 else None)
            except QueueStateError:
                return

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for queue in queues:
                await queue.start()
                retry = RetryPolicy(attempts=2, backoff=0.0001)
                await queue.start_workers(
                    call,
                    rng.randint(1, 6),
                    task_group=tg,
                    retry=retry if rng.random() < 0.5 else None,
                )
                tg.start_soon(produce, queue)
            for _ in range(rng.randint(0, 30)):
                await anyio.lowlevel.checkpoint()
            async with anyio.create_task_group() as stoppers:
                for queue in queues:
                    for _ in range(rng.randint(1, 3)):
                        stoppers.start_soon(queue.stop, rng.choice([0, None, 0.001]))
    assert peak.most <= limiter.total_tokens
    assert limiter.borrowed_tokens == 0
    for queue in queues:
        assert_books(queue)
