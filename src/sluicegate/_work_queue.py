"""WorkQueue: a BoundedQueue with the plan's high-level calls, process and batch."""

from __future__ import annotations

import logging
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import (
    AbstractAsyncContextManager,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from anyio import CapacityLimiter
from anyio.abc import TaskGroup

from ._calls import (
    ErrorHandler,
    Job,
    Sink,
    WorkerFunc,
    check_item_timeout,
    check_retry,
)
from ._checks import check_callable, check_iterable, check_optional_int
from ._clock import Clock
from ._config import QueueConfig
from ._gate import gate_of
from ._lifecycle import worker_count_for
from ._protocols import RateLimiterProtocol, check_rate_limiter
from ._queue import BoundedQueue, core_of
from ._report import describe
from ._results import MapResults, collector_of
from ._retry import RetryPolicy
from ._runs import check_no_workers, run_batch, run_map
from ._statistics import QueueStatistics
from ._status import USE_QUEUE_TIMEOUT, QueueStatus, UseQueueTimeout

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["WorkQueue"]

T = TypeVar("T")
R = TypeVar("R")


class WorkQueue(Generic[T]):
    """A bounded work queue: put items, or hand it a whole batch to process.

    It wraps one `BoundedQueue` (exposed as `queue`) and offers the same calls,
    plus `process` (start workers), `batch_process` (feed an iterable through
    workers and wait until every item is processed) and `map` (the same, reading
    each item's outcome as it comes).

    Args:
        maxsize: How many items the buffer holds, at least 1.
        timeout: How long `put` waits on a full queue by default, in seconds
            (None, the default: as long as it takes).
        concurrency_limit: How many items are handled at once (None: one per
            worker); also the default number of workers. An
            ``anyio.CapacityLimiter`` shares one limit with other queues and
            other code (see `BoundedQueue`).
        logger: Where worker errors are logged.
        rate_limiter: A `RateLimiter` each call takes a token from before it
            starts (retries included); it may be shared with other queues. A
            call that raises `RetryAfter` holds it for that long (and holds
            this queue, with a limiter or without: see `BoundedQueue.hold`).
        retry: The `RetryPolicy` for failed items (None: no retries); `process`,
            `batch_process` and `map` may give their own.
        item_timeout: Seconds a call may run before it is cancelled and fails
            with `ItemTimeoutError`, a TimeoutError that a retry policy retries
            (None: no limit); overridable per call as retry.
        clock: Where retry delays and item timeouts read the time and sleep.
    """

    def __init__(
        self,
        maxsize: int = 100,
        timeout: float | None = None,
        concurrency_limit: int | CapacityLimiter | None = None,
        *,
        logger: logging.Logger | None = None,
        rate_limiter: RateLimiterProtocol | None = None,
        retry: RetryPolicy | None = None,
        item_timeout: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._queue: BoundedQueue[T] = BoundedQueue(
            maxsize,
            timeout,
            concurrency_limit=concurrency_limit,
            logger=logger,
            clock=clock,
        )
        self._rate_limiter = check_rate_limiter(rate_limiter)
        self._retry = check_retry(retry)
        self._item_timeout = check_item_timeout(item_timeout)

    @classmethod
    def from_config(
        cls,
        config: QueueConfig,
        *,
        logger: logging.Logger | None = None,
        rate_limiter: RateLimiterProtocol | None = None,
        retry: RetryPolicy | None = None,
        item_timeout: float | None = None,
        clock: Clock | None = None,
    ) -> Self:
        """A WorkQueue of ``config.queue_capacity`` items and its concurrency limit.

        ``WorkQueue[int].from_config(config)`` is a ``WorkQueue[int]`` (a
        subclass's, an instance of that subclass).

        ``capacity_refresh_time`` is not used here: it limits the rate at which an
        Executor starts events. The other arguments are the constructor's.
        """
        if not isinstance(config, QueueConfig):
            raise TypeError(f"config must be a QueueConfig, got {config!r}")
        return cls(
            maxsize=config.queue_capacity,
            concurrency_limit=config.concurrency_limit,
            logger=logger,
            rate_limiter=rate_limiter,
            retry=retry,
            item_timeout=item_timeout,
            clock=clock,
        )

    @property
    def queue(self) -> BoundedQueue[T]:
        """The BoundedQueue this WorkQueue drives."""
        return self._queue

    @property
    def rate_limiter(self) -> RateLimiterProtocol | None:
        """The RateLimiter each call takes a token from, if any."""
        return self._rate_limiter

    @property
    def retry(self) -> RetryPolicy | None:
        """The default RetryPolicy for failed items, if any."""
        return self._retry

    @property
    def item_timeout(self) -> float | None:
        """The default seconds a call may run (None: no limit)."""
        return self._item_timeout

    # -- delegated surface ------------------------------------------------------

    @property
    def status(self) -> QueueStatus:
        """The queue's current `QueueStatus`."""
        return self._queue.status

    @property
    def metrics(self) -> dict[str, int]:
        """A fresh snapshot of the queue's counters (see `BoundedQueue.metrics`)."""
        return self._queue.metrics

    def statistics(self) -> QueueStatistics:
        """A frozen snapshot of the queue (see `BoundedQueue.statistics`)."""
        return self._queue.statistics()

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
    def delayed(self) -> int:
        """How many items wait out a retry's backoff."""
        return self._queue.delayed

    @property
    def errors_by_type(self) -> dict[str, int]:
        """A fresh count of failed items by the qualified name of their error."""
        return self._queue.errors_by_type

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

    @property
    def held_until(self) -> float | None:
        """When the queue's hold ends, on its clock; None if not held (see
        `BoundedQueue.hold`)."""
        return self._queue.held_until

    def hold(self, seconds: float) -> None:
        """Start no new call for the next ``seconds`` (see `BoundedQueue.hold`).

        Raises:
            TypeError: seconds is not a number.
            ValueError: seconds is negative, NaN or infinite.
        """
        self._queue.hold(seconds)

    def put_nowait(self, item: T) -> None:
        """Add ``item`` if there is room now, without waiting (see
        `BoundedQueue.put_nowait`).

        Raises:
            anyio.WouldBlock: the queue is full; the item was not accepted.
            QueueStateError: the queue is not PROCESSING.
        """
        self._queue.put_nowait(item)

    async def put(
        self,
        item: T,
        timeout: float | UseQueueTimeout | None = USE_QUEUE_TIMEOUT,
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

    def __repr__(self) -> str:
        return f"<WorkQueue {describe(core_of(self._queue))}>"

    # -- processing -------------------------------------------------------------

    async def process(
        self,
        worker_func: WorkerFunc[T],
        num_workers: int | None = None,
        error_handler: ErrorHandler[T] | None = None,
        *,
        task_group: TaskGroup | None = None,
        retry: RetryPolicy | None = None,
        item_timeout: float | None = None,
    ) -> None:
        """Start workers that await ``worker_func(item)`` for each item.

        ``num_workers`` defaults to the concurrency limit, or 1. The workers run in
        ``task_group`` if given, else in the task group of ``async with queue:``;
        ``retry`` and ``item_timeout`` default to the WorkQueue's. See
        `BoundedQueue.start_workers`.
        """
        workers = self._worker_count_for(num_workers)
        check_callable("worker_func", worker_func)
        await self._queue.start_workers(
            worker_func,
            workers,
            error_handler,
            task_group=task_group,
            retry=self._retry if retry is None else retry,
            item_timeout=self._item_timeout if item_timeout is None else item_timeout,
            rate_limiter=self._rate_limiter,
        )

    async def batch_process(
        self,
        items: Iterable[T] | AsyncIterable[T],
        worker_func: WorkerFunc[T],
        num_workers: int | None = None,
        error_handler: ErrorHandler[T] | None = None,
        *,
        retry: RetryPolicy | None = None,
        item_timeout: float | None = None,
    ) -> None:
        """Process every item of ``items`` and return when all are processed.

        ``items`` is any iterable or async iterable, read lazily: the producer waits
        while the queue is full (whatever the queue's put timeout), so a generator of
        millions of items runs in constant memory. The batch's ``num_workers``
        workers (default: the concurrency limit, or 1) live only for this call.
        Worker errors (after retries, by ``retry`` or the WorkQueue's policy) go to
        ``error_handler``, or are counted and logged, and never stop the batch.

        Inside ``async with queue:`` the batch runs in the open queue; on its own it
        opens the queue and stops it again at the end, so one WorkQueue can run
        batch after batch, its metrics adding up. The batch's workers must be the
        only ones: a queue with workers from `process` (or another batch running)
        is refused, since those would take the batch's items.

        If its queue is stopped meanwhile (by another task or by a worker
        function, with or without a timeout), it reads no more of ``items``
        (closing an async generator) and returns normally once the stop has
        ended its workers. Cancelled from outside, it ends its workers and stops
        reading ``items`` the same way, and the cancellation goes on. Either
        way, items cancelled in flight, left in the buffer, waiting for a retry,
        or read but not yet put are listed in `unprocessed`, never counted as
        processed.

        Raises:
            TypeError: items is not iterable, or worker_func or error_handler is not
                callable.
            ValueError: num_workers < 1.
            QueueStateError: the queue already has workers.

        An exception raised by ``items`` itself ends the batch like a
        cancellation and comes out as raised.
        """
        check_iterable("items", items)
        job = self._job(worker_func, error_handler, retry, item_timeout)
        workers = self._worker_count_for(num_workers)
        check_no_workers(self._queue, "batch_process")
        if self._queue.status is QueueStatus.PROCESSING:
            await run_batch(self._queue, items, job, workers)
        else:
            async with self._queue:
                await run_batch(self._queue, items, job, workers)

    def map(
        self,
        worker_func: Callable[[T], Awaitable[R]],
        items: Iterable[T] | AsyncIterable[T],
        *,
        ordered: bool = False,
        errors: Literal["collect", "raise"] = "collect",
        num_workers: int | None = None,
        window: int | None = None,
        retry: RetryPolicy | None = None,
        item_timeout: float | None = None,
    ) -> AbstractAsyncContextManager[MapResults[T, R]]:
        """Run ``worker_func`` over ``items`` and read each item's `Outcome`.

        Use it as::

            async with queue.map(fetch, urls) as results:
                async for outcome in results:
                    print(outcome.item, outcome.unwrap())

        Items are read lazily and run through the queue's workers (``num_workers``
        of them, living for the block), with its limits, rate limiter, retries
        and item timeout. Outcomes come as items finish, or in input order with
        ``ordered=True``. At most ``window`` items (default: maxsize + workers)
        are read and not yet yielded, so a slow reader slows the feed and memory
        stays bounded.

        With ``errors="collect"`` a failed item's outcome is yielded like any
        other (``outcome.error``; ``unwrap()`` raises it). With ``errors="raise"``
        the first failure (after retries) is raised out of the block, and the
        rest is cancelled. Leaving the block early cancels the rest too: items
        cancelled in flight, buffered, delayed or read but not put are listed in
        `unprocessed` (a queue the map opened itself is stopped; in a queue you
        opened, buffered items stay buffered).

        If the queue is stopped while the map runs (by another task, by a
        worker function, or from the ``async for`` body; with or without a
        timeout), the map reads no more items; the reader yields the outcome
        of every call that finished, those the stop let finish included, and
        then ends normally. ``results.stopped`` is then True. Items read that
        got no outcome (buffered or waiting for a retry at the stop, cut short
        by ``stop(timeout)``, read but never put) are listed in `unprocessed`,
        never counted as processed, and ``results.unprocessed`` says how many
        there are. Ordered, the outcomes that came are yielded in input order,
        skipping the items that got none.

        Raises:
            TypeError, ValueError: a bad argument, when the block is entered.
            QueueStateError: the queue already has workers, or already holds
                items (buffered or waiting for a retry): the map's workers
                would take them. While the map runs, put nothing else into it.
        """
        check_iterable("items", items)
        if errors not in ("collect", "raise"):
            raise ValueError(f'errors must be "collect" or "raise", got {errors!r}')
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered must be a bool, got {ordered!r}")
        workers = self._worker_count_for(num_workers)
        size = check_optional_int("window", window, minimum=1)
        results: MapResults[T, R] = MapResults(
            size if size is not None else self._queue.maxsize + workers,
            ordered=ordered,
            raise_errors=errors == "raise",
        )
        # Failures reach the reader as outcomes (or are raised): no log for them.
        sink = collector_of(results).deliver
        job = self._job(worker_func, _quiet, retry, item_timeout, sink)
        return run_map(self._queue, items, job, workers, results)

    def _job(
        self,
        worker_func: Callable[[T], Awaitable[Any]],
        error_handler: ErrorHandler[T] | None,
        retry: RetryPolicy | None,
        item_timeout: float | None,
        sink: Sink[T] | None = None,
    ) -> Job[T]:
        """Check the arguments of a batch or map, and say how its items are run."""
        check_callable("worker_func", worker_func)
        check_callable("error_handler", error_handler, allow_none=True)
        retry = check_retry(retry)
        timeout = check_item_timeout(item_timeout)
        return Job(
            worker_func,
            error_handler,
            retry=self._retry if retry is None else retry,
            timeout=self._item_timeout if timeout is None else timeout,
            sink=sink,
            gate=gate_of(self._rate_limiter, core_of(self._queue).clock),
        )

    def _worker_count_for(self, num_workers: int | None) -> int:
        return worker_count_for(num_workers, self._queue.concurrency_limit)


async def _quiet(exc: Exception, item: object) -> None:
    """The error handler of a map: its reader gets each failure as an outcome."""
