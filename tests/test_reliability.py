"""Reliability, round 2: the edges where "nothing lost, never hangs" used to break.

One section per promise; each test failed before its fix. They run on asyncio,
asyncio+uvloop and trio, except the native-cancellation ones, which need asyncio's
``CancelledError`` (trio's ``Cancelled`` cannot be raised by user code).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pytest
from fake_clock import FakeClock, all_blocked
from support import (
    GUARD,
    asyncio_only,
    delay_each,
    get_one,
    stray_cancelled_error,
)

from sluicegate import (
    BoundedQueue,
    Event,
    ExecutionStatus,
    Executor,
    QueueConfig,
    QueueStatus,
    RateLimiter,
    RetryPolicy,
    StrayCancellationError,
    WorkQueue,
)

FAST = QueueConfig(queue_capacity=10, capacity_refresh_time=1e-6)

T = TypeVar("T")


# -- 1. a native CancelledError from a worker function is that item's failure ------


class Leaky(Event):
    def __init__(self, leak: bool) -> None:
        super().__init__()
        self.leak = leak

    async def invoke(self) -> str:
        if self.leak:
            await stray_cancelled_error()
        return "ok"


@asyncio_only
async def test_stray_cancelled_error_fails_the_event() -> None:
    events = [Leaky(leak=i == 2) for i in range(6)]
    executor = Executor(Leaky, FAST)
    with anyio.fail_after(GUARD):
        await executor.batch_process(events)
    statuses = [event.execution.status for event in events]
    assert statuses.count(ExecutionStatus.COMPLETED) == 5
    assert events[2].execution.status is ExecutionStatus.FAILED
    assert isinstance(events[2].execution.error, StrayCancellationError)
    assert executor.failed_events == [events[2]]


# -- 7. executor status and counts -------------------------------------------------


class Step(Event):
    def __init__(self, gate: anyio.Event | None = None) -> None:
        super().__init__()
        self.gate = gate

    async def invoke(self) -> str:
        if self.gate is not None:
            await self.gate.wait()
        return "ok"


async def test_cancelled_executor_stop_marks_leftovers_cancelled() -> None:
    never = anyio.Event()
    hang = Step(never)
    rest = [Step() for _ in range(3)]
    executor = Executor(
        Step,
        QueueConfig(queue_capacity=5, concurrency_limit=1, capacity_refresh_time=1e-6),
    )
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await executor.start(task_group=tg)
            for event in [hang, *rest]:
                assert await executor.put(event)
            await all_blocked()
            with anyio.CancelScope() as scope:
                tg.start_soon(_cancel_when_blocked, scope)
                await executor.stop()
        assert executor.status is QueueStatus.STOPPED
    for event in [hang, *rest]:
        assert event.execution.status is ExecutionStatus.CANCELLED
    assert sorted(map(id, executor.cancelled_events)) == sorted(map(id, [hang, *rest]))
    assert executor.is_all_processed


async def _cancel_when_blocked(scope: anyio.CancelScope) -> None:
    await all_blocked()
    scope.cancel()


async def test_event_being_forwarded_is_still_counted() -> None:
    gate = anyio.Event()
    executor = Executor(
        Step,
        QueueConfig(queue_capacity=1, concurrency_limit=1, capacity_refresh_time=1e-6),
    )
    events = [Step(gate), Step(), Step()]
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await executor.start(task_group=tg)
            for event in events:
                executor.append(event)
            tg.start_soon(executor.forward)
            await all_blocked()  # one running, one buffered, one being put
            assert not executor.is_all_processed
            assert events[2] in executor.pending_events
            assert executor.metrics["pending"] == 1
            gate.set()
            await executor.join()
            assert executor.is_all_processed
            await executor.stop()
    assert [e.execution.status for e in events] == [ExecutionStatus.COMPLETED] * 3


async def test_the_same_event_is_refused_a_second_time() -> None:
    executor = Executor(Step, FAST)
    event = Step()
    executor.append(event)
    with pytest.raises(ValueError, match="already given to this executor"):
        executor.append(event)
    with anyio.fail_after(GUARD):
        async with executor:
            with pytest.raises(ValueError, match="invoked once"):
                await executor.put(event)
    assert executor.completed_events == [event]
    other = Executor(Step, FAST)
    with pytest.raises(ValueError, match="another executor"):
        other.append(event)
    with anyio.fail_after(GUARD):
        with pytest.raises(ValueError, match="already given"):
            await Executor(Step, FAST).batch_process([Step(), event])


async def test_an_event_refused_on_backpressure_may_be_put_again() -> None:
    gate = anyio.Event()
    executor = Executor(
        Step,
        QueueConfig(queue_capacity=1, concurrency_limit=1, capacity_refresh_time=1e-6),
    )
    first, second, third = Step(gate), Step(), Step()
    with anyio.fail_after(GUARD):
        async with executor:
            assert await executor.put(first)
            await all_blocked()
            assert await executor.put(second)
            assert not await executor.put(third, timeout=0)
            gate.set()
            assert await executor.put(third, timeout=None)
    assert len(executor.completed_events) == 3


# -- 12. any callable is a worker function ------------------------------------------


def plain_decorator(func: Callable[[int], Awaitable[None]]) -> Callable[[int], Any]:
    @functools.wraps(func)
    def wrapper(item: int) -> Any:
        return func(item)

    return wrapper


@plain_decorator
async def decorated(item: int) -> None:
    await anyio.lowlevel.checkpoint()


async def handle(item: int, factor: int) -> None:
    await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize(
    "func",
    [lambda item: handle(item, 2), decorated],
    ids=["lambda", "plain decorator"],
)
async def test_callables_returning_awaitables_are_accepted(
    func: Callable[[int], Awaitable[None]],
) -> None:
    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        await queue.batch_process(range(5), func, 2)
    assert (queue.metrics["processed"], queue.metrics["errors"]) == (5, 0)


def not_async(item: int) -> int:
    return item * 2


async def test_a_call_returning_no_awaitable_fails_the_item_clearly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception, item: int) -> None:
        errors.append(exc)

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD), caplog.at_level(logging.WARNING, "sluicegate"):
        await queue.batch_process(range(3), not_async, 1, on_error)  # type: ignore[arg-type]
    assert queue.metrics["errors"] == 3
    assert all(isinstance(exc, TypeError) for exc in errors)
    assert "worker_func not_async returned int" in str(errors[0])
    assert "not awaitable" in str(errors[0])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not_async" in warnings[0].getMessage()


async def test_a_rate_limited_call_returning_no_awaitable_fails_clearly() -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception, item: int) -> None:
        errors.append(exc)

    queue: WorkQueue[int] = WorkQueue(rate_limiter=RateLimiter(1e9))
    with anyio.fail_after(GUARD):
        await queue.batch_process(range(2), not_async, 1, on_error)  # type: ignore[arg-type]
    assert len(errors) == 2
    assert "worker_func not_async returned int" in str(errors[0])


async def test_an_error_handler_returning_no_awaitable_is_logged_clearly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work(item: int) -> None:
        raise ValueError(item)

    def sync_handler(exc: Exception, item: int) -> None:
        pass

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD), caplog.at_level(logging.ERROR, "sluicegate"):
        await queue.batch_process([1], work, 1, sync_handler)  # type: ignore[arg-type]
    assert queue.metrics["errors"] == 1
    assert "sync_handler returned NoneType" in caplog.text


# -- the delay line's life: found by the stateful machine ------------------------------


async def test_workers_without_a_policy_get_delayed_items_back() -> None:
    clock = FakeClock()
    calls: list[float] = []

    async def fails_first(item: int) -> None:
        calls.append(clock.current_time())
        if len(calls) == 1:
            raise ConnectionError

    queue: BoundedQueue[int] = BoundedQueue(maxsize=1, clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            policy = RetryPolicy(backoff=1, jitter=False)
            await queue.start_workers(fails_first, 1, task_group=tg, retry=policy)
            await queue.put(0)
            await all_blocked()
            await queue.stop_workers()
            assert queue.delayed == 1
            clock.advance(1.0)
            await queue.start_workers(fails_first, 1, task_group=tg)  # no policy
            await queue.join()
            await queue.stop()
    assert calls == [0.0, 1.0]
    assert (queue.metrics["processed"], queue.delayed) == (1, 0)


async def test_a_parked_get_receives_a_delayed_item_without_workers() -> None:
    clock = FakeClock()
    got: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1, clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, queue:
            await delay_each(queue, 3)
            tg.start_soon(get_one, queue, got)
            await all_blocked()
            clock.advance(1.0)  # the block's own task releases it to the get()
    assert got == [3]
    assert queue.metrics["processed"] == 1


async def test_a_queue_started_again_in_its_block_still_releases_retries() -> None:
    clock = FakeClock()
    got: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1, clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, queue:
            await queue.stop(timeout=0)
            await queue.start()  # again, inside the same block
            await delay_each(queue, 4)
            tg.start_soon(get_one, queue, got)
            await all_blocked()
            clock.advance(1.0)
    assert got == [4]
