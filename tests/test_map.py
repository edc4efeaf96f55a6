"""WorkQueue.map: outcomes streamed with backpressure, in order or as they come."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from fake_clock import FakeClock, all_blocked
from support import GUARD, assert_books

from sluicegate import (
    Outcome,
    QueueStateError,
    RetryPolicy,
    WorkQueue,
)


class Source(Iterator[int]):
    """range(n), remembering how many items were drawn."""

    def __init__(self, n: int) -> None:
        self._items = iter(range(n))
        self.drawn = 0

    def __next__(self) -> int:
        item = next(self._items)
        self.drawn += 1
        return item


async def double(item: int) -> int:
    await anyio.lowlevel.checkpoint()
    return item * 2


async def test_every_outcome_pairs_an_item_with_its_value() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue.map(double, range(50), num_workers=3) as results:
            outcomes = [outcome async for outcome in results]
    assert sorted((o.item, o.value) for o in outcomes) == [
        (i, 2 * i) for i in range(50)
    ]
    assert all(o.ok and o.attempts == 1 and o.error is None for o in outcomes)
    assert queue.status.value == "stopped"  # the map opened it, and closed it
    assert queue.metrics["processed"] == 50


async def test_ordered_outcomes_come_in_input_order() -> None:
    clock = FakeClock()

    async def slower_for_small(item: int) -> int:
        await clock.sleep_until(clock.current_time() + (10 - item % 10))
        return item

    queue: WorkQueue[int] = WorkQueue(maxsize=4, clock=clock)
    seen: list[int] = []
    finish_order: list[int] = []

    async def record(item: int) -> int:
        value = await slower_for_small(item)
        finish_order.append(item)
        return value

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with queue.map(record, range(30), ordered=True, num_workers=5) as rs:
                seen = [outcome.item async for outcome in rs]
            tg.cancel_scope.cancel()
    assert seen == list(range(30))
    assert finish_order != seen  # they did finish out of order


async def test_the_same_object_twice_in_order() -> None:
    token = object()
    items = [token, 1, token, 2, token]

    async def echo(item: object) -> object:
        await anyio.lowlevel.checkpoint()
        return item

    queue: WorkQueue[object] = WorkQueue(maxsize=2)
    with anyio.fail_after(GUARD):
        async with queue.map(echo, items, ordered=True, num_workers=3) as results:
            seen = [outcome.item async for outcome in results]
    assert seen == items


async def test_collected_failures_are_yielded_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails(item: int) -> int:
        raise ValueError(item)

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD), caplog.at_level(logging.DEBUG, "sluicegate"):
        async with queue.map(fails, range(3)) as results:
            errors = [outcome.error async for outcome in results]
    assert len(errors) == 3
    assert caplog.records == []  # the reader has them: the log stays quiet


async def test_collected_failures_are_yielded_and_unwrap_raises() -> None:
    async def picky(item: int) -> int:
        if item % 4 == 0:
            raise ValueError(item)
        return item

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        async with queue.map(picky, range(12), ordered=True) as results:
            outcomes = [outcome async for outcome in results]
    failed = [o for o in outcomes if not o.ok]
    assert [o.item for o in failed] == [0, 4, 8]
    with pytest.raises(ValueError, match="4"):
        failed[1].unwrap()
    assert outcomes[1].unwrap() == 1
    assert queue.metrics["errors"] == 3


async def test_raise_policy_raises_the_first_failure_and_cancels_the_rest() -> None:
    gate = anyio.Event()

    async def work(item: int) -> int:
        if item == 3:
            raise KeyError(item)
        if item > 3:
            await gate.wait()  # never set: these are cancelled
        return item

    source = Source(100)
    queue: WorkQueue[int] = WorkQueue(maxsize=5)
    got: list[int] = []
    with anyio.fail_after(GUARD), pytest.raises(KeyError, match="3"):
        async with queue.map(work, source, errors="raise", num_workers=3) as results:
            async for outcome in results:
                got.append(outcome.item)
    assert sorted(got) == [0, 1, 2]
    m = queue.metrics
    assert m["errors"] == 1
    assert m["processed"] + m["unprocessed"] == source.drawn  # nothing lost
    assert source.drawn < 100  # the rest was never read
    assert_books(queue.queue)


async def test_leaving_early_cancels_the_rest_and_accounts_for_every_item() -> None:
    closed = False

    async def numbers() -> AsyncIterator[int]:
        nonlocal closed
        try:
            for i in range(1_000):
                yield i
        finally:
            closed = True

    async def slow(item: int) -> int:
        await anyio.sleep(10)
        return item

    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue.map(double, numbers(), num_workers=2) as results:
            async for outcome in results:
                if outcome.item >= 5:
                    break
    assert closed
    m = queue.metrics
    assert m["enqueued"] == m["processed"] + m["unprocessed"]
    assert m["enqueued"] < 1_000
    assert_books(queue.queue)


async def test_a_slow_reader_slows_the_feed() -> None:
    source = Source(1_000)
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue.map(double, source, num_workers=2, window=10) as results:
            first = await results.__anext__()
            await all_blocked()
            # one yielded, 10 in the window, and one the feed holds, waiting
            assert source.drawn <= 1 + 10 + 1
            assert first.ok
            count = 1 + len([o async for o in results])
    assert count == 1_000


async def test_outcomes_carry_attempts_and_duration() -> None:
    clock = FakeClock()
    calls: dict[int, int] = {}

    async def flaky(item: int) -> int:
        calls[item] = calls.get(item, 0) + 1
        await clock.sleep_until(clock.current_time() + 1)
        if calls[item] < 2:
            raise ConnectionError
        return item

    policy = RetryPolicy(backoff=3, jitter=False)
    queue: WorkQueue[int] = WorkQueue(clock=clock, retry=policy)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with queue.map(flaky, [7]) as results:
                [outcome] = [o async for o in results]
            tg.cancel_scope.cancel()
    assert (outcome.value, outcome.attempts, outcome.duration) == (7, 2, 5.0)
    assert "attempts=2" in repr(outcome)


async def test_map_inside_an_open_queue_leaves_it_open() -> None:
    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        async with queue:
            async with queue.map(double, range(5)) as results:
                values = sorted([o.value async for o in results if o.value is not None])
            assert queue.status.value == "processing"
            assert queue.worker_count == 0
    assert values == [0, 2, 4, 6, 8]


async def test_map_refuses_a_queue_with_workers() -> None:
    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.process(double)
            with pytest.raises(QueueStateError, match="a batch or a map"):
                async with queue.map(double, range(3)):
                    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"errors": "ignore"}, ValueError, 'errors must be "collect" or "raise"'),
        ({"window": 0}, ValueError, "window must be at least 1"),
        ({"ordered": "yes"}, TypeError, "ordered must be a bool"),
        ({"num_workers": 0}, ValueError, "num_workers must be at least 1"),
        ({"item_timeout": -1}, ValueError, "item_timeout"),
        ({"retry": 2}, TypeError, "retry must be"),
    ],
)
def test_map_validates_its_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        WorkQueue[int]().map(double, range(3), **kwargs)


def test_map_refuses_a_non_iterable() -> None:
    with pytest.raises(TypeError, match="items must be an iterable"):
        WorkQueue[int]().map(double, 5)  # type: ignore[arg-type]


def test_outcome_repr_and_unwrap() -> None:
    good: Outcome[int, str] = Outcome(1, "x", None, 1, 0.5)
    bad: Outcome[int, str] = Outcome(2, None, KeyError("k"), 3, 1.0)
    assert good.unwrap() == "x"
    assert "value='x'" in repr(good)
    assert "error=KeyError('k')" in repr(bad)
    with pytest.raises(KeyError):
        bad.unwrap()


@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_an_error_from_the_items_comes_out_of_the_block(kind: str) -> None:
    def plain() -> Iterator[int]:
        yield from range(5)
        raise LookupError("the source broke")

    async def asynchronous() -> AsyncIterator[int]:
        for i in plain():
            yield i

    items: Any = plain() if kind == "plain" else asynchronous()
    queue: WorkQueue[int] = WorkQueue(maxsize=2)
    seen: list[int] = []
    with anyio.fail_after(GUARD), pytest.raises(LookupError, match="the source broke"):
        async with queue.map(double, items) as results:
            async for outcome in results:
                seen.append(outcome.item)
    m = queue.metrics
    assert m["enqueued"] == 5
    assert m["processed"] + m["unprocessed"] == 5
    assert_books(queue.queue)


async def test_a_plain_iterable_is_read_only_as_the_reader_asks() -> None:
    source = Source(1_000)
    queue: WorkQueue[int] = WorkQueue(maxsize=8)
    with anyio.fail_after(GUARD):
        async with queue.map(double, source, num_workers=2, window=20) as results:
            assert source.drawn == 0  # nothing read before the first outcome is asked
            await results.__anext__()
            assert source.drawn <= 20
            rest = [o async for o in results]
    assert len(rest) == 999
    assert source.drawn == 1_000


@pytest.mark.parametrize("ordered", [False, True])
async def test_a_few_items_through_a_large_queue_all_come_back(ordered: bool) -> None:
    # The reader tops a large queue up in chunks; with fewer items than one
    # chunk it must still put them before it waits for their outcomes.
    queue: WorkQueue[int] = WorkQueue(maxsize=1_000)
    with anyio.fail_after(GUARD):
        async with queue.map(double, range(5), ordered=ordered) as results:
            values = [outcome.unwrap() async for outcome in results]
    assert sorted(values) == [0, 2, 4, 6, 8]


async def test_a_slow_worker_is_topped_up_before_the_reader_waits() -> None:
    """The reader fills the queue before it first waits, though that is less
    than one chunk of its reading: every worker has an item meanwhile."""
    source = Source(200)
    busy: list[int] = []
    release = anyio.Event()

    async def slow(item: int) -> int:
        busy.append(item)
        await release.wait()
        return item

    queue: WorkQueue[int] = WorkQueue(maxsize=64)
    with anyio.fail_after(GUARD):
        async with queue.map(slow, source, num_workers=4) as results:
            async with anyio.create_task_group() as tg:
                tg.start_soon(results.__anext__)
                await all_blocked()
                assert len(busy) == 4  # each worker took an item
                assert source.drawn == 64  # the queue was filled before waiting
                release.set()
            rest = [o async for o in results]
    assert len(rest) == 199


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


@pytest.mark.parametrize("ordered", [False, True])
async def test_items_read_before_the_source_fails_mid_chunk_are_run(
    ordered: bool,
) -> None:
    """The reader tops a large queue up in chunks; a source that fails in the
    middle of one has its items read so far put and run, then the error comes
    out of the block."""

    def failing() -> Iterator[int]:
        yield from range(5)
        raise LookupError("the source broke")

    queue: WorkQueue[int] = WorkQueue(maxsize=64)
    seen: list[int] = []
    with anyio.fail_after(GUARD), pytest.raises(LookupError, match="source broke"):
        async with queue.map(double, failing(), ordered=ordered) as results:
            async for outcome in results:
                seen.append(outcome.unwrap())
    m = queue.metrics
    assert m["enqueued"] == 5
    assert m["processed"] + m["unprocessed"] == 5
    assert_books(queue.queue)


@pytest.mark.parametrize("ordered", [False, True])
async def test_map_refuses_a_queue_that_holds_items(ordered: bool) -> None:
    """Its workers would take the items already there and report them as the
    map's (found in review: ordered, that failed deep inside)."""
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.put(100)
            with pytest.raises(QueueStateError, match="holds 1 item"):
                async with queue.map(double, range(3), ordered=ordered):
                    pass
            assert queue.size == 1  # untouched
            await queue.process(double)
    assert queue.metrics["processed"] == 1
