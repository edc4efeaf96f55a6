"""Bad input, in one table: every public constructor and method, wrong types and
out-of-range values. Each raises TypeError or ValueError at the call, naming the
argument: never a hang, a silent default, or an error from deep inside."""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from sluicegate import (
    BoundedQueue,
    Event,
    Executor,
    QueueConfig,
    RateLimiter,
    RetryPolicy,
    WorkQueue,
)

Call = Callable[[], Awaitable[object]]
A: Any = None  # None, typed Any so the table can hold ill-typed calls


def bad(value: object) -> Any:
    """``value``, typed Any so the table can hold ill-typed calls."""
    return value


async def work(item: object) -> None:
    pass


async def on_error(exc: Exception, item: object) -> None:
    pass


class Job(Event):
    async def invoke(self) -> None:
        pass


class Other(Event):
    async def invoke(self) -> None:
        pass


def now(make: Callable[[], object]) -> Call:
    """A synchronous call, wrapped so the table holds only awaitables."""

    async def call() -> object:
        return make()

    return call


def on_queue(use: Callable[[BoundedQueue[Any]], Awaitable[object]]) -> Call:
    """Call ``use`` on a running BoundedQueue."""

    async def call() -> object:
        async with BoundedQueue[Any]() as queue:
            return await use(queue)

    return call


def on_work_queue(use: Callable[[WorkQueue[Any]], Awaitable[object]]) -> Call:
    async def call() -> object:
        async with WorkQueue[Any]() as queue:
            return await use(queue)

    return call


def on_executor(use: Callable[[Executor[Job]], Awaitable[object]]) -> Call:
    async def call() -> object:
        async with Executor(Job) as executor:
            return await use(executor)

    return call


def set_limit(queue: BoundedQueue[Any], value: Any) -> None:
    queue.concurrency_limit = value


