"""Edges of a map's or a batch's source and crew: what is closed when a map is
left early, and what stop_workers() says while a map or batch runs its workers.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from fake_clock import all_blocked
from support import GUARD, assert_books, double

from sluicegate import QueueStateError, WorkQueue

STOP_WORKERS_REFUSED = "cannot stop_workers(): a map() or batch_process() runs"
REFUSED = re.escape(STOP_WORKERS_REFUSED)


async def test_an_async_generators_cleanup_runs_to_its_end_on_leaving_early() -> None:
    """Regression: the generator was closed inside the cancelled scope of the
    map's block, so an await in its ``finally`` stopped at once."""
    cleaned: list[str] = []

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(1_000):
                yield i
        finally:
            cleaned.append("begun")
            await anyio.sleep(0.01)  # say, closing a connection
            cleaned.append("ended")

    queue: WorkQueue[int] = WorkQueue(maxsize=4, concurrency_limit=2)
    with anyio.fail_after(GUARD):
        async with queue.map(double, source()) as results:
            async for _ in results:
                break
    assert cleaned == ["begun", "ended"]
    assert_books(queue)


@pytest.mark.parametrize("how", ["break", "raise"])
async def test_a_plain_generator_is_closed_when_the_map_is_left_early(how: str) -> None:
    """Regression: a plain generator stayed suspended until garbage collection;
    now its ``finally`` runs when the block is left, as an async one's does."""
    closed = False

    def source() -> Iterator[int]:
        nonlocal closed
        try:
            yield from range(1_000)
        finally:
            closed = True

    queue: WorkQueue[int] = WorkQueue(maxsize=4, concurrency_limit=2)
    gen = source()
    with anyio.fail_after(GUARD):
        try:
            async with queue.map(double, gen) as results:
                async for _ in results:
                    if how == "raise":
                        raise LookupError
                    break
        except LookupError:
            pass
        assert closed
    assert_books(queue)


async def test_a_plain_generator_left_early_by_a_cancelled_batch_is_closed() -> None:
    closed = False

    def source() -> Iterator[int]:
        nonlocal closed
        try:
            yield from range(1_000)
        finally:
            closed = True

    async def slow(item: int) -> None:
        await anyio.sleep(1)

    queue: WorkQueue[int] = WorkQueue(maxsize=4, concurrency_limit=2)
    with anyio.fail_after(GUARD):
        with anyio.move_on_after(0.5):
            await queue.batch_process(source(), slow)
    assert closed
    assert_books(queue)


async def test_stop_workers_under_a_map_says_what_to_do_instead_of_hanging() -> None:
    """Regression: stop_workers() ended the map's own workers, and its reader
    then waited for outcomes that no worker would ever make."""
    queue: WorkQueue[int] = WorkQueue(maxsize=4, concurrency_limit=2)
    seen = 0
    with anyio.fail_after(GUARD):
        async with queue, queue.map(double, range(100)) as results:
            async for _ in results:
                seen += 1
                if seen == 5:
                    with pytest.raises(QueueStateError, match=REFUSED):
                        await queue.queue.stop_workers()
    assert seen == 100  # the map went on, whole
    assert_books(queue)


async def test_stop_workers_under_a_batch_says_what_to_do_instead_of_hanging() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=4, concurrency_limit=2)
    refused: list[QueueStateError] = []
    started = anyio.Event()

    async def work(item: int) -> None:
        started.set()
        await anyio.lowlevel.checkpoint()

    async def stop_workers_once_running() -> None:
        await started.wait()
        try:
            await queue.queue.stop_workers()
        except QueueStateError as exc:
            refused.append(exc)

    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            tg.start_soon(stop_workers_once_running)
            await queue.batch_process(range(200), work)
    assert len(refused) == 1
    assert STOP_WORKERS_REFUSED in str(refused[0])
    assert queue.metrics["processed"] == 200
    assert_books(queue)


async def test_stop_workers_after_a_map_ended_stops_other_workers_again() -> None:
    """The refusal lasts only while the map runs."""
    queue: WorkQueue[int] = WorkQueue(maxsize=4, concurrency_limit=2)
    with anyio.fail_after(GUARD):
        async with queue:
            async with queue.map(double, range(10)) as results:
                assert len([o async for o in results]) == 10
            await queue.process(double, 2)
            await all_blocked()
            await queue.queue.stop_workers()
            assert queue.worker_count == 0
    assert_books(queue)
