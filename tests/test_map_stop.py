"""A stop under an Executor's batch_process or completed(): nothing is lost.

Nothing more is drawn, the batch returns and completed() ends normally, every
event COMPLETED or CANCELLED. The same for WorkQueue's map and batch_process is
in test_guarantee_stop.py; these move beside the Executor's other tests when
they are sorted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from books import assert_books
from fake_clock import all_blocked
from support import GUARD, set_when_blocked

from sluicegate import Event, ExecutionStatus, Executor, QueueConfig

N = 100
KINDS = ["plain", "async"]


# -- the Executor -------------------------------------------------------------------


class Job(Event):
    """A concrete base, so that one executor runs both kinds of events."""

    async def invoke(self) -> None:
        pass


class Gated(Job):
    def __init__(self, gate: anyio.Event) -> None:
        super().__init__()
        self.gate = gate

    async def invoke(self) -> None:
        await self.gate.wait()


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("timeout", [None, 0])
@pytest.mark.parametrize("kind", KINDS)
async def test_executor_batch_process_stopped_by_another_task_returns(
    kind: str, timeout: float | None
) -> None:
    gate = anyio.Event()
    drawn: list[Gated] = []
    closed = False

    def plain() -> Iterator[Gated]:
        for _ in range(N):
            drawn.append(Gated(gate))
            yield drawn[-1]

    async def asynchronous() -> AsyncIterator[Gated]:
        nonlocal closed
        try:
            for event in plain():
                yield event
        finally:
            closed = True

    config = QueueConfig(
        queue_capacity=2, concurrency_limit=2, capacity_refresh_time=None
    )
    executor = Executor(Gated, config)
    returned = False

    async def batch() -> None:
        nonlocal returned
        await executor.batch_process(plain() if kind == "plain" else asynchronous())
        returned = True

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(batch)
            await all_blocked()
            drawn_at_stop = len(drawn)
            if timeout is None:
                tg.start_soon(set_when_blocked, gate)
            await executor.stop(timeout)
    assert returned
    assert len(drawn) == drawn_at_stop
    statuses = [event.execution.status for event in drawn]
    completed = statuses.count(ExecutionStatus.COMPLETED)
    assert completed == (2 if timeout is None else 0)
    assert statuses.count(ExecutionStatus.CANCELLED) == len(drawn) - completed
    if kind == "async":
        assert closed
    assert_books(executor.queue)


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("kind", KINDS)
async def test_executor_completed_stopped_under_it_ends_normally(kind: str) -> None:
    gate = anyio.Event()
    drawn: list[Gated] = []

    async def asynchronous() -> AsyncIterator[Gated]:
        for _ in range(N):
            drawn.append(Gated(gate))
            yield drawn[-1]

    def plain() -> Iterator[Gated]:
        for _ in range(N):
            drawn.append(Gated(gate))
            yield drawn[-1]

    config = QueueConfig(
        queue_capacity=2, concurrency_limit=2, capacity_refresh_time=None
    )
    executor = Executor(Gated, config)
    seen: list[Gated] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:

            async def stop_it() -> None:
                await all_blocked()
                tg.start_soon(set_when_blocked, gate)
                await executor.stop()

            tg.start_soon(stop_it)
            events = plain() if kind == "plain" else asynchronous()
            async with executor.completed(events) as finished:
                seen.extend([event async for event in finished])
    assert sorted(map(id, seen)) == sorted(map(id, drawn))  # each event once
    assert {event.execution.status for event in drawn} <= {
        ExecutionStatus.COMPLETED,
        ExecutionStatus.CANCELLED,
    }
    assert_books(executor.queue)


class Stopper(Job):
    """Stops its executor when it runs."""

    def __init__(self, executor: Executor[Any]) -> None:
        super().__init__()
        self.executor = executor

    async def invoke(self) -> None:
        await self.executor.stop()


@pytest.mark.plan("issue 18: Deliver 1")
async def test_executor_batch_process_stopped_by_an_event_returns() -> None:
    config = QueueConfig(
        queue_capacity=2, concurrency_limit=2, capacity_refresh_time=None
    )
    executor: Executor[Job] = Executor(Job, config)
    drawn: list[Job] = []

    def events() -> Iterator[Job]:
        for i in range(N):
            event: Job = Stopper(executor) if i == 5 else Gated(_open_gate())
            drawn.append(event)
            yield event

    with anyio.fail_after(GUARD):
        await executor.batch_process(events())
    assert len(drawn) < N
    statuses = {event.execution.status for event in drawn}
    assert statuses <= {ExecutionStatus.COMPLETED, ExecutionStatus.CANCELLED}
    assert drawn[5].execution.status is ExecutionStatus.COMPLETED
    assert_books(executor.queue)


def _open_gate() -> anyio.Event:
    gate = anyio.Event()
    gate.set()
    return gate
