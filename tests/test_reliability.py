"""Reliability, round 2: the edges where "nothing lost, never hangs" used to break.

One section per promise; each test failed before its fix. They run on asyncio,
asyncio+uvloop and trio, except the native-cancellation ones, which need asyncio's
``CancelledError`` (trio's ``Cancelled`` cannot be raised by user code).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest
import uvloop
from fake_clock import FakeClock, all_blocked
from support import GUARD, assert_books

from sluicegate import (
    BoundedQueue,
    Event,
    ExecutionStatus,
    Executor,
    QueueConfig,
    QueueStateError,
    QueueStatus,
    RateLimiter,
    RetryPolicy,
    StrayCancellationError,
    WorkQueue,
)

FAST = QueueConfig(queue_capacity=10, capacity_refresh_time=1e-6)

T = TypeVar("T")

asyncio_only = pytest.mark.parametrize(
    "anyio_backend",
    [("asyncio", {}), ("asyncio", {"loop_factory": uvloop.new_event_loop})],
    ids=["asyncio", "asyncio+uvloop"],
)


class Recorder(Iterator[int]):
    """An iterator over range(n) that remembers what was drawn from it."""

    def __init__(self, n: int) -> None:
        self._items = iter(range(n))
        self.drawn: list[int] = []

    def __next__(self) -> int:
        item = next(self._items)
        self.drawn.append(item)
        return item


# -- 1. a native CancelledError from a worker function is that item's failure ------


async def _stray_cancelled_error() -> None:
    """Raise CancelledError the way `await some_cancelled_task` does."""
    task = asyncio.ensure_future(asyncio.sleep(10))
    await asyncio.sleep(0)
    task.cancel()
    await task


@asyncio_only
async def test_stray_cancelled_error_fails_the_item_and_the_block_goes_on() -> None:
    failures: list[tuple[Exception, int]] = []

    async def work(item: int) -> None:
        if item == 3:
            await _stray_cancelled_error()
        await anyio.lowlevel.checkpoint()

    async def on_error(exc: Exception, item: int) -> None:
        failures.append((exc, item))

    queue: BoundedQueue[int] = BoundedQueue(maxsize=2, timeout=None)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 2, on_error)
            for i in range(12):
                await queue.put(i)
            body_finished = True
    assert body_finished
    m = queue.metrics
    assert (m["enqueued"], m["processed"], m["errors"]) == (12, 12, 1)
    [(exc, item)] = failures
    assert item == 3
    assert isinstance(exc, StrayCancellationError)
    assert isinstance(exc.__cause__, asyncio.CancelledError)


@asyncio_only
async def test_stray_cancelled_error_does_not_end_a_batch() -> None:
    async def work(item: int) -> None:
        if item % 5 == 0:
            await _stray_cancelled_error()

    items = Recorder(20)
    queue: WorkQueue[int] = WorkQueue(maxsize=2)
    with anyio.fail_after(GUARD):
        await queue.batch_process(items, work, 2, error_handler=_ignore)
    assert items.drawn == list(range(20))
    assert (queue.metrics["processed"], queue.metrics["errors"]) == (20, 4)


async def _ignore(exc: Exception, item: object) -> None:
    pass


class Leaky(Event):
    def __init__(self, leak: bool) -> None:
        super().__init__()
        self.leak = leak

    async def invoke(self) -> str:
        if self.leak:
            await _stray_cancelled_error()
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


async def test_a_real_cancellation_still_leaves_the_item_unprocessed() -> None:
    started = anyio.Event()

    async def work(item: int) -> None:
        started.set()
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 1)
            await queue.put(1)
            await started.wait()
            await queue.stop(timeout=0)
    assert queue.unprocessed == [1]
    assert queue.metrics["errors"] == 0


# -- 3. concurrent stop() calls share one stop -----------------------------------


@pytest.mark.parametrize("where", ["worker_func", "error_handler"])
async def test_two_workers_stopping_their_queue_at_once_both_return(
    where: str,
) -> None:
    both_in = anyio.Event()
    arrived = 0
    returned: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue(timeout=None)

    async def stop_together(item: int) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_in.set()
        await both_in.wait()
        await queue.stop()
        returned.append(item)

    async def work(item: int) -> None:
        if where == "worker_func":
            await stop_together(item)
        else:
            raise ValueError(item)

    async def on_error(exc: Exception, item: int) -> None:
        await stop_together(item)

    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 2, on_error)
            await queue.put(1)
            await queue.put(2)
    assert sorted(returned) == [1, 2]
    assert queue.status is QueueStatus.STOPPED
    assert queue.metrics["processed"] == 2
    assert_books(queue)


async def test_stop_from_outside_and_from_workers_at_once() -> None:
    release = anyio.Event()
    in_work = 0
    queue: BoundedQueue[int] = BoundedQueue(timeout=None)

    async def work(item: int) -> None:
        nonlocal in_work
        in_work += 1
        await release.wait()
        await queue.stop()

    stops_returned = 0

    async def outside_stop() -> None:
        nonlocal stops_returned
        await queue.stop()
        stops_returned += 1

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, 3, task_group=tg)
            for i in range(3):
                await queue.put(i)
            await all_blocked()
            assert in_work == 3
            tg.start_soon(outside_stop)
            tg.start_soon(outside_stop)
            await all_blocked()
            release.set()
    assert stops_returned == 2
    assert queue.status is QueueStatus.STOPPED
    assert queue.metrics["processed"] == 3


# -- 4. a batch never drops the item it was putting -------------------------------


@pytest.mark.parametrize("steps", range(6))
async def test_batch_cancelled_while_putting_lists_every_drawn_item(
    steps: int,
) -> None:
    gates: list[anyio.Event] = []

    async def slow(item: int) -> None:
        gate = anyio.Event()
        gates.append(gate)
        await gate.wait()

    items = Recorder(10)
    queue: WorkQueue[int] = WorkQueue(maxsize=1)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.batch_process, items, slow, 1)
            for _ in range(steps):
                await all_blocked()  # the feeder waits to put, the worker on a gate
                gates[-1].set()
            await all_blocked()
            tg.cancel_scope.cancel()
    processed = queue.metrics["processed"]
    assert sorted(items.drawn[:processed] + queue.unprocessed) == items.drawn
    assert queue.metrics["enqueued"] == len(items.drawn)
    assert_books(queue.queue)


async def test_batch_whose_queue_is_stopped_by_another_task_lists_the_drawn_item() -> (
    None
):
    async def slow(item: int) -> None:
        await anyio.sleep_forever()

    items = Recorder(10)
    queue: WorkQueue[int] = WorkQueue(maxsize=1)
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            tg.start_soon(queue.batch_process, items, slow, 1)
            await all_blocked()
            await queue.stop(timeout=0)  # the batch returns
    assert sorted(queue.unprocessed) == items.drawn  # none processed in 0 s
    assert_books(queue.queue)


# -- 6. a lowered concurrency limit holds at once -----------------------------------


async def test_limit_raised_then_lowered_starts_no_extra_item() -> None:
    running = 0
    violations: list[tuple[int, int | None]] = []
    release = anyio.Event()
    queue: BoundedQueue[int] = BoundedQueue(concurrency_limit=1, timeout=None)

    async def work(item: int) -> None:
        nonlocal running
        limit = queue.concurrency_limit
        if limit is not None and running >= limit:
            violations.append((running, limit))
        running += 1
        await release.wait()
        running -= 1

    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 4)
            for i in range(8):
                await queue.put(i)
            await all_blocked()
            queue.concurrency_limit = 4
            queue.concurrency_limit = 1
            await all_blocked()
            assert running == 1
            release.set()
    assert violations == []
    assert queue.metrics["processed"] == 8


async def test_limit_lowered_during_a_fairness_checkpoint() -> None:
    """A worker yielding after 64 items in a row checks the limit before the next."""
    running = 0
    violations: list[int] = []
    release = anyio.Event()
    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=1000, concurrency_limit=2, timeout=None
    )

    async def work(item: int) -> None:
        nonlocal running
        limit = queue.concurrency_limit
        assert limit is not None
        if running >= limit:
            violations.append(item)
        if item == 0:
            running += 1
            await release.wait()
            running -= 1

    async def lower_once_64_are_done() -> None:
        while queue.metrics["processed"] < 64:
            await anyio.lowlevel.checkpoint()
        queue.concurrency_limit = 1

    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            for i in range(1000):
                await queue.put(i)
            tg.start_soon(lower_once_64_are_done)
            await queue.start_workers(work, 2)
            await all_blocked()
            assert queue.size > 0  # the worker stopped taking items
            release.set()
    assert violations == []
    assert queue.metrics["processed"] == 1000


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


# -- 8. a put waiting when the queue stopped never joins the next run ---------------


async def test_producer_blocked_across_stop_and_start_is_refused() -> None:
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1, timeout=None)
    outcome: list[object] = []

    async def producer() -> None:
        try:
            outcome.append(await queue.put(2))
        except QueueStateError as exc:
            outcome.append(exc)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.put(1)
            tg.start_soon(producer)
            await all_blocked()
            await queue.stop()
            await queue.start()
        [result] = outcome
        assert isinstance(result, QueueStateError)
        assert "stopped while this call waited" in str(result)
        assert queue.metrics["enqueued"] == 1
        assert queue.unprocessed == [1]
        await queue.stop()


async def test_get_parked_across_stop_and_start_is_refused() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    outcome: list[object] = []

    async def consumer() -> None:
        try:
            outcome.append(await queue.get())
        except QueueStateError as exc:
            outcome.append(exc)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            tg.start_soon(consumer)
            await all_blocked()
            await queue.stop()
            await queue.start()
            await queue.put(5)
        assert isinstance(outcome[0], QueueStateError)
        assert queue.size == 1
        await queue.stop()


# -- 9. leaving `async with` waits for get() consumers too -------------------------


async def test_async_with_exit_waits_for_get_consumers() -> None:
    handled: list[int] = []
    ended: list[BaseException] = []

    async def consumer(queue: BoundedQueue[int]) -> None:
        try:
            while True:
                item = await queue.get()
                for _ in range(3):  # handling takes a while, and yields
                    await anyio.lowlevel.checkpoint()
                handled.append(item)
                queue.task_done()
        except QueueStateError as exc:
            ended.append(exc)

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, queue:
            tg.start_soon(consumer, queue)
            await all_blocked()  # parked in get(): the queue knows it
            for i in range(5):
                await queue.put(i)
    assert handled == [0, 1, 2, 3, 4]
    assert queue.unprocessed == []
    assert queue.metrics["processed"] == 5
    assert len(ended) == 1  # woken by the stop, once all was done


async def test_async_with_exit_does_not_wait_once_the_consumer_is_gone() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, queue:
            consumer_scope = anyio.CancelScope()
            tg.start_soon(_get_in, queue, consumer_scope)
            await all_blocked()
            consumer_scope.cancel()
            for i in range(3):
                await queue.put(i)
    assert queue.unprocessed == [0, 1, 2]


async def _get_in(queue: BoundedQueue[int], scope: anyio.CancelScope) -> None:
    with scope:
        await queue.get()


async def _get_one(queue: BoundedQueue[int], got: list[int]) -> None:
    got.append(await queue.get())
    queue.task_done()


# -- 10. parked get() callers are served in FIFO order ------------------------------


async def test_get_callers_are_served_in_turn() -> None:
    counts = [0, 0, 0]
    queue: BoundedQueue[int] = BoundedQueue()

    async def consumer(index: int) -> None:
        while True:
            await queue.get()
            counts[index] += 1
            queue.task_done()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            for index in range(3):
                tg.start_soon(consumer, index)
            for i in range(300):
                await all_blocked()
                await queue.put(i)
            await queue.join()
            tg.cancel_scope.cancel()
        await queue.stop()
    assert counts == [100, 100, 100]


async def test_parked_get_is_served_before_idle_workers() -> None:
    got: list[int] = []
    handled: list[int] = []

    async def work(item: int) -> None:
        handled.append(item)

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.start_workers(work, 2)
            await all_blocked()
            tg.start_soon(_get_one, queue, got)
            await all_blocked()
            await queue.put(1)
            await all_blocked()
            await queue.put(2)
    assert (got, handled) == ([1], [2])


# -- 11. an item is finished once its error handler has returned --------------------


async def test_join_waits_for_the_error_handler() -> None:
    in_handler = anyio.Event()
    release = anyio.Event()
    joined = False

    async def work(item: int) -> None:
        raise ValueError(item)

    async def on_error(exc: Exception, item: int) -> None:
        in_handler.set()
        await release.wait()

    async def join() -> None:
        nonlocal joined
        await queue.join()
        joined = True

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.start_workers(work, 1, on_error)
            await queue.put(1)
            await in_handler.wait()
            tg.start_soon(join)
            await all_blocked()
            assert not joined
            assert (queue.metrics["processed"], queue.metrics["errors"]) == (0, 0)
            assert queue.in_flight == 1
            release.set()
    assert joined
    assert (queue.metrics["processed"], queue.metrics["errors"]) == (1, 1)


async def test_error_handler_cancelled_leaves_the_item_unprocessed() -> None:
    in_handler = anyio.Event()

    async def work(item: int) -> None:
        raise ValueError(item)

    async def on_error(exc: Exception, item: int) -> None:
        in_handler.set()
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 1, on_error)
            await queue.put(1)
            await in_handler.wait()
            await queue.stop(timeout=0)
    assert queue.unprocessed == [1]
    assert (queue.metrics["processed"], queue.metrics["errors"]) == (0, 0)


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


async def test_a_retry_due_after_its_worker_stopped_the_queue_is_unprocessed() -> None:
    queue: BoundedQueue[int] = BoundedQueue(clock=FakeClock())

    async def stop_then_fail(item: int) -> None:
        await queue.stop(timeout=0)
        raise ConnectionError

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            policy = RetryPolicy(backoff=1, jitter=False)
            await queue.start_workers(stop_then_fail, 1, task_group=tg, retry=policy)
            await queue.put(7)
    assert queue.status is QueueStatus.STOPPED
    assert (queue.unprocessed, queue.delayed) == ([7], 0)
    m = queue.metrics
    assert m["enqueued"] == m["processed"] + m["unprocessed"]


async def _delay_each(queue: BoundedQueue[int], *items: int) -> None:
    """Put ``items`` through one worker whose calls all fail, under a policy
    that retries after 1 s, then end the worker: the items wait in the delay
    line, all due at the same moment."""

    async def fails(item: int) -> None:
        raise ConnectionError

    await queue.start_workers(fails, 1, retry=RetryPolicy(backoff=1, jitter=False))
    for item in items:
        await queue.put(item)
    await all_blocked()
    await queue.stop_workers()


async def test_a_parked_get_receives_a_delayed_item_without_workers() -> None:
    clock = FakeClock()
    got: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1, clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, queue:
            await _delay_each(queue, 3)
            tg.start_soon(_get_one, queue, got)
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
            await _delay_each(queue, 4)
            tg.start_soon(_get_one, queue, got)
            await all_blocked()
            clock.advance(1.0)
    assert got == [4]


async def test_retries_due_together_come_back_in_the_order_they_failed() -> None:
    clock = FakeClock()
    queue: BoundedQueue[int] = BoundedQueue(maxsize=4, clock=clock)
    with anyio.fail_after(GUARD):
        async with queue:
            await _delay_each(queue, 1, 2, 3)  # each failed once, at one moment
            assert queue.delayed == 3
            clock.advance(1.0)  # all three fall due together
            await all_blocked()
            got = [await queue.get() for _ in range(3)]
            for _ in got:
                queue.task_done()
    assert got == [1, 2, 3]
