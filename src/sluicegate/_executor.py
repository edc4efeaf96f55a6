"""Executor: runs events through a WorkQueue and records how each one went."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
)
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Generic, TypeVar

from anyio import create_task_group
from anyio.abc import TaskGroup

from ._checks import check_iterable, check_optional_int
from ._clock import Clock, reader
from ._config import QueueConfig
from ._events import Event, ExecutionStatus
from ._exceptions import QueueStateError, unwrapped_group
from ._feed import feed_until_stopped
from ._lifecycle import check_task_group
from ._protocols import RateLimiterProtocol, check_rate_limiter
from ._queue import USE_QUEUE_TIMEOUT, QueueStatus, UseQueueTimeout
from ._rate_limit import RateLimiter
from ._results import MapResults, Outcome
from ._retry import RetryAfter, RetryPolicy
from ._scoped import Scoped
from ._work_queue import WorkQueue

__all__ = ["Executor"]

E = TypeVar("E", bound="Event[Any]")

_UNFINISHED = (ExecutionStatus.PENDING, ExecutionStatus.PROCESSING)
# Bound once: reading an enum member costs a lookup, twice per event.
_PROCESSING = ExecutionStatus.PROCESSING
_COMPLETED = ExecutionStatus.COMPLETED


def _unbound_clock() -> float:
    raise RuntimeError("the executor's clock is bound when it starts")


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
        self._rate_limiter = check_rate_limiter(rate_limiter)
        self._logger = logger if logger is not None else logging.getLogger("sluicegate")
        refresh = queue_config.capacity_refresh_time
        capacity = queue_config.queue_capacity
        # Up to queue_capacity starts at once, then queue_capacity per refresh.
        self._start_rate = (
            None
            if refresh is None
            else RateLimiter(capacity, refresh, burst=capacity, clock=clock)
        )
        history = check_optional_int("history", history, minimum=0)
        self._clock = clock
        # The clock events are timed with; bound to the running loop at start.
        self._now: Callable[[], float] = _unbound_clock
        self._own_limiter: RateLimiter | None = None
        self._queue: WorkQueue[E] = WorkQueue(
            queue_config.queue_capacity,
            concurrency_limit=queue_config.concurrency_limit,
            logger=logger,
            retry=retry,
            item_timeout=item_timeout,
            clock=clock,
        )
        self._num_workers = queue_config.concurrency_limit or 1
        self._pending: deque[E] = deque()
        # Events taken from `_pending` (or drawn from a batch) that the queue has
        # not accepted yet: still pending, so that each event is counted somewhere.
        self._drawn: list[E] = []
        # However the queue reaches STOPPED (a cancelled stop included), what can
        # no longer run is marked CANCELLED.
        self._queue.queue._on_stopped = self._cancel_leftovers
        self._queue.queue._on_abandoned = self._cancel
        self._completed: deque[E] = deque(maxlen=history)
        self._failed: deque[E] = deque(maxlen=history)
        self._cancelled: deque[E] = deque(maxlen=history)
        self._counts = {"completed": 0, "failed": 0, "cancelled": 0}

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
    def pending_events(self) -> list[E]:
        """Events appended (or drawn by a batch) that the queue has not accepted."""
        return self._drawn + list(self._pending)

    @property
    def completed_events(self) -> list[E]:
        """Events whose invoke returned, in the order they finished."""
        return list(self._completed)

    @property
    def failed_events(self) -> list[E]:
        """Events whose invoke raised an exception."""
        return list(self._failed)

    @property
    def cancelled_events(self) -> list[E]:
        """Events cancelled while running, or never run because the executor
        stopped."""
        return list(self._cancelled)

    @property
    def is_all_processed(self) -> bool:
        """True when no event is pending, buffered or running."""
        queue = self._queue.queue
        return (
            not self._pending
            and not self._drawn
            and queue.size == 0
            and queue.in_flight == 0
        )

    @property
    def metrics(self) -> dict[str, int]:
        """The queue's counters plus ``pending``, ``completed``, ``failed`` and
        ``cancelled`` event counts; a fresh dict on every read."""
        metrics = self._queue.metrics
        metrics["pending"] = len(self._pending) + len(self._drawn)
        metrics.update(self._counts)
        return metrics

    def __repr__(self) -> str:
        config = self._config
        if config.capacity_refresh_time is None:
            starts = "no start-rate limit"
        else:
            starts = (
                f"starts <= {config.queue_capacity} per "
                f"{config.capacity_refresh_time:g} s"
            )
        return (
            f"<Executor[{self._event_type.__qualname__}] {self.status.value}, "
            f"{starts}, workers={self._num_workers}, "
            f"pending={len(self._pending) + len(self._drawn)}, "
            f"buffered={self._queue.size}, running={self._queue.queue.in_flight}, "
            f"completed={self._counts['completed']}, "
            f"failed={self._counts['failed']}, "
            f"cancelled={self._counts['cancelled']}>"
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
        self._check_event(event)
        self._claim(event)
        self._pending.append(event)

    async def forward(self) -> None:
        """Move every pending event into the queue, waiting while it is full.

        Never drops an event: if forward is cancelled, the event it was putting
        stays pending.

        Raises:
            QueueStateError: the executor is not running.
        """
        while self._pending:
            event = self._pending.popleft()
            try:
                await self._put_drawn(event, None)
            except BaseException:
                self._pending.appendleft(event)  # put is atomic: not accepted
                self._cancel_leftovers()  # the queue may have stopped meanwhile
                raise

    async def _put_drawn(self, event: E, timeout: None) -> bool:
        """Put an event taken from pending or a batch, counting it as pending."""
        self._drawn.append(event)
        try:
            return await self._queue.queue.put(event, timeout)
        finally:
            self._drawn.remove(event)

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
        self._check_event(event)
        self._claim(event)
        accepted = False
        try:
            accepted = await self._queue.put(event, timeout)
        finally:
            if not accepted:
                event._executor = None  # not recorded: it may be put again
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
        if self.status is QueueStatus.PROCESSING and self._queue.worker_count:
            await self._feed_and_join(events)
        else:
            async with self:
                await self._feed_and_join(events)

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
        self, events: Iterable[E] | AsyncIterable[E], results: MapResults[E, object]
    ) -> AsyncGenerator[AsyncIterator[E], None]:
        def deliver(event: E) -> None:
            execution = event.execution
            error = execution.error if isinstance(execution.error, Exception) else None
            duration = execution.duration or 0.0
            results._deliver(
                Outcome(event, execution.response, error, execution.attempts, duration)
            )

        def check(event: E) -> None:
            self._check_new_event(event)
            results._count(event)
            event._sink = deliver  # type: ignore[assignment]

        async def feed_all() -> None:
            try:
                await feed_until_stopped(
                    self._queue.queue,
                    events,
                    self._put_drawn,
                    check=check,
                    refused=self._cancel,
                    window=results,
                    put_now=self._queue.queue._try_put,
                )
            finally:
                results._fed_all()

        async def finished() -> AsyncGenerator[E, None]:
            async for outcome in results:
                yield outcome.item

        async with AsyncExitStack() as stack:
            opened = not (
                self.status is QueueStatus.PROCESSING and self._queue.worker_count
            )
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
                    if not results._exhausted:
                        tg.cancel_scope.cancel()  # left early: read no more
            if not results._exhausted and opened:
                await self.stop(timeout=0)  # and run no more

    async def _feed_and_join(self, events: Iterable[E] | AsyncIterable[E]) -> None:
        # An event drawn but refused (the put was cancelled, or the executor
        # stopped meanwhile) is never run. A stop ends the feed, and the batch.
        await feed_until_stopped(
            self._queue.queue,
            events,
            self._put_drawn,
            check=self._check_new_event,
            refused=self._cancel,
            put_now=self._queue.queue._try_put,
        )
        await self._queue.join()

    def _check_new_event(self, event: object) -> None:
        # The claim is read first: narrowed by isinstance, `event` would be an
        # Event of unknown response type to a type checker.
        if getattr(event, "_executor", None) is not None or not isinstance(
            event, self._event_type
        ):
            self._check_event(event)  # raises, saying which rule it breaks
            self._claim(event)  # type: ignore[arg-type]
        event._executor = self  # type: ignore[attr-defined]

    def _claim(self, event: E) -> None:
        """Record ``event`` as this executor's; refuse one already given to one."""
        owner = getattr(event, "_executor", None)
        if owner is not None:
            where = "this executor" if owner is self else "another executor"
            raise ValueError(
                f"event {event!r} was already given to {where} (it is invoked "
                "once): create a new event to run the work again"
            )
        event._executor = self

    def _check_event(self, event: object) -> None:
        if not isinstance(event, self._event_type):
            raise TypeError(
                f"event must be an instance of {self._event_type.__qualname__}, got "
                f"{type(event).__qualname__}: {event!r}"
            )

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, *, task_group: TaskGroup | None = None) -> None:
        """Start the queue and its workers in ``task_group``.

        Inside ``async with executor:``, or once started, this does nothing.

        Raises:
            QueueStateError: no task group given outside ``async with``.
        """
        if self._lifespan_cm is not None or (
            self.status is QueueStatus.PROCESSING and self._queue.worker_count
        ):
            return
        if check_task_group(task_group) is None:
            raise QueueStateError(
                "an Executor runs its events in workers that need a task group: use "
                "`async with executor:`, or `await executor.start(task_group=tg)` "
                "inside `async with anyio.create_task_group() as tg:`"
            )
        self._bind_clock()
        await self._queue.start()
        await self._queue.process(
            self._run, self._num_workers, self._on_failed, task_group=task_group
        )

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
        if self._pending and self._queue.status is not QueueStatus.STOPPED:
            await self.forward()
        await self._queue.join()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncGenerator[None, None]:
        self._bind_clock()
        try:
            async with self._queue:
                await self._queue.process(self._run, self._num_workers, self._on_failed)
                yield
                if self._queue.status is QueueStatus.PROCESSING:
                    await self.forward()  # (stopped inside the block: CANCELLED)
        finally:
            self._cancel_leftovers()

    # -- running one event -----------------------------------------------------------

    async def _run(self, event: E) -> None:
        """The worker function: wait for the rates, invoke, record a success.

        The clock is read twice per event (a rate check needs the time anyway,
        and it is when the event starts), without yielding unless a rate binds.
        A failure is recorded by `_on_failed` once no retry is left; an event
        given up (cancelled) by `_cancel`, which the queue calls.
        """
        execution = event.execution
        now = self._now
        started = now()
        start_rate = self._start_rate
        if start_rate is not None and not start_rate._take(started, 1):
            await start_rate.acquire()
            started = now()
        limiter = self._rate_limiter
        if limiter is not None:
            own = self._own_limiter  # the same object, if a RateLimiter on our clock
            if own is None or not own._take(started, 1):
                await limiter.acquire()
                started = now()
        execution.status = _PROCESSING
        execution.attempts += 1
        try:
            execution.response = await event.invoke()
        except RetryAfter as exc:
            # Server pushback: hold every start until then, here and wherever
            # the rate limiter is shared (the queue, which sees the error
            # next, holds itself: no worker takes another event meanwhile).
            if limiter is not None:
                limiter.hold(exc.seconds)
            if start_rate is not None:
                start_rate.hold(exc.seconds)
            raise
        finally:
            execution.duration = now() - started
        execution.status = _COMPLETED
        execution.error = None
        # `_record`, written out: once per event on the hot path.
        self._completed.append(event)
        self._counts["completed"] += 1
        if event._sink is not None:
            sink = event._sink
            event._sink = None
            sink(event)

    async def _on_failed(self, exc: Exception, event: E) -> None:
        """The queue's error handler: ``event`` has failed for good."""
        execution = event.execution
        execution.status = ExecutionStatus.FAILED
        execution.error = exc
        self._record(self._failed, "failed", event)
        self._queue.queue._log_failure(exc, event)  # the queue's one log policy

    def _record(self, history: deque[E], outcome: str, event: E) -> None:
        history.append(event)
        self._counts[outcome] += 1
        sink = event._sink
        if sink is not None:
            event._sink = None
            sink(event)

    def _bind_clock(self) -> None:
        # One lookup per run instead of one per reading.
        self._now = reader(self._clock)
        # A RateLimiter on the same clock can use the reading the start rate
        # took, without an await; any other limiter is awaited.
        limiter = self._rate_limiter
        self._own_limiter = (
            limiter
            if type(limiter) is RateLimiter and limiter._uses_clock(self._clock)
            else None
        )

    def _cancel(self, event: E) -> None:
        """Mark ``event`` CANCELLED unless it has already finished."""
        if event.execution.status in (
            ExecutionStatus.PENDING,
            ExecutionStatus.PROCESSING,
        ):
            event.execution.status = ExecutionStatus.CANCELLED
            self._record(self._cancelled, "cancelled", event)

    def _cancel_leftovers(self) -> None:
        """Mark CANCELLED what can no longer run: pending and unprocessed events."""
        if self._queue.status is not QueueStatus.STOPPED:
            return
        while self._pending:
            self._cancel(self._pending.popleft())
        for event in self._queue.unprocessed:
            self._cancel(event)
