"""Executor: runs events through a WorkQueue and records how each one went."""

from __future__ import annotations

import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
)
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Generic, TypeAlias, TypeVar

from anyio import create_task_group
from anyio.abc import TaskGroup

from ._calls import Job, check_item_timeout, check_retry
from ._checks import check_iterable, check_optional_int
from ._clock import Clock, reader
from ._collect import Collector
from ._config import QueueConfig
from ._events import Event, ExecutionStatus
from ._exceptions import QueueStateError, unwrapped_group
from ._feed import feed_until_stopped
from ._gate import Gate
from ._ledger import EventLedger
from ._lifecycle import check_task_group, worker_group
from ._protocols import RateLimiterProtocol, check_rate_limiter
from ._queue import core_of
from ._rate_limit import RateLimiter
from ._results import MapResults, collector_of
from ._retry import RetryPolicy
from ._scoped import Scoped
from ._status import USE_QUEUE_TIMEOUT, QueueStatus, UseQueueTimeout
from ._work_queue import WorkQueue

__all__ = ["Executor"]

E = TypeVar("E", bound="Event[Any]")

_PROCESSING = ExecutionStatus.PROCESSING  # bound once: read once per event
_Events: TypeAlias = "Iterable[E] | AsyncIterable[E]"
_Window: TypeAlias = "Collector[E, object] | None"


def _start_rate(config: QueueConfig, clock: Clock | None) -> RateLimiter | None:
    """Up to queue_capacity starts at once, then queue_capacity per refresh."""
    refresh, capacity = config.capacity_refresh_time, config.queue_capacity
    if refresh is None:
        return None
    return RateLimiter(capacity, refresh, burst=capacity, clock=clock)


