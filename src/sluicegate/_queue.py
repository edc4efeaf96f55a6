"""BoundedQueue: a bounded buffer with backpressure and a pool of workers.

The buffer is a deque. A put into a queue with room and a get from a queue with
items complete at once, without a trip through the event loop. Blocked producers
and idle consumers park in waiter lines of their own, and take or place their item
themselves once woken, so that an item is never handed to a task that might be
cancelled before it runs: put and get are atomic under cancellation.

Items waiting out a retry's backoff sit in a delay line, not holding a worker, and
still count against ``maxsize``: memory stays bounded however many retries wait.

How an item is called and its failure settled (rate limiter, item timeout,
retries, error handler, logging) is the business of `_calls.Calls`, which the
queue owns; the worker loop here calls plain items itself, the hot path.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import Final, Generic, TypeVar

from anyio import (
    CancelScope,
    Event,
    WouldBlock,
    create_task_group,
    get_cancelled_exc_class,
    move_on_after,
)
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from ._calls import (
    Calls,
    ErrorHandler,
    HoldEnd,
    Sink,
    Timed,
    WorkerFunc,
    _Job,
    _Retry,
    _unwrap,
    check_item_timeout,
    check_retry,
)
from ._checks import (
    check_callable,
    check_hold,
    check_int,
    check_optional_int,
    check_seconds,
)
from ._clock import Clock, check_clock, reader
from ._delay import DelayLine, Entry
from ._exceptions import QueueStateError, stray_cancellation, unwrapped_group
from ._failure_log import FailureLog
from ._lifecycle import (
    check_logger,
    check_not_stopping,
    check_running,
    check_task_group,
    worker_group,
)
from ._protocols import RateLimiterProtocol, check_rate_limiter
from ._results import Outcome
from ._retry import RetryPolicy
from ._scoped import Scoped
from ._statistics import QueueStatistics
from ._status import USE_QUEUE_TIMEOUT, QueueStatus, UseQueueTimeout
from ._waiters import WaiterLine
from ._workers import Worker, WorkerPool

# BoundedQueue, and names of other modules that modules (and other branches)
# import from here, as they did before those modules were cut out of this one.
__all__ = [
    "USE_QUEUE_TIMEOUT",
    "BoundedQueue",
    "ErrorHandler",
    "QueueStatus",
    "Sink",
    "UseQueueTimeout",
    "WorkerFunc",
    "_Job",
    "check_item_timeout",
    "check_retry",
]

T = TypeVar("T")

#: A task that completes this many operations in a row without waiting yields once,
#: so that a producer or worker that never blocks cannot starve the other tasks.
_YIELD_EVERY: Final = 64


_PROCESSING: Final = QueueStatus.PROCESSING
_HOLD_END: Final = HoldEnd()


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
            (None: one per worker). Can be changed while the queue runs.
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
        concurrency_limit: int | None = None,
        logger: logging.Logger | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._maxsize: Final = check_int("maxsize", maxsize, minimum=1)
        self._timeout: Final = check_seconds("timeout", timeout, allow_none=True)
        limit = check_optional_int("concurrency_limit", concurrency_limit, minimum=1)
        self._failure_log = FailureLog(check_logger(logger))
        self._concurrency_limit = limit
        # Workers take a slot to handle items, and hold it while the buffer has
        # any: at most `_slots` items are handled at once. A worker that finds
        # no slot free stays parked until one is handed over with an item.
        self._slots = _tokens(limit)
        self._active = 0  # workers holding a slot
        self._looking = 0  # workers that will look at the buffer before parking
        self._clock = check_clock(clock)
        # How the clock is read on the hot path: bound to the backend at start.
        self._now: Callable[[], float] = self._clock.current_time
        self._status = QueueStatus.IDLE
        self._run = 0  # counts starts: a waiter from an earlier run is refused
        # Items, and items back for a retry (wrapped, to carry their attempts).
        self._buffer: deque[T | _Retry] = deque()
        # The books: enqueued == processed + size + in_flight + delayed
        # + len(unprocessed), where size is len(_buffer).
        self._enqueued = 0
        self._processed = 0
        self._backpressure_events = 0
        self._delayed = 0
        self._taken_by_get = 0
        self._unprocessed: list[T] = []
        # Items waiting out a backoff, (on an injected clock) call deadlines,
        # and the end of a hold.
        self._timers: DelayLine[Timed] = DelayLine(self._clock, self._timers_due)
        # While held (`hold`), no slot is free: the deadline, and its entry in
        # the delay line, which gives the slots back.
        self._held_until: float | None = None
        self._hold_end: Entry[Timed] | None = None
        self._timer_scope: CancelScope | None = None
        self._timers_beside_workers = False
        # Parked tasks. A consumer is woken only when no consumer already woken
        # will take the item; get() callers before idle workers.
        self._producers = WaiterLine(on_lost_wake=self._wake_producer)
        self._getters = WaiterLine(on_lost_wake=self._wake_consumer)
        self._idle_workers = WaiterLine(lifo=True, on_lost_wake=self._wake_consumer)
        self._join_event: Event | None = None
        self._pool = WorkerPool(on_empty=self._last_worker_left)
        # Workers started that have not run yet: they look in the buffer
        # first, so they are on their way to an item, as woken ones are.
        self._starting = 0
        self._task_group: TaskGroup | None = None
        # For an Executor: told when the queue stops, and of each item given up.
        self._on_stopped: Callable[[], object] | None = None
        self._on_abandoned: Callable[[T], object] | None = None
        # Told at each step of a stop (see `_told_of_stop`). A list: a map has
        # two listeners (its reader, and the task feeding an async source), and
        # several `Executor.completed` readers may share one queue.
        self._stop_listeners: list[Callable[[], object]] = []
        self._runs_by: list[str] = []  # the maps and batches running here
        self._fast_puts = 0
        # The calls of items, and their failures, retries included.
        self._calls: Calls[T] = Calls(
            self, self._clock, self._timers, self._failure_log
        )
        # The worker loop's names for them: bound once (called per item).
        self._handle = self._calls.handle
        self._failed = self._calls.failed

    # -- properties -------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """How many items the buffer holds."""
        return self._maxsize

    @property
    def timeout(self) -> float | None:
        """How long `put` waits on a full queue by default (None: no limit)."""
        return self._timeout

    @property
    def status(self) -> QueueStatus:
        """The queue's current `QueueStatus`."""
        return self._status

    @property
    def size(self) -> int:
        """How many items wait in the buffer (not counting those being handled)."""
        return len(self._buffer)

    @property
    def delayed(self) -> int:
        """How many items wait out a retry's backoff (they count against maxsize)."""
        return self._delayed

    @property
    def is_empty(self) -> bool:
        """True when no item waits in the buffer."""
        return not self._buffer

    @property
    def is_full(self) -> bool:
        """True when a put would have to wait."""
        return len(self._buffer) + self._delayed >= self._maxsize

    @property
    def worker_count(self) -> int:
        """How many workers are running."""
        return len(self._pool)

    @property
    def unprocessed(self) -> list[T]:
        """A copy of the accepted items that were never processed.

        Listed as they were given up: items cancelled in flight as their workers
        end, then what was left in the buffer, oldest first, then items that were
        waiting for a retry.
        """
        return list(self._unprocessed)

    @property
    def in_flight(self) -> int:
        """How many items have been taken (by workers or `get`) and not finished."""
        return self._in_flight_now()

    @property
    def concurrency_limit(self) -> int | None:
        """How many items may be handled at once (None: one per worker).

        Once the setter returns, no new item starts while ``concurrency_limit`` or
        more are being handled; items already running when it is lowered finish.
        While the queue is held (see `hold`) no new item starts at all; a limit
        set meanwhile applies once the hold ends.
        """
        return self._concurrency_limit

    @concurrency_limit.setter
    def concurrency_limit(self, value: int | None) -> None:
        limit = check_optional_int("concurrency_limit", value, minimum=1)
        self._concurrency_limit = limit
        if self._held_until is not None:
            return  # the hold's end gives the slots back
        # Lowered: workers over the limit give back their slots before their
        # next item. Raised: idle workers take the new slots for buffered items.
        self._slots = _tokens(limit)
        while self._wake_consumer():
            pass

    @property
    def metrics(self) -> dict[str, int]:
        """A fresh snapshot of the counters.

        ``enqueued``, ``processed`` (errors included), ``errors`` (items whose
        final outcome was a failure), ``backpressure_events`` (puts that gave up
        on a full queue), ``retries`` (calls scheduled again after a failure),
        ``in_flight``, ``delayed`` (waiting out a retry's backoff) and
        ``unprocessed`` (how many items are listed in `unprocessed`).
        """
        return {
            "enqueued": self._enqueued,
            "processed": self._processed,
            "errors": self._calls.errors,
            "backpressure_events": self._backpressure_events,
            "retries": self._calls.retries,
            "in_flight": self._in_flight_now(),
            "delayed": self._delayed,
            "unprocessed": len(self._unprocessed),
        }

    def statistics(self) -> QueueStatistics:
        """A frozen snapshot: the counters of `metrics`, who waits, and how much
        of the concurrency limit is in use (while the queue is held, the calls
        still running: waiting workers hold no slot)."""
        return QueueStatistics(
            **self.metrics,
            size=len(self._buffer),
            maxsize=self._maxsize,
            workers=len(self._pool),
            idle_workers=self._idle_workers.parked + self._pool.reserved,
            tasks_waiting_put=self._producers.parked,
            tasks_waiting_get=self._getters.parked,
            concurrency_limit=self._concurrency_limit,
            slots_in_use=self._active,
        )

    @property
    def errors_by_type(self) -> dict[str, int]:
        """A fresh count of failed items by the qualified name of their error."""
        return dict(self._calls.error_types)

    @property
    def held_until(self) -> float | None:
        """The time the current hold ends, on the queue's clock; None if not held.

        See `hold`. Reads the clock, so (with the default clock) read it inside
        the event loop.
        """
        held_until = self._held_until
        if held_until is not None and held_until > self._now():
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
        if check_hold(seconds):
            self._hold_until(self._now() + seconds)

    def _hold_until(self, deadline: float) -> None:
        if self._held_until is not None and deadline <= self._held_until:
            return
        self._held_until = deadline
        # No slot is free: the worker loop checks the slots before every item
        # anyway, so it stops before its next call at no cost to the hot path,
        # and no worker is woken for new items.
        self._slots = 0.0
        if self._hold_end is not None:
            self._timers.withdraw(self._hold_end)
        self._hold_end = self._timers.add(_HOLD_END, deadline)

    def _end_hold(self) -> None:
        """The hold is over: give the slots back, and wake workers for items."""
        self._held_until = None
        self._hold_end = None
        self._slots = _tokens(self._concurrency_limit)
        while self._wake_consumer():
            pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._describe()}>"

    def _describe(self) -> str:
        return (
            f"{self._status.value}, size={len(self._buffer)}/{self._maxsize}, "
            f"workers={len(self._pool)}, in_flight={self._in_flight_now()}, "
            f"delayed={self._delayed}, concurrency_limit={self._concurrency_limit}"
        )

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Move the queue to PROCESSING so it accepts items. Idempotent.

        A STOPPED queue starts again, with its counters and `unprocessed` kept.
        Puts and gets that were waiting when it stopped have been refused; they
        never carry over into the new run.

        Raises:
            QueueStateError: the queue is STOPPING.
        """
        if self._status is QueueStatus.PROCESSING:
            return
        check_not_stopping(self._status)
        self._now = self._calls.now = reader(self._clock)  # bound to this event loop
        for line in (self._producers, self._getters, self._idle_workers):
            line.bind()
        self._run += 1
        self._starting = 0  # (a worker started for the last run that never ran)
        self._status = QueueStatus.PROCESSING
        hold_end = self._hold_end
        if hold_end is not None and not hold_end.live:
            # Held through a stop, which emptied the delay line: the hold
            # still ends at its time.
            self._hold_end = self._timers.add(_HOLD_END, hold_end.due)
        if self._task_group is not None and self._timer_scope is None:
            # Started again inside its `async with`: the block's task releases
            # retries again, as it did before the stop.
            self._start_timers(self._task_group, beside_workers=False)

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
        timeout = check_seconds("timeout", timeout, allow_none=True)
        if self._status in (QueueStatus.IDLE, QueueStatus.STOPPED):
            self._finalize()
            return
        run = self._run
        self._status = QueueStatus.STOPPING
        self._producers.wake_all()
        self._getters.wake_all()
        self._tell_stop_listeners()
        self._pool.withdraw()
        await self._end_workers(list(self._pool.workers), timeout)
        if self._run == run:  # not started again meanwhile: a new run is not ours
            self._finalize()

    @contextmanager
    def _told_of_stop(
        self, listener: Callable[[], object]
    ) -> Generator[None, None, None]:
        """Call ``listener()`` at each step of a stop while the block runs.

        The steps: the stop begins (the queue is STOPPING, and takes no new
        item), the queue is STOPPED (what was buffered or delayed is listed in
        `unprocessed`), and the last worker leaves a stopped queue (a worker
        that stopped its own queue finishes its item after that). A map's reader
        ends once none of its items can still come, and a batch's feed stops
        drawing from its source: both look again at each step. A listener must
        not wait, and may be told of one step more than once.
        """
        self._stop_listeners.append(listener)
        try:
            yield
        finally:
            self._stop_listeners.remove(listener)

    def _tell_stop_listeners(self) -> None:
        for listener in list(self._stop_listeners):  # (one may leave meanwhile)
            listener()

    async def join(self) -> None:
        """Wait until every accepted item is processed or the queue has stopped."""
        await self._join(while_consumers=False)

    async def _join(self, *, while_consumers: bool) -> None:
        """`join`; with ``while_consumers``, stop waiting too once nobody consumes.

        Consumers are workers, parked `get` callers and items taken by `get` and
        not yet marked done: with none of them, no buffered item will be taken.
        """
        while (
            self._unfinished()
            and self._status is not QueueStatus.STOPPED
            and (not while_consumers or self._consuming())
        ):
            if self._join_event is None:
                self._join_event = Event()
            await self._join_event.wait()

    def _consuming(self) -> bool:
        getters = self._getters
        return bool(
            self._pool.workers
            or self._pool.reserved
            or getters.parked
            or getters.woken
            or self._taken_by_get
        )

    def _release_joiners(self) -> None:
        """Wake every `join` waiter; each looks again at what it waits for."""
        if self._join_event is not None:
            self._join_event.set()
            self._join_event = None

    @asynccontextmanager
    async def _lifespan(self) -> AsyncGenerator[None, None]:
        """Own a task group for the workers, and stop the queue on the way out."""
        started = False  # (a queue that is stopping refuses the block)
        ended: int | None = None  # the run the block ends
        try:
            with unwrapped_group():  # the one exception that ended the block
                async with create_task_group() as tg:
                    await self.start()
                    started = True
                    self._task_group = tg
                    # The block's own task releases retries for as long as it
                    # runs, for workers and get() callers alike.
                    self._start_timers(tg, beside_workers=False)
                    try:
                        yield
                        await self._join(while_consumers=True)
                        ended = self._leave_group()
                        await self.stop()
                    except BaseException:
                        if ended is None:
                            ended = self._leave_group()
                        if self._run == ended:
                            self._abort()
                            with CancelScope(shield=True):
                                await self._pool.wait(list(self._pool.workers))
                        raise
        finally:
            if started and (ended is None or self._run == ended):
                self._task_group = None
                self._finalize()

    def _leave_group(self) -> int:
        """The ``async with`` block ends the current run: return it.

        From now on the block's task group only waits for its last tasks: a
        run that another task starts meanwhile is not the block's (the block
        neither stops it nor puts its tasks in that group).
        """
        self._task_group = None
        return self._run

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
        if self._status is not _PROCESSING:
            self._check_running("put")
        self._fast_puts += 1
        if self._fast_puts >= _YIELD_EVERY:
            self._fast_puts = 0
            run = self._run
            await checkpoint()
            self._check_run("put", run)
        if len(self._buffer) + self._delayed < self._maxsize:
            self._buffer.append(item)
            # `_accepted`, written out: once per put.
            self._enqueued += 1
            if self._getters.parked or self._idle_workers.parked or self._pool.reserved:
                self._wake_consumer()
            return True
        return await self._put_waiting(item, timeout)

    async def _put_waiting(self, item: T, timeout: float | None) -> bool:
        if timeout is None:
            await self._put_when_room(item)
            return True
        if timeout != 0:
            with move_on_after(timeout):
                await self._put_when_room(item)
                return True
        else:
            await checkpoint()  # a caller retrying at once must not starve workers
        self._backpressure_events += 1
        return False

    async def _put_when_room(self, item: T) -> None:
        run = self._run
        again = False
        while True:
            # Woken but beaten to the slot: wait again without losing our place.
            await self._producers.park(first=again)
            again = True
            self._fast_puts = 0  # it has just yielded
            self._check_run("put", run)
            if len(self._buffer) + self._delayed < self._maxsize:
                self._buffer.append(item)
                self._accepted()
                return
            # Another producer took the slot first: wait for the next one.

    def _accepted(self) -> None:
        self._enqueued += 1
        if self._getters.parked or self._idle_workers.parked or self._pool.reserved:
            self._wake_consumer()

    def _wake_producer(self) -> None:
        if len(self._buffer) + self._delayed < self._maxsize:
            self._producers.wake_one()

    def _put_nowait(self, item: T) -> bool:
        """Put ``item`` if there is room now, without yielding; else False.

        Raises:
            QueueStateError: the queue is not PROCESSING.
        """
        if self._status is not _PROCESSING:
            self._check_running("put")
        if len(self._buffer) + self._delayed < self._maxsize:
            self._buffer.append(item)
            self._accepted()
            return True
        return False

    def _try_put(self, item: T) -> bool:
        """`put`'s path that does not wait: True once ``item`` is accepted; False
        (nothing done) when `put` must be awaited: no room, not PROCESSING, or
        time for put's periodic yield."""
        if (
            self._status is _PROCESSING
            and self._fast_puts < _YIELD_EVERY - 1
            and len(self._buffer) + self._delayed < self._maxsize
        ):
            self._fast_puts += 1
            self._buffer.append(item)
            self._accepted()
            return True
        return False

    def _room_to_put(self) -> int:
        """How many items a put would accept now, without waiting.

        Raises:
            QueueStateError: the queue is not PROCESSING.
        """
        if self._status is not _PROCESSING:
            self._check_running("put")
        return self._maxsize - len(self._buffer) - self._delayed

    def _put_all_nowait(self, items: list[T]) -> None:
        """Put every item of ``items`` at once, without yielding: the caller
        found room for them all with `_room_to_put` (as a map's reader does,
        topping the queue up a chunk at a time).

        Raises:
            QueueStateError: the queue is not PROCESSING (nothing was put).
        """
        if self._status is not _PROCESSING:
            self._check_running("put")
        self._buffer.extend(items)
        self._enqueued += len(items)
        if self._getters.parked or self._idle_workers.parked or self._pool.reserved:
            # As many wake-ups as that many puts would try, until one finds
            # nobody more to wake.
            for _ in items:
                if not self._wake_consumer():
                    break

    def _record_refused(self, item: T) -> None:
        """Record an item drawn for this queue (by a batch) that was never put.

        It is counted as enqueued and listed in `unprocessed`, so that every item
        read from a batch's iterable ends processed or listed.
        """
        self._enqueued += 1
        self._unprocessed.append(item)

    def _give_up_buffered(self) -> list[T]:
        """Take every buffered item out, oldest first, and list it in
        `unprocessed` (a RedisWorkQueue hands them back to its group at once,
        before its workers finish what they hold)."""
        given_up = [_unwrap(entry) for entry in self._buffer]
        self._buffer.clear()
        self._unprocessed.extend(given_up)
        if self._producers.parked:
            self._wake_producer()
        if self._join_event is not None:
            self._release_joiners_if_done()
        return given_up

    # -- consumers --------------------------------------------------------------

    def put_nowait(self, item: T) -> None:
        """Add ``item`` if there is room now, without waiting or yielding.

        Raises:
            anyio.WouldBlock: the queue is full (counted as a backpressure
                event); the item was not accepted.
            QueueStateError: the queue is not PROCESSING.
        """
        if not self._put_nowait(item):
            self._backpressure_events += 1
            raise WouldBlock

    def get_nowait(self) -> T:
        """Take the next item if there is one now, without waiting or yielding.

        Pair it with a `task_done` once the item is handled, as for `get`.

        Raises:
            anyio.WouldBlock: the buffer is empty.
            QueueStateError: the queue is not PROCESSING.
        """
        self._check_running("get")
        if not self._buffer:
            raise WouldBlock
        entry = self._take()
        self._taken_by_get += 1
        return _unwrap(entry)

    async def get(self) -> T:
        """Take the next item, waiting until there is one.

        Pair every get with a `task_done` once the item is handled. Parked get
        callers are served in the order they started waiting. Atomic under
        cancellation: if get raises, no item was taken.

        Raises:
            QueueStateError: the queue is not PROCESSING (also if it stops while
                this get waits).
        """
        self._check_running("get")
        run = self._run
        again = False
        while not self._buffer:
            try:
                # Woken but beaten to the item: wait again, first in line.
                await self._getters.park(first=again)
            except BaseException:
                self._release_joiners()  # one consumer fewer
                raise
            again = True
            self._check_run("get", run)
        entry = self._take()
        self._taken_by_get += 1
        return _unwrap(entry)

    def task_done(self) -> None:
        """Record that an item taken with `get` has been handled.

        Raises:
            ValueError: called more times than items were taken with `get`.
        """
        if self._taken_by_get <= 0:
            raise ValueError("task_done() called more times than items taken by get()")
        self._taken_by_get -= 1
        self._finished()
        if not self._taken_by_get:
            self._release_joiners()  # the `async with` exit may stop waiting

    def _take(self) -> T | _Retry:
        """Take the first buffered entry (the caller checked there is one)."""
        entry = self._buffer.popleft()
        if self._producers.parked:
            self._wake_producer()
        return entry

    def _wake_consumer(self, coming: int = 0) -> bool:
        """Wake a parked get() caller, else an idle worker that a slot is free
        for, unless those on their way will take every buffered item; True if
        one was woken. ``coming`` is 1 when the caller is a worker just woken.

        While workers hold slots they may come back for the items before a
        woken worker runs: then only one idle worker is woken at a time, and
        it wakes up to two more if still needed when it runs (`_woken`).
        """
        getters = self._getters
        idle = self._idle_workers
        woken = idle.woken + self._starting
        on_their_way = getters.woken + woken + self._looking + coming
        if on_their_way >= len(self._buffer):
            return False  # those on their way will take every buffered item
        if getters.parked:
            return getters.wake_one()
        if self._active + woken + coming >= self._slots:
            return False  # a worker holding a slot takes it next
        if woken and self._active and not coming:
            return False  # the worker woken first wakes the rest it needs
        return idle.wake_one() or self._start_reserved()

    def _start_reserved(self) -> bool:
        """Start a worker from the pool's reserve, as if woken; True if one was."""
        if self._status is not _PROCESSING:
            return False
        worker = self._pool.start_reserved()
        if worker is None:
            return False
        self._starting += 1
        return True

    async def _park_idle(self, worker: Worker) -> None:
        """Park ``worker`` in the idle line (where ending it cancels it) until it
        is woken for an item; then wake the others still needed."""
        worker.parked = True
        await self._idle_workers.park()
        worker.parked = False
        self._woken()

    def _woken(self) -> None:
        """A worker woken for an item: wake up to two more, if still needed.

        Each of those does the same, so a burst reaches every idle worker it
        needs within a few turns of the loop; and a worker woken before busy
        workers came back for the items (trio runs a turn's tasks in random
        order) wakes two that find nothing, not one per item.
        """
        if self._status is _PROCESSING and self._wake_consumer(coming=1):
            self._wake_consumer(coming=1)

    def _finished(self) -> None:
        self._processed += 1
        if self._join_event is not None:
            self._release_joiners_if_done()

    def _release_joiners_if_done(self) -> None:
        if not self._unfinished():
            self._release_joiners()

    def _abandoned(self, item: T) -> None:
        self._unprocessed.append(item)
        if self._on_abandoned is not None:
            self._on_abandoned(item)
        if self._join_event is not None:
            self._release_joiners_if_done()

    def _in_flight_now(self) -> int:
        # Not counted as items come and go (that would cost twice per item): the
        # books give it, as what is neither finished, buffered, delayed nor
        # listed.
        return (
            self._enqueued
            - self._processed
            - len(self._buffer)
            - self._delayed
            - len(self._unprocessed)
        )

    def _unfinished(self) -> int:
        return self._enqueued - self._processed - len(self._unprocessed)

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
        job = _Job(
            worker_func,
            error_handler,
            retry=check_retry(retry),
            timeout=check_item_timeout(item_timeout),
            limiter=check_rate_limiter(rate_limiter),
        )
        check_task_group(task_group)
        self._check_running("start_workers")
        group = worker_group("start_workers", task_group, self._task_group)
        self._spawn_workers(group, job, num_workers)

    def _spawn_workers(
        self, group: TaskGroup, job: _Job[T], num_workers: int
    ) -> list[Worker]:
        """Start workers in ``group`` (arguments already checked); return them."""
        workers = self._pool.spawn(group, num_workers, self._run_worker, job)
        self._starting += len(workers)
        if self._buffer and self._pool.reserved:
            # Items wait already: start reserved workers for them now (each
            # started one starts more while items are left), as a put would.
            self._wake_consumer()
        if self._timer_scope is None:
            # Without a task group of the queue's own, the timers' task lives
            # beside the workers and ends with the last of them.
            self._start_timers(group, beside_workers=True)
        return workers

    def _start_timers(self, group: TaskGroup, *, beside_workers: bool) -> None:
        """Start the task that releases retries when due (and, on an injected
        clock, cancels calls past their deadline)."""
        self._timer_scope = CancelScope()
        self._timers_beside_workers = beside_workers
        group.start_soon(self._run_timers, self._timer_scope, group)

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
        if self._runs_by:
            raise QueueStateError(
                f"cannot stop_workers(): a map() or batch_process() runs its "
                f"workers on this queue ({self._runs_by[-1]}), and without them would "
                "wait forever for its items; leave its block (break out of a "
                "map), or stop() the queue to end it with every finished outcome"
            )
        self._pool.withdraw()
        await self._end_workers(list(self._pool.workers), timeout)

    @contextmanager
    def _run_by(self, call: str) -> Generator[None, None, None]:
        """While the block runs, a map or batch (``call``) runs its workers
        here: `stop_workers` refuses, instead of stranding its items."""
        self._runs_by.append(call)
        try:
            yield
        finally:
            self._runs_by.remove(call)

    async def _run_worker(self, worker: Worker, job: _Job[T]) -> None:  # noqa: PLR0915
        """One worker: take items and handle them until asked to stop.

        The loop is written out in one coroutine on purpose: every await nested
        in the worker costs a frame on each resume, and this is the hot path.
        Items with nothing around their call (no retry, timeout or results) are
        handled inline; the others go through `_handle`.
        """
        self._pool.entered(worker)
        # On its way to the buffer until now, as a woken worker is: do as one
        # does, and wake others if more items wait than are being come for.
        self._starting -= 1
        self._woken()
        producers = self._producers
        buffer = self._buffer
        func = job.func
        plain = job.plain
        sink = job.sink
        now = self._now
        started = 0.0
        # When the last item ended, while this worker has gone straight on since
        # (it is then when the next one starts: one clock reading per item).
        mark: float | None = None
        try:
            while not worker.stopping:
                mark = None
                if self._active >= self._slots:
                    # No slot free (the limit was lowered, or the queue is
                    # held): wait for one. This worker may have been counted as
                    # on its way to an item (woken, or looking): pass that on,
                    # to a get() perhaps.
                    if buffer:
                        self._wake_consumer()
                    await self._park_idle(worker)
                    continue
                # Hold the slot while there is work; give it back to go idle,
                # or as soon as the limit has been lowered below those held.
                self._active += 1
                try:
                    handled = 0
                    # Items the queue had finished when this stretch began.
                    stretch = self._processed
                    while buffer and not worker.stopping:
                        if self._active > self._slots:
                            break
                        # `_take`, written out (as is `_finished` below): the
                        # hot path, once per item.
                        entry = buffer.popleft()
                        if producers.parked:
                            self._wake_producer()
                        if plain and type(entry) is not _Retry:
                            item: T = entry  # type: ignore[assignment]
                            call: Awaitable[object] | None = None
                            if sink is not None:
                                started = now() if mark is None else mark
                            try:
                                call = func(item)
                                value = await call
                            except Exception as exc:
                                mark = None  # the failure's handling may wait
                                await self._failed(exc, item, job, call, first=started)
                            except BaseException as exc:
                                stray = stray_cancellation(exc)
                                if stray is None:
                                    self._abandoned(item)
                                    raise
                                mark = None
                                await self._failed(
                                    stray, item, job, call, first=started
                                )
                            else:
                                if sink is not None:
                                    mark = now()
                                    duration = mark - started
                                    sink(Outcome(item, value, None, 1, duration))
                                self._processed += 1
                                if self._join_event is not None:
                                    self._release_joiners_if_done()
                        else:
                            mark = None
                            await self._handle(entry, job)
                        handled += 1
                        if handled == _YIELD_EVERY:
                            # Yield unless other workers have finished items
                            # since the stretch began (more than this one's
                            # own): they can only have run if its calls
                            # yielded. (Puts are not counted: a worker
                            # function may put without yielding.)
                            handled = 0
                            if self._processed - stretch <= _YIELD_EVERY:
                                await checkpoint()
                                mark = None
                            stretch = self._processed
                finally:
                    self._active -= 1
                if worker.stopping or buffer:
                    continue
                if handled:
                    # Busy until now: look once more after the other tasks
                    # have run (the producer may be refilling) before parking.
                    # Counted as a consumer on its way, so that no idle
                    # worker is woken for what this one will take.
                    self._looking += 1
                    try:
                        await checkpoint()
                    finally:
                        self._looking -= 1
                    if worker.stopping or buffer:
                        continue
                await self._park_idle(worker)
        finally:
            # Woken for an item, then told to stop before it ran: pass it on.
            if self._buffer and self._status is _PROCESSING:
                self._wake_consumer()
            self._pool.left(worker)

    def _last_worker_left(self) -> None:
        # Beside workers, delays wait for workers: what falls due meanwhile is
        # released when workers start again (or listed when the queue stops).
        if self._timer_scope is not None and self._timers_beside_workers:
            self._timer_scope.cancel()
            self._timer_scope = None
        if self._status is QueueStatus.STOPPING:
            self._finalize()
            return
        # Wake the `async with` exit: no worker is left to wait for.
        self._release_joiners()
        if self._status is QueueStatus.STOPPED and self._stop_listeners:
            self._tell_stop_listeners()  # a worker that stopped its queue is done

    def _timers_due(self, values: list[Timed]) -> None:
        """Retries whose backoff is over go back to the front of the buffer, in
        the order they fell due; calls whose deadline has come are cancelled;
        a hold that is over ends."""
        retries = [value for value in values if type(value) is _Retry]
        hold_ends = False
        for value in values:
            if isinstance(value, CancelScope):
                value.cancel()
            elif value is _HOLD_END:
                hold_ends = True
        if hold_ends:
            self._end_hold()  # first: waking workers for the retries needs slots
        if retries:
            self._delayed -= len(retries)
            self._buffer.extendleft(reversed(retries))
            for _ in retries:
                if (
                    self._getters.parked
                    or self._idle_workers.parked
                    or self._pool.reserved
                ):
                    self._wake_consumer()

    async def _run_timers(self, scope: CancelScope, group: TaskGroup) -> None:
        try:
            with scope:
                await self._timers.run()
        except get_cancelled_exc_class():
            if self._timer_scope is scope:
                # Cancelled with its task group, not by the queue: workers of
                # other groups still need their retries released (and, on an
                # injected clock, their deadlines kept).
                self._timer_scope = None
                self._restart_timers(group)
            raise

    def _restart_timers(self, dead: TaskGroup) -> None:
        """Start the timers' task beside a worker whose task group is not
        ``dead`` nor cancelled; none is left running if there is no such worker
        (the next `start_workers` starts it)."""
        for worker in self._pool.workers:
            group = worker.spawn.group if worker.spawn is not None else dead
            if group is dead or group.cancel_scope.cancel_called:
                continue
            try:
                self._start_timers(group, beside_workers=True)
            except RuntimeError:  # that group has closed
                self._timer_scope = None
                continue
            return

    def _log_failure(self, exc: Exception, item: T) -> None:
        """Log a failure no handler took, by the queue's one log policy (the
        Executor's and the RedisWorkQueue's error handlers use it too)."""
        self._failure_log.log(exc, item)

    async def _end_workers(self, workers: list[Worker], timeout: float | None) -> None:
        # Idle workers are cancelled where they park, not woken: a wake-up would
        # count as one handed out for an item and hold back the next.
        self._pool.withdraw(workers)  # a crew's reserve: start no more of it
        try:
            await self._pool.end(workers, timeout)
        except BaseException:
            me = self._pool.current()  # a worker's own item goes on
            self._pool.cancel([worker for worker in workers if worker is not me])
            raise

    # -- state ------------------------------------------------------------------

    def _abort(self) -> None:
        """Stop at once: refuse new work and cancel every worker."""
        if self._status is QueueStatus.PROCESSING:
            self._status = QueueStatus.STOPPING
        self._producers.wake_all()
        self._getters.wake_all()
        self._idle_workers.wake_all()
        self._pool.cancel()

    def _finalize(self) -> None:
        """List what is left (buffered, then delayed) in `unprocessed`; STOPPED."""
        if self._status is QueueStatus.STOPPED:
            return
        self._unprocessed.extend(_unwrap(entry) for entry in self._buffer)
        self._buffer.clear()
        for value in self._timers.drain():
            if type(value) is _Retry:
                self._unprocessed.append(value.item)
        self._delayed = 0
        if self._timer_scope is not None:
            self._timer_scope.cancel()
            self._timer_scope = None
        self._status = QueueStatus.STOPPED
        self._producers.wake_all()
        self._getters.wake_all()
        self._idle_workers.wake_all()
        self._release_joiners()
        self._failure_log.log_counts()
        if self._on_stopped is not None:
            self._on_stopped()
        self._tell_stop_listeners()

    def _check_run(self, operation: str, run: int) -> None:
        """Raise unless the queue is still in the run that ``operation`` began in."""
        if self._run != run and self._status is _PROCESSING:
            raise QueueStateError(
                f"cannot {operation}(): the queue was stopped while this call "
                "waited (it has been started again since; call again to use the "
                "new run)"
            )
        self._check_running(operation)

    def _check_running(self, operation: str) -> None:
        check_running(self._status, operation)


def _tokens(limit: int | None) -> float:
    return float("inf") if limit is None else limit
