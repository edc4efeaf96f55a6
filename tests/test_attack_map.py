"""Attacks on WorkQueue.map: its reader, retries and holds interleaved.

- cancelled at every suspension: a map whose items fail and wait in the delay
  line, one of them holding the rate limiter (RetryAfter), read from a plain
  iterable (by the reader itself) or an async generator (by a feed task), in
  input order or as they come;
- an early ``break`` after each outcome, in a queue the map opened and in one
  the caller opened (whose leftovers then run);
- two maps on one queue: the second, started at every suspension of the
  first, is refused, or both keep their books;
- sources that raise or must be closed, sync and async.

Every drawn item ends processed or unprocessed, once; the books are checked at
every suspension (tests/watch.py); no task is left behind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import anyio
import pytest
from anyio import CapacityLimiter
from watch import Watch, assert_accounted, sweep, tasks, watching

from sluicegate import (
    QueueStateError,
    QueueStatus,
    RateLimiter,
    RetryAfter,
    RetryPolicy,
    WorkQueue,
)

GUARD = 10
POLICY = RetryPolicy(attempts=3, backoff=0.2, jitter=False)
N = 8


pytestmark = pytest.mark.usefixtures("quiet_worker_errors")  # items fail on purpose


class Plan:
    """A worker function with outcomes known by item: by ``item % 5``, 0 fails
    once, 1 fails twice, 2 fails every time, 3 succeeds, 4 raises
    RetryAfter(0.3) once. `done` counts final outcomes (a success, or a failure
    with no attempt left under POLICY); each call takes ``item % 3``
    checkpoints first."""

    FAILS = (1, 2, 99, 0, 1)

    def __init__(self) -> None:
        self.calls: Counter[int] = Counter()
        self.done: Counter[int] = Counter()

    async def work(self, item: int) -> int:
        self.calls[item] += 1
        attempt = self.calls[item]
        for _ in range(item % 3):
            await anyio.lowlevel.checkpoint()
        if attempt <= self.FAILS[item % 5]:
            if attempt >= POLICY.attempts:
                self.done[item] += 1  # final: no await before the queue settles it
            if item % 5 == 4:
                raise RetryAfter(0.3)
            raise KeyError(item)
        self.done[item] += 1
        return item


class Drawn(Iterator[int]):
    """A plain source: remembers what was drawn."""

    def __init__(self, items: Iterable[int]) -> None:
        self._items = iter(items)
        self.drawn: list[int] = []
        self.closed = False

    def __next__(self) -> int:
        item = next(self._items)
        self.drawn.append(item)
        return item


class AsyncDrawn:
    """An async generator source: remembers what was drawn, and whether its
    ``finally`` ran."""

    def __init__(self, items: Iterable[int]) -> None:
        self.drawn: list[int] = []
        self.closed = False
        self.gen = self._gen(list(items))

    async def _gen(self, items: list[int]) -> AsyncIterator[int]:
        try:
            for item in items:
                if item % 2:
                    await anyio.lowlevel.checkpoint()
                self.drawn.append(item)
                yield item
        finally:
            self.closed = True


def source(kind: str, items: Iterable[int]) -> tuple[Any, Drawn | AsyncDrawn]:
    """What to give map, and what remembers the draws."""
    if kind == "plain":
        plain = Drawn(items)
        return plain, plain
    agen = AsyncDrawn(items)
    return agen.gen, agen


def new_queue(watch: Watch) -> WorkQueue[int]:
    queue: WorkQueue[int] = WorkQueue(
        maxsize=3,
        clock=watch.clock,
        rate_limiter=RateLimiter(50, 1, burst=5, clock=watch.clock),
        retry=POLICY,
    )
    watch.watch(queue)
    return queue


def check_outcomes(yielded: list[int], plan: Plan) -> None:
    """Each outcome yielded once, and only for an item that was processed."""
    assert len(yielded) == len(set(yielded)), yielded
    assert set(yielded) <= set(plan.done), (yielded, plan.done)


KINDS = ["plain", "async"]


# -- cancelled at every suspension ---------------------------------------------


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_map_cancelled_at_every_suspension_loses_nothing(
    kind: str, ordered: bool
) -> None:
    async def scenario(watch: Watch, n: int | None) -> None:
        queue = new_queue(watch)
        plan = Plan()
        items, drawn = source(kind, range(N))
        yielded: list[int] = []
        before = tasks()
        with watch.cancelled_at(n) as scope:
            async with queue.map(
                plan.work, items, num_workers=2, ordered=ordered, window=4
            ) as results:
                async for outcome in results:
                    yielded.append(outcome.item)
        assert tasks() == before
        assert_accounted(queue, drawn.drawn, plan.done)
        check_outcomes(yielded, plan)
        if not scope.cancelled_caught:
            expected = list(range(N))
            assert (yielded if ordered else sorted(yielded)) == expected
        if kind == "async" and drawn.drawn:
            assert drawn.closed

    await sweep(scenario)


async def test_a_capacity_limited_map_cancelled_anywhere_returns_tokens() -> None:
    """Two maps borrow from one CapacityLimiter; one is cancelled at each of its
    suspensions in turn: nothing is lost, at most two calls ever run at once,
    and every token is back once both have ended."""

    async def scenario(watch: Watch, n: int | None) -> None:
        limiter = CapacityLimiter(2)
        running = most = 0

        async def call(item: int) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                for _ in range(item % 3):
                    await anyio.lowlevel.checkpoint()
            finally:
                running -= 1
            return item

        first = WorkQueue[int](
            maxsize=3, concurrency_limit=limiter, clock=watch.clock, retry=POLICY
        )
        other = WorkQueue[int](maxsize=3, concurrency_limit=limiter, clock=watch.clock)
        watch.watch(first)
        watch.watch(other)
        plan = Plan()
        items, drawn = source("plain", range(N))
        yielded: list[int] = []

        async def drain_other() -> None:
            async with other.map(call, range(N), num_workers=3) as results:
                async for _ in results:
                    pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain_other)
            with watch.cancelled_at(n):
                async with first.map(plan.work, items, num_workers=3) as results:
                    async for outcome in results:
                        yielded.append(outcome.item)
        assert_accounted(first, drawn.drawn, plan.done)
        check_outcomes(yielded, plan)
        assert other.metrics["processed"] == N
        assert most <= 2
        assert limiter.borrowed_tokens == 0

    await sweep(scenario)


@pytest.mark.parametrize("timeout", [None, 0], ids=["stop", "stop(0)"])
@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_stop_at_every_suspension_of_a_map_ends_it_with_every_outcome(
    kind: str, ordered: bool, timeout: float | None
) -> None:
    """Another task stops the queue at each suspension of a map: the map ends
    normally, with one outcome for each item processed and none for an item
    listed unprocessed; nothing is drawn once the stop has begun."""

    async def scenario(watch: Watch, n: int | None) -> None:
        queue = new_queue(watch)
        plan = Plan()
        items, drawn = source(kind, range(N))
        yielded: list[int] = []
        drawn_at_stop: list[int] = []
        before = tasks()
        async with anyio.create_task_group() as tg:

            async def stopping() -> None:
                # The stop begins (STOPPING) before this task first awaits;
                # it may come after the reader is done, too.
                if running:
                    drawn_at_stop.append(len(drawn.drawn))
                await queue.stop(timeout)

            def stop() -> None:
                tg.start_soon(stopping)

            running = True
            async with queue.map(
                plan.work, items, num_workers=2, ordered=ordered, window=4
            ) as results:
                with watch.at(n, stop):
                    async for outcome in results:
                        yielded.append(outcome.item)
                    running = False  # the reader is done: what comes is after it
        assert tasks() == before
        assert_accounted(queue, drawn.drawn, plan.done)
        check_outcomes(yielded, plan)
        # Every item processed got its outcome, also those the stop let finish.
        assert sorted(yielded) == sorted(plan.done), (yielded, plan.done)
        if drawn_at_stop:
            assert len(drawn.drawn) == drawn_at_stop[0]
            assert results.stopped
            assert results.unprocessed == len(queue.unprocessed)
        if ordered:
            assert yielded == sorted(yielded)

    await sweep(scenario)


# -- an early break -------------------------------------------------------------


async def break_after(k: int, kind: str, *, ordered: bool, opened: str) -> None:
    """Leave a map's ``async for`` after ``k`` outcomes; check what is left."""
    async with watching() as watch:
        queue = new_queue(watch)
        plan = Plan()
        items, drawn = source(kind, range(N))
        yielded: list[int] = []
        before = tasks()

        async def read() -> None:
            async with queue.map(
                plan.work, items, num_workers=2, ordered=ordered, window=4
            ) as results:
                async for outcome in results:
                    if len(yielded) == k:
                        break
                    yielded.append(outcome.item)

        if opened == "by-map":
            await read()
        else:
            async with queue:
                await read()
                assert queue.status is QueueStatus.PROCESSING
                assert queue.worker_count == 0
                await queue.process(plan.work, 2)  # the leftovers run
        assert tasks() == before
    assert len(yielded) == k
    if ordered:
        assert yielded == list(range(k))
    assert_accounted(queue, drawn.drawn, plan.done)
    check_outcomes(yielded, plan)
    if opened == "by-caller":
        # Only what was cancelled in flight (two workers) is unprocessed,
        # and an item the feed task held, waiting for room.
        assert len(queue.unprocessed) <= 3
    if kind == "async":
        assert drawn.closed


