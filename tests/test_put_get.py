"""put, get, task_done and their nowait forms: what each returns and waits for.

What a cancelled put or get does is in test_guarantee_cancellation.py.
"""

from __future__ import annotations

from typing import Any, cast

import anyio
import pytest
from fake_clock import all_blocked
from support import GUARD, assert_books

from sluicegate import BoundedQueue, QueueStateError, WorkQueue

# -- put: accepted, or refused on backpressure -----------------------------------------


@pytest.mark.plan("UT-4")
async def test_put_adds_items() -> None:
    queue: BoundedQueue[str] = BoundedQueue(maxsize=3)
    await queue.start()
    assert await queue.put("a") is True
    assert await queue.put("b") is True
    assert queue.size == 2
    assert not queue.is_empty
    assert queue.metrics["enqueued"] == 2
    await queue.stop()
    assert queue.unprocessed == ["a", "b"]
    assert_books(queue)


@pytest.mark.plan("UT-5")
async def test_put_on_full_queue_returns_false_after_timeout() -> None:
    queue: BoundedQueue[str] = BoundedQueue(maxsize=1, timeout=0.01)
    await queue.start()
    assert await queue.put("item1")
    assert queue.is_full
    assert await queue.put("item2") is False
    assert queue.metrics["backpressure_events"] == 1
    assert await queue.put("item3", timeout=0) is False
    assert queue.metrics["backpressure_events"] == 2
    assert queue.size == 1
    assert queue.metrics["enqueued"] == 1
    await queue.stop()
    assert queue.unprocessed == ["item1"]


async def test_put_with_no_timeout_waits_for_room() -> None:
    queue: BoundedQueue[str] = BoundedQueue(maxsize=1)
    await queue.start()
    await queue.put("a")
    results: list[bool] = []

    async def producer() -> None:
        results.append(await queue.put("b", timeout=None))

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
            assert results == []
            assert await queue.get() == "a"
        assert results == [True]
        assert await queue.get() == "b"
    assert queue.metrics["backpressure_events"] == 0
    await queue.stop()


async def test_put_waits_for_room_by_default() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=1)
    accepted: list[bool] = []
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.put(0)

            async def producer() -> None:
                accepted.append(await queue.put(1))

            tg.start_soon(producer)
            await all_blocked()
            assert accepted == []  # waiting, not refused
            await queue.get()
            queue.task_done()
            await all_blocked()
            assert accepted == [True]
            await queue.get()
            queue.task_done()
    assert queue.metrics["backpressure_events"] == 0


async def test_put_timeout_argument_is_validated() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    with pytest.raises(ValueError, match="timeout must be >= 0 seconds, got -1"):
        await queue.put(1, timeout=-1)
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        await queue.put(1, timeout=cast(Any, "soon"))
    assert queue.metrics["enqueued"] == 0
    await queue.stop()


# -- get and task_done -----------------------------------------------------------------


@pytest.mark.plan("UT-6")
async def test_get_returns_items_in_order() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    for i in range(5):
        await queue.put(i)
    assert [await queue.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert queue.in_flight == 5
    assert_books(queue)
    await queue.stop()


async def test_get_waits_for_an_item() -> None:
    queue: BoundedQueue[str] = BoundedQueue()
    await queue.start()
    got: list[str] = []

    async def consumer() -> None:
        got.append(await queue.get())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            await queue.put("x")
    assert got == ["x"]
    await queue.stop()


@pytest.mark.plan("UT-7")
async def test_task_done_counts_processed() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    await queue.put(2)
    await queue.get()
    queue.task_done()
    assert queue.metrics["processed"] == 1
    with pytest.raises(ValueError, match="more times than items taken"):
        queue.task_done()
    assert queue.metrics["processed"] == 1
    assert_books(queue)
    await queue.stop()


# -- put_nowait and get_nowait ---------------------------------------------------------


async def test_put_nowait_and_get_nowait_complete_at_once_or_raise_would_block() -> (
    None
):
    queue: BoundedQueue[int] = BoundedQueue(maxsize=2)
    with pytest.raises(QueueStateError, match="idle"):
        queue.put_nowait(0)
    with pytest.raises(QueueStateError, match="idle"):
        queue.get_nowait()
    await queue.start()
    with pytest.raises(anyio.WouldBlock):
        queue.get_nowait()
    queue.put_nowait(1)
    queue.put_nowait(2)
    with pytest.raises(anyio.WouldBlock):
        queue.put_nowait(3)  # full: refused, and counted as backpressure
    assert queue.metrics["backpressure_events"] == 1
    assert (queue.get_nowait(), queue.get_nowait()) == (1, 2)
    assert queue.in_flight == 2
    queue.task_done()
    queue.task_done()
    assert queue.metrics["processed"] == 2
    await queue.stop()
    assert queue.unprocessed == []
    with pytest.raises(QueueStateError, match="stopped"):
        queue.put_nowait(4)


async def test_put_nowait_wakes_a_parked_get() -> None:
    got: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, queue:

            async def getter() -> None:
                got.append(await queue.get())
                queue.task_done()

            tg.start_soon(getter)
            await anyio.wait_all_tasks_blocked()
            queue.put_nowait(7)
    assert got == [7]
