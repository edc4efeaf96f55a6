"""Retries through the queue, RetryAfter, item timeouts, and the failure log policy.

Every delay runs in virtual time: a FakeClock injected into the queue (and its
rate limiter), with its autojump task, on asyncio, uvloop and trio alike.
"""

from __future__ import annotations

import itertools
import logging
import random
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from fake_clock import FakeClock
from support import GUARD, NO_JITTER, ignore, virtual_time

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
    WorkQueue,
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


# -- retries through the queue --------------------------------------------------------


async def test_a_failed_item_is_retried_after_its_backoff() -> None:
    calls: list[float] = []
    async with virtual_time() as clock:

        async def flaky(item: int) -> None:
            calls.append(clock.current_time())
            if len(calls) < 3:
                raise ConnectionError("try again")

        queue: WorkQueue[int] = WorkQueue(retry=NO_JITTER, clock=clock)
        await queue.batch_process([1], flaky)
    assert calls == [0.0, 1.0, 3.0]  # backoff 1, then 2
    m = queue.metrics
    assert (m["processed"], m["errors"], m["retries"], m["delayed"]) == (1, 0, 2, 0)


async def test_retries_end_with_the_last_failure() -> None:
    failures: list[tuple[str, int]] = []
    async with virtual_time() as clock:

        async def always(item: int) -> None:
            raise ConnectionError(f"call at {clock.current_time():g}")

        async def on_error(exc: Exception, item: int) -> None:
            failures.append((str(exc), item))

        queue: WorkQueue[int] = WorkQueue(retry=NO_JITTER, clock=clock)
        await queue.batch_process([5], always, error_handler=on_error)
    assert failures == [("call at 3", 5)]  # once, after the third call
    m = queue.metrics
    assert (m["processed"], m["errors"], m["retries"]) == (1, 1, 2)
    assert queue.errors_by_type == {"ConnectionError": 1}


async def test_errors_the_policy_does_not_name_are_not_retried() -> None:
    calls = 0
    async with virtual_time() as clock:

        async def work(item: int) -> None:
            nonlocal calls
            calls += 1
            raise KeyError(item)

        policy = RetryPolicy(on=ConnectionError, attempts=5)
        queue: WorkQueue[int] = WorkQueue(retry=policy, clock=clock)
        await queue.batch_process([1], work, error_handler=ignore)
    assert (calls, queue.metrics["retries"], queue.metrics["errors"]) == (1, 0, 1)


async def test_no_retry_starts_after_the_policy_timeout() -> None:
    calls: list[float] = []
    async with virtual_time() as clock:

        async def work(item: int) -> None:
            calls.append(clock.current_time())
            raise ConnectionError

        policy = RetryPolicy(attempts=10, backoff=1, jitter=False, timeout=5)
        queue: WorkQueue[int] = WorkQueue(retry=policy, clock=clock)
        await queue.batch_process([1], work, error_handler=ignore)
    assert calls == [0, 1, 3]  # the next would start at 7, past 5


async def test_every_attempt_takes_a_token_from_the_rate_limiter() -> None:
    calls: list[tuple[int, float]] = []
    async with virtual_time() as clock:

        async def work(item: int) -> None:
            calls.append((item, clock.current_time()))
            if item == 0 and len(calls) == 1:
                raise ConnectionError

        limiter = RateLimiter(1, burst=1, clock=clock)
        policy = RetryPolicy(backoff=0.5, jitter=False)
        queue: WorkQueue[int] = WorkQueue(
            retry=policy, rate_limiter=limiter, clock=clock
        )
        await queue.batch_process([0, 1, 2], work, num_workers=3)
    times = sorted(t for _, t in calls)
    assert len(times) == 4  # three items, one retry: four tokens
    assert all(b - a >= 1 - 1e-9 for a, b in itertools.pairwise(times))


# -- item timeouts --------------------------------------------------------------------


async def test_a_call_past_item_timeout_fails_and_the_worker_goes_on() -> None:
    errors: list[Exception] = []
    async with virtual_time() as clock:

        async def work(item: int) -> None:
            if item == 0:
                await clock.sleep_until(1_000)

        async def on_error(exc: Exception, item: int) -> None:
            errors.append(exc)

        queue: WorkQueue[int] = WorkQueue(item_timeout=2.0, clock=clock)
        await queue.batch_process([0, 1], work, num_workers=1, error_handler=on_error)
        assert clock.current_time() == 2.0
    assert [type(e) for e in errors] == [ItemTimeoutError]
    assert isinstance(errors[0], TimeoutError)  # `except TimeoutError` still catches it
    assert str(errors[0]) == "the call took longer than item_timeout (2 s)"
    assert queue.metrics["processed"] == 2
    assert queue.errors_by_type == {"ItemTimeoutError": 1}


async def test_a_timed_out_call_is_retried() -> None:
    calls = 0
    async with virtual_time() as clock:

        async def slow_once(item: int) -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await clock.sleep_until(1_000)
            return "ok"

        policy = RetryPolicy(on=TimeoutError, backoff=1, jitter=False)
        queue: WorkQueue[int] = WorkQueue(clock=clock)
        async with queue.map(slow_once, [1], retry=policy, item_timeout=3) as results:
            outcomes = [outcome async for outcome in results]
        assert clock.current_time() == 4.0
    assert [(o.value, o.attempts, o.duration) for o in outcomes] == [("ok", 2, 4.0)]


class OtherError(Exception):
    pass


def _slow_first_calls(clock: FakeClock, slow: int, calls: list[float]) -> Any:
    """A worker function whose first ``slow`` calls hang; the next returns."""

    async def work(item: int) -> str:
        calls.append(clock.current_time())
        if len(calls) <= slow:
            await clock.sleep_until(1_000)
        return "ok"

    return work