T, V = TypeError, ValueError
CASES: list[Any] = [
    # BoundedQueue(...)
    (now(lambda: BoundedQueue(0)), V, "maxsize must be at least 1, got 0"),
    (now(lambda: BoundedQueue(-5)), V, "maxsize must be at least 1, got -5"),
    (now(lambda: BoundedQueue(bad(math.inf))), T, "maxsize must be an int, got inf"),
    (now(lambda: BoundedQueue(bad(math.nan))), T, "maxsize must be an int, got nan"),
    (now(lambda: BoundedQueue(True)), T, "maxsize must be an int, got True"),
    (now(lambda: BoundedQueue(A)), T, "maxsize must be an int, got None"),
    (now(lambda: BoundedQueue(bad("8"))), T, "maxsize must be an int, got '8'"),
    (now(lambda: BoundedQueue(timeout=-1)), V, "timeout must be >= 0 seconds, got -1"),
    (now(lambda: BoundedQueue(timeout=math.nan)), V, "timeout must be >= 0 seconds"),
    (now(lambda: BoundedQueue(timeout=bad(True))), T, "timeout must be a number"),
    (now(lambda: BoundedQueue(timeout=bad("1"))), T, "timeout must be a number"),
    (now(lambda: BoundedQueue(concurrency_limit=0)), V, "concurrency_limit must be"),
    (now(lambda: BoundedQueue(concurrency_limit=-1)), V, "concurrency_limit must be"),
    (now(lambda: BoundedQueue(concurrency_limit=True)), T, "concurrency_limit must"),
    (now(lambda: BoundedQueue(concurrency_limit=bad(2.5))), T, "concurrency_limit"),
    (now(lambda: BoundedQueue(logger=bad(print))), T, "logger must be a logging"),
    # BoundedQueue methods
    (on_queue(lambda q: q.put(1, timeout=-1)), V, "timeout must be >= 0 seconds"),
    (on_queue(lambda q: q.put(1, timeout=math.nan)), V, "timeout must be >= 0"),
    (on_queue(lambda q: q.put(1, timeout=bad(False))), T, "timeout must be a number"),
    (on_queue(lambda q: q.start_workers(work, 0)), V, "num_workers must be at least 1"),
    (on_queue(lambda q: q.start_workers(work, -2)), V, "num_workers must be at least"),
    (on_queue(lambda q: q.start_workers(work, True)), T, "num_workers must be an int"),
    (on_queue(lambda q: q.start_workers(work, A)), T, "num_workers must be an int"),
    (on_queue(lambda q: q.start_workers(work, bad(1.0))), T, "num_workers must be an"),
    (on_queue(lambda q: q.start_workers(bad(42), 1)), T, "worker_func must be call"),
    (on_queue(lambda q: q.start_workers(A, 1)), T, "worker_func must be callable"),
    (on_queue(lambda q: q.start_workers(work, 1, bad(3))), T, "error_handler must be"),
    (
        on_queue(lambda q: q.start_workers(work, 1, task_group=bad("tg"))),
        T,
        "task_group must be an anyio TaskGroup",
    ),
    (on_queue(lambda q: q.stop(timeout=-1)), V, "timeout must be >= 0 seconds"),
    (on_queue(lambda q: q.stop(timeout=bad("soon"))), T, "timeout must be a number"),
    (on_queue(lambda q: q.stop_workers(timeout=math.nan)), V, "timeout must be >= 0"),
    (
        now(lambda: set_limit(BoundedQueue(), 0)),
        V,
        "concurrency_limit must be at least",
    ),
    (now(lambda: set_limit(BoundedQueue(), True)), T, "concurrency_limit must be an"),
    (now(lambda: BoundedQueue().hold(-1)), V, "seconds must be a finite number >= 0"),
    (now(lambda: BoundedQueue().hold(math.inf)), V, "seconds must be a finite number"),
    (now(lambda: BoundedQueue().hold(bad("1"))), T, "seconds must be a number, got"),
    # QueueConfig
    (
        now(lambda: QueueConfig(queue_capacity=0)),
        V,
        "queue_capacity must be at least 1",
    ),
    (now(lambda: QueueConfig(queue_capacity=True)), T, "queue_capacity must be an int"),
    (now(lambda: QueueConfig(queue_capacity=A)), T, "queue_capacity must be an int"),
    (now(lambda: QueueConfig(capacity_refresh_time=0)), V, "capacity_refresh_time"),
    (now(lambda: QueueConfig(capacity_refresh_time=math.inf)), V, "finite"),
    (now(lambda: QueueConfig(capacity_refresh_time=math.nan)), V, "capacity_refresh"),
    (
        now(lambda: QueueConfig(capacity_refresh_time=bad("1"))),
        T,
        "capacity_refresh_time",
    ),
    (
        now(lambda: QueueConfig(capacity_refresh_time=bad(True))),
        T,
        r"^capacity_refresh_time must be a number of seconds or None, "
        r"got True \(bool\)$",
    ),
    (
        now(lambda: QueueConfig(capacity_refresh_time=-1)),
        V,
        "^capacity_refresh_time must be a finite number of seconds > 0, got -1$",
    ),
    (now(lambda: QueueConfig(concurrency_limit=0)), V, "concurrency_limit must be"),
    (
        now(lambda: attrs.evolve(QueueConfig(), queue_capacity=-1)),
        V,
        "queue_capacity must be at least 1, got -1",
    ),
    # WorkQueue
    (now(lambda: WorkQueue(maxsize=0)), V, "maxsize must be at least 1"),
    (now(lambda: WorkQueue(timeout=-0.1)), V, "timeout must be >= 0 seconds"),
    (now(lambda: WorkQueue(concurrency_limit=bad("4"))), T, "concurrency_limit must"),
    (now(lambda: WorkQueue(rate_limiter=bad(10))), T, "rate_limiter must be a Rate"),
    (now(lambda: WorkQueue.from_config(A)), T, "config must be a QueueConfig"),
    (on_work_queue(lambda q: q.process(work, 0)), V, "num_workers must be at least 1"),
    (on_work_queue(lambda q: q.process(bad("f"))), T, "worker_func must be callable"),
    (on_work_queue(lambda q: q.process(work, 1, bad(1))), T, "error_handler must"),
    (on_work_queue(lambda q: q.batch_process(bad(5), work)), T, "items must be an"),
    (on_work_queue(lambda q: q.batch_process(A, work)), T, "items must be an iterable"),
    (on_work_queue(lambda q: q.batch_process([1], bad(2))), T, "worker_func must"),
    (on_work_queue(lambda q: q.batch_process([1], work, 0)), V, "num_workers must be"),
    (on_work_queue(lambda q: q.batch_process([1], work, bad(2.0))), T, "num_workers"),
    (
        on_work_queue(lambda q: q.batch_process([1], work, 1, bad(2))),
        T,
        "error_handler must be callable",
    ),
    (on_work_queue(lambda q: q.put(1, timeout=-3)), V, "timeout must be >= 0 seconds"),
    (now(lambda: WorkQueue().hold(math.nan)), V, "seconds must be a finite number"),
    # RetryPolicy
    (now(lambda: RetryPolicy(attempts=0)), V, "attempts must be at least 1, got 0"),
    (now(lambda: RetryPolicy(jitter=bad(1))), T, "jitter must be a bool, got 1"),
    (
        now(lambda: RetryPolicy(retry_timeouts=bad("no"))),
        T,
        "retry_timeouts must be a bool, got 'no'",
    ),
    # Executor
    (now(lambda: Executor(bad(int))), T, "event_type must be a subclass of sluicegate"),
    (now(lambda: Executor(A)), T, "event_type must be a subclass of sluicegate.Event"),
    (now(lambda: Executor(Job, bad(5))), T, "queue_config must be a QueueConfig"),
    (now(lambda: Executor(Job, rate_limiter=bad(1))), T, "rate_limiter must be a Rate"),
    (now(lambda: Executor(Job, logger=bad("log"))), T, "logger must be a logging"),
    (now(lambda: Executor(Job, clock=bad(5))), T, "clock must have current_time"),
    (now(lambda: Executor(Job).append(bad(Other()))), T, "instance of Job, got Other"),
    (now(lambda: Executor(Job).append(A)), T, "instance of Job, got NoneType"),
    (on_executor(lambda e: e.put(bad(Other()))), T, "instance of Job, got Other"),
    (on_executor(lambda e: e.put(Job(), timeout=-1)), V, "timeout must be >= 0"),
    (on_executor(lambda e: e.batch_process(bad(3))), T, "events must be an iterable"),
    (on_executor(lambda e: e.batch_process([bad(Other())])), T, "instance of Job"),
    (on_executor(lambda e: e.stop(timeout=math.nan)), V, "timeout must be >= 0"),
    (
        lambda: Executor(Job).start(task_group=bad("tg")),
        T,
        "task_group must be an anyio TaskGroup",
    ),
    # RateLimiter
    (now(lambda: RateLimiter(0)), V, "rate must be a finite number > 0, got 0"),
    (now(lambda: RateLimiter(-1)), V, "rate must be a finite number > 0, got -1"),
    (now(lambda: RateLimiter(math.nan)), V, "rate must be a finite number > 0"),
    (now(lambda: RateLimiter(math.inf)), V, "rate must be a finite number > 0"),
    (now(lambda: RateLimiter(bad(True))), T, "rate must be a number, got True"),
    (now(lambda: RateLimiter(A)), T, "rate must be a number, got None"),
    (now(lambda: RateLimiter(5, 0)), V, "period must be a finite number > 0"),
    (now(lambda: RateLimiter(5, -1)), V, "period must be a finite number > 0"),
    (now(lambda: RateLimiter(5, burst=0.5)), V, "burst must be at least 1"),
    (now(lambda: RateLimiter(5, burst=math.inf)), V, "burst must be a finite"),
    (now(lambda: RateLimiter(5, clock=bad(object()))), T, "clock must have current"),
    (lambda: RateLimiter(5).acquire(0), V, "tokens must be > 0 and at most burst"),
    (lambda: RateLimiter(5, burst=5).acquire(6), V, "at most burst \\(5\\), got 6"),
    (lambda: RateLimiter(5).acquire(2), V, "at most burst \\(1\\), got 2"),
    (lambda: RateLimiter(5).acquire(-1), V, "tokens must be > 0"),
    (lambda: RateLimiter(5).acquire(math.nan), V, "tokens must be > 0"),
    (lambda: RateLimiter(5).acquire(bad(True)), T, "tokens must be a number"),
    (lambda: RateLimiter(5).acquire(A), T, "tokens must be a number, got None"),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(*case, id=f"{i:02d} {case[1].__name__}: {case[2]}")
        for i, case in enumerate(CASES)
    ],
)
async def test_bad_input_is_refused_at_the_call(
    call: Call, error: type[Exception], match: str
) -> None:
    with anyio.fail_after(5), pytest.raises(error, match=match) as info:
        await call()
    # Raised by our own check, at the call: not from deep inside AnyIO or attrs.
    innermost = Path(info.traceback[-1].path)
    assert innermost.parent.name == "sluicegate", innermost


class AsyncCallable:
    async def __call__(self, item: object) -> None:
        pass


@pytest.mark.parametrize(
    "func",
    [work, functools.partial(work), AsyncCallable()],
    ids=["async def", "partial", "async __call__"],
)
async def test_async_callables_of_every_shape_are_accepted(func: Any) -> None:
    async with BoundedQueue[int]() as queue:
        await queue.start_workers(func, 1)
        await queue.put(1)
    assert queue.metrics["processed"] == 1
