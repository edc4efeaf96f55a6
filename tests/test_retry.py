"""RetryPolicy and RetryAfter on their own, and the Executor's retries.

The policy's checks, its delays and which errors it retries, the Retry-After
header; then the Executor's retries, item timeouts, pushback, start rate,
history and completed(). Retries through a queue and item timeouts are in
test_calls.py; the Executor's tests here move beside its other tests when they
are sorted. Every delay runs in virtual time: a FakeClock injected into the
executor (and its rate limiter), with its autojump task, on every backend.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from fake_clock import FakeClock
from support import GUARD, NO_JITTER, virtual_time

from sluicegate import (
    Event,
    ExecutionStatus,
    Executor,
    ItemTimeoutError,
    QueueConfig,
    QueueStatus,
    RateLimiter,
    RetryAfter,
    RetryPolicy,
    parse_retry_after,
)

# -- the policy itself --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts must be at least 1, got 0"),
        ({"attempts": 2.0}, TypeError, "attempts must be an int"),
        ({"on": "ValueError"}, TypeError, "on must be an Exception subclass"),
        ({"on": (ValueError, 3)}, TypeError, "on must be an Exception subclass"),
        ({"on": KeyboardInterrupt}, TypeError, "on must be an Exception subclass"),
        ({"backoff": 0}, ValueError, "backoff must be finite and > 0"),
        ({"backoff": "1"}, TypeError, "backoff must be a number"),
        ({"multiplier": 0.5}, ValueError, "multiplier must be finite and >= 1"),
        ({"max_backoff": float("inf")}, ValueError, "max_backoff must be finite"),
        ({"backoff": 5.0, "max_backoff": 1.0}, ValueError, "max_backoff"),
        ({"timeout": -1}, ValueError, "timeout must be finite and > 0"),
        ({"jitter": 1}, TypeError, "jitter"),
        ({"retry_timeouts": 0}, TypeError, "retry_timeouts must be a bool, got 0"),
    ],
)
def test_policy_validates(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RetryPolicy(**kwargs)


def test_delays_grow_and_are_capped() -> None:
    policy = RetryPolicy(backoff=0.5, multiplier=3.0, max_backoff=4.0, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 1000)] == [0.5, 1.5, 4.0, 4.0, 4.0]
    jittered = RetryPolicy(backoff=0.5, multiplier=3.0, max_backoff=4.0)
    rng = random.Random(1)
    delays = [jittered.delay(2, rng) for _ in range(200)]
    assert all(0 <= d <= 1.5 for d in delays)
    assert max(delays) > 1.2  # spread over the whole range
    assert min(delays) < 0.3


def test_which_errors_are_retried() -> None:
    assert RetryPolicy().retries(ValueError())
    assert not RetryPolicy(on=KeyError).retries(ValueError())
    assert RetryPolicy(on=(KeyError, ValueError)).retries(ValueError())
    assert RetryPolicy(on=lambda exc: "again" in str(exc)).retries(ValueError("again"))
    assert RetryPolicy(on=KeyError).retries(RetryAfter(1))  # pushback always
    cut = ItemTimeoutError("the call took longer than item_timeout (1 s)")
    assert RetryPolicy(on=KeyError).retries(cut)  # a cut call too, by default
    assert not RetryPolicy(on=KeyError, retry_timeouts=False).retries(cut)
    assert RetryPolicy(on=TimeoutError, retry_timeouts=False).retries(cut)
    assert not RetryPolicy(on=KeyError).retries(TimeoutError())  # the user's own


def test_retry_after_header_values() -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert RetryAfter.from_header("3").seconds == 3.0
    assert RetryAfter.from_header(None, default=2.5).seconds == 2.5
    assert RetryAfter.from_header("garbage").seconds == 1.0
    with pytest.raises(ValueError, match="seconds must be finite and >= 0"):
        RetryAfter(-1)


# -- the Executor: retries, timeouts, pushback, start rate, history, completed --------


class Call(Event):
    """Fails ``fails`` times (with ``error``), then returns its number."""

    def __init__(self, number: int, fails: int = 0, error: Exception | None = None):
        super().__init__()
        self.number = number
        self.fails = fails
        self.error = error or ConnectionError("refused")
        self.calls = 0

    async def invoke(self) -> int:
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error
        await anyio.lowlevel.checkpoint()
        return self.number


NO_START_LIMIT = QueueConfig(capacity_refresh_time=None, concurrency_limit=2)


async def test_executor_retries_events_and_counts_attempts() -> None:
    events = [Call(0, fails=2), Call(1), Call(2, fails=5)]
    async with virtual_time() as clock:
        executor = Executor(Call, NO_START_LIMIT, retry=NO_JITTER, clock=clock)
        await executor.batch_process(events)
    assert [e.execution.status for e in events] == [
        ExecutionStatus.COMPLETED,
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
    ]
    assert [e.execution.attempts for e in events] == [3, 1, 3]
    assert events[0].execution.error is None
    assert isinstance(events[2].execution.error, ConnectionError)
    assert executor.metrics["retries"] == 4
    assert (len(executor.completed_events), len(executor.failed_events)) == (2, 1)


async def test_executor_item_timeout_fails_the_event() -> None:
    class Hang(Event):
        async def invoke(self) -> None:
            await anyio.sleep_forever()

    async with virtual_time() as clock:
        executor = Executor(Hang, NO_START_LIMIT, item_timeout=5, clock=clock)
        event = Hang()
        await executor.batch_process([event])
        assert clock.current_time() == 5
    assert event.execution.status is ExecutionStatus.FAILED
    assert isinstance(event.execution.error, ItemTimeoutError)
    assert isinstance(event.execution.error, TimeoutError)
    assert executor.cancelled_events == []


async def test_executor_retry_after_holds_its_limiter() -> None:
    async with virtual_time() as clock:
        limiter = RateLimiter(1_000, clock=clock)
        events = [Call(0, fails=1, error=RetryAfter(4)), Call(1)]
        executor = Executor(
            Call,
            QueueConfig(capacity_refresh_time=None),
            rate_limiter=limiter,
            retry=RetryPolicy(attempts=2),
            clock=clock,
        )
        await executor.batch_process(events)
        # Both calls held until 4 (the first took the only token at 0), then a
        # token each millisecond: the bucket is empty when the hold ends.
        assert clock.current_time() == pytest.approx(4.002)
    assert [e.execution.status for e in events] == [ExecutionStatus.COMPLETED] * 2
    assert events[0].execution.attempts == 2


async def test_no_start_rate_limit_with_refresh_time_none() -> None:
    clock = FakeClock()  # time never moves: any start-rate wait would hang
    executor = Executor(Call, QueueConfig(queue_capacity=2, capacity_refresh_time=None))
    assert "no start-rate limit" in repr(executor)
    limited = Executor(Call, QueueConfig(queue_capacity=2, capacity_refresh_time=0.5))
    assert "starts <= 2 per 0.5 s" in repr(limited)
    del clock
    with anyio.fail_after(GUARD):
        await executor.batch_process([Call(i) for i in range(50)])
    assert executor.metrics["completed"] == 50


async def test_bounded_history_keeps_the_newest_and_counts_all() -> None:
    executor = Executor(Call, NO_START_LIMIT, history=3)
    events = [Call(i, fails=1 if i % 5 == 0 else 0) for i in range(20)]
    with anyio.fail_after(GUARD), LoggingOff():
        await executor.batch_process(events)
    assert len(executor.completed_events) == 3
    assert len(executor.failed_events) == 3
    m = executor.metrics
    assert (m["completed"], m["failed"]) == (16, 4)
    assert [e.number for e in executor.failed_events] == [5, 10, 15]
    assert "completed=16" in repr(executor)
    none_kept = Executor(Call, NO_START_LIMIT, history=0)
    with anyio.fail_after(GUARD):
        await none_kept.batch_process([Call(i) for i in range(10)])
    assert none_kept.completed_events == []
    assert none_kept.metrics["completed"] == 10
    with pytest.raises(ValueError, match="history must be at least 0"):
        Executor(Call, history=-1)


class LoggingOff:
    def __enter__(self) -> None:
        logging.getLogger("sluicegate").disabled = True

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("sluicegate").disabled = False


async def test_executor_failures_follow_the_queues_log_policy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = Executor(Call, NO_START_LIMIT)
    events = [Call(i, fails=1) for i in range(40)]
    with anyio.fail_after(GUARD), caplog.at_level(logging.ERROR, "sluicegate"):
        await executor.batch_process(events)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # the first ConnectionError; the rest counted
    assert any("has failed 32 times" in r.getMessage() for r in caplog.records)
    assert executor.metrics["failed"] == 40


async def test_completed_yields_events_as_they_finish() -> None:
    events = [Call(i, fails=1 if i == 3 else 0) for i in range(10)]
    executor = Executor(Call, NO_START_LIMIT)
    with anyio.fail_after(GUARD), LoggingOff():
        async with executor.completed(events, ordered=True) as finished:
            seen = [event async for event in finished]
    assert seen == events
    assert seen[3].execution.status is ExecutionStatus.FAILED
    assert executor.status is QueueStatus.STOPPED  # it opened and closed it


async def test_completed_unordered_inside_an_open_executor() -> None:
    executor = Executor(Call, NO_START_LIMIT)
    with anyio.fail_after(GUARD):
        async with executor:
            async with executor.completed(Call(i) for i in range(25)) as finished:
                numbers = sorted([e.number async for e in finished])
            assert executor.status is QueueStatus.PROCESSING
    assert numbers == list(range(25))


async def test_leaving_completed_early_cancels_what_did_not_run() -> None:
    gate = anyio.Event()

    class Slow(Call):
        async def invoke(self) -> int:
            if self.number > 0:
                await gate.wait()
            return self.number

    events = [Slow(i) for i in range(30)]
    executor = Executor(Call, QueueConfig(capacity_refresh_time=None, queue_capacity=4))
    with anyio.fail_after(GUARD):
        async with executor.completed(events) as finished:
            async for event in finished:
                assert event.number == 0
                break
    statuses = [e.execution.status for e in events]
    assert statuses[0] is ExecutionStatus.COMPLETED
    drawn = [e for e in events if e.execution.status is not ExecutionStatus.PENDING]
    assert all(e.execution.status is ExecutionStatus.CANCELLED for e in drawn[1:]), (
        statuses
    )
    assert executor.status is QueueStatus.STOPPED
    assert len(drawn) < 30  # the rest was never read
