"""Runs: a batch or a map on a queue, by workers of its own for the call.

A run's workers are spawned in a task group of its own and end with it; its
items are fed from an iterable (lazily, with backpressure) until it runs out or
the queue stops. A map's outcomes go to its results through the job's sink; a
plain iterable is read by the map's reader itself, without a feed task.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Generator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeVar

from anyio import create_task_group

from ._calls import Job
from ._exceptions import QueueStateError, unwrapped_group
from ._feed import close_generator, feed_until_stopped
from ._queue import BoundedQueue, core_of
from ._results import MapResults, collector_of
from ._status import QueueStatus
from ._workers import Worker

__all__ = ["check_no_workers", "run_batch", "run_map"]

T = TypeVar("T")
R = TypeVar("R")


@asynccontextmanager
async def run_map(
    queue: BoundedQueue[T],
    items: Iterable[T] | AsyncIterable[T],
    job: Job[T],
    num_workers: int,
    results: MapResults[T, R],
) -> AsyncGenerator[MapResults[T, R], None]:
    """Run a map's ``job`` over ``items`` on ``queue``, by ``num_workers``
    workers of its own, with its outcomes read through ``results``."""
    check_no_workers(queue, "map")
    core = core_of(queue)
    held = queue.size + queue.delayed
    if held:
        raise QueueStateError(
            f"map() reports every item its workers take, and this queue holds "
            f"{held} item{'s' if held > 1 else ''} already (buffered or waiting "
            "for a retry) that are not the map's: process them first, or give "
            "the map a WorkQueue of its own"
        )
    source = None if isinstance(items, AsyncIterable) else iter(items)
    collector = collector_of(results)
    try:
        async with AsyncExitStack() as stack:
            if queue.status is not QueueStatus.PROCESSING:
                await stack.enter_async_context(queue)
            stack.enter_context(_followed_by(queue, results))
            stack.enter_context(core.run_by("map"))
            # The one exception that ended the block (a failure raised by
            # the results, an error from `items`), as it was raised.
            with unwrapped_group():
                async with create_task_group() as tg:
                    workers = core.spawn_workers(tg, job, num_workers)
                    if source is None:
                        tg.start_soon(_feed_map, queue, items, results, workers)
                    else:
                        # The reader reads a plain iterable itself: no task.
                        collector.read_from(
                            source,
                            core.room_to_put,
                            core.put_all,
                            core.books.refused,
                            queue.maxsize,
                        )
                    yield results
                    if not collector.exhausted:
                        tg.cancel_scope.cancel()  # left early: cancel the rest
                    else:
                        await core.end_workers(workers, None)
    finally:
        collector.settle()
        close_generator(source)  # left part way: its `finally` runs now


@contextmanager
def _followed_by(
    queue: BoundedQueue[Any], results: MapResults[T, Any]
) -> Generator[None, None, None]:
    """Tell ``results`` of each step of a stop while the block runs, and
    count as its `unprocessed` what the queue lists from now on (it holds
    no items but the map's)."""
    before = queue.metrics["unprocessed"]
    collector = collector_of(results)
    collector.count_lost(lambda: queue.metrics["unprocessed"] - before)
    with core_of(queue).told_of_stop(collector.stop_seen):
        yield


async def _feed_map(
    queue: BoundedQueue[T],
    items: Iterable[T] | AsyncIterable[T],
    results: MapResults[T, Any],
    workers: list[Worker],
) -> None:
    core = core_of(queue)
    collector = collector_of(results)
    try:
        await feed_until_stopped(
            core,
            items,
            queue.put,
            check=collector.count,
            refused=core.books.refused,
            window=collector,
            put_now=core.try_put,
        )
    finally:
        collector.fed_all()
    await _end_when_done(queue, workers)


async def run_batch(
    queue: BoundedQueue[T],
    items: Iterable[T] | AsyncIterable[T],
    job: Job[T],
    num_workers: int,
) -> None:
    """Run a batch's ``job`` over ``items`` on ``queue`` (open, checked), by
    ``num_workers`` workers of its own, until every item is processed or
    listed, or the queue stops."""
    core = core_of(queue)
    with core.run_by("batch_process"), unwrapped_group():
        # (unwrapped: the one error, from `items` say, as raised)
        async with create_task_group() as tg:
            workers = core.spawn_workers(tg, job, num_workers)
            # An item drawn from `items` but not put (cancelled, or the queue
            # stopped meanwhile) is listed in `unprocessed`, never lost. A
            # stop ends the feed; the batch then ends with it.
            await feed_until_stopped(
                core,
                items,
                queue.put,
                refused=core.books.refused,
                put_now=core.try_put,
            )
            await _end_when_done(queue, workers)


async def _end_when_done(queue: BoundedQueue[Any], workers: list[Worker]) -> None:
    """Once every item put is finished, end a batch's or a map's workers."""
    core = core_of(queue)
    await core.join(while_consumers=True)
    await core.end_workers(workers, None)


def check_no_workers(queue: BoundedQueue[Any], call: str) -> None:
    """Refuse a batch or map on a queue that has workers: they would take its items."""
    if queue.worker_count:
        raise QueueStateError(
            f"{call}() runs its own workers, and this queue already has "
            f"{queue.worker_count} (from process(), start_workers(), "
            "a batch or a map) that would take its items: stop them first, "
            "or give it a WorkQueue of its own"
        )
