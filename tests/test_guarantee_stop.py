# mypy: disable-error-code="comparison-overlap"
"""What stop does: refuse, wake, let busy workers finish, list what is left.

New puts are refused and waiters woken; busy workers finish, or are cancelled
after the timeout; one stop is shared by every caller; leaving ``async with``;
a stop under a map or a batch loses no outcome (docs/guarantees.rst, "What stop
does").
"""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from fake_clock import FakeClock, all_blocked
from support import (
    GUARD,
    Recorder,
    Source,
    assert_books,
    assert_settled,
    double,
    lost_wake,
    noop,
    set_when_blocked,
)

from sluicegate import (
    BoundedQueue,
    Outcome,
    QueueStateError,
    QueueStatus,
    RetryPolicy,
    WorkQueue,
)
from sluicegate._results import MapResults

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

# -- stop(): puts refused, waiters woken, busy workers finish --------------------------


async def test_stop_without_timeout_waits_for_held_items() -> None:
    release = anyio.Event()
    started = anyio.Event()

    async def work(item: int) -> None:
        started.set()
        await release.wait()

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int]() as queue:
            await queue.start_workers(work, 1)
            await queue.put(1)
            await queue.put(2)
            await started.wait()
            async with anyio.create_task_group() as tg:
                tg.start_soon(queue.stop)
                await anyio.wait_all_tasks_blocked()
                assert queue.status is QueueStatus.STOPPING
                with pytest.raises(QueueStateError, match="stopping"):
                    await queue.put(3)
                release.set()
    assert queue.metrics["processed"] == 1
    assert queue.unprocessed == [2]


async def test_stop_refuses_blocked_producers() -> None:
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1)
    await queue.start()
    await queue.put(1)
    errors: list[Exception] = []

    async def producer() -> None:
        try:
            await queue.put(2, timeout=None)
        except QueueStateError as exc:
            errors.append(exc)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
            await queue.stop()
    assert len(errors) == 1
    assert queue.unprocessed == [1]
    assert queue.metrics["enqueued"] == 1


async def test_stop_wakes_a_blocked_get() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:

            async def consumer() -> None:
                with pytest.raises(QueueStateError):
                    await queue.get()

            tg.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()
            await queue.stop()


@pytest.mark.plan("R2-8")
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


@pytest.mark.plan("R2-8")
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


# -- stop(timeout): calls still running are cancelled ----------------------------------


async def test_stop_timeout_cancels_a_hanging_worker() -> None:
    started = anyio.Event()
    finished: list[int] = []

    async def work(item: int) -> None:
        if item == 0:
            started.set()
            await anyio.sleep_forever()
        finished.append(item)

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int]() as queue:
            await queue.start_workers(work, 1)
            for i in range(3):
                await queue.put(i)
            await started.wait()
            await queue.stop(timeout=0.05)
            assert queue.status is QueueStatus.STOPPED
            assert queue.worker_count == 0
    assert finished == []
    assert sorted(queue.unprocessed) == [0, 1, 2]
    assert queue.metrics["processed"] == 0
    assert_books(queue)


async def test_worker_that_never_returns_during_stop_timeout() -> None:
    async def work(item: int) -> None:
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue(maxsize=10)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 3)
            for i in range(8):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()
            await queue.stop(timeout=0.01)
            assert_settled(queue, accepted=8)
            await queue.join()
    assert sorted(queue.unprocessed) == list(range(8))
    assert queue.metrics["processed"] == 0


async def test_worker_shielding_itself_past_the_stop_timeout() -> None:
    """A worker that shields its item finishes it: it is processed, not lost."""
    release = anyio.Event()

    async def work(item: int) -> None:
        with anyio.CancelScope(shield=True):
            await release.wait()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.start_workers(work, 1)
            await queue.put(1)
            await queue.put(2)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(queue.stop, 0.01)
            await anyio.sleep(0.05)
            assert queue.status is QueueStatus.STOPPING
            release.set()
    assert queue.metrics["processed"] == 1
    assert queue.unprocessed == [2]
    assert_settled(queue, accepted=2)


