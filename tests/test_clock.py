"""The default clock: the event loop's, read finely enough for any rate."""

from __future__ import annotations

import time

import anyio
import pytest

import sluicegate._clock
from sluicegate import Event, Executor, QueueConfig, RateLimiter
from sluicegate._clock import AnyIOClock, loop_clock


def _spin(seconds: float) -> None:
    """Let real time pass without yielding to the event loop."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def test_the_default_clock_is_the_event_loops() -> None:
    clock = AnyIOClock()
    for _ in range(3):
        before = anyio.current_time()
        now = clock.current_time()
        bound = loop_clock()()
        # The same clock, never behind the loop's own reading of it (uvloop's
        # rounds down to the millisecond).
        assert before <= now <= bound
        assert bound - before < 0.5
        await anyio.sleep(0.001)


async def test_asyncio_loops_are_read_through_time_monotonic(
    anyio_backend_name: str,
) -> None:
    """The default loop's and uvloop's time() are time.monotonic's (uvloop's
    rounded down): the clock is bound to time.monotonic itself, which is
    cheaper than a call of loop.time() and finer than uvloop's."""
    for _ in range(50):  # whatever the order of the readings inside
        if anyio_backend_name == "trio":
            assert loop_clock() is not time.monotonic  # the MockClock's time
        else:
            assert loop_clock() is time.monotonic
        sluicegate._clock._MONOTONIC_LOOPS.clear()


async def test_time_passes_within_one_turn_of_the_loop(anyio_backend_name: str) -> None:
    clock = AnyIOClock()
    first = clock.current_time()
    start = time.monotonic()
    _spin(0.0003)
    elapsed = time.monotonic() - start
    if anyio_backend_name == "trio":
        # The tests' MockClock is virtual: it moves only when every task waits.
        assert clock.current_time() == first
    else:
        # uvloop's own time() moves in whole milliseconds; this clock must not.
        assert clock.current_time() - first >= elapsed


async def test_a_rate_limit_is_not_capped_at_one_burst_per_clock_tick(
    anyio_backend_name: str,
) -> None:
    # 1,000,000 a second allows about 100 tokens in each 0.1 ms spin: on a clock
    # that moves in whole milliseconds (uvloop's) only the burst would be granted.
    limiter = RateLimiter(1_000_000, burst=2)
    granted = 0
    for _ in range(20):
        _spin(0.0001)
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            continue
        granted += 1
    if anyio_backend_name == "trio":
        assert granted == 2  # virtual time stood still: the burst, and no more
    else:
        assert granted == 20


class Spin(Event):
    """Work that takes real time without yielding."""

    async def invoke(self) -> None:
        _spin(0.0001)


async def test_the_executor_start_rate_is_not_capped_at_one_bucket_per_tick(
    anyio_backend_name: str,
) -> None:
    # 4 starts per microsecond allow every start here, however fast they come;
    # counted on a millisecond clock it would wait 20 times for the next tick.
    config = QueueConfig(
        queue_capacity=4, concurrency_limit=1, capacity_refresh_time=1e-6
    )
    executor = Executor(Spin, config)
    waits = 0
    acquire = RateLimiter.acquire

    async def counting_acquire(self: RateLimiter, tokens: float = 1) -> None:
        nonlocal waits
        waits += 1
        await acquire(self, tokens)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RateLimiter, "acquire", counting_acquire)
        with anyio.fail_after(10):
            await executor.batch_process([Spin() for _ in range(100)])
    assert executor.metrics["completed"] == 100
    if anyio_backend_name == "trio":
        assert waits > 0  # virtual time stood still between starts
    else:
        assert waits == 0
