"""An Executor runs 500,000 events, with retries and RetryAfter holds, in
constant memory.

``history=0`` keeps no finished event; the start rate and a rate limiter are
held by RetryAfter, one event in ten fails once and waits out a backoff in the
delay line, some fail for good. tracemalloc traces every allocation from the
100,000th event on: what is still allocated at the 500,000th (after a
collection) must stay under a small constant, whatever the count of events.

Time is a FakeClock moved on by a task at each turn of the loop, on every
backend. One worker: with several, a line that forms in a rate limiter (a
hold) does not drain while workers keep coming back to it, and grants fall to
one per turn of the loop (see the report of this branch); that is speed, not
memory, and would make the test slow.
"""

from __future__ import annotations

import gc
import logging
import tracemalloc
from collections.abc import Iterator

import anyio
import pytest
from books import assert_books
from fake_clock import FakeClock

from sluicegate import (
    Event,
    Executor,
    QueueConfig,
    RateLimiter,
    RetryAfter,
    RetryPolicy,
)

EVENTS = 500_000
MARK = 100_000
#: What the 400,000 events after the mark may leave allocated: a leak of even
#: two bytes an event goes over. (Measured: about 60 KB, the buffer's events.)
BOUND = 512 * 1024


@pytest.fixture(autouse=True)
def quiet_failures() -> Iterator[None]:
    logger = logging.getLogger("sluicegate")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


class Call(Event):
    """By ``n``: one in ten fails once with KeyError (retried), one in 5,000
    raises RetryAfter once (a hold), one in 997 fails for good (ValueError)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    async def invoke(self) -> int:
        n = self.n
        if self.execution.attempts == 1:
            if n % 5000 == 7:
                raise RetryAfter(0.01)
            if n % 10 == 3:
                raise KeyError(n)
        if n % 997 == 5:
            raise ValueError(n)
        return n


async def tick(clock: FakeClock) -> None:
    while True:
        clock.advance(0.001)
        await anyio.lowlevel.checkpoint()


@pytest.mark.slow
async def test_an_executor_with_retries_and_holds_runs_in_constant_memory() -> None:
    clock = FakeClock()
    ex = Executor(
        Call,
        QueueConfig(
            queue_capacity=256, concurrency_limit=1, capacity_refresh_time=1e-3
        ),
        rate_limiter=RateLimiter(1e6, 1, burst=1e4, clock=clock),
        clock=clock,
        history=0,
        retry=RetryPolicy(attempts=2, on=KeyError, backoff=0.001, jitter=False),
    )
    traced: dict[str, int] = {}
    started = not tracemalloc.is_tracing()

    def events() -> Iterator[Call]:
        for n in range(EVENTS):
            if n == MARK:
                assert_books(ex.queue)
                gc.collect()
                tracemalloc.start()
                traced["mark"] = tracemalloc.get_traced_memory()[0]
            yield Call(n)
        assert_books(ex.queue)
        gc.collect()
        traced["end"] = tracemalloc.get_traced_memory()[0]

    try:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tick, clock)
                await ex.batch_process(events())
                tg.cancel_scope.cancel()
    finally:
        if started:
            tracemalloc.stop()
    growth = traced["end"] - traced["mark"]
    assert growth < BOUND, f"{growth:,} bytes left by {EVENTS - MARK:,} events"
    m = ex.metrics
    failed = len(range(5, EVENTS, 997))
    assert (m["completed"], m["failed"], m["cancelled"]) == (EVENTS - failed, failed, 0)
    assert m["retries"] == EVENTS // 10 + EVENTS // 5000
    assert ex.completed_events == []  # history=0
    assert_books(ex.queue)