async def test_stop_validates_its_timeout() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    with pytest.raises(ValueError, match="timeout must be >= 0 seconds, got -1"):
        await queue.stop(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        await queue.stop_workers(timeout=math.nan)
    assert queue.status is QueueStatus.PROCESSING
    await queue.stop()


# -- stop from a worker, from several tasks at once, and a cancelled stop --------------


async def test_worker_may_stop_its_own_queue() -> None:
    async def work(item: int) -> None:
        if item == 1:
            await queue.stop()

    queue: BoundedQueue[int] = BoundedQueue(timeout=None)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 2)
            for i in range(3):
                await queue.put(i)
    assert queue.status is QueueStatus.STOPPED
    assert_books(queue)


async def test_worker_stopping_its_queue_while_another_waits_on_the_limiter() -> None:
    """The waiting worker holds nothing and must not keep stop() waiting."""
    go = anyio.Event()

    async def work(item: int) -> None:
        if item == 0:
            await go.wait()
            await queue.stop()

    queue: BoundedQueue[int] = BoundedQueue(concurrency_limit=1, timeout=None)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 2)
            for i in range(3):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()  # one holds the token, one waits
            go.set()
    assert queue.status is QueueStatus.STOPPED
    assert queue.metrics["processed"] == 1
    assert queue.unprocessed == [1, 2]


@pytest.mark.plan("R2-3")
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


@pytest.mark.plan("R2-3")
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


async def test_a_late_stop_from_an_earlier_run_leaves_the_new_run_running() -> None:
    """Regression: two tasks stop the queue at once; the first to return starts
    it again and puts an item. The other stop, returning a moment later, belongs
    to the old run and must not stop the new one."""
    release = anyio.Event()
    queue: BoundedQueue[int] = BoundedQueue()
    restarted = False

    async def work(item: int) -> None:
        await release.wait()

    async def stop_then_restart_if_first() -> None:
        nonlocal restarted
        await queue.stop()
        if not restarted:
            restarted = True
            await queue.start()
            await queue.put(99)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, 1, task_group=tg)
            await queue.put(1)
            await all_blocked()
            tg.start_soon(stop_then_restart_if_first)
            tg.start_soon(stop_then_restart_if_first)
            await all_blocked()
            release.set()
        assert queue.status is QueueStatus.PROCESSING, queue.status
        assert queue.unprocessed == [], queue.unprocessed
        assert queue.size == 1  # 99 waits for the new run's workers
        await queue.stop()


async def test_stop_inside_fail_after() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    async with anyio.create_task_group() as tg:
        await queue.start()
        await queue.start_workers(noop, 2, task_group=tg)
        await queue.put(1)
        with anyio.fail_after(GUARD):
            await queue.join()
        with anyio.fail_after(GUARD):
            await queue.stop()
    assert queue.status is QueueStatus.STOPPED
    assert queue.metrics["processed"] == 1


async def test_stop_cancelled_by_fail_after_still_ends_workers() -> None:
    started = anyio.Event()

    async def hang(item: int) -> None:
        started.set()
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue()
    async with anyio.create_task_group() as tg:
        await queue.start()
        await queue.start_workers(hang, 1, task_group=tg)
        await queue.put(1)
        await queue.put(2)
        await started.wait()
        with pytest.raises(TimeoutError), anyio.fail_after(0.05):
            await queue.stop()
    # The task group has exited, so the worker has ended: cancelled in flight.
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0
    assert sorted(queue.unprocessed) == [1, 2]
    assert queue.metrics["processed"] == 0
    assert_books(queue)


async def test_a_worker_whose_stop_is_cancelled_finishes_its_own_item() -> None:
    """Regression: a worker calls stop() inside its own timeout scope, and the
    stop, waiting for a busy worker, is cancelled. The other workers are
    cancelled as the docs say, but the caller goes on with its item, which must
    count as processed, not unprocessed."""
    go = anyio.Event()
    release = anyio.Event()
    stop_scopes: list[anyio.CancelScope] = []
    finished: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue()

    async def work(item: int) -> None:
        if item == 0:
            await go.wait()
            with anyio.CancelScope() as scope:  # as move_on_after's would expire
                stop_scopes.append(scope)
                await queue.stop()  # waits for the worker of item 1
            await anyio.lowlevel.checkpoint()
        else:
            await release.wait()
        finished.append(item)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, 2, task_group=tg)
            await queue.put(0)
            await queue.put(1)
            await all_blocked()  # both workers busy
            go.set()
            await all_blocked()  # the stop waits for item 1
            assert queue.status is QueueStatus.STOPPING
            stop_scopes[0].cancel()
            await all_blocked()
            release.set()
    assert_books(queue)
    assert finished == [0]
    assert queue.unprocessed == [1]
    assert queue.metrics["processed"] == 1
    assert queue.status is QueueStatus.STOPPED


