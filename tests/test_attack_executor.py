"""Attacks on the Executor: every event ends COMPLETED, FAILED or CANCELLED.

Also when its calls are cancelled at every step or a worker stops it. The
attacks on the queue, the waiter lines and the rate limiter are in
test_cancel_at_every_step.py, test_storms.py, test_waiters.py and the
test_guarantee_*.py files.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence

import anyio
import pytest
from fake_clock import FakeClock, all_blocked
from support import (
    GUARD,
    cancel_at,
    check_limiter_free,
    claimed_by_an_executor,
    clock_step,
    in_virtual_time,
    run_cancelled,
    sweep,
)

from sluicegate import (
    Event,
    ExecutionStatus,
    Executor,
    QueueConfig,
    QueueStateError,
    QueueStatus,
    RateLimiter,
)

# The attacks make workers fail on purpose: keep the log quiet meanwhile.
pytestmark = pytest.mark.usefixtures("quiet_worker_errors")

# -- the executor --------------------------------------------------------------


class Scripted(Event):
    """An event that awaits the action it was made with."""

    def __init__(self, action: Callable[[], Awaitable[object]]) -> None:
        super().__init__()
        self.action = action

    async def invoke(self) -> object:
        return await self.action()


def step_event(n: int) -> Scripted:
    """Takes n % 3 checkpoints; fails for every 5th n."""

    async def action() -> int:
        for _ in range(n % 3):
            await anyio.lowlevel.checkpoint()
        if n % 5 == 4:
            raise KeyError(n)
        return n

    return Scripted(action)


def gated_event(gate: anyio.Event) -> Scripted:
    return Scripted(gate.wait)


def check_events_accounted(
    ex: Executor[Scripted], events: Sequence[Scripted], *, stopped: bool
) -> None:
    """Each event ended is in the one list for how it ended; on a stopped
    executor, every event has ended."""
    lists = {
        ExecutionStatus.COMPLETED: ex.completed_events,
        ExecutionStatus.FAILED: ex.failed_events,
        ExecutionStatus.CANCELLED: ex.cancelled_events,
    }
    listed = [id(event) for events in lists.values() for event in events]
    assert len(listed) == len(set(listed)), "an event is in two lists"
    for event in events:
        status = event.execution.status
        if status in lists:
            assert event in lists[status]
        else:
            assert not stopped, (event, status, ex.pending_events)
    if stopped:
        assert ex.is_all_processed
        assert ex.status is QueueStatus.STOPPED


def given(events: Sequence[Scripted]) -> list[Scripted]:
    """The events an executor accepted (a cancelled put accepts nothing)."""
    return [event for event in events if claimed_by_an_executor(event)]


REFRESH = 1e-3
#: At most two events start per millisecond, two at a time.
CONFIG = QueueConfig(
    queue_capacity=2, concurrency_limit=2, capacity_refresh_time=REFRESH
)
ONE_AT_A_TIME = QueueConfig(
    queue_capacity=1, concurrency_limit=1, capacity_refresh_time=1e-6
)


async def put_events(ex: Executor[Scripted], events: list[Scripted]) -> None:
    for event in events:
        await ex.put(event, timeout=None)


async def forward_then_stop(ex: Executor[Scripted], timeout: float | None) -> None:
    await ex.forward()
    await ex.stop(timeout=timeout)


EXECUTOR_CALLS: dict[
    str, Callable[[Executor[Scripted], list[Scripted]], Awaitable[None]]
] = {
    "put": put_events,
    "forward": lambda ex, _: ex.forward(),
    "join": lambda ex, _: ex.join(),
    "forward+stop": lambda ex, _: forward_then_stop(ex, None),
    "forward+stop(timeout=0)": lambda ex, _: forward_then_stop(ex, 0),
}


@pytest.mark.parametrize("call", list(EXECUTOR_CALLS))
async def test_executor_call_cancelled_at_every_step_accounts_every_event(
    call: str,
) -> None:
    async def attack(k: int) -> bool:
        clock = FakeClock()
        ex = Executor(Scripted, CONFIG, clock=clock)
        events = [step_event(i) for i in range(10)]
        if call != "put":
            for event in events:
                ex.append(event)
        async with anyio.create_task_group() as tg:
            await ex.start(task_group=tg)
            completed = await run_cancelled(
                k,
                lambda: EXECUTOR_CALLS[call](ex, events),
                clock_step(clock, REFRESH / 4),
            )
            check_events_accounted(ex, given(events), stopped=False)
            # Busy workers may wait for the start rate: let time run on.
            await in_virtual_time(clock, ex.stop)
        check_events_accounted(ex, given(events), stopped=True)
        return completed

    await sweep(attack)


async def test_executor_batch_cancelled_at_every_step_accounts_every_event() -> None:
    async def attack(k: int) -> bool:
        clock = FakeClock()
        ex = Executor(Scripted, CONFIG, clock=clock)
        drawn: list[Scripted] = []

        def events() -> Iterator[Scripted]:
            for i in range(10):
                event = step_event(i)
                drawn.append(event)
                yield event

        completed = await run_cancelled(
            k, lambda: ex.batch_process(events()), clock_step(clock, REFRESH / 4)
        )
        check_events_accounted(ex, drawn, stopped=True)
        return completed

    await sweep(attack)


async def forward_then(
    ex: Executor[Scripted],
    events: list[Scripted],
    then: Callable[[], Awaitable[object]],
) -> list[QueueStateError]:
    """Start ``ex`` and forward ``events`` in the background until everything
    waits (one event running, one buffered, one being put), then await
    ``then()``. Return the QueueStateError that forward ended with."""
    errors: list[QueueStateError] = []

    async def forward() -> None:
        try:
            await ex.forward()
        except QueueStateError as exc:
            errors.append(exc)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await ex.start(task_group=tg)
            for event in events:
                ex.append(event)
            tg.start_soon(forward)
            await all_blocked()
            await then()
    return errors


async def test_executor_stop_cancels_the_event_forward_was_putting() -> None:
    gate = anyio.Event()
    ex = Executor(Scripted, ONE_AT_A_TIME)
    events = [gated_event(gate) for _ in range(3)]
    errors = await forward_then(ex, events, lambda: ex.stop(timeout=0))
    assert len(errors) == 1
    statuses = [event.execution.status for event in events]
    assert statuses == [ExecutionStatus.CANCELLED] * 3, (statuses, ex.pending_events)
    check_events_accounted(ex, events, stopped=True)


async def test_a_worker_stopping_the_executor_cancels_the_event_being_forwarded() -> (
    None
):
    """Regression: the running event stops its own executor while forward() is
    putting another: that one must end CANCELLED, not stay PENDING."""
    gate = anyio.Event()
    ex = Executor(Scripted, ONE_AT_A_TIME)

    async def stop_the_executor() -> str:
        await gate.wait()
        await ex.stop()
        return "stopped"

    async def open_gate() -> None:
        gate.set()

    first = Scripted(stop_the_executor)
    rest = [gated_event(anyio.Event()), gated_event(anyio.Event())]
    errors = await forward_then(ex, [first, *rest], open_gate)
    assert len(errors) == 1
    assert first.execution.status is ExecutionStatus.COMPLETED
    statuses = [event.execution.status for event in rest]
    assert statuses == [ExecutionStatus.CANCELLED] * 2, (statuses, ex.pending_events)
    check_events_accounted(ex, [first, *rest], stopped=True)


async def test_executors_sharing_a_rate_limiter_cancelled_together_account_all() -> (
    None
):
    clock = FakeClock()
    limiter = RateLimiter(5, 0.01, clock=clock)
    executors = [
        Executor(Scripted, CONFIG, rate_limiter=limiter, clock=clock) for _ in range(3)
    ]
    events = [[step_event(i) for i in range(20)] for _ in executors]

    async def run_batches() -> None:
        async with anyio.create_task_group() as tg:
            for ex, batch in zip(executors, events, strict=True):
                tg.start_soon(ex.batch_process, batch)
            # some events run, most wait their turn
            await cancel_at(clock, 0.02, tg.cancel_scope)

    with anyio.fail_after(GUARD):
        await in_virtual_time(clock, run_batches)
    ran = sum(len(ex.completed_events) + len(ex.failed_events) for ex in executors)
    assert 0 < ran < sum(map(len, events))  # cancelled part-way
    for ex, batch in zip(executors, events, strict=True):
        check_events_accounted(ex, given(batch), stopped=True)
    check_limiter_free(limiter)
