"""A stop under a running map or batch (issue 18, Deliver 1).

Once a stop begins nothing more is drawn from the source; the reader yields the
outcome of every call that finished (success, failure, timeout) and then ends
normally; items that never got one (buffered, cut by ``stop(timeout)``, read
but never put) are in ``queue.unprocessed`` and counted in
``results.unprocessed``. A batch returns after a stop instead of raising.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from books import assert_books
from fake_clock import FakeClock, all_blocked

from sluicegate import (
    Event,
    ExecutionStatus,
    Executor,
    Outcome,
    QueueConfig,
    QueueStatus,
    RetryPolicy,
    WorkQueue,
)
from sluicegate._results import MapResults

GUARD = 10
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


async def set_when_blocked(event: anyio.Event) -> None:
    await all_blocked()
    event.set()


# -- stop(): the calls running finish, and their outcomes come ------------------------


def kind_of(item: int) -> str:
    return ("ok", "fail", "timeout")[item % 3]


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


async def _after(event: anyio.Event, func: Any, *args: Any) -> None:
    await event.wait()
    await func(*args)


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


# -- stop(timeout): calls cut short are unprocessed -----------------------------------


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


# -- stop from a worker, and a map inside an open queue ---------------------------


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


async def test_a_map_that_ends_before_a_stop_was_not_stopped() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue.map(_echo, range(10)) as results:
            outcomes = [outcome async for outcome in results]
            await queue.stop()
    assert len(outcomes) == 10
    assert not results.stopped
    assert results.unprocessed == 0


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


async def _echo(item: int) -> int:
    await anyio.lowlevel.checkpoint()
    return item


# -- batch_process -----------------------------------------------------------------


def check_batch(queue: WorkQueue[int], source: Draws, stop: Stop) -> None:
    assert source.drawn == stop.drawn, "drawn from the source after the stop began"
    processed = queue.metrics["processed"]
    assert processed + len(queue.unprocessed) == source.drawn
    assert queue.metrics["enqueued"] == source.drawn
    assert queue.status is QueueStatus.STOPPED
    if source.kind == "async":
        assert source.closed, "the async generator must be closed"
    assert_books(queue)


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


async def _forever(item: int) -> None:
    await anyio.sleep_forever()


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