# -- stop_workers: the workers end, the queue runs on ----------------------------------


@pytest.mark.plan("UT-15")
async def test_stop_workers_ends_them_and_keeps_the_queue_running() -> None:
    async with BoundedQueue[int]() as queue:
        await queue.start_workers(noop, 4)
        await anyio.wait_all_tasks_blocked()
        await queue.stop_workers()
        assert queue.worker_count == 0
        assert queue.status is QueueStatus.PROCESSING
        await queue.put(1)  # no worker takes it
        await anyio.wait_all_tasks_blocked()
        assert queue.size == 1
        await queue.start_workers(noop, 1)
    assert queue.metrics["processed"] == 1


async def test_stop_workers_lets_held_items_finish() -> None:
    started = anyio.Event()
    release = anyio.Event()

    async def work(item: int) -> None:
        started.set()
        await release.wait()

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int]() as queue:
            await queue.start_workers(work, 1)
            await queue.put(1)
            await queue.put(2)
            await started.wait()
            async with anyio.create_task_group() as tg:
                tg.start_soon(queue.stop_workers)
                await anyio.wait_all_tasks_blocked()
                assert queue.worker_count == 1
                release.set()
            assert queue.worker_count == 0
            assert queue.metrics["processed"] == 1
            assert queue.size == 1  # the worker took no new item
            await queue.stop()
    assert queue.unprocessed == [2]
    assert_books(queue)


async def test_stop_workers_does_not_swallow_a_parked_gets_wakeup() -> None:
    """Regression: stop_workers ends idle workers; an item put before they have
    gone must still wake the get() parked beside them, not stay buffered."""

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()

    async def getter(queue: BoundedQueue[int]) -> None:
        try:
            while True:
                await queue.get()
                queue.task_done()
        except QueueStateError:
            pass

    stuck = 0
    for _ in range(20):
        queue: BoundedQueue[int] = BoundedQueue()
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:
                await queue.start()
                await queue.start_workers(work, 2, task_group=tg)
                tg.start_soon(getter, queue)
                await all_blocked()
                tg.start_soon(queue.stop_workers)
                await anyio.lowlevel.checkpoint()
                await queue.put(1)
                await all_blocked()
                if lost_wake(queue):
                    stuck += 1
                await queue.stop()
    assert stuck == 0, f"{stuck}/20 runs: item buffered while get() stayed parked"


# -- leaving async with ----------------------------------------------------------------


async def _get_in(queue: BoundedQueue[int], scope: anyio.CancelScope) -> None:
    with scope:
        await queue.get()


async def test_async_with_waits_for_all_items() -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        await anyio.sleep(0.001)
        seen.append(item)

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](maxsize=3, timeout=None) as queue:
            assert queue.status is QueueStatus.PROCESSING
            await queue.start_workers(work, 2)
            for i in range(10):
                await queue.put(i)
    assert sorted(seen) == list(range(10))
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0


@pytest.mark.plan("R2-9")
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


@pytest.mark.plan("R2-9")
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


async def test_async_with_exit_does_not_wait_for_items_no_worker_will_take() -> None:
    async def work(item: int) -> None:
        if item == 0:
            await queue.stop_workers()

    queue: BoundedQueue[int] = BoundedQueue(timeout=None)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 1)
            for i in range(4):
                await queue.put(i)
    assert queue.metrics["processed"] == 1
    assert queue.unprocessed == [1, 2, 3]


async def test_exception_leaving_async_with_cancels_and_records() -> None:
    started = anyio.Event()

    async def work(item: int) -> None:
        started.set()
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD), pytest.raises(ValueError, match="boom"):
        async with queue:
            await queue.start_workers(work, 1)
            for i in range(3):
                await queue.put(i)
            await started.wait()
            raise ValueError("boom")
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0
    assert sorted(queue.unprocessed) == [0, 1, 2]
    assert queue.metrics["processed"] == 0
    assert_books(queue)


async def test_cancelling_the_async_with_from_outside() -> None:
    async def work(item: int) -> None:
        await anyio.sleep_forever()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        with anyio.CancelScope() as scope:
            async with queue:
                await queue.start_workers(work, 2)
                for i in range(4):
                    await queue.put(i)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert queue.status is QueueStatus.STOPPED
    assert sorted(queue.unprocessed) == [0, 1, 2, 3]
    assert_books(queue)