class Executor(Scoped, Generic[E]):
    """Runs events of one type, at a bounded rate and concurrency, and records them.

    **Its start rate is limited**: the executor starts at most ``queue_capacity``
    events per ``capacity_refresh_time`` seconds (100 per second with the default
    QueueConfig), through a token bucket of ``queue_capacity`` tokens that
    refills continuously, so in any t seconds at most ``queue_capacity * (1 + t /
    capacity_refresh_time)`` start. ``QueueConfig(capacity_refresh_time=None)``
    lifts it. A ``rate_limiter`` of your own (perhaps shared with other
    executors) applies on top.

    Append events with `append` (or `put` them one by one, hand over a whole
    `batch_process`, or read them back as they finish with `completed`); inside
    ``async with executor:`` they run in ``queue_config.concurrency_limit``
    workers (1 when None), each event's ``invoke`` awaited (once, or once per
    attempt with a ``retry`` policy), its `execution` filled in: PROCESSING, then
    COMPLETED with the response, FAILED with the error, or CANCELLED.

    Args:
        event_type: The Event subclass this executor accepts.
        queue_config: Buffer size, start rate and concurrency; defaults to
            ``QueueConfig()``.
        rate_limiter: An extra rate limiter (a `RateLimiter`, or anything that
            satisfies `RateLimiterProtocol`) each call takes a token from; a
            call raising `RetryAfter` holds it (and the start rate) for that
            long. Without one too, such a call holds the executor's queue:
            no event starts until then (see `BoundedQueue.hold`).
        clock: Where the start-rate bucket, retry delays and item timeouts read
            the time and sleep; the event loop's by default.
        logger: Where failures are logged (see `BoundedQueue.start_workers`).
        retry: A `RetryPolicy` for failed events (None: no retries).
        item_timeout: Seconds an invoke may run before it is cancelled and fails
            with `ItemTimeoutError`, a TimeoutError that a ``retry`` policy
            retries (None: no limit).
        history: How many finished events each of `completed_events`,
            `failed_events` and `cancelled_events` keeps, newest last (None: all;
            0: none, for a long-running executor in constant memory). The counts
            in `metrics` are kept in full either way.
    """

    def __init__(
        self,
        event_type: type[E],
        queue_config: QueueConfig | None = None,
        *,
        rate_limiter: RateLimiterProtocol | None = None,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
        retry: RetryPolicy | None = None,
        item_timeout: float | None = None,
        history: int | None = None,
    ) -> None:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(
                f"event_type must be a subclass of sluicegate.Event, got {event_type!r}"
            )
        if queue_config is None:
            queue_config = QueueConfig()
        elif not isinstance(queue_config, QueueConfig):
            raise TypeError(
                f"queue_config must be a QueueConfig or None, got {queue_config!r}"
            )
        self._event_type = event_type
        self._config = queue_config
        # The start rate first, then the user's limiter.
        limiter = check_rate_limiter(rate_limiter)
        gate = Gate((_start_rate(queue_config, clock), limiter), clock)
        history = check_optional_int("history", history, minimum=0)
        self._ledger: EventLedger[E] = EventLedger(event_type, history)
        self._clock = clock
        self._queue: WorkQueue[E] = WorkQueue(
            queue_config.queue_capacity,
            concurrency_limit=queue_config.concurrency_limit,
            logger=logger,
            retry=retry,
            item_timeout=item_timeout,
            clock=clock,
        )
        self._num_workers = queue_config.concurrency_limit or 1
        # However the queue reaches STOPPED (a cancelled stop included), what can
        # no longer run is marked CANCELLED.
        core_of(self._queue.queue).listen_to_stop(self._cancel_leftovers)
        # How its workers run an event: no coroutine of the executor's around
        # the call; its gate is asked at the worker's clock reading, and what
        # the ledger records comes through the job's hooks.
        ledger = self._ledger
        self._job: Job[E] = Job(
            ledger.start,
            None,  # a final failure is logged by the queue's one log policy
            retry=check_retry(retry),
            timeout=check_item_timeout(item_timeout),
            sink=ledger.record,
            gate=gate if gate.limiters else None,
            on_abandoned=ledger.abandoned,
        )

    # -- state ------------------------------------------------------------------

    @property
    def event_type(self) -> type[E]:
        """The Event subclass this executor accepts."""
        return self._event_type

    @property
    def queue_config(self) -> QueueConfig:
        """The configuration the executor's queue was built from."""
        return self._config

    @property
    def queue(self) -> WorkQueue[E]:
        """The WorkQueue the events run through."""
        return self._queue

    @property
    def status(self) -> QueueStatus:
        """The status of the executor's queue."""
        return self._queue.status

    @property
    def _running(self) -> bool:
        """True once started, with workers (`start` does nothing then)."""
        return self.status is QueueStatus.PROCESSING and bool(self._queue.worker_count)

    @property
    def pending_events(self) -> list[E]:
        """Events appended (or drawn by a batch) that the queue has not accepted."""
        return self._ledger.pending_events()

    @property
    def completed_events(self) -> list[E]:
        """Events whose invoke returned, in the order they finished."""
        return list(self._ledger.completed)

    @property
    def failed_events(self) -> list[E]:
        """Events whose invoke raised an exception."""
        return list(self._ledger.failed)

    @property
    def cancelled_events(self) -> list[E]:
        """Events cancelled while running, or never run because the executor
        stopped."""
        return list(self._ledger.cancelled)

    @property
    def is_all_processed(self) -> bool:
        """True when no event is pending, buffered or running."""
        queue = self._queue.queue
        return (
            not self._ledger.pending_count and queue.size == 0 and queue.in_flight == 0
        )

    @property
    def metrics(self) -> dict[str, int]:
        """The queue's counters plus ``pending``, ``completed``, ``failed`` and
        ``cancelled`` event counts; a fresh dict on every read."""
        metrics = self._queue.metrics
        metrics["pending"] = self._ledger.pending_count
        metrics.update(self._ledger.counts())
        return metrics

    def __repr__(self) -> str:
        refresh = self._config.capacity_refresh_time
        starts = (
            "no start-rate limit"
            if refresh is None
            else f"starts <= {self._config.queue_capacity} per {refresh:g} s"
        )
        return (
            f"<Executor[{self._event_type.__qualname__}] {self.status.value}, "
            f"{starts}, workers={self._num_workers}, "
            f"pending={self._ledger.pending_count}, "
            f"buffered={self._queue.size}, running={self._queue.queue.in_flight}, "
            + ", ".join(f"{name}={n}" for name, n in self._ledger.counts().items())
            + ">"
        )

    # -- feeding events -----------------------------------------------------------

    def append(self, event: E) -> None:
        """Record ``event`` as pending; `forward` (or leaving ``async with``) queues
        it.

        Raises:
            TypeError: event is not an instance of the executor's event type.
            ValueError: this executor already holds the event or has run it (an
                event is invoked once; make a new one to run it again).
        """
        self._ledger.claim(event)
        self._ledger.pending.append(event)

    async def forward(self) -> None:
        """Move every pending event into the queue, waiting while it is full.

        Never drops an event: if forward is cancelled, the event it was putting
        stays pending.

        Raises:
            QueueStateError: the executor is not running.
        """
        pending = self._ledger.pending
        while pending:
            event = pending.popleft()
            try:
                await self._put_drawn(event, None)
            except BaseException:
                pending.appendleft(event)  # put is atomic: not accepted
                self._cancel_leftovers()  # the queue may have stopped meanwhile
                raise

    async def _put_drawn(self, event: E, timeout: None) -> bool:
        """Put an event taken from pending or a batch, counting it as pending."""
        with self._ledger.drawing(event):
            return await self._queue.queue.put(event, timeout)

    async def put(
        self,
        event: E,
        timeout: float | UseQueueTimeout | None = USE_QUEUE_TIMEOUT,
    ) -> bool:
        """Queue one event: True once accepted, False on backpressure.

        The same contract as `WorkQueue.put`: on a full queue it waits up to
        ``timeout`` seconds, then returns False and the event is not recorded.

        Raises:
            TypeError: event is not an instance of the executor's event type.
            ValueError: this executor already holds the event or has run it.
            QueueStateError: the executor is not running.
        """
        self._ledger.claim(event)
        accepted = False
        try:
            accepted = await self._queue.put(event, timeout)
        finally:
            if not accepted:
                self._ledger.release(event)  # not recorded: it may be put again
        return accepted

    async def batch_process(self, events: Iterable[E] | AsyncIterable[E]) -> None:
        """Run every event of ``events`` and return when all are processed.

        Events are read lazily and put with backpressure. Inside ``async with
        executor:`` they run in its workers; on its own the call opens and
        closes the executor itself.

        If the executor is stopped meanwhile (by another task or by an event),
        it reads no more of ``events`` and returns normally; cancelled, it stops
        reading them too, and the cancellation goes on. Either way an async
        generator is closed, and the events it drew that did not run are
        CANCELLED.

        Raises:
            TypeError: events is not iterable, or holds an event of the wrong type.
                That is raised when it is reached: inside ``async with executor:``
                the events queued before it still run; on its own the call stops
                the executor and they are CANCELLED.
        """
        check_iterable("events", events)
        async with AsyncExitStack() as stack:
            if not self._running:
                await stack.enter_async_context(self)
            await self._feed(events, self._ledger.claim)
            await self._queue.join()

    def completed(
        self,
        events: Iterable[E] | AsyncIterable[E],
        *,
        ordered: bool = False,
        window: int | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[E]]:
        """Run ``events`` and read each one back once it has finished::

            async with executor.completed(fetches) as finished:
                async for event in finished:
                    print(event.execution.status, event.execution.response)

        Events come as they finish (COMPLETED or FAILED, after retries), or in
        input order with ``ordered=True``. They are read lazily; at most
        ``window`` (default: queue_capacity + workers) are read and not yet
        yielded, so a slow reader slows the feed. Inside ``async with
        executor:`` they run in its workers; on its own the call opens and
        closes the executor. Leaving the block early stops reading ``events``;
        an executor the call opened is stopped (what did not run is CANCELLED),
        while in one you opened, the events already queued still run. If the
        executor is stopped under it, no more events are read; each event read
        still comes back (those that did not run, CANCELLED), then the reading
        ends.

        Raises:
            TypeError: events is not iterable, or holds an event of the wrong type.
            ValueError: window < 1, or an event given to an executor before.
        """
        check_iterable("events", events)
        if not isinstance(ordered, bool):
            raise TypeError(f"ordered must be a bool, got {ordered!r}")
        size = check_optional_int("window", window, minimum=1)
        default = self._config.queue_capacity + self._num_workers
        results: MapResults[E, object] = MapResults(
            default if size is None else size, ordered=ordered, raise_errors=False
        )
        return self._completed_events(events, results)

    @asynccontextmanager
    async def _completed_events(
        self, events: _Events[E], results: MapResults[E, object]
    ) -> AsyncGenerator[AsyncIterator[E], None]:
        collector = collector_of(results)

        def check(event: E) -> None:
            self._ledger.claim(event)
            collector.count(event)
            self._ledger.deliver_to(event, collector.deliver)

        async def feed_all() -> None:
            try:
                await self._feed(events, check, collector)
            finally:
                collector.fed_all()

        async def finished() -> AsyncGenerator[E, None]:
            async for outcome in results:
                yield outcome.item

        async with AsyncExitStack() as stack:
            opened = not self._running
            if opened:
                await stack.enter_async_context(self)
            with unwrapped_group():
                async with create_task_group() as tg:
                    tg.start_soon(feed_all)
                    stream = finished()
                    try:
                        yield stream
                    finally:
                        await stream.aclose()
                    if not collector.exhausted:
                        tg.cancel_scope.cancel()  # left early: read no more
            if not collector.exhausted and opened:
                await self.stop(timeout=0)  # and run no more

    async def _feed(
        self, events: _Events[E], check: Callable[[E], None], window: _Window[E] = None
    ) -> None:
        """Put ``events`` as they are drawn (``check`` claims each one). One
        drawn but refused (the put was cancelled, or the executor stopped
        meanwhile) is CANCELLED, never run; a stop ends the feed."""
        core = core_of(self._queue.queue)
        await feed_until_stopped(
            core,
            events,
            self._put_drawn,
            check=check,
            refused=self._ledger.cancel,
            window=window,
            put_now=core.try_put,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, *, task_group: TaskGroup | None = None) -> None:
        """Start the queue and its workers in ``task_group``.

        Inside ``async with executor:``, or once started, this does nothing.

        Raises:
            QueueStateError: no task group given outside ``async with``.
        """
        if self._lifespan_cm is not None or self._running:
            return
        if check_task_group(task_group) is None:
            raise QueueStateError(
                "an Executor runs its events in workers that need a task group: use "
                "`async with executor:`, or `await executor.start(task_group=tg)` "
                "inside `async with anyio.create_task_group() as tg:`"
            )
        self._ledger.now = reader(self._clock)  # one lookup per run
        await self._queue.start()
        self._spawn_workers(task_group)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the workers as `BoundedQueue.stop` does; events that did not run
        (pending, buffered, or cancelled in flight) are marked CANCELLED."""
        try:
            await self._queue.stop(timeout)
        finally:
            self._cancel_leftovers()

    async def join(self) -> None:
        """Forward pending events, then wait until every queued event is
        processed. Returns at once on a stopped executor.

        Raises:
            QueueStateError: events are pending but the executor never started.
        """
        if self._ledger.pending and self._queue.status is not QueueStatus.STOPPED:
            await self.forward()
        await self._queue.join()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncGenerator[None, None]:
        self._ledger.now = reader(self._clock)  # one lookup per run
        try:
            async with self._queue:
                self._spawn_workers(None)
                yield
                if self._queue.status is QueueStatus.PROCESSING:
                    await self.forward()  # (stopped inside the block: CANCELLED)
        finally:
            self._cancel_leftovers()

    # -- running one event -----------------------------------------------------------

    def _spawn_workers(self, task_group: TaskGroup | None) -> None:
        core = core_of(self._queue.queue)
        core.check_running("start_workers")
        group = worker_group("start_workers", task_group, core.task_group)
        core.spawn_workers(group, self._job, self._num_workers)

    def _cancel_leftovers(self) -> None:
        """Mark CANCELLED what can no longer run: pending and unprocessed events."""
        if self._queue.status is QueueStatus.STOPPED:
            self._ledger.cancel_leftovers(self._queue.unprocessed)
