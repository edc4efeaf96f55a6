"""BoundedQueue: a bounded buffer with backpressure and a pool of workers.

The buffer is an AnyIO memory object stream, used only through its ``_nowait``
methods: a put into a queue with room and a get from a queue with items complete
without a trip through the event loop. Blocked producers and idle consumers park on
events of their own, and take or place their item themselves once woken, so that
an item is never handed to a task that might be cancelled before it runs: put and
get are atomic under cancellation, which AnyIO's ``send`` and ``receive`` are not.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from inspect import isawaitable
from typing import Final, Generic, TypeVar

from anyio import (
    CancelScope,
    CapacityLimiter,
    ClosedResourceError,
    Event,
    WouldBlock,
    create_memory_object_stream,
    create_task_group,
    move_on_after,
)
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from ._checks import (
    NotAwaitableError,
    check_callable,
    check_int,
    check_optional_int,
    check_seconds,
    not_awaitable,
)
from ._exceptions import QueueStateError, sole_exception, stray_cancellation
from ._scoped import Scoped
from ._waiters import WaiterLine
from ._workers import Worker, WorkerPool

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # installed with anyio there

__all__ = ["BoundedQueue", "QueueStatus"]

T = TypeVar("T")

WorkerFunc = Callable[[T], Awaitable[object]]
ErrorHandler = Callable[[Exception, T], Awaitable[object]]

#: A task that completes this many operations in a row without waiting yields once,
#: so that a producer or worker that never blocks cannot starve the other tasks.
_YIELD_EVERY: Final = 64


class QueueStatus(str, enum.Enum):
    """Where a queue is in its life: IDLE, then PROCESSING, STOPPING, STOPPED."""

    IDLE = "idle"
    PROCESSING = "processing"
    STOPPING = "stopping"
    STOPPED = "stopped"


class _Default(enum.Enum):
    TIMEOUT = enum.auto()


_DEFAULT: Final = _Default.TIMEOUT
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
    len(unprocessed)``. Items still buffered when the queue stops, or cancelled
    while being handled, are listed in `unprocessed` and never counted as processed.

    Who is served first: blocked producers in the order they started waiting;
    parked `get` callers in the order they started waiting, before idle workers;
    idle workers most recently idle first (it keeps few of them busy and warm).

    Args:
        maxsize: How many items the buffer holds, at least 1.
        timeout: How long `put` waits on a full queue by default, in seconds
            (0: not at all; None: as long as it takes).
        concurrency_limit: How many items may be handled at once across all workers
            (None: one per worker). Can be changed while the queue runs.
        logger: Where worker errors are logged; ``logging.getLogger("sluicegate")``
            by default.

    Raises:
        TypeError: maxsize is not an int, or timeout is not a number or None.
        ValueError: maxsize < 1, timeout < 0 or NaN, concurrency_limit < 1.
    """

    def __init__(
        self,
        maxsize: int = 100,
        timeout: float | None = 0.1,
        *,
        concurrency_limit: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._maxsize: Final = check_int("maxsize", maxsize, minimum=1)
        self._timeout: Final = check_seconds("timeout", timeout, allow_none=True)
        limit = check_optional_int("concurrency_limit", concurrency_limit, minimum=1)
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")
        self._logger = logger if logger is not None else logging.getLogger("sluicegate")
        self._concurrency_limit = limit
        self._limiter = CapacityLimiter(_tokens(limit))
        self._limit_lowered = False
        self._status = QueueStatus.IDLE
        self._run = 0  # counts starts: a waiter from an earlier run is refused
        # The stream exists only while the queue runs: a closed pair stands in
        # before start and after stop, so an unused queue leaves nothing unclosed.
        self._send, self._receive = create_memory_object_stream[T](maxsize)
        self._send.close()
        self._receive.close()
        # The books: enqueued == processed + size + in_flight + len(unprocessed).
        self._enqueued = 0
        self._processed = 0
        self._errors = 0
        self._backpressure_events = 0
        self._size = 0
        self._in_flight = 0
        self._taken_by_get = 0
        self._unprocessed: list[T] = []
        # Parked tasks. A consumer is woken only when no consumer already woken
        # will take the item; get() callers before idle workers.
        self._producers = WaiterLine(on_lost_wake=self._wake_producer)
        self._getters = WaiterLine(on_lost_wake=self._wake_consumer)
        self._idle_workers = WaiterLine(lifo=True, on_lost_wake=self._wake_consumer)
        self._join_event: Event | None = None
        self._pool = WorkerPool(on_empty=self._last_worker_left)
        self._task_group: TaskGroup | None = None
        self._on_stopped: Callable[[], object] | None = None  # for an Executor
        self._fast_puts = 0
        self._said_not_awaitable = False

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
        return self._size

    @property
    def is_empty(self) -> bool:
        """True when no item waits in the buffer."""
        return self._size == 0

    @property
    def is_full(self) -> bool:
        """True when a put would have to wait."""
        return self._size >= self._maxsize

    @property
    def worker_count(self) -> int:
        """How many workers are running."""
        return len(self._pool.workers)

    @property
    def unprocessed(self) -> list[T]:
        """A copy of the accepted items that were never processed.

        Listed as they were given up: items cancelled in flight as their workers
        end, then what was left in the buffer, oldest first.
        """
        return list(self._unprocessed)

    @property
    def in_flight(self) -> int:
        """How many items have been taken (by workers or `get`) and not finished."""
        return self._in_flight

    @property
    def concurrency_limit(self) -> int | None:
        """How many items may be handled at once (None: one per worker).

        Once the setter returns, no new item starts while ``concurrency_limit`` or
        more are being handled; items already running when it is lowered finish.
        """
        return self._concurrency_limit

    @concurrency_limit.setter
    def concurrency_limit(self, value: int | None) -> None:
        limit = check_optional_int("concurrency_limit", value, minimum=1)
        if _tokens(limit) < _tokens(self._concurrency_limit):
            # Workers holding tokens give back the excess before their next item;
            # until the limiter lends no more than the limit, each checks.
            self._limit_lowered = True
        self._concurrency_limit = limit
        self._limiter.total_tokens = _tokens(limit)

    @property
    def metrics(self) -> dict[str, int]:
        """A fresh snapshot of the counters.

        ``enqueued``, ``processed`` (errors included), ``errors``,
        ``backpressure_events`` (puts that gave up on a full queue), ``in_flight``
        and ``unprocessed`` (how many items are listed in `unprocessed`).
        """
        return {
            "enqueued": self._enqueued,
            "processed": self._processed,
            "errors": self._errors,
            "backpressure_events": self._backpressure_events,
            "in_flight": self._in_flight,
            "unprocessed": len(self._unprocessed),
        }

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
        if self._status is QueueStatus.STOPPING:
            raise QueueStateError(
                "cannot start: the queue is stopping; await queue.stop() first"
            )
        self._send, self._receive = create_memory_object_stream[T](self._maxsize)
        # A new limiter for each run: one is bound to the event loop that first
        # uses it, and a stopped queue may be started again in another.
        self._limiter = CapacityLimiter(_tokens(self._concurrency_limit))
        self._limit_lowered = False
        self._run += 1
        self._status = QueueStatus.PROCESSING

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
        self._status = QueueStatus.STOPPING
        self._producers.wake_all()
        self._getters.wake_all()
        await self._end_workers(list(self._pool.workers), timeout)
        self._finalize()

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
            self._pool.workers or getters.parked or getters.woken or self._taken_by_get
        )

    def _release_joiners(self) -> None:
        """Wake every `join` waiter; each looks again at what it waits for."""
        if self._join_event is not None:
            self._join_event.set()
            self._join_event = None

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        """Own a task group for the workers, and stop the queue on the way out."""
        unwrapped: BaseException | None = None
        try:
            async with create_task_group() as tg:
                await self.start()
                self._task_group = tg
                try:
                    yield
                    await self._join(while_consumers=True)
                    await self.stop()
                except BaseException:
                    self._abort()
                    with CancelScope(shield=True):
                        await self._pool.wait(list(self._pool.workers))
                    raise
        except BaseExceptionGroup as group:
            # The task group wrapped the one exception that ended the block.
            unwrapped = sole_exception(group)
        finally:
            self._task_group = None
            self._finalize()
        if unwrapped is not None:
            try:
                raise unwrapped
            finally:
                del unwrapped

    # -- producers --------------------------------------------------------------

    async def put(
        self, item: T, timeout: float | _Default | None = _Default.TIMEOUT
    ) -> bool:
        """Add ``item``; return True once it is accepted, False on backpressure.

        On a full queue, wait up to ``timeout`` seconds (default: the queue's
        timeout; 0: not at all; None: as long as it takes) for room, then return
        False and count a backpressure event. A full queue never raises.

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
        if timeout is _DEFAULT:
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
        try:
            self._send.send_nowait(item)
        except WouldBlock:
            return await self._put_waiting(item, timeout)
        self._accepted()
        return True

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
        while True:
            await self._producers.park()
            self._check_run("put", run)
            try:
                self._send.send_nowait(item)
            except WouldBlock:
                continue  # another producer took the slot first
            self._accepted()
            return

    def _accepted(self) -> None:
        self._enqueued += 1
        self._size += 1
        if self._getters.parked or self._idle_workers.parked:
            self._wake_consumer()

    def _wake_producer(self) -> None:
        if self._size < self._maxsize:
            self._producers.wake_one()

    def _record_refused(self, item: T) -> None:
        """Record an item drawn for this queue (by a batch) that was never put.

        It is counted as enqueued and listed in `unprocessed`, so that every item
        read from a batch's iterable ends processed or listed.
        """
        self._enqueued += 1
        self._unprocessed.append(item)

    # -- consumers --------------------------------------------------------------

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
        while True:
            try:
                item = self._take_nowait()
            except WouldBlock:
                try:
                    await self._getters.park()
                except BaseException:
                    self._release_joiners()  # one consumer fewer
                    raise
                self._check_run("get", run)
                continue
            self._taken_by_get += 1
            return item

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

    def _take_nowait(self) -> T:
        item = self._receive.receive_nowait()
        self._size -= 1
        self._in_flight += 1
        if self._producers.parked:
            self._producers.wake_one()
        return item

    def _wake_consumer(self) -> None:
        getters = self._getters
        idle = self._idle_workers
        if getters.woken + idle.woken >= self._size:
            return  # those already woken will take every buffered item
        if getters.parked:
            getters.wake_one()
        else:
            idle.wake_one()

    def _finished(self) -> None:
        self._processed += 1
        self._in_flight -= 1
        if self._join_event is not None and not self._unfinished():
            self._release_joiners()

    def _abandoned(self, item: T) -> None:
        self._in_flight -= 1
        self._unprocessed.append(item)
        if self._join_event is not None and not self._unfinished():
            self._release_joiners()

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
    ) -> None:
        """Start ``num_workers`` workers that await ``worker_func(item)`` per item.

        ``worker_func`` is any callable returning an awaitable (an async function,
        a lambda or partial around one, an async function behind a plain
        decorator); if a call returns something else, that item fails with a
        TypeError naming the function, and the log says so once.

        A worker_func that raises an Exception counts as processed and as an
        error once ``error_handler(exc, item)`` (if given) has returned; if the
        handler raises too, that is logged, and the worker goes on. A
        cancellation exception raised although nothing cancelled the worker
        (asyncio's CancelledError from awaiting a cancelled task, say) is such a
        failure too, reported as `StrayCancellationError`. Other BaseExceptions
        (KeyboardInterrupt, a real cancellation) leave the item unprocessed and
        propagate.

        The workers run in ``task_group`` if given, else in the task group of the
        enclosing ``async with queue:``.

        Raises:
            TypeError: worker_func or error_handler is not callable, or
                num_workers is not an int.
            ValueError: num_workers < 1.
            QueueStateError: the queue is not PROCESSING, or there is no task group
                to run the workers in.
        """
        check_callable("worker_func", worker_func)
        check_int("num_workers", num_workers, minimum=1)
        check_callable("error_handler", error_handler, allow_none=True)
        if task_group is not None and not isinstance(task_group, TaskGroup):
            raise TypeError(
                f"task_group must be an anyio TaskGroup or None, got {task_group!r}"
            )
        self._check_running("start_workers")
        group = task_group if task_group is not None else self._task_group
        if group is None:
            raise QueueStateError(
                "start_workers() needs a task group to run the workers in: use "
                "`async with queue:` (the queue owns them), or pass "
                "`task_group=tg` from `async with anyio.create_task_group() as tg:`"
            )
        self._spawn_workers(group, worker_func, num_workers, error_handler)

    def _spawn_workers(
        self,
        group: TaskGroup,
        worker_func: WorkerFunc[T],
        num_workers: int,
        error_handler: ErrorHandler[T] | None,
    ) -> list[Worker]:
        """Start workers in ``group`` (arguments already checked); return them."""
        return self._pool.spawn(
            group, num_workers, self._run_worker, worker_func, error_handler
        )

    async def stop_workers(self, timeout: float | None = None) -> None:
        """End all workers the way `stop` does, leaving the queue PROCESSING.

        Idle workers end at once; each busy one finishes the item it holds, and
        after ``timeout`` seconds (None: no limit) items still being handled are
        cancelled and listed in `unprocessed`. Returns when `worker_count` is 0,
        or, called from a worker function, when every other worker has ended or
        is itself stopping (the calling worker ends once its item is done).
        """
        timeout = check_seconds("timeout", timeout, allow_none=True)
        await self._end_workers(list(self._pool.workers), timeout)

    async def _run_worker(
        self,
        worker: Worker,
        func: WorkerFunc[T],
        on_error: ErrorHandler[T] | None,
    ) -> None:
        """One worker: take items and handle them until asked to stop.

        The loop is written out in one coroutine on purpose: every await nested
        in the worker costs a frame on each resume, and this is the hot path.
        """
        self._pool.entered(worker)
        limiter = self._limiter
        idle = self._idle_workers
        try:
            with worker.scope:
                while not worker.stopping:
                    try:
                        limiter.acquire_nowait()
                    except WouldBlock:
                        # Woken for an item this worker cannot take yet: let another
                        # idle consumer (a get(), perhaps) have the wake-up.
                        self._wake_consumer()
                        await limiter.acquire()
                    # Hold the token while there is work; give it back to go idle,
                    # or as soon as the limit has been lowered below what is lent.
                    try:
                        handled = 0
                        while not worker.stopping:
                            if self._limit_lowered and self._over_limit():
                                break
                            try:
                                item = self._take_nowait()
                            except WouldBlock:
                                break
                            worker.busy = True
                            call: Awaitable[object] | None = None
                            try:
                                call = func(item)
                                await call
                            except Exception as exc:
                                await self._failed(exc, item, func, call, on_error)
                            except BaseException as exc:
                                stray = stray_cancellation(exc)
                                if stray is None:
                                    self._abandoned(item)
                                    raise
                                await self._failed(stray, item, func, call, on_error)
                            else:
                                self._finished()
                            worker.busy = False
                            handled += 1
                            if handled == _YIELD_EVERY:
                                handled = 0
                                await checkpoint()
                    finally:
                        limiter.release()
                    if not worker.stopping and not self._size:
                        await idle.park()
        finally:
            self._pool.left(worker)

    def _last_worker_left(self) -> None:
        if self._status is QueueStatus.STOPPING:
            self._finalize()
        else:
            # Wake the `async with` exit: no worker is left to wait for.
            self._release_joiners()

    def _over_limit(self) -> bool:
        """True while more tokens are lent than a lowered limit allows."""
        limiter = self._limiter
        if limiter.borrowed_tokens > limiter.total_tokens:
            return True
        # Back within the limit, and the limiter lends no more than it allows.
        self._limit_lowered = False
        return False

    async def _failed(
        self,
        exc: Exception,
        item: T,
        func: object,
        call: object,
        on_error: ErrorHandler[T] | None,
    ) -> None:
        """Count ``item`` as processed with an error, once its handler has run.

        If the handler is cancelled, the item is unprocessed instead.
        """
        if call is not None and isinstance(exc, TypeError) and not isawaitable(call):
            exc = not_awaitable("worker_func", func, call)
        if isinstance(exc, NotAwaitableError) and not self._said_not_awaitable:
            self._said_not_awaitable = True
            self._logger.warning("%s", exc)
        try:
            await self._report(exc, item, on_error)
        except BaseException:
            self._abandoned(item)
            raise
        self._errors += 1
        self._finished()

    async def _report(
        self, exc: Exception, item: T, on_error: ErrorHandler[T] | None
    ) -> None:
        if on_error is None:
            self._logger.error("worker_func failed on %r", item, exc_info=exc)
            return
        call: Awaitable[object] | None = None
        try:
            call = on_error(exc, item)
            await call
        except Exception as handler_exc:
            if not isawaitable(call) and isinstance(handler_exc, TypeError):
                handler_exc = not_awaitable("error_handler", on_error, call)
            self._logger.error("error_handler failed on %r", item, exc_info=handler_exc)
        except BaseException as handler_exc:
            stray = stray_cancellation(handler_exc)
            if stray is None:
                raise
            self._logger.error("error_handler failed on %r", item, exc_info=stray)

    async def _end_workers(self, workers: list[Worker], timeout: float | None) -> None:
        self._idle_workers.wake_all()
        try:
            await self._pool.end(workers, timeout)
        except BaseException:
            self._pool.cancel(workers)
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
        """Move whatever is left in the buffer to `unprocessed` and become STOPPED."""
        if self._status is QueueStatus.STOPPED:
            return
        while True:
            try:
                self._unprocessed.append(self._receive.receive_nowait())
            except (WouldBlock, ClosedResourceError):  # empty, or the stand-in
                break
        self._size = 0
        self._send.close()
        self._receive.close()
        self._status = QueueStatus.STOPPED
        self._producers.wake_all()
        self._getters.wake_all()
        self._idle_workers.wake_all()
        self._release_joiners()
        if self._on_stopped is not None:
            self._on_stopped()

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
        if self._status is _PROCESSING:
            return
        if self._status is QueueStatus.IDLE:
            fix = "call `await queue.start()` or use `async with queue:` first"
        else:
            fix = "a stopped queue takes no new work; `await queue.start()` reopens it"
        raise QueueStateError(
            f"cannot {operation}(): the queue is {self._status.value}; {fix}"
        )


def _tokens(limit: int | None) -> float:
    return float("inf") if limit is None else limit