async def test_exception_chain_survives_the_async_with() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    with pytest.raises(ValueError, match="outer") as info:
        async with queue:
            try:
                raise KeyError("inner")
            except KeyError as exc:
                raise ValueError("outer") from exc
    assert isinstance(info.value.__cause__, KeyError)
    assert not isinstance(info.value.__context__, BaseExceptionGroup)


async def test_own_single_exception_group_comes_out_as_raised() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    with pytest.raises(ExceptionGroup) as info:
        async with queue:
            raise ExceptionGroup("mine", [ValueError()])
    assert info.value.message == "mine"


# -- a stop under a map: the calls running finish, and their outcomes come ---------


N = 100
ITEM_TIMEOUT = 1.0
KINDS = ["plain", "async"]
WHO = ["reader", "other task"]


class Draws:
    """range(N) as a plain or an async generator, counting the items drawn."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.drawn = 0
        self.closed = False
        self.items: Any = self._plain() if kind == "plain" else self._async()

    def _plain(self) -> Iterator[int]:
        for i in range(N):
            self.drawn += 1
            yield i

    async def _async(self) -> AsyncIterator[int]:
        try:
            for i in range(N):
                self.drawn += 1
                yield i
        finally:
            self.closed = True


class Stop:
    """What the test saw when the stop began."""

    drawn = -1
    running: frozenset[int] = frozenset()


def check_after_stop(
    queue: WorkQueue[int],
    results: MapResults[int, Any],
    outcomes: list[Outcome[int, Any]],
    source: Draws,
    stop: Stop,
    *,
    ordered: bool,
) -> None:
    """The books of a map that a stop ended: one outcome per processed item,
    none for an unprocessed one, nothing drawn after the stop began."""
    items = [outcome.item for outcome in outcomes]
    unprocessed = queue.unprocessed
    assert len(items) == len(set(items)), "an item with two outcomes"
    assert len(items) == queue.metrics["processed"]
    assert not set(items) & set(unprocessed), "an outcome for an unprocessed item"
    assert sorted(items + unprocessed) == list(range(source.drawn))
    assert source.drawn == stop.drawn, "drawn from the source after the stop began"
    assert queue.metrics["enqueued"] == source.drawn
    assert results.stopped
    assert results.unprocessed == len(unprocessed)
    assert queue.status is QueueStatus.STOPPED
    if source.kind == "async":
        assert source.closed, "the async generator must be closed"
    if ordered:
        assert items == sorted(items)
    assert_books(queue)


def kind_of(item: int) -> str:
    return ("ok", "fail", "timeout")[item % 3]


async def _after(event: anyio.Event, func: Any, *args: Any) -> None:
    await event.wait()
    await func(*args)


async def _echo(item: int) -> int:
    await anyio.lowlevel.checkpoint()
    return item


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_stop_under_a_map_yields_the_calls_it_lets_finish(
    kind: str, who: str, ordered: bool
) -> None:
    """stop() lets the calls running finish: a success, a failure and a timeout
    finish during the stop, and each comes out of the reader, which then ends."""
    clock = FakeClock()
    go = anyio.Event()  # items 0 and 1
    release = anyio.Event()  # the rest
    second = anyio.Event()
    running: set[int] = set()

    async def work(item: int) -> int:
        if item < 2:
            await go.wait()
            return item
        running.add(item)
        await release.wait()
        running.discard(item)
        if kind_of(item) == "fail":
            raise ValueError(item)
        if kind_of(item) == "timeout":
            await clock.sleep_until(clock.current_time() + 100)
        return item

    async def let_them_finish() -> None:
        await all_blocked()  # the stop waits for the calls it lets finish
        release.set()
        await all_blocked()
        clock.advance(ITEM_TIMEOUT + 1)  # the slow one times out

    async def stop_it(tg: anyio.abc.TaskGroup) -> None:
        await all_blocked()
        stop.drawn = source.drawn
        stop.running = frozenset(running)
        tg.start_soon(let_them_finish)
        await queue.stop()

    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=4, clock=clock, item_timeout=ITEM_TIMEOUT)
    outcomes: list[Outcome[int, int]] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(set_when_blocked, go)
            if who == "other task":
                tg.start_soon(lambda: _after(second, stop_it, tg))
            async with queue.map(
                work, source.items, ordered=ordered, num_workers=3
            ) as results:
                async for outcome in results:
                    outcomes.append(outcome)
                    if len(outcomes) == 2:
                        second.set()
                        if who == "reader":
                            await stop_it(tg)
    assert stop.running == {2, 3, 4}  # one call of each kind
    by_item = {outcome.item: outcome for outcome in outcomes}
    for item in stop.running:
        outcome = by_item[item]  # each call the stop let finish has its outcome
        if kind_of(item) == "ok":
            assert outcome.value == item
        elif kind_of(item) == "fail":
            assert isinstance(outcome.error, ValueError)
        else:
            assert isinstance(outcome.error, TimeoutError)
    assert len(queue.unprocessed) > 0  # what was buffered at the stop
    check_after_stop(queue, results, outcomes, source, stop, ordered=ordered)


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_slow_reader_gets_every_outcome_after_another_task_stopped(
    kind: str, ordered: bool
) -> None:
    """The case of the issue: the reader is busy with one outcome while
    another task stops the queue; the outcomes that came meanwhile are all
    yielded after the stop has ended."""
    stopped = anyio.Event()

    async def stop_it() -> None:
        await all_blocked()  # the window is full of finished outcomes
        stop.drawn = source.drawn
        await queue.stop()
        stopped.set()

    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    outcomes: list[Outcome[int, int]] = []
    with anyio.fail_after(GUARD):
        async with (
            anyio.create_task_group() as tg,
            queue.map(_echo, source.items, ordered=ordered, num_workers=3) as results,
        ):
            async for outcome in results:
                outcomes.append(outcome)
                if len(outcomes) == 1:
                    tg.start_soon(stop_it)
                    await stopped.wait()  # a slow reader
                    assert queue.metrics["processed"] > 1
    check_after_stop(queue, results, outcomes, source, stop, ordered=ordered)


async def test_a_queue_stopped_under_a_map_loses_no_drawn_item() -> None:
    """Another task stops the queue while the reader reads a plain iterable:
    the reader ends normally, and every item it drew is processed (with its
    outcome yielded) or listed as unprocessed."""
    source = Source(1_000)
    queue: WorkQueue[int] = WorkQueue(maxsize=16)
    outcomes = 0
    with anyio.fail_after(GUARD):
        async with queue.map(double, source, num_workers=2) as results:
            async for _ in results:
                outcomes += 1
                if outcomes == 20:
                    await queue.stop()
    assert 20 <= queue.metrics["processed"] < 1_000
    assert outcomes == queue.metrics["processed"]
    assert source.drawn == queue.metrics["processed"] + len(queue.unprocessed)
    assert queue.metrics["enqueued"] == source.drawn
    assert results.stopped
    assert results.unprocessed == len(queue.unprocessed)


@pytest.mark.parametrize("ordered", [False, True])
async def test_the_reader_draws_nothing_from_a_stopped_queues_source(
    ordered: bool,
) -> None:
    """Once the queue is stopped, the reader ends without reading another item
    of a plain iterable (none is drawn only to be listed as unprocessed)."""
    source = Source(1_000)
    queue: WorkQueue[int] = WorkQueue(maxsize=16)
    drawn_at_stop = -1
    with anyio.fail_after(GUARD):
        async with queue.map(double, source, num_workers=2, ordered=ordered) as results:
            async for _ in results:
                if drawn_at_stop < 0:
                    await queue.stop()
                    drawn_at_stop = source.drawn
    assert source.drawn == drawn_at_stop
    assert source.drawn == queue.metrics["processed"] + len(queue.unprocessed)


# -- a stop under a map: stop(timeout) leaves the calls it cuts unprocessed ------------


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("kind", KINDS)
async def test_calls_a_timed_stop_cuts_short_are_unprocessed(
    kind: str, who: str, ordered: bool
) -> None:
    """Even items finish at once, odd ones never: stop(timeout=0) cuts the odd
    ones short. Every finished call's outcome still comes (ordered: skipping
    the positions of the cut ones); a cut call has none, and is unprocessed."""
    never = anyio.Event()
    first = anyio.Event()
    started: set[int] = set()
    finished: set[int] = set()

    async def work(item: int) -> int:
        started.add(item)
        if item % 2:
            await never.wait()
        finished.add(item)
        return item

    async def stop_it() -> None:
        await all_blocked()
        stop.drawn = source.drawn
        stop.running = frozenset(started - finished)
        await queue.stop(timeout=0)

    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    outcomes: list[Outcome[int, int]] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            if who == "other task":
                tg.start_soon(_after, first, stop_it)
            async with queue.map(
                work, source.items, ordered=ordered, num_workers=3
            ) as results:
                async for outcome in results:
                    outcomes.append(outcome)
                    if len(outcomes) == 1:
                        first.set()
                        if who == "reader":
                            await stop_it()
    items = {outcome.item for outcome in outcomes}
    assert items == finished  # every finished call, and only those
    assert stop.running, "no call was running at the stop"
    assert stop.running <= set(queue.unprocessed)  # cut: unprocessed
    assert queue.metrics["processed"] == len(finished)
    if ordered:
        # A position after a cut one came all the same.
        assert [o.item for o in outcomes][:2] == [0, 2]
    check_after_stop(queue, results, outcomes, source, stop, ordered=ordered)


# -- a stop under a map: from a worker, and in an open queue ---------------------------


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_worker_that_stops_the_queue_ends_the_map(
    kind: str, ordered: bool
) -> None:
    """A call that stops its own queue: its outcome comes, the map ends."""
    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=4)

    async def work(item: int) -> int:
        await anyio.lowlevel.checkpoint()
        if item == 10:
            stop.drawn = source.drawn
            await queue.stop()
        return item

    with anyio.fail_after(GUARD):
        async with queue.map(
            work, source.items, ordered=ordered, num_workers=3
        ) as results:
            outcomes = [outcome async for outcome in results]
    assert 10 in {outcome.item for outcome in outcomes}
    check_after_stop(queue, results, outcomes, source, stop, ordered=ordered)


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("kind", KINDS)
async def test_items_waiting_for_a_retry_at_a_stop_are_unprocessed(
    kind: str, ordered: bool
) -> None:
    """Odd items fail once and wait out a backoff the clock never reaches:
    the stop lists them as unprocessed, and the reader does not wait for them."""
    clock = FakeClock()
    failed_once: set[int] = set()

    async def work(item: int) -> int:
        await anyio.lowlevel.checkpoint()
        if item % 2 and item not in failed_once:
            failed_once.add(item)
            raise ConnectionError(item)
        return item

    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=8, clock=clock)
    policy = RetryPolicy(attempts=2, backoff=100, max_backoff=100, jitter=False)
    outcomes: list[Outcome[int, int]] = []
    with anyio.fail_after(GUARD):
        async with queue.map(
            work, source.items, ordered=ordered, num_workers=2, retry=policy
        ) as results:
            async for outcome in results:
                outcomes.append(outcome)
                if len(outcomes) == 1:
                    await all_blocked()  # the queue is full of delayed items
                    assert queue.delayed > 0
                    stop.drawn = source.drawn
                    await queue.stop()
    assert set(queue.unprocessed) >= failed_once  # none was called again
    assert all(outcome.item % 2 == 0 for outcome in outcomes)
    check_after_stop(queue, results, outcomes, source, stop, ordered=ordered)


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("kind", KINDS)
async def test_a_worker_that_stops_the_queue_then_fails_for_a_retry_ends_the_map(
    kind: str,
) -> None:
    """The call that stopped the queue fails after the queue is STOPPED, with
    a retry left: no run is left to retry it, so it is unprocessed, and the
    reader ends (it learns of it as that worker leaves)."""
    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    policy = RetryPolicy(attempts=3, backoff=1, jitter=False)

    async def work(item: int) -> int:
        await anyio.lowlevel.checkpoint()
        if item == 10:
            stop.drawn = source.drawn
            await queue.stop()
            await all_blocked()  # the reader has looked, and waits for this one
            raise ConnectionError(item)
        return item

    with anyio.fail_after(GUARD):
        async with queue.map(work, source.items, num_workers=3, retry=policy) as rs:
            outcomes = [outcome async for outcome in rs]
    assert 10 in queue.unprocessed
    check_after_stop(queue, rs, outcomes, source, stop, ordered=False)


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("kind", KINDS)
async def test_a_map_in_an_open_queue_stopped_under_it_ends_normally(
    kind: str,
) -> None:
    never = anyio.Event()

    async def work(item: int) -> int:
        if item >= 5:
            await never.wait()
        return item

    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    outcomes: list[Outcome[int, int]] = []
    with anyio.fail_after(GUARD):
        async with queue, queue.map(work, source.items, num_workers=2) as results:
            async for outcome in results:
                outcomes.append(outcome)
                if outcome.item == 4:
                    await all_blocked()
                    stop.drawn = source.drawn
                    await queue.stop(timeout=0)
    assert sorted(o.item for o in outcomes) == [0, 1, 2, 3, 4]
    check_after_stop(queue, results, outcomes, source, stop, ordered=False)


@pytest.mark.plan("issue 18: Deliver 1")
async def test_a_map_that_ends_before_a_stop_was_not_stopped() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue.map(_echo, range(10)) as results:
            outcomes = [outcome async for outcome in results]
            await queue.stop()
    assert len(outcomes) == 10
    assert not results.stopped
    assert results.unprocessed == 0


@pytest.mark.plan("issue 18: Deliver 1")
async def test_leaving_early_counts_the_items_left_in_unprocessed() -> None:
    never = anyio.Event()

    async def work(item: int) -> int:
        if item:
            await never.wait()
        return item

    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue.map(work, range(N), num_workers=2) as results:
            async for _ in results:
                break
    assert not results.stopped
    assert results.unprocessed == len(queue.unprocessed) > 0
    assert_books(queue)


# -- a stop under a batch: batch_process returns ---------------------------------------


def check_batch(queue: WorkQueue[int], source: Draws, stop: Stop) -> None:
    assert source.drawn == stop.drawn, "drawn from the source after the stop began"
    processed = queue.metrics["processed"]
    assert processed + len(queue.unprocessed) == source.drawn
    assert queue.metrics["enqueued"] == source.drawn
    assert queue.status is QueueStatus.STOPPED
    if source.kind == "async":
        assert source.closed, "the async generator must be closed"
    assert_books(queue)


async def _forever(item: int) -> None:
    await anyio.sleep_forever()


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("timeout", [None, 0])
@pytest.mark.parametrize("kind", KINDS)
async def test_batch_process_stopped_by_another_task_returns(
    kind: str, timeout: float | None
) -> None:
    release = anyio.Event()
    running: set[int] = set()
    done: list[int] = []

    async def work(item: int) -> None:
        running.add(item)
        await release.wait()
        done.append(item)

    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    returned = False

    async def batch() -> None:
        nonlocal returned
        await queue.batch_process(source.items, work, num_workers=2)
        returned = True

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(batch)
            await all_blocked()
            stop.drawn = source.drawn
            stop.running = frozenset(running)
            if timeout is None:
                tg.start_soon(set_when_blocked, release)
            await queue.stop(timeout)
    assert returned
    assert len(stop.running) == 2
    if timeout is None:
        assert sorted(done) == sorted(stop.running)  # they finished
    else:
        assert done == []
        assert stop.running <= set(queue.unprocessed)  # cut short
    assert queue.metrics["processed"] == len(done)
    check_batch(queue, source, stop)


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("kind", KINDS)
async def test_batch_process_whose_worker_stops_the_queue_returns(kind: str) -> None:
    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=4)

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        if item == 10:
            stop.drawn = source.drawn
            await queue.stop()

    with anyio.fail_after(GUARD):
        await queue.batch_process(source.items, work, num_workers=3)
    assert queue.metrics["processed"] > 10
    check_batch(queue, source, stop)


@pytest.mark.plan("issue 18: Deliver 1")
@pytest.mark.parametrize("kind", KINDS)
async def test_batch_process_in_an_open_queue_stopped_under_it_returns(
    kind: str,
) -> None:
    """The feeder waits to put an item it drew when the stop comes: that item
    is listed as unprocessed, and the batch returns."""
    source = Draws(kind)
    stop = Stop()
    queue: WorkQueue[int] = WorkQueue(maxsize=1)
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            tg.start_soon(queue.batch_process, source.items, _forever, 1)
            await all_blocked()
            stop.drawn = source.drawn
            await queue.stop(timeout=0)
    assert queue.metrics["processed"] == 0
    assert sorted(queue.unprocessed) == list(range(source.drawn))
    assert source.drawn == 3  # one cut, one buffered, one drawn and never put
    check_batch(queue, source, stop)


@pytest.mark.plan("R2-4")
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
