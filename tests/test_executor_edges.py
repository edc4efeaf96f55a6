"""The Executor's edges: a stray CancelledError, and every event counted.

A stray CancelledError fails the event; a cancelled stop, a forward, a repeat
and backpressure leave every event counted. The queue's edges from the same
list are in the test_guarantee_*.py files and test_calls.py. The
stray-cancellation test runs on asyncio only: trio's ``Cancelled``
cannot be raised by user code.
"""

from __future__ import annotations

from typing import TypeVar

import anyio
import pytest
from fake_clock import all_blocked
from support import GUARD, asyncio_only, stray_cancelled_error

from sluicegate import (
    Event,
    ExecutionStatus,
    Executor,
    QueueConfig,
    QueueStatus,
    StrayCancellationError,
)

FAST = QueueConfig(queue_capacity=10, capacity_refresh_time=1e-6)

T = TypeVar("T")


# -- a stray CancelledError from an event is its failure (asyncio) -------------------


class Leaky(Event):
    def __init__(self, leak: bool) -> None:
        super().__init__()
        self.leak = leak

    async def invoke(self) -> str:
        if self.leak:
            await stray_cancelled_error()
        return "ok"


@pytest.mark.plan("R2-1")
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


# -- every event counted: a cancelled stop, forward, repeats, backpressure ----------


class Step(Event):
    def __init__(self, gate: anyio.Event | None = None) -> None:
        super().__init__()
        self.gate = gate

    async def invoke(self) -> str:
        if self.gate is not None:
            await self.gate.wait()
        return "ok"


@pytest.mark.plan("R2-7")
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


@pytest.mark.plan("R2-7")
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


@pytest.mark.plan("R2-7")
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


@pytest.mark.plan("R2-7")
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
