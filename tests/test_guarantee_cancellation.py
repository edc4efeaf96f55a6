"""Cancellation: atomic put and get, unprocessed items, stray CancelledErrors.

put and get are atomic; an item cancelled while being handled is unprocessed; a
stray CancelledError is the item's failure; KeyboardInterrupt, SystemExit and
other BaseExceptions propagate with the books balanced; a cancelled batch lists
every item it read (docs/guarantees.rst, "Cancellation").
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import anyio
import pytest
from anyio.abc import TaskStatus
from fake_clock import all_blocked
from support import (
    GUARD,
    Recorder,
    assert_books,
    assert_settled,
    asyncio_only,
    ignore,
    run_on,
    stray_cancelled_error,
)

from sluicegate import BoundedQueue, QueueStatus, StrayCancellationError, WorkQueue

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

# -- put and get are atomic ------------------------------------------------------------


@pytest.mark.parametrize("order", ["cancel-then-wake", "wake-then-cancel"])
async def test_cancelled_blocked_put_is_atomic(order: str) -> None:
    """A blocked put cancelled as room appears is accepted and returns, or neither."""
    queue: BoundedQueue[str] = BoundedQueue(maxsize=1)
    await queue.start()
    await queue.put("a")
    returned: list[bool] = []

    async def producer(*, task_status: TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            returned.append(await queue.put("b", timeout=None))

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            scope = await tg.start(producer)
            await anyio.wait_all_tasks_blocked()
            # Free the slot (waking the producer) and cancel it in the same round.
            if order == "cancel-then-wake":
                scope.cancel()
            assert await queue.get() == "a"
            if order == "wake-then-cancel":
                scope.cancel()
    if order == "cancel-then-wake":
        assert returned == []
    accepted = queue.metrics["enqueued"] - 1
    assert accepted == len(returned) == queue.size
    assert returned in ([], [True])
    await queue.stop()
    assert queue.unprocessed == ["b"] * accepted


async def test_cancelled_woken_producer_hands_the_slot_on() -> None:
    queue: BoundedQueue[str] = BoundedQueue(maxsize=1)
    await queue.start()
    await queue.put("a")
    accepted: list[str] = []

    async def producer(
        item: str, *, task_status: TaskStatus[anyio.CancelScope]
    ) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            if await queue.put(item, timeout=None):
                accepted.append(item)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            first = await tg.start(producer, "b")
            await anyio.wait_all_tasks_blocked()
            await tg.start(producer, "c")
            await anyio.wait_all_tasks_blocked()
            first.cancel()
            await queue.get()  # wakes "b", which waited longest, but it is leaving
    assert accepted == ["c"]
    assert await queue.get() == "c"
    assert queue.metrics["enqueued"] == 2
    await queue.stop()


@pytest.mark.parametrize("order", ["cancel-then-wake", "wake-then-cancel"])
async def test_cancelled_blocked_get_is_atomic(order: str) -> None:
    """A blocked get cancelled as an item arrives returns it, or leaves it queued."""
    queue: BoundedQueue[str] = BoundedQueue()
    await queue.start()
    got: list[str] = []

    async def consumer(*, task_status: TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            got.append(await queue.get())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            scope = await tg.start(consumer)
            await anyio.wait_all_tasks_blocked()
            if order == "cancel-then-wake":
                scope.cancel()
            await queue.put("x")
            if order == "wake-then-cancel":
                scope.cancel()
    if order == "cancel-then-wake":
        assert got == []
    assert len(got) + queue.size == 1
    assert queue.in_flight == len(got)
    if not got:
        assert await queue.get() == "x"
    assert_books(queue)
    await queue.stop()


async def test_cancelled_woken_get_hands_the_item_on() -> None:
    queue: BoundedQueue[str] = BoundedQueue()
    await queue.start()
    got: list[tuple[str, str]] = []

    async def consumer(
        name: str, *, task_status: TaskStatus[anyio.CancelScope]
    ) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            got.append((name, await queue.get()))

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await tg.start(consumer, "first")
            await anyio.wait_all_tasks_blocked()
            last = await tg.start(consumer, "last")
            await anyio.wait_all_tasks_blocked()
            last.cancel()
            await queue.put("x")  # wakes the most recently idle consumer, leaving
    assert got == [("first", "x")]
    assert_books(queue)
    await queue.stop()


async def test_enclosing_group_cancelled_while_producers_are_blocked() -> None:
    queue: BoundedQueue[int] = BoundedQueue(maxsize=2)
    returned: list[int] = []

    async def producer(item: int) -> None:
        if await queue.put(item, timeout=None):
            returned.append(item)

    async def work(item: int) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as outer:
            await queue.start()
            await queue.start_workers(work, 1, task_group=outer)
            for i in range(6):
                outer.start_soon(producer, i)
            await anyio.wait_all_tasks_blocked()
            outer.cancel_scope.cancel()
        await queue.stop()
        await queue.join()
    # One item in the worker's hands and two in the buffer; three puts cancelled.
    assert queue.metrics["enqueued"] == len(returned) == 3
    assert sorted(queue.unprocessed) == sorted(returned)
    assert_settled(queue, accepted=3)


# -- an item cancelled while being handled is unprocessed ------------------------------


@pytest.mark.plan("R2-1")
async def test_a_real_cancellation_still_leaves_the_item_unprocessed() -> None:
    started = anyio.Event()

    async def work(item: int) -> None:
        started.set()
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 1)
            await queue.put(1)
            await started.wait()
            await queue.stop(timeout=0)
    assert queue.unprocessed == [1]
    assert queue.metrics["errors"] == 0


@pytest.mark.plan("R2-11")
async def test_error_handler_cancelled_leaves_the_item_unprocessed() -> None:
    in_handler = anyio.Event()

    async def work(item: int) -> None:
        raise ValueError(item)

    async def on_error(exc: Exception, item: int) -> None:
        in_handler.set()
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 1, on_error)
            await queue.put(1)
            await in_handler.wait()
            await queue.stop(timeout=0)
    assert queue.unprocessed == [1]
    assert (queue.metrics["processed"], queue.metrics["errors"]) == (0, 0)


# -- a stray cancellation is a failure (asyncio) ---------------------------------------


@pytest.mark.plan("R2-1")
@asyncio_only
async def test_stray_cancelled_error_fails_the_item_and_the_block_goes_on() -> None:
    failures: list[tuple[Exception, int]] = []

    async def work(item: int) -> None:
        if item == 3:
            await stray_cancelled_error()
        await anyio.lowlevel.checkpoint()

    async def on_error(exc: Exception, item: int) -> None:
        failures.append((exc, item))

    queue: BoundedQueue[int] = BoundedQueue(maxsize=2, timeout=None)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 2, on_error)
            for i in range(12):
                await queue.put(i)
            body_finished = True
    assert body_finished
    m = queue.metrics
    assert (m["enqueued"], m["processed"], m["errors"]) == (12, 12, 1)
    [(exc, item)] = failures
    assert item == 3
    assert isinstance(exc, StrayCancellationError)
    assert isinstance(exc.__cause__, asyncio.CancelledError)


@pytest.mark.plan("R2-1")
@asyncio_only
async def test_stray_cancelled_error_does_not_end_a_batch() -> None:
    async def work(item: int) -> None:
        if item % 5 == 0:
            await stray_cancelled_error()

    items = Recorder(20)
    queue: WorkQueue[int] = WorkQueue(maxsize=2)
    with anyio.fail_after(GUARD):
        await queue.batch_process(items, work, 2, error_handler=ignore)
    assert items.drawn == list(range(20))
    assert (queue.metrics["processed"], queue.metrics["errors"]) == (20, 4)


# -- KeyboardInterrupt, SystemExit and other BaseExceptions propagate ------------------


class Abort(BaseException):
    """A BaseException that is not an Exception (asyncio gives KeyboardInterrupt
    and SystemExit a path of their own, out of the event loop)."""


async def test_base_exception_from_worker_propagates_and_stops() -> None:
    async def work(item: int) -> None:
        if item == 2:
            raise Abort
        await anyio.lowlevel.checkpoint()

    queue: BoundedQueue[int] = BoundedQueue(timeout=None)
    with anyio.fail_after(GUARD), pytest.raises(Abort):
        async with queue:
            await queue.start_workers(work, 1)
            for i in range(5):
                await queue.put(i)
            await anyio.sleep_forever()
    assert queue.status is QueueStatus.STOPPED
    assert 2 in queue.unprocessed
    assert queue.metrics["processed"] + len(queue.unprocessed) == 5
    assert_books(queue)


async def test_base_exception_group_from_a_worker_propagates() -> None:
    async def work(item: int) -> None:
        if item == 3:
            raise BaseExceptionGroup("mixed", [Abort(), ValueError()])

    queue: BoundedQueue[int] = BoundedQueue(timeout=None)
    with anyio.fail_after(GUARD), pytest.raises(BaseExceptionGroup) as info:
        async with queue:
            await queue.start_workers(work, 2)
            for i in range(10):
                await queue.put(i)
            await anyio.sleep_forever()
    assert info.group_contains(Abort)
    assert 3 in queue.unprocessed
    assert_settled(queue, accepted=10)


@pytest.mark.parametrize("backend", ["asyncio", "asyncio+uvloop", "trio"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_propagate_with_honest_books(
    backend: str, exc_type: type[BaseException]
) -> None:
    """asyncio lets these two out of the event loop itself, so run it here."""
    queue: BoundedQueue[int] = BoundedQueue(maxsize=4, timeout=None)
    handled: list[int] = []

    async def work(item: int) -> None:
        if item == 5:
            raise exc_type
        await anyio.lowlevel.checkpoint()
        handled.append(item)

    async def main() -> None:
        async with queue:
            await queue.start_workers(work, 2)
            for i in range(20):
                await queue.put(i)

    with pytest.raises(exc_type):
        run_on(backend, main)
    assert_settled(queue)
    assert 5 in queue.unprocessed
    assert queue.metrics["processed"] == len(handled)
    assert set(handled).isdisjoint(queue.unprocessed)


# -- a cancelled batch lists the items it read -----------------------------------------


async def test_batch_process_cancelled_from_outside() -> None:
    handled: list[int] = []
    closed = False

    async def numbers() -> AsyncIterator[int]:
        nonlocal closed
        try:
            for i in range(1_000):
                yield i
        finally:
            closed = True

    ten_handled = anyio.Event()

    async def work(item: int) -> None:
        await anyio.sleep(0.001)
        handled.append(item)
        if len(handled) == 10:
            ten_handled.set()

    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.batch_process, numbers(), work, 3)
            await ten_handled.wait()
            tg.cancel_scope.cancel()
    assert closed, "the async generator must be closed"
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0
    m = queue.metrics
    assert m["processed"] == len(handled)
    assert m["in_flight"] == 0
    assert m["enqueued"] == m["processed"] + len(queue.unprocessed)
    assert set(handled).isdisjoint(queue.unprocessed)
    assert sorted(handled + queue.unprocessed) == list(range(m["enqueued"]))


async def test_batch_process_cancelled_inside_async_with() -> None:
    started = anyio.Event()

    async def work(item: int) -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(GUARD):
        async with WorkQueue[int](maxsize=4) as queue:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(queue.batch_process, range(100), work, 2)
                    await started.wait()
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
            assert queue.worker_count == 0
            assert queue.metrics["processed"] == 0
    m = queue.metrics
    assert m["enqueued"] == len(queue.unprocessed)
    assert sorted(queue.unprocessed) == list(range(m["enqueued"]))


async def test_work_queue_batch_cancelled_while_producer_blocked() -> None:
    async def work(item: int) -> None:
        await anyio.sleep_forever()

    queue: WorkQueue[int] = WorkQueue(maxsize=3)
    with anyio.fail_after(GUARD):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(queue.batch_process, range(100), work, 2)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        await queue.join()
    # 3 buffered, 2 in flight, and the one the feeder had drawn: none is lost.
    assert queue.metrics["enqueued"] == 6
    assert sorted(queue.unprocessed) == list(range(6))
    assert_settled(queue.queue, accepted=6)


@pytest.mark.plan("R2-4")
@pytest.mark.parametrize("steps", range(6))
async def test_batch_cancelled_while_putting_lists_every_drawn_item(
    steps: int,
) -> None:
    gates: list[anyio.Event] = []

    async def slow(item: int) -> None:
        gate = anyio.Event()
        gates.append(gate)
        await gate.wait()

    items = Recorder(10)
    queue: WorkQueue[int] = WorkQueue(maxsize=1)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.batch_process, items, slow, 1)
            for _ in range(steps):
                await all_blocked()  # the feeder waits to put, the worker on a gate
                gates[-1].set()
            await all_blocked()
            tg.cancel_scope.cancel()
    processed = queue.metrics["processed"]
    assert sorted(items.drawn[:processed] + queue.unprocessed) == items.drawn
    assert queue.metrics["enqueued"] == len(items.drawn)
    assert_books(queue.queue)