@pytest.mark.parametrize("opened", ["by-map", "by-caller"])
@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_break_after_each_outcome_loses_nothing(
    kind: str, ordered: bool, opened: str
) -> None:
    """Leave the ``async for`` after k outcomes, for every k. A queue the map
    opened is stopped; in one the caller opened, what the map left (buffered,
    delayed) stays and runs in the caller's workers afterwards."""
    for k in range(N):
        with anyio.fail_after(GUARD):
            await break_after(k, kind, ordered=ordered, opened=opened)


# -- two maps on one queue ------------------------------------------------------


@pytest.mark.parametrize("opened", ["by-map", "by-caller"])
async def test_a_second_map_started_at_every_suspension_of_the_first(
    opened: str,
) -> None:
    """A second map on the same queue, entered at each suspension of the
    first: refused with QueueStateError while the first has workers; else it
    runs. The first always yields all its outcomes; neither yields the
    other's; every item drawn by either ends processed or unprocessed."""

    async def scenario(watch: Watch, n: int | None) -> None:
        queue = new_queue(watch)
        plan = Plan()
        first, first_drawn = source("plain", range(N))
        second, second_drawn = source("async", range(100, 100 + N))
        got: dict[str, list[int]] = {"first": [], "second": []}
        refused: list[QueueStateError] = []
        ended: list[QueueStateError] = []
        found: list[QueueStatus] = []  # the queue's status as the second came

        async def second_map() -> None:
            entered = False
            found.append(queue.status)
            try:
                async with queue.map(plan.work, second, num_workers=2) as results:
                    entered = True
                    async for outcome in results:
                        got["second"].append(outcome.item)
            except QueueStateError as exc:
                (ended if entered else refused).append(exc)

        async def both() -> None:
            async with anyio.create_task_group() as tg:
                with watch.at(n, lambda: tg.start_soon(second_map)):
                    async with queue.map(plan.work, first, num_workers=2) as results:
                        async for outcome in results:
                            got["first"].append(outcome.item)

        before = tasks()
        if opened == "by-map":
            await both()
        else:
            async with queue:
                await both()
        assert tasks() == before
        assert sorted(got["first"]) == list(range(N))
        assert set(got["second"]) <= set(range(100, 100 + N))
        if refused:
            assert got["second"] == []
        elif found and (opened == "by-caller" or found == [QueueStatus.STOPPED]):
            # It ran in a queue that stayed open, or in one it opened itself
            # once the first had closed: to the end. (Otherwise the first
            # map's exit stopped the queue under it: only the books hold.)
            assert sorted(got["second"]) == list(range(100, 100 + N))
        if opened == "by-caller":
            assert ended == []
        if queue.status is not QueueStatus.STOPPED:
            await queue.stop()
        assert_accounted(queue, first_drawn.drawn + second_drawn.drawn, plan.done)
        check_outcomes(got["first"] + got["second"], plan)

    await sweep(scenario)


