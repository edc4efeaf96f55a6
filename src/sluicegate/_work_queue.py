"""WorkQueue: a BoundedQueue with the plan's high-level calls, process and batch."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterable, Iterable
from inspect import isawaitable
from types import TracebackType
from typing import Generic, TypeVar

from anyio import create_task_group
from anyio.abc import TaskGroup

from ._checks import check_callable, check_iterable, check_optional_int, not_awaitable
from ._config import QueueConfig
from ._exceptions import QueueStateError, sole_exception
from ._feed import feed
from ._queue import BoundedQueue, ErrorHandler, QueueStatus, WorkerFunc, _Default
from ._rate_limit import RateLimiter

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # installed with anyio there

__all__ = ["WorkQueue"]

T = TypeVar("T")


class WorkQueue(Generic[T]):
    """A bounded work queue: put items, or hand it a whole batch to process.

    It wraps one `BoundedQueue` (exposed as `queue`) and offers the same calls,
    plus `process` (start workers) and `batch_process` (feed an iterable through
    workers and wait until every item is processed).

    Args:
        maxsize: How many items the buffer holds, at least 1.
        timeout: How long `put` waits on a full queue by default, in seconds.
        concurrency_limit: How many items are handled at once (None: one per
            worker); also the default number of workers.
        logger: Where worker errors are logged.
        rate_limiter: A `RateLimiter` each worker takes a token from before it
            handles an item; it may be shared with other queues.
    """

    def __init__(
        self,
        maxsize: int = 100,
        timeout: float | None = 0.1,
        concurrency_limit: int | None = None,
        *,
        logger: logging.Logger | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._queue: BoundedQueue[T] = BoundedQueue(
            maxsize, timeout, concurrency_limit=concurrency_limit, logger=logger
        )
        if rate_limiter is not None and not isinstance(rate_limiter, RateLimiter):
            raise TypeError(
                f"rate_limiter must be a RateLimiter or None, got {rate_limiter!r}"
            )
        self._rate_limiter = rate_limiter

    @classmethod
    def from_config(
        cls,
        config: QueueConfig,
        *,
        logger: logging.Logger | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> WorkQueue[T]:
        """A WorkQueue of ``config.queue_capacity`` items and its concurrency limit.

        ``capacity_refresh_time`` is not used here: it limits the rate at which an
        Executor starts events.
        """
        if not isinstance(config, QueueConfig):
            raise TypeError(f"config must be a QueueConfig, got {config!r}")
        return cls(
            maxsize=config.queue_capacity,
            concurrency_limit=config.concurrency_limit,
            logger=logger,
            rate_limiter=rate_limiter,
        )

    @property
    def queue(self) -> BoundedQueue[T]:
        """The BoundedQueue this WorkQueue drives."""
        return self._queue

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The RateLimiter workers take a token from per item, if any."""
        return self._rate_limiter

    # -- delegated surface ------------------------------------------------------

    @property
    def status(self) -> QueueStatus:
        """The queue's current `QueueStatus`."""
        return self._queue.status

    @property
    def metrics(self) -> dict[str, int]:
        """A fresh snapshot of the queue's counters (see `BoundedQueue.metrics`)."""
        return self._queue.metrics

    @property
    def size(self) -> int:
        """How many items wait in the buffer."""
        return self._queue.size

    @property
    def is_full(self) -> bool:
        """True when a put would have to wait."""
        return self._queue.is_full

    @property
    def is_empty(self) -> bool:
        """True when no item waits in the buffer."""
        return self._queue.is_empty

    @property
    def worker_count(self) -> int:
        """How many workers are running."""
        return self._queue.worker_count

    @property
    def unprocessed(self) -> list[T]:
        """A copy of the accepted items that were never processed."""
        return self._queue.unprocessed

    @property
    def maxsize(self) -> int:
        """How many items the buffer holds."""
        return self._queue.maxsize

    @property
    def timeout(self) -> float | None:
        """How long `put` waits on a full queue by default."""
        return self._queue.timeout

    @property
    def concurrency_limit(self) -> int | None:
        """How many items are handled at once (None: one per worker)."""
        return self._queue.concurrency_limit

    @concurrency_limit.setter
    def concurrency_limit(self, value: int | None) -> None:
        self._queue.concurrency_limit = value

    async def put(
        self, item: T, timeout: float | _Default | None = _Default.TIMEOUT
    ) -> bool:
        """Add ``item``; True once accepted, False on backpressure (see
        `BoundedQueue.put`)."""
        return await self._queue.put(item, timeout)

    async def get(self) -> T:
        """Take the next item, waiting until there is one."""
        return await self._queue.get()

    def task_done(self) -> None:
        """Record that an item taken with `get` has been handled."""
        self._queue.task_done()

    async def join(self) -> None:
        """Wait until every accepted item is processed or the queue has stopped."""
        await self._queue.join()

    async def start(self) -> None:
        """Start accepting items (see `BoundedQueue.start`)."""
        await self._queue.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the queue (see `BoundedQueue.stop`)."""
        await self._queue.stop(timeout)

    async def __aenter__(self) -> WorkQueue[T]:
        await self._queue.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._queue.__aexit__(exc_type, exc, tb)

    # -- processing -------------------------------------------------------------

    async def process(
        self,
        worker_func: WorkerFunc[T],
        num_workers: int | None = None,
        error_handler: ErrorHandler[T] | None = None,
        *,
        task_group: TaskGroup | None = None,
    ) -> None:
        """Start workers that await ``worker_func(item)`` for each item.

        ``num_workers`` defaults to the concurrency limit, or 1. The workers run in
        ``task_group`` if given, else in the task group of ``async with queue:``;
        see `BoundedQueue.start_workers`.
        """
        workers = self._worker_count_for(num_workers)
        check_callable("worker_func", worker_func)
        await self._queue.start_workers(
            self._rate_limited(worker_func),
            workers,
            error_handler,
            task_group=task_group,
        )

    async def batch_process(
        self,
        items: Iterable[T] | AsyncIterable[T],
        worker_func: WorkerFunc[T],
        num_workers: int | None = None,
        error_handler: ErrorHandler[T] | None = None,
    ) -> None:
        """Process every item of ``items`` and return when all are processed.

        ``items`` is any iterable or async iterable, read lazily: the producer waits
        while the queue is full (whatever the queue's put timeout), so a generator of
        millions of items runs in constant memory. The batch's ``num_workers``
        workers (default: the concurrency limit, or 1) live only for this call.
        Worker errors go to ``error_handler``, or are counted and logged, and never
        stop the batch.

        Inside ``async with queue:`` the batch runs in the open queue; on its own it
        opens the queue and stops it again at the end, so one WorkQueue can run
        batch after batch, its metrics adding up. The batch's workers must be the
        only ones: a queue with workers from `process` (or another batch running)
        is refused, since those would take the batch's items.

        Cancelled from outside, it ends its workers and stops reading ``items``
        (closing an async generator); items cancelled in flight or left in the
        buffer are listed in `unprocessed`, never counted as processed.

        Raises:
            TypeError: items is not iterable, or worker_func or error_handler is not
                an async function.
            ValueError: num_workers < 1.
            QueueStateError: the queue already has workers.

        An exception raised by ``items`` itself ends the batch like a
        cancellation and comes out as raised.
        """
        check_iterable("items", items)
        check_callable("worker_func", worker_func)
        check_callable("error_handler", error_handler, allow_none=True)
        workers = self._worker_count_for(num_workers)
        if self._queue.worker_count:
            raise QueueStateError(
                "batch_process() runs its own workers, and this queue already has "
                f"{self._queue.worker_count} (from process(), start_workers() or "
                "another batch) that would take the batch's items: stop them first, "
                "or give the batch a WorkQueue of its own"
            )
        if self._queue.status is QueueStatus.PROCESSING:
            await self._run_batch(items, worker_func, workers, error_handler)
        else:
            async with self._queue:
                await self._run_batch(items, worker_func, workers, error_handler)

    async def _run_batch(
        self,
        items: Iterable[T] | AsyncIterable[T],
        worker_func: WorkerFunc[T],
        num_workers: int,
        error_handler: ErrorHandler[T] | None,
    ) -> None:
        queue = self._queue
        func = self._rate_limited(worker_func)
        unwrapped: BaseException | None = None
        try:
            async with create_task_group() as tg:
                workers = queue._spawn_workers(tg, func, num_workers, error_handler)
                # An item drawn from `items` but not put (cancelled, or the queue
                # stopped meanwhile) is listed in `unprocessed`, never lost.
                await feed(items, queue.put, refused=queue._record_refused)
                await queue._join(while_consumers=True)
                await queue._end_workers(workers, None)
        except BaseExceptionGroup as group:
            # The task group wrapped the one error (from `items`, say).
            unwrapped = sole_exception(group)
        if unwrapped is not None:
            try:
                raise unwrapped
            finally:
                del unwrapped

    def _rate_limited(self, worker_func: WorkerFunc[T]) -> WorkerFunc[T]:
        limiter = self._rate_limiter
        if limiter is None:
            return worker_func

        async def rate_limited(item: T) -> object:
            await limiter.acquire()
            call = worker_func(item)
            if not isawaitable(call):
                raise not_awaitable("worker_func", worker_func, call)
            return await call

        return rate_limited

    def _worker_count_for(self, num_workers: int | None) -> int:
        count = check_optional_int("num_workers", num_workers, minimum=1)
        if count is not None:
            return count
        return self._queue.concurrency_limit or 1
