# mypy: disable-error-code="comparison-overlap"
"""Faults: whatever a worker, a handler or the caller throws, the books balance.

In every case the queue ends STOPPED, join() returns, no task outlives its scope,
and every item is processed or listed as unprocessed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import anyio
import pytest
from support import GUARD, assert_settled, run_on

from sluicegate import (
    BoundedQueue,
    Event,
    ExecutionStatus,
    Executor,
    QueueConfig,
    QueueStatus,
    RateLimiter,
    WorkQueue,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

FAST = QueueConfig(queue_capacity=8, capacity_refresh_time=1e-6, concurrency_limit=2)


class CustomError(Exception):
    pass


EXCEPTIONS: list[Callable[[], Exception]] = [
    lambda: ValueError("value"),
    lambda: CustomError("custom"),
    lambda: RuntimeError("runtime"),
    lambda: ExceptionGroup("group", [ValueError("a"), KeyError("b")]),
    lambda: TimeoutError("looks like a timeout but is not a cancellation"),
    lambda: anyio.BrokenResourceError("a broken stream inside the worker"),
]


@pytest.mark.parametrize("make_exc", EXCEPTIONS)
async def test_every_exception_kind_is_counted_and_survived(
    make_exc: Callable[[], Exception],
) -> None:
    seen: list[type[BaseException]] = []

    async def work(item: int) -> None:
        if item % 2:
            raise make_exc()

    async def on_error(exc: Exception, item: int) -> None:
        seen.append(type(exc))

    queue: BoundedQueue[int] = BoundedQueue(maxsize=4, timeout=None)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 2, on_error)
            for i in range(20):
                await queue.put(i)
        await queue.join()
    assert seen == [type(make_exc())] * 10
    assert queue.metrics["errors"] == 10
    assert queue.metrics["processed"] == 20
    assert_settled(queue, accepted=20)


async def test_error_handler_raising_every_time_does_not_stop_work() -> None:
    async def work(item: int) -> None:
        raise ValueError(item)

    async def on_error(exc: Exception, item: int) -> None:
        raise ExceptionGroup("handler", [RuntimeError(item)])

    queue: BoundedQueue[int] = BoundedQueue(maxsize=2, timeout=None)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 1, on_error)
            for i in range(10):
                await queue.put(i)
    assert queue.metrics["errors"] == 10
    assert_settled(queue, accepted=10)


class Abort(BaseException):
    pass


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


async def test_worker_that_never_returns_during_stop_timeout() -> None:
    async def work(item: int) -> None:
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue(maxsize=10)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 3)
            for i in range(8):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()
            await queue.stop(timeout=0.01)
            assert_settled(queue, accepted=8)
            await queue.join()
    assert sorted(queue.unprocessed) == list(range(8))
    assert queue.metrics["processed"] == 0


async def test_worker_shielding_itself_past_the_stop_timeout() -> None:
    """A worker that shields its item finishes it: it is processed, not lost."""
    release = anyio.Event()

    async def work(item: int) -> None:
        with anyio.CancelScope(shield=True):
            await release.wait()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.start_workers(work, 1)
            await queue.put(1)
            await queue.put(2)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(queue.stop, 0.01)
            await anyio.sleep(0.05)
            assert queue.status is QueueStatus.STOPPING
            release.set()
    assert queue.metrics["processed"] == 1
    assert queue.unprocessed == [2]
    assert_settled(queue, accepted=2)


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


# -- executor events that hang, fail or are cancelled -------------------------------


class Job(Event):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def invoke(self) -> str:
        if self.kind == "hang":
            await anyio.sleep_forever()
        if self.kind == "fail":
            raise ConnectionError("refused")
        await anyio.lowlevel.checkpoint()
        return "ok"


async def test_executor_events_hang_fail_and_complete() -> None:
    jobs = [Job(kind) for kind in ["ok", "fail", "hang", "ok", "fail", "hang", "ok"]]
    config = QueueConfig(
        queue_capacity=8, capacity_refresh_time=1e-6, concurrency_limit=3
    )
    executor = Executor(Job, config)
    with anyio.fail_after(GUARD):
        async with executor:
            for job in jobs:
                executor.append(job)
            await executor.forward()
            await anyio.wait_all_tasks_blocked()  # two workers hang, one idles
            assert len(executor.completed_events) + len(executor.failed_events) == 5
            await executor.stop(timeout=0.01)
            await executor.join()
    statuses = [job.execution.status for job in jobs]
    assert statuses.count(ExecutionStatus.COMPLETED) == 3
    assert statuses.count(ExecutionStatus.FAILED) == 2
    assert statuses.count(ExecutionStatus.CANCELLED) == 2
    for job in jobs:
        if job.kind == "hang":
            assert job.execution.status is ExecutionStatus.CANCELLED
    assert_settled(executor.queue.queue, accepted=7)


async def test_executor_cancelled_from_outside_mid_run() -> None:
    """Done events keep their outcome; running, buffered and pending ones are
    CANCELLED; the executor stops cleanly."""
    jobs = [Job(kind) for kind in ["ok", "fail", "hang", "hang", "ok", "ok"]]
    late = Job("ok")
    config = QueueConfig(
        queue_capacity=2, capacity_refresh_time=1e-6, concurrency_limit=2
    )
    executor = Executor(Job, config)
    with anyio.fail_after(GUARD):
        with anyio.CancelScope() as scope:
            async with executor:
                for job in jobs:
                    executor.append(job)
                await executor.forward()
                executor.append(late)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
    statuses = [job.execution.status for job in jobs]
    assert statuses == [
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,  # running
        ExecutionStatus.CANCELLED,  # running
        ExecutionStatus.CANCELLED,  # buffered
        ExecutionStatus.CANCELLED,  # buffered
    ]
    assert late.execution.status is ExecutionStatus.CANCELLED  # never forwarded
    assert len(executor.cancelled_events) == 5
    assert executor.pending_events == []
    assert_settled(executor.queue.queue, accepted=6)


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
