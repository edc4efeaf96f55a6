"""One call of a worker function: its failure, its return, retries, timeouts.

A failure is counted, handed to the error handler and survived; any callable
returning an awaitable is a worker function; retries wait out their backoff;
an item timeout cuts a call (the policy's own rules are in test_retry.py).
"""

from __future__ import annotations

import functools
import itertools
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from fake_clock import FakeClock, all_blocked
from support import (
    GUARD,
    NO_JITTER,
    assert_books,
    assert_settled,
    delay_each,
    get_one,
    ignore,
    virtual_time,
)

from sluicegate import (
    BoundedQueue,
    ItemTimeoutError,
    RateLimiter,
    RetryPolicy,
    WorkQueue,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup


# -- a failing call: counted, handled, survived ----------------------------------------


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


@pytest.mark.plan("UT-14")
async def test_worker_errors_are_counted_and_handled() -> None:
    handled: list[tuple[str, int]] = []

    async def work(item: int) -> None:
        if item % 2:
            raise ValueError(f"odd {item}")

    async def on_error(exc: Exception, item: int) -> None:
        handled.append((str(exc), item))

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](timeout=None) as queue:
            await queue.start_workers(work, 2, on_error)
            for i in range(10):
                await queue.put(i)
    assert queue.metrics["errors"] == 5
    assert queue.metrics["processed"] == 10
    assert sorted(handled) == sorted((f"odd {i}", i) for i in range(1, 10, 2))
    assert_books(queue)


async def test_error_handler_that_raises_is_logged_and_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work(item: int) -> None:
        raise ValueError(item)

    async def bad_handler(exc: Exception, item: int) -> None:
        raise RuntimeError("handler broke")

    logger = logging.getLogger("sluicegate.test")
    with caplog.at_level(logging.ERROR, logger="sluicegate.test"):
        async with BoundedQueue[int](logger=logger, timeout=None) as queue:
            await queue.start_workers(work, 1, bad_handler)
            for i in range(3):
                await queue.put(i)
            await queue.join()
            assert queue.worker_count == 1
    assert queue.metrics["processed"] == 3
    assert queue.metrics["errors"] == 3
    assert caplog.text.count("error_handler failed") == 3
    assert "handler broke" in caplog.text


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


# -- any callable is a worker function -------------------------------------------------


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


def not_async(item: int) -> int:
    return item * 2


@pytest.mark.plan("R2-12")
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


@pytest.mark.plan("R2-12")
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


@pytest.mark.plan("R2-12")
async def test_a_rate_limited_call_returning_no_awaitable_fails_clearly() -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception, item: int) -> None:
        errors.append(exc)

    queue: WorkQueue[int] = WorkQueue(rate_limiter=RateLimiter(1e9))
    with anyio.fail_after(GUARD):
        await queue.batch_process(range(2), not_async, 1, on_error)  # type: ignore[arg-type]
    assert len(errors) == 2
    assert "worker_func not_async returned int" in str(errors[0])


@pytest.mark.plan("R2-12")
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


# -- retries: the backoff, the last failure, what is retried, the rate limiter ---------


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


async def test_retry_must_be_a_policy() -> None:
    with pytest.raises(TypeError, match=r"retry must be a sluicegate\.RetryPolicy"):
        WorkQueue(retry=3)  # type: ignore[arg-type]


# -- retries due after the workers that failed them have ended -------------------------


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


# -- item timeouts ---------------------------------------------------------------------


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


@pytest.mark.plan("issue 18: Deliver 4")
async def test_a_cut_call_is_retried_whatever_on_says() -> None:
    """A user who sets a retry policy and an item timeout
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
