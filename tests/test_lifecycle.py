"""BoundedQueue's life: construction, its states, starting again, join, repr.

What stop does to the items and the tasks is in test_guarantee_stop.py.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from support import GUARD, assert_books, noop, run_on

from sluicegate import (
    BoundedQueue,
    QueueError,
    QueueStateError,
    QueueStatus,
    RateLimiter,
    WorkQueue,
)

# -- construction and properties -------------------------------------------------------


@pytest.mark.plan("UT-1")
def test_defaults() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    assert queue.maxsize == 100
    assert queue.timeout is None  # put waits for room unless told otherwise
    assert queue.status is QueueStatus.IDLE
    assert queue.size == 0
    assert queue.is_empty
    assert not queue.is_full
    assert queue.worker_count == 0
    assert queue.unprocessed == []
    assert queue.concurrency_limit is None


def test_custom_values() -> None:
    queue: BoundedQueue[int] = BoundedQueue(5, None, concurrency_limit=2)
    assert (queue.maxsize, queue.timeout, queue.concurrency_limit) == (5, None, 2)


@pytest.mark.plan("UT-2")
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"maxsize": 0}, ValueError, "maxsize must be at least 1, got 0"),
        ({"maxsize": -3}, ValueError, "maxsize must be at least 1, got -3"),
        ({"maxsize": 2.0}, TypeError, "maxsize must be an int, got 2.0"),
        ({"maxsize": True}, TypeError, "maxsize must be an int, got True"),
        ({"maxsize": "10"}, TypeError, "maxsize must be an int"),
        ({"maxsize": None}, TypeError, "maxsize must be an int, got None"),
        ({"timeout": -0.5}, ValueError, "timeout must be >= 0 seconds, got -0.5"),
        ({"timeout": math.nan}, ValueError, "timeout must be >= 0 seconds, got nan"),
        ({"timeout": "1"}, TypeError, "timeout must be a number of seconds or None"),
        ({"timeout": True}, TypeError, "timeout must be a number of seconds"),
        ({"concurrency_limit": 0}, ValueError, "concurrency_limit must be at least 1"),
        ({"concurrency_limit": 1.5}, TypeError, "concurrency_limit must be an int"),
        ({"logger": "log"}, TypeError, "logger must be a logging.Logger"),
    ],
)
def test_constructor_validates(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        BoundedQueue(**kwargs)


@pytest.mark.plan("UT-3")
def test_status_and_metrics_start_at_zero() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    assert queue.status is QueueStatus.IDLE
    metrics = queue.metrics
    for key in ("enqueued", "processed", "errors", "backpressure_events"):
        assert metrics[key] == 0
    metrics["enqueued"] = 99
    assert queue.metrics["enqueued"] == 0, "metrics must be a fresh dict per read"


def test_status_is_a_str_enum() -> None:
    assert [s.name for s in QueueStatus] == [
        "IDLE",
        "PROCESSING",
        "STOPPING",
        "STOPPED",
    ]
    assert isinstance(QueueStatus.IDLE, str)


def test_state_error_is_a_queue_error_and_runtime_error() -> None:
    assert issubclass(QueueStateError, QueueError)
    assert issubclass(QueueStateError, RuntimeError)


async def test_repr_shows_state_size_workers_and_limit() -> None:
    gate = anyio.Event()

    async def work(item: int) -> None:
        await gate.wait()

    queue: BoundedQueue[int] = BoundedQueue(8, concurrency_limit=2)
    assert repr(queue) == (
        "<BoundedQueue idle, size=0/8, workers=0, in_flight=0, delayed=0, "
        "concurrency_limit=2>"
    )
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 3)
            for i in range(5):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()
            assert repr(queue) == (
                "<BoundedQueue processing, size=3/8, workers=3, in_flight=2, "
                "delayed=0, concurrency_limit=2>"
            )
            gate.set()
    assert repr(queue).startswith("<BoundedQueue stopped, size=0/8, workers=0,")


# -- start and stop: the states, and what needs PROCESSING -----------------------------


@pytest.mark.plan("UT-9")
async def test_start_moves_to_processing_and_is_idempotent() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    assert queue.status is QueueStatus.PROCESSING
    await queue.put(1)
    await queue.start()
    assert queue.status is QueueStatus.PROCESSING
    assert queue.size == 1
    await queue.stop()


@pytest.mark.plan("UT-10")
async def test_stop_moves_to_stopped() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.stop()
    assert queue.status is QueueStatus.STOPPED
    await queue.stop()  # idempotent
    assert queue.status is QueueStatus.STOPPED


@pytest.mark.plan("UT-11")
@pytest.mark.parametrize("state", ["idle", "stopped"])
async def test_operations_need_processing(state: str) -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    if state == "stopped":
        await queue.start()
        await queue.stop()
    with pytest.raises(
        QueueStateError, match=f"cannot put\\(\\): the queue is {state}"
    ):
        await queue.put(1)
    with pytest.raises(RuntimeError, match=rf"cannot get\(\): the queue is {state}"):
        await queue.get()
    with pytest.raises(QueueStateError, match="start_workers"):
        await queue.start_workers(noop, 1)
    fix = "queue.start()"
    with pytest.raises(QueueStateError) as info:
        await queue.put(1)
    assert fix in str(info.value)
    assert queue.metrics["enqueued"] == 0


async def test_async_with_twice_at_once_is_refused() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    async with queue:
        with pytest.raises(QueueStateError, match="already inside"):
            await queue.__aenter__()


# -- started again ---------------------------------------------------------------------


async def test_stopped_queue_can_start_again_and_keeps_its_books() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    await queue.stop()
    await queue.start()
    await queue.put(2)
    assert await queue.get() == 2
    queue.task_done()
    await queue.stop()
    assert queue.unprocessed == [1]
    assert queue.metrics["enqueued"] == 2
    assert queue.metrics["processed"] == 1
    assert_books(queue)


@pytest.mark.parametrize(
    ("first", "second"),
    [("trio", "asyncio"), ("asyncio", "trio"), ("asyncio", "asyncio+uvloop")],
)
def test_a_stopped_queue_and_a_limiter_run_again_in_another_event_loop(
    first: str, second: str
) -> None:
    """Each run binds its own CapacityLimiter, and a RateLimiter whose clock
    jumps back (another loop's clock) counts from the new loop's time."""
    limiter = RateLimiter(1000, 1, burst=10)
    queue: WorkQueue[int] = WorkQueue(concurrency_limit=2, rate_limiter=limiter)

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()

    async def batch() -> None:
        with anyio.fail_after(GUARD):
            await queue.batch_process(range(50), work, num_workers=4)
        assert -1e-9 <= limiter.available <= limiter.burst

    run_on(first, batch)
    run_on(second, batch)
    assert queue.metrics["processed"] == 100


# -- join ------------------------------------------------------------------------------


@pytest.mark.plan("UT-8")
async def test_join_waits_until_all_items_are_processed() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    await queue.put(2)
    joined = anyio.Event()

    async def joiner() -> None:
        await queue.join()
        joined.set()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(joiner)
            for _ in range(2):
                await anyio.wait_all_tasks_blocked()
                assert not joined.is_set()
                await queue.get()
                queue.task_done()
    assert joined.is_set()
    await queue.stop()


async def test_join_on_empty_queue_returns_at_once() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        await queue.join()
        await queue.start()
        await queue.join()
    await queue.stop()


async def test_join_after_stop_returns_at_once() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    await queue.stop()
    with anyio.fail_after(GUARD):
        await queue.join()
    assert queue.unprocessed == [1]


async def test_join_waiting_when_stop_comes_returns() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.join)
            await anyio.wait_all_tasks_blocked()
            await queue.stop()
