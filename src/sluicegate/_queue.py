"""BoundedQueue: a bounded buffer with backpressure and a pool of workers.

The public face of a queue: it checks the arguments of each call and hands it
to the queue's `Core` (see `_core`, which maps the parts: the books, who is
woken, the timers, the calls and the worker loop).
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Final, Generic, TypeVar

from anyio import CapacityLimiter, WouldBlock
from anyio.abc import TaskGroup

from ._calls import ErrorHandler, Job, WorkerFunc, check_item_timeout, check_retry
from ._checks import (
    check_callable,
    check_concurrency_limit,
    check_int,
    check_optional_int,
    check_seconds,
)
from ._clock import Clock, check_clock
from ._core import Core
from ._failure_log import FailureLog
from ._gate import gate_of
from ._lifecycle import check_logger, check_task_group, worker_group
from ._protocols import RateLimiterProtocol, check_rate_limiter
from ._report import describe, limit_of, metrics, statistics
from ._retry import RetryPolicy
from ._scoped import Scoped
from ._statistics import QueueStatistics
from ._status import USE_QUEUE_TIMEOUT, QueueStatus, UseQueueTimeout
from ._worker_loop import run_worker

__all__ = ["BoundedQueue", "core_of"]

T = TypeVar("T")

_PROCESSING: Final = QueueStatus.PROCESSING


class BoundedQueue(Scoped, Generic[T]):
    """A queue of at most ``maxsize`` items, handled by a pool of workers.

    Producers ``put`` items; when the queue is full a put waits up to its timeout and
    then returns False (backpressure) instead of growing the buffer. Workers started
    with `start_workers` take items and await ``worker_func(item)``; at most
    ``concurrency_limit`` items are handled at once, however many workers there are.

    Use it as ``async with BoundedQueue(...) as queue:``; the queue then owns the task
    group its workers run in, and no worker outlives the block. Without ``async
    with``, call `start` and `stop` and pass your own ``task_group=`` to
    `start_workers`.

    Nothing is lost: at every moment ``enqueued == processed + size + in flight +
    delayed + len(unprocessed)``. Items still buffered or waiting for a retry when
    the queue stops, or cancelled while being handled, are listed in `unprocessed`
    and never counted as processed. An item is processed once, at its final
    outcome (retries included).

    Who is served first: blocked producers in the order they started waiting;
    parked `get` callers in the order they started waiting, before idle workers;
    idle workers most recently idle first (it keeps few of them busy and warm).
    While some workers are busy, new items wake one idle worker, which wakes up
    to two more if items still wait when it runs (and each of those does the
    same): busy workers coming back take items first, and no worker is woken to
    find none. A worker that cannot get a slot under ``concurrency_limit`` stays
    parked until one is free.

    A call that raises `RetryAfter` pauses the queue for the seconds it asks
    for: no new call starts until then (see `hold`).

    Args:
        maxsize: How many items the buffer holds, at least 1.
        timeout: How long `put` waits on a full queue by default, in seconds
            (None, the default: as long as it takes; 0: not at all).
        concurrency_limit: How many items may be handled at once across all workers
            (None: one per worker). Can be changed while the queue runs. An
            ``anyio.CapacityLimiter`` shares one limit with other queues and
            code: each item borrows a token (on behalf of its worker, which
            waits for one) and gives it back once handled, on every path.
        logger: Where worker errors are logged; ``logging.getLogger("sluicegate")``
            by default.
        clock: Where retry delays and item timeouts read the time and sleep; the
            event loop's by default (pass one to run them in virtual time).

    Raises:
        TypeError: maxsize is not an int, or timeout is not a number or None.
        ValueError: maxsize < 1, timeout < 0 or NaN, concurrency_limit < 1.
    """

    def __init__(
        self,
        maxsize: int = 100,
        timeout: float | None = None,
        *,
        concurrency_limit: int | CapacityLimiter | None = None,
        logger: logging.Logger | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._timeout: Final = check_seconds("timeout", timeout, allow_none=True)
        self._core: Final[Core[T]] = Core(
            check_int("maxsize", maxsize, minimum=1),
            check_concurrency_limit(concurrency_limit),
            check_clock(clock),
            FailureLog(check_logger(logger)),
            run_worker,
        )

    # -- properties -------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """How many items the buffer holds."""
        return self._core.maxsize

    @property
    def timeout(self) -> float | None:
        """How long `put` waits on a full queue by default (None: no limit)."""
        return self._timeout

    @property
    def status(self) -> QueueStatus:
        """The queue's current `QueueStatus`."""
        return self._core.status

    @property
    def size(self) -> int:
        """How many items wait in the buffer (not counting those being handled)."""
        return len(self._core.books.buffer)

    @property
    def delayed(self) -> int:
        """How many items wait out a retry's backoff (they count against maxsize)."""
        return self._core.books.delayed

    @property
    def is_empty(self) -> bool:
        """True when no item waits in the buffer."""
        return not self._core.books.buffer

    @property
    def is_full(self) -> bool:
        """True when a put would have to wait."""
        return self._core.room() <= 0

    @property
    def worker_count(self) -> int:
        """How many workers are running."""
        return len(self._core.dispatch.pool)

    @property
    def unprocessed(self) -> list[T]:
        """A copy of the accepted items that were never processed.

        Listed as they were given up: items cancelled in flight as their workers
        end, then what was left in the buffer, oldest first, then items that were
        waiting for a retry.
        """
        return list(self._core.books.unprocessed)

    @property
    def in_flight(self) -> int:
        """How many items have been taken (by workers or `get`) and not finished."""
        return self._core.books.in_flight()

    @property
    def concurrency_limit(self) -> int | None:
        """How many items may be handled at once (None: one per worker).

        Once the setter returns, no new item starts while ``concurrency_limit`` or
        more are being handled; items already running when it is lowered finish.
        While the queue is held (see `hold`) no new item starts at all; a limit
        set meanwhile applies once the hold ends.
        """
        return limit_of(self._core)

    @concurrency_limit.setter
    def concurrency_limit(self, value: int | None) -> None:
        limit = check_optional_int("concurrency_limit", value, minimum=1)
        self._core.dispatch.set_limit(limit)

    @property
    def metrics(self) -> dict[str, int]:
        """A fresh snapshot of the counters.

        ``enqueued``, ``processed`` (errors included), ``errors`` (items whose
        final outcome was a failure), ``backpressure_events`` (puts that gave up
        on a full queue), ``retries`` (calls scheduled again after a failure),
        ``in_flight``, ``delayed`` (waiting out a retry's backoff) and
        ``unprocessed`` (how many items are listed in `unprocessed`).
        """
        return metrics(self._core)

    def statistics(self) -> QueueStatistics:
        """A frozen snapshot: the counters of `metrics`, who waits, and how much
        of the concurrency limit is in use (while the queue is held, the calls
        still running: waiting workers hold no slot)."""
        return statistics(self._core)

    @property
    def errors_by_type(self) -> dict[str, int]:
        """A fresh count of failed items by the qualified name of their error."""
        return dict(self._core.calls.error_types)

    @property
    def held_until(self) -> float | None:
        """The time the current hold ends, on the queue's clock; None if not held.

        See `hold`. Reads the clock, so (with the default clock) read it inside
        the event loop.
        """
        held_until = self._core.timers.held_until
        if held_until is not None and held_until > self._core.now():
            return held_until
        return None

    def hold(self, seconds: float) -> None:
        """Start no new call for the next ``seconds``: pushback from the service.

        A call that raises `RetryAfter` holds its queue so (whether the item is
        retried or not), and its rate limiter too, if it has one, which holds
        every queue sharing it. A later deadline extends the hold; an earlier
        one, or ``hold(0)``, changes nothing.

        While held, no worker starts a call: workers wait without a
        concurrency slot (`statistics` counts in ``slots_in_use`` only the
        calls still running, which finish), and items stay in the buffer.
        `get` callers are not held: they are your own consumers. A stop during
        a hold ends the waiting workers at once and lists the buffered items in
        `unprocessed`, as always; the hold itself outlasts the stop: a queue
        started again before it ends starts no call until then (the service
        asked for the pause, not the run).

        Reads the clock, so (with the default clock) call it inside the event
        loop.

        Raises:
            TypeError: seconds is not a number.
            ValueError: seconds is negative, NaN or infinite.
        """
        self._core.hold(seconds)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {describe(self._core)}>"

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Move the queue to PROCESSING so it accepts items. Idempotent.

        A STOPPED queue starts again, with its counters and `unprocessed` kept.
        Puts and gets that were waiting when it stopped have been refused; they
        never carry over into the new run.

        Raises:
            QueueStateError: the queue is STOPPING.
        """
        self._core.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the queue: refuse new items, let workers finish, then STOPPED.

        New puts are refused at once and blocked producers get QueueStateError.
        Each worker finishes the item it holds and takes no new one; after
        ``timeout`` seconds (None: no limit) items still being handled are
        cancelled. Items left in the buffer or cancelled in flight end up in
        `unprocessed`. Calling stop on a stopped queue does nothing.

        Several tasks may call stop at once (from outside, from worker functions,
        from error handlers): they share one stop and all return. Called from a
        worker, stop does not wait for that worker (it ends once its item is
        done), nor for other workers that are themselves inside stop.

        If stop itself is cancelled, the workers are cancelled too and the queue
        reaches STOPPED as soon as they have ended.

        A task that a worker started and waits for must not call stop without a
        timeout: stop would wait for the worker, which waits for it.
        """
        await self._core.stop(check_seconds("timeout", timeout, allow_none=True))

    async def join(self) -> None:
        """Wait until every accepted item is processed or the queue has stopped."""
        await self._core.join(while_consumers=False)

    def _lifespan(self) -> AbstractAsyncContextManager[None]:
        return self._core.lifespan()

    # -- producers --------------------------------------------------------------

    async def put(
        self,
        item: T,
        timeout: float | UseQueueTimeout | None = USE_QUEUE_TIMEOUT,
    ) -> bool:
        """Add ``item``; return True once it is accepted, False on backpressure.

        On a full queue, wait up to ``timeout`` seconds (default,
        `USE_QUEUE_TIMEOUT`: the queue's timeout, which is None unless set: as
        long as it takes; 0: not at all)
        for room, then return False and count a backpressure event. A full queue
        never raises. Items waiting for a retry take room too.

        Atomic under cancellation: if put raises, the item was not accepted and
        will never be processed.

        A worker function that puts into its own queue with ``timeout=None`` can
        wait forever: if every worker does so on a full queue, no one is left to
        make room. Give such a put a timeout (and handle False), or put into a
        second queue.

        Raises:
            QueueStateError: the queue is not PROCESSING (also if it stops while
                this put waits, even if it is started again before the put wakes).
        """
        if timeout is USE_QUEUE_TIMEOUT:
            timeout = self._timeout
        elif timeout is not None:
            timeout = check_seconds("timeout", timeout, allow_none=True)
        core = self._core
        if core.try_put(item):
            return True
        return await core.put(item, timeout)

    def put_nowait(self, item: T) -> None:
        """Add ``item`` if there is room now, without waiting or yielding.

        Raises:
            anyio.WouldBlock: the queue is full (counted as a backpressure
                event); the item was not accepted.
            QueueStateError: the queue is not PROCESSING.
        """
        core = self._core
        if not core.put_nowait(item):
            core.books.backpressure_events += 1
            raise WouldBlock

    # -- consumers --------------------------------------------------------------

    def get_nowait(self) -> T:
        """Take the next item if there is one now, without waiting or yielding.

        Pair it with a `task_done` once the item is handled, as for `get`.

        Raises:
            anyio.WouldBlock: the buffer is empty.
            QueueStateError: the queue is not PROCESSING.
        """
        core = self._core
        core.check_running("get")
        if not core.books.buffer:
            raise WouldBlock
        item = core.take()
        core.books.taken_by_get += 1
        return item

    async def get(self) -> T:
        """Take the next item, waiting until there is one.

        Pair every get with a `task_done` once the item is handled. Parked get
        callers are served in the order they started waiting. Atomic under
        cancellation: if get raises, no item was taken.

        Raises:
            QueueStateError: the queue is not PROCESSING (also if it stops while
                this get waits).
        """
        core = self._core
        core.check_running("get")
        run = core.run
        books = core.books
        again = False
        while not books.buffer:
            try:
                # Woken but beaten to the item: wait again, first in line.
                await core.dispatch.getters.park(first=again)
            except BaseException:
                books.release_joiners()  # one consumer fewer
                raise
            again = True
            core.check_run("get", run)
        item = core.take()
        books.taken_by_get += 1
        return item

    def task_done(self) -> None:
        """Record that an item taken with `get` has been handled.

        Raises:
            ValueError: called more times than items were taken with `get`.
        """
        books = self._core.books
        if books.taken_by_get <= 0:
            raise ValueError("task_done() called more times than items taken by get()")
        books.taken_by_get -= 1
        books.finished()
        if not books.taken_by_get:
            books.release_joiners()  # the `async with` exit may stop waiting

    # -- workers ----------------------------------------------------------------

    async def start_workers(
        self,
        worker_func: WorkerFunc[T],
        num_workers: int,
        error_handler: ErrorHandler[T] | None = None,
        *,
        task_group: TaskGroup | None = None,
        retry: RetryPolicy | None = None,
        item_timeout: float | None = None,
        rate_limiter: RateLimiterProtocol | None = None,
    ) -> None:
        """Start ``num_workers`` workers that await ``worker_func(item)`` per item.

        ``worker_func`` is any callable returning an awaitable (an async function,
        a lambda or partial around one, an async function behind a plain
        decorator); if a call returns something else, that item fails with a
        TypeError naming the function, and the log says so once.

        An item whose call raises an Exception fails. With a ``retry`` policy
        that accepts the error, it is called again after a backoff spent in a
        delay line (holding no worker and no concurrency slot), up to the
        policy's attempts. Its final failure counts as processed and as an error
        once ``error_handler(exc, item)`` (if given) has returned; if the handler
        raises too, that is logged, and the worker goes on. Without a handler,
        failures are logged: the first of each exception type with its
        traceback, then a count at each power of two and at stop.

        A call running longer than ``item_timeout`` seconds is cancelled and
        fails with `ItemTimeoutError` (a TimeoutError), which a ``retry``
        policy retries whatever its ``on`` says, unless it was built with
        ``retry_timeouts=False``.

        A call that raises `RetryAfter` holds the queue for that long (see
        `hold`). With a ``rate_limiter``, each call (each retry too) first
        takes a token from it; the item timeout starts once the token is
        taken; a `RetryAfter` holds the limiter too.

        A cancellation exception raised although nothing cancelled the worker
        (asyncio's CancelledError from awaiting a cancelled task, say) is a
        failure too, reported as `StrayCancellationError`. Other BaseExceptions
        (KeyboardInterrupt, a real cancellation) leave the item unprocessed and
        propagate.

        The workers run in ``task_group`` if given, else in the task group of the
        enclosing ``async with queue:``. The first 64 start at once; the rest
        are held in reserve and start one at a time, when an item waits and no
        idle worker can take it (so thousands of workers under a low
        `concurrency_limit` cost what the busy ones do). A reserved worker
        counts as an idle one in `worker_count` and `statistics`.

        Raises:
            TypeError: worker_func or error_handler is not callable, num_workers is
                not an int, retry is not a RetryPolicy.
            ValueError: num_workers < 1, item_timeout <= 0.
            QueueStateError: the queue is not PROCESSING, or there is no task group
                to run the workers in.
        """
        check_callable("worker_func", worker_func)
        check_int("num_workers", num_workers, minimum=1)
        check_callable("error_handler", error_handler, allow_none=True)
        job = Job(
            worker_func,
            error_handler,
            retry=check_retry(retry),
            timeout=check_item_timeout(item_timeout),
            gate=gate_of(check_rate_limiter(rate_limiter), self._core.clock),
        )
        check_task_group(task_group)
        core = self._core
        core.check_running("start_workers")
        group = worker_group("start_workers", task_group, core.task_group)
        core.spawn_workers(group, job, num_workers)

    async def stop_workers(self, timeout: float | None = None) -> None:
        """End all workers the way `stop` does, leaving the queue PROCESSING.

        Idle workers end at once; each busy one finishes the item it holds, and
        after ``timeout`` seconds (None: no limit) items still being handled are
        cancelled and listed in `unprocessed`. Returns when `worker_count` is 0,
        or, called from a worker function, when every other worker has ended or
        is itself stopping (the calling worker ends once its item is done).

        Raises:
            QueueStateError: a `WorkQueue.map` or `WorkQueue.batch_process` runs
                its workers on this queue: without them it would wait forever;
                leave its block, or `stop` the queue.
        """
        timeout = check_seconds("timeout", timeout, allow_none=True)
        await self._core.stop_workers(timeout)


def core_of(queue: BoundedQueue[T]) -> Core[T]:
    """The core of ``queue``: the handle its collaborators (WorkQueue, the
    Executor, the Redis queue) use, by its public names."""
    return queue._core