async def test_a_cut_call_is_retried_whatever_on_says() -> None:
    """Deliver 4 of issue 18: a user who sets a retry policy and an item timeout
    expects the calls the timeout cuts to be tried again."""
    calls: list[float] = []
    async with virtual_time() as clock:
        policy = RetryPolicy(attempts=3, on=OtherError, backoff=1, jitter=False)
        queue: WorkQueue[int] = WorkQueue(retry=policy, item_timeout=2, clock=clock)
        work = _slow_first_calls(clock, 2, calls)
        async with queue.map(work, [1]) as results:
            outcomes = [outcome async for outcome in results]
    assert calls == [0.0, 3.0, 7.0]  # cut at 2, back at 3; cut at 5, back at 7
    assert [(o.value, o.attempts) for o in outcomes] == [("ok", 3)]
    assert queue.metrics["retries"] == 2


async def test_retry_timeouts_false_leaves_cut_calls_to_on() -> None:
    calls: list[float] = []
    errors: list[Exception] = []

    async def on_error(exc: Exception, item: int) -> None:
        errors.append(exc)

    async with virtual_time() as clock:
        policy = RetryPolicy(on=OtherError, retry_timeouts=False)
        queue: WorkQueue[int] = WorkQueue(retry=policy, item_timeout=2, clock=clock)
        work = _slow_first_calls(clock, 1, calls)
        await queue.batch_process([1], work, error_handler=on_error)
    assert calls == [0.0]
    assert [type(e) for e in errors] == [ItemTimeoutError]
    assert queue.metrics["retries"] == 0


async def test_a_timeout_error_of_the_users_own_follows_on() -> None:
    """Only a call the item timeout cut is retried whatever `on` says; a
    TimeoutError the worker function raises itself is any other error."""
    errors: list[Exception] = []

    async def on_error(exc: Exception, item: int) -> None:
        errors.append(exc)

    async def work(item: int) -> None:
        raise TimeoutError("the service timed out")

    async with virtual_time() as clock:
        policy = RetryPolicy(on=OtherError)
        queue: WorkQueue[int] = WorkQueue(retry=policy, item_timeout=2, clock=clock)
        await queue.batch_process([1], work, error_handler=on_error)
        retried: WorkQueue[int] = WorkQueue(
            retry=RetryPolicy(attempts=2, on=TimeoutError), item_timeout=2, clock=clock
        )
        await retried.batch_process([1], work, error_handler=on_error)
    assert [type(e) for e in errors] == [TimeoutError, TimeoutError]
    assert (queue.metrics["retries"], retried.metrics["retries"]) == (0, 1)


async def test_the_final_timeout_is_an_item_timeout_error() -> None:
    calls: list[float] = []
    errors: list[Exception] = []

    async def on_error(exc: Exception, item: int) -> None:
        errors.append(exc)

    async with virtual_time() as clock:
        policy = RetryPolicy(attempts=2, on=OtherError, backoff=1, jitter=False)
        queue: WorkQueue[int] = WorkQueue(retry=policy, item_timeout=2, clock=clock)
        work = _slow_first_calls(clock, 5, calls)
        await queue.batch_process([1], work, error_handler=on_error)
    assert calls == [0.0, 3.0]
    (error,) = errors
    assert isinstance(error, ItemTimeoutError)
    assert isinstance(error, TimeoutError)
    assert str(error) == "the call took longer than item_timeout (2 s)"
    assert queue.errors_by_type == {"ItemTimeoutError": 1}


async def test_item_timeout_on_the_event_loop_clock() -> None:
    """The default clock path: a cancel scope with a deadline (trio's MockClock
    makes it instant; elsewhere it waits 10 ms)."""
    queue: WorkQueue[int] = WorkQueue(item_timeout=0.01)

    async def hang(item: int) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(GUARD):
        await queue.batch_process([1, 2], hang, num_workers=2, error_handler=ignore)
    assert queue.errors_by_type == {"ItemTimeoutError": 2}


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), "1"])
async def test_item_timeout_validates(value: object) -> None:
    with pytest.raises((TypeError, ValueError), match="item_timeout"):
        WorkQueue(item_timeout=value)  # type: ignore[arg-type]


async def test_retry_must_be_a_policy() -> None:
    with pytest.raises(TypeError, match=r"retry must be a sluicegate\.RetryPolicy"):
        WorkQueue(retry=3)  # type: ignore[arg-type]


# -- one logging policy ------------------------------------------------------------


async def test_a_failure_storm_logs_one_traceback_per_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work(item: int) -> None:
        raise ConnectionError(item) if item % 2 else ValueError(item)

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD), caplog.at_level(logging.ERROR, "sluicegate"):
        await queue.batch_process(range(200), work, num_workers=4)
    records = [r for r in caplog.records if r.name == "sluicegate"]
    tracebacks = [r for r in records if r.exc_info]
    assert sorted(type(r.exc_info[1]).__name__ for r in tracebacks if r.exc_info) == [
        "ConnectionError",
        "ValueError",
    ]
    counts = [r.getMessage() for r in records if "has failed" in r.getMessage()]
    # 100 of each: counted at 2, 4, ..., 64 each, then one summary at stop
    assert len(counts) == 2 * 6
    assert "has failed 64 times with ValueError" in " ".join(counts)
    assert "ConnectionError: 100" in records[-1].getMessage()
    assert "ValueError: 100" in records[-1].getMessage()
    assert len(records) == 2 + 12 + 1
    assert queue.errors_by_type == {"ValueError": 100, "ConnectionError": 100}


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
