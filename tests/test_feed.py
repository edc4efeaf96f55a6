"""feed: a batch's or a map's source, read lazily, its errors raised as they are.

The source is read as room in the queue and the reader ask; an error from it
comes out as raised, after the items read before it are run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from fake_clock import all_blocked
from support import GUARD, Source, assert_books, double, noop

from sluicegate import QueueStatus, WorkQueue

# -- read lazily, with backpressure ----------------------------------------------------


async def test_batch_process_reads_lazily_with_backpressure() -> None:
    """The producer never runs more than the buffer plus the items in hand ahead."""
    produced = 0
    ahead: list[int] = []

    def numbers() -> Iterator[int]:
        nonlocal produced
        for i in range(200):
            produced += 1
            yield i

    async def work(item: int) -> None:
        ahead.append(produced - item)
        await anyio.lowlevel.checkpoint()

    queue: WorkQueue[int] = WorkQueue(maxsize=5)
    with anyio.fail_after(GUARD):
        await queue.batch_process(numbers(), work, num_workers=2)
    assert produced == 200
    # Read ahead of the item being handled: at most the buffer, the other worker's
    # item and the one item the producer holds while it waits for room.
    assert max(ahead) <= 5 + 2 + 1


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


@pytest.mark.parametrize("ordered", [False, True])
async def test_a_few_items_through_a_large_queue_all_come_back(ordered: bool) -> None:
    # The reader tops a large queue up in chunks; with fewer items than one
    # chunk it must still put them before it waits for their outcomes.
    queue: WorkQueue[int] = WorkQueue(maxsize=1_000)
    with anyio.fail_after(GUARD):
        async with queue.map(double, range(5), ordered=ordered) as results:
            values = [outcome.unwrap() async for outcome in results]
    assert sorted(values) == [0, 2, 4, 6, 8]


# -- a source that fails ---------------------------------------------------------------


class SourceError(Exception):
    pass


def failing_numbers() -> Iterator[int]:
    yield 1
    yield 2
    raise SourceError("the source broke")


async def failing_async_numbers() -> AsyncIterator[int]:
    yield 1
    yield 2
    raise SourceError("the source broke")


@pytest.mark.parametrize("source", [failing_numbers, failing_async_numbers])
@pytest.mark.parametrize("inside", [False, True], ids=["on its own", "inside"])
async def test_an_error_from_the_items_comes_out_as_raised(
    source: Any, inside: bool
) -> None:
    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD), pytest.raises(SourceError, match="broke"):
        if inside:
            async with queue:
                await queue.batch_process(source(), noop)
        else:
            await queue.batch_process(source(), noop)
    assert queue.status is QueueStatus.STOPPED
    m = queue.metrics
    assert m["enqueued"] == m["processed"] + len(queue.unprocessed) == 2


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
