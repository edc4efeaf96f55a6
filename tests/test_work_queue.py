# mypy: disable-error-code="comparison-overlap"
"""WorkQueue: built from its arguments or a QueueConfig; forwarding; process; batch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast
from unittest.mock import AsyncMock, create_autospec

import anyio
import pytest
from support import GUARD, assert_books, noop, replace_inner_queue

from sluicegate import (
    BoundedQueue,
    QueueConfig,
    QueueStateError,
    QueueStatus,
    WorkQueue,
)

# -- construction, forwarding, async with ---------------------------------------------


@pytest.mark.plan("UT-16")
def test_initializes_with_given_parameters() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=50, timeout=0.5, concurrency_limit=5)
    assert isinstance(queue.queue, BoundedQueue)
    assert queue.maxsize == queue.queue.maxsize == 50
    assert queue.timeout == queue.queue.timeout == 0.5
    assert queue.concurrency_limit == queue.queue.concurrency_limit == 5
    assert queue.status is QueueStatus.IDLE
    assert (queue.size, queue.is_empty, queue.is_full) == (0, True, False)
    assert queue.worker_count == 0
    assert queue.unprocessed == []
    assert queue.metrics["enqueued"] == 0


def test_from_config() -> None:
    config = QueueConfig(queue_capacity=7, concurrency_limit=3)
    queue: WorkQueue[int] = WorkQueue.from_config(config)
    assert queue.maxsize == 7
    assert queue.concurrency_limit == 3
    with pytest.raises(TypeError, match="config must be a QueueConfig"):
        WorkQueue.from_config(cast(Any, {"queue_capacity": 7}))


def test_constructor_validates_like_bounded_queue() -> None:
    with pytest.raises(ValueError, match="maxsize must be at least 1"):
        WorkQueue(maxsize=0)
    with pytest.raises(ValueError, match="concurrency_limit must be at least 1"):
        WorkQueue(concurrency_limit=0)


@pytest.mark.plan("UT-17")
async def test_delegates_every_call_to_its_bounded_queue() -> None:
    work_queue: WorkQueue[str] = WorkQueue()
    mock = create_autospec(BoundedQueue, instance=True)
    replace_inner_queue(work_queue, mock)
    mock.put.return_value = True
    mock.get.return_value = "item"

    assert await work_queue.put("x", timeout=1.0) is True
    mock.put.assert_awaited_once_with("x", 1.0)
    assert await work_queue.get() == "item"
    mock.get.assert_awaited_once_with()
    work_queue.task_done()
    mock.task_done.assert_called_once_with()
    await work_queue.join()
    mock.join.assert_awaited_once_with()
    await work_queue.start()
    mock.start.assert_awaited_once_with()
    await work_queue.stop(timeout=2.0)
    mock.stop.assert_awaited_once_with(2.0)
    await work_queue.process(noop, 3, task_group=None)
    mock.start_workers.assert_awaited_once_with(
        noop, 3, None, task_group=None, retry=None, item_timeout=None, rate_limiter=None
    )
    for name in ("status", "metrics", "size", "is_full", "is_empty", "worker_count"):
        assert getattr(work_queue, name) is getattr(mock, name)
    assert work_queue.unprocessed is mock.unprocessed


@pytest.mark.plan("UT-19")
async def test_async_context_manager_starts_and_stops() -> None:
    queue: WorkQueue[int] = WorkQueue()
    async with queue as entered:
        assert entered is queue
        assert queue.status is QueueStatus.PROCESSING
    assert queue.status is QueueStatus.STOPPED


@pytest.mark.plan("UT-19")
async def test_async_context_manager_delegates() -> None:
    work_queue: WorkQueue[int] = WorkQueue()
    mock = create_autospec(BoundedQueue, instance=True)
    mock.__aenter__ = AsyncMock(return_value=mock)
    mock.__aexit__ = AsyncMock(return_value=None)
    replace_inner_queue(work_queue, mock)
    async with work_queue:
        mock.__aenter__.assert_awaited_once()
    mock.__aexit__.assert_awaited_once_with(None, None, None)


# -- process ------------------------------------------------------------------------


async def test_process_defaults_to_concurrency_limit_workers() -> None:
    async with WorkQueue[int](concurrency_limit=3) as queue:
        await queue.process(noop)
        assert queue.worker_count == 3
    async with WorkQueue[int]() as queue:
        await queue.process(noop)
        assert queue.worker_count == 1


async def test_process_in_callers_task_group() -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        seen.append(item)

    queue: WorkQueue[int] = WorkQueue(timeout=None)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.process(work, 2, task_group=tg)
            for i in range(10):
                await queue.put(i)
            await queue.join()
            await queue.stop()
    assert sorted(seen) == list(range(10))


# -- batch_process ---------------------------------------------------------------------


@pytest.mark.plan("UT-18")
async def test_batch_process_handles_a_list() -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(item)

    queue: WorkQueue[int] = WorkQueue(maxsize=4, concurrency_limit=3)
    with anyio.fail_after(GUARD):
        await queue.batch_process(list(range(100)), work)
    assert sorted(seen) == list(range(100))
    assert queue.metrics["processed"] == 100
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0
    assert_books(queue)


async def test_batch_process_over_an_async_generator() -> None:
    seen: list[int] = []

    async def numbers() -> AsyncIterator[int]:
        for i in range(50):
            await anyio.lowlevel.checkpoint()
            yield i

    async def work(item: int) -> None:
        seen.append(item)

    queue: WorkQueue[int] = WorkQueue(maxsize=3)
    with anyio.fail_after(GUARD):
        await queue.batch_process(numbers(), work, num_workers=4)
    assert sorted(seen) == list(range(50))


async def test_batch_process_over_an_empty_iterable() -> None:
    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        await queue.batch_process([], noop, num_workers=3)
    assert queue.metrics["enqueued"] == 0
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0


async def test_batch_process_with_worker_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[int] = []

    async def work(item: int) -> None:
        if item % 3 == 0:
            raise ValueError(item)

    async def on_error(exc: Exception, item: int) -> None:
        handled.append(item)

    queue: WorkQueue[int] = WorkQueue(maxsize=2)
    with anyio.fail_after(GUARD):
        await queue.batch_process(range(30), work, 2, on_error)
        assert sorted(handled) == list(range(0, 30, 3))
        assert queue.metrics["errors"] == 10
        assert queue.metrics["processed"] == 30
        with caplog.at_level(logging.ERROR, logger="sluicegate"):
            await queue.batch_process(range(3), work)  # no handler: logged
    assert "worker_func failed on 0" in caplog.text
    assert queue.metrics["errors"] == 11


async def test_batch_process_with_maxsize_1_and_a_tiny_put_timeout() -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        await anyio.sleep(0.0001)
        seen.append(item)

    queue: WorkQueue[int] = WorkQueue(maxsize=1, timeout=1e-9)
    with anyio.fail_after(GUARD):
        await queue.batch_process(range(40), work, num_workers=2)
    assert sorted(seen) == list(range(40))
    assert queue.metrics["backpressure_events"] == 0
    assert queue.unprocessed == []


async def test_batch_process_inside_async_with() -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        seen.append(item)

    with anyio.fail_after(GUARD):
        async with WorkQueue[int](maxsize=2) as queue:
            await queue.batch_process(range(10), work, num_workers=2)
            assert queue.status is QueueStatus.PROCESSING
            assert queue.worker_count == 0
            await queue.batch_process(range(10, 20), work)
    assert sorted(seen) == list(range(20))


async def test_several_batches_add_up() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        for _ in range(3):
            await queue.batch_process(range(10), noop, num_workers=2)
            assert queue.status is QueueStatus.STOPPED
    assert queue.metrics["enqueued"] == 30
    assert queue.metrics["processed"] == 30


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((42, noop), TypeError, "items must be an iterable or an async iterable"),
        ((None, noop), TypeError, "items must be an iterable"),
        (([1], "print"), TypeError, "worker_func must be callable"),
        (([1], noop, 0), ValueError, "num_workers must be at least 1, got 0"),
        (([1], noop, True), TypeError, "num_workers must be an int"),
        (([1], noop, 1, 7), TypeError, "error_handler must be callable"),
    ],
)
async def test_batch_process_validates(
    args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    queue: WorkQueue[int] = WorkQueue()
    with pytest.raises(error, match=match):
        await queue.batch_process(*args)
    assert queue.status is QueueStatus.IDLE


async def test_batch_process_refuses_a_queue_that_already_has_workers() -> None:
    seen: list[str] = []

    async def other(item: int) -> None:
        seen.append("other")

    async with WorkQueue[int]() as queue:
        await queue.process(other, 2)
        with pytest.raises(QueueStateError, match="already has 2"):
            await queue.batch_process(range(10), noop)
        assert queue.metrics["enqueued"] == 0


async def test_two_batches_at_once_on_one_queue_are_refused() -> None:
    release = anyio.Event()

    async def wait(item: int) -> None:
        await release.wait()

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.batch_process, range(3), wait)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(QueueStateError, match="a batch or a map"):
                await queue.batch_process(range(3), noop)
            release.set()
    assert queue.metrics["processed"] == 3


# -- forwarded to its BoundedQueue: repr, put_nowait, statistics ----------------------


async def test_work_queue_repr_is_its_queues() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=3)
    assert repr(queue) == (
        "<WorkQueue idle, size=0/3, workers=0, in_flight=0, delayed=0, "
        "concurrency_limit=None>"
    )


async def test_work_queue_put_nowait() -> None:
    done: list[int] = []

    async def work(item: int) -> None:
        done.append(item)

    queue: WorkQueue[int] = WorkQueue(maxsize=1)
    with anyio.fail_after(GUARD):
        async with queue:
            queue.put_nowait(1)
            with pytest.raises(anyio.WouldBlock):
                queue.put_nowait(2)
            await queue.process(work, 1)
    assert done == [1]
    assert queue.metrics["backpressure_events"] == 1


async def test_work_queue_statistics_are_its_queues() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=3, concurrency_limit=2)
    stats = queue.statistics()
    assert (stats.maxsize, stats.size, stats.concurrency_limit) == (3, 0, 2)
    assert stats == queue.queue.statistics()