async def test_two_maps_one_after_the_other_keep_one_set_of_books() -> None:
    with anyio.fail_after(GUARD):
        async with watching() as watch:
            queue = new_queue(watch)
            plan = Plan()
            for start in (0, 100):
                async with queue.map(plan.work, range(start, start + N)) as results:
                    got = sorted([outcome.item async for outcome in results])
                assert got == list(range(start, start + N))
                assert queue.status is QueueStatus.STOPPED
    assert_accounted(queue, [*range(N), *range(100, 100 + N)], plan.done)


# -- sources that raise or must be closed --------------------------------------


class SourceError(Exception):
    pass


def raising_plain(after: int) -> Iterator[int]:
    yield from range(after)
    raise SourceError(after)


async def raising_async(after: int, closed: list[bool]) -> AsyncIterator[int]:
    try:
        for item in range(after):
            await anyio.lowlevel.checkpoint()
            yield item
        raise SourceError(after)
    finally:
        closed.append(True)


@pytest.mark.parametrize("after", [0, 1, 5])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_source_that_raises_while_items_wait_for_retries(
    kind: str, after: int
) -> None:
    """The source fails after ``after`` items, some of them failing and
    delayed: the error comes out of the block as raised, the queue the map
    opened is stopped, and each item it gave is processed or unprocessed."""
    closed: list[bool] = []
    plan = Plan()
    items: Any = (
        raising_plain(after) if kind == "plain" else raising_async(after, closed)
    )
    yielded: list[int] = []
    with anyio.fail_after(GUARD):
        async with watching() as watch:
            queue = new_queue(watch)
            before = tasks()
            with pytest.raises(SourceError):
                async with queue.map(plan.work, items, num_workers=2) as results:
                    async for outcome in results:
                        yielded.append(outcome.item)
            assert tasks() == before
    assert_accounted(queue, range(after), plan.done)
    check_outcomes(yielded, plan)
    if kind == "async":
        assert closed == [True]


class ClosableAsync:
    """An async iterator (not a generator) with an ``aclose``."""

    def __init__(self) -> None:
        self.next = 0
        self.closed = 0

    def __aiter__(self) -> ClosableAsync:
        return self

    async def __anext__(self) -> int:
        await anyio.lowlevel.checkpoint()
        self.next += 1
        return self.next - 1

    async def aclose(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("how", ["break", "raise", "cancel"])
async def test_an_endless_async_iterator_is_closed_once_the_map_ends(how: str) -> None:
    """Left by a break, by a failure with errors="raise", or by a cancelled
    scope: the map stops reading and closes the iterator, once."""
    plan = Plan()
    endless = ClosableAsync()
    with anyio.fail_after(GUARD):
        async with watching() as watch:
            queue = new_queue(watch)
            with anyio.CancelScope() as scope:
                try:
                    async with queue.map(
                        plan.work, endless, num_workers=2, errors="raise"
                    ) as results:
                        async for outcome in results:
                            if how == "break" and outcome.item >= 3:
                                break
                            if how == "cancel" and outcome.item >= 3:
                                scope.cancel()
                except KeyError:
                    assert how == "raise"  # item 2 fails every time
    assert endless.closed == 1
    assert_accounted(queue, range(endless.next), plan.done)
