"""One call of a worker function: what is put around it, and how its outcome is settled.

Around a call: a token of a shared CapacityLimiter (if the queue has one), the
job's gate (a token from each rate limiter), then the item timeout. Its outcome: a
success, or a failure that is retried after a backoff (the item waits in the
queue's delay line, holding no worker) or settled for good: reported to the
error handler (or the failure log), counted, and handed to the job's sink.

A queue owns one `Calls`. Its worker loop calls items with nothing around their
call itself (the hot path) and hands their failures to `Calls.failed`; the other
items it hands to `Calls.handle` whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar

from anyio import CancelScope

from ._checks import NotAwaitableError, check_seconds, not_awaitable
from ._clock import AnyIOClock, Clock
from ._exceptions import ItemTimeoutError, stray_cancellation
from ._failure_log import FailureLog
from ._retry import RetryAfter, RetryPolicy
from ._status import QueueStatus

if TYPE_CHECKING:
    from ._core import Core
    from ._gate import Gate
    from ._timers import Timers

__all__ = [
    "Calls",
    "ErrorHandler",
    "HoldEnd",
    "Job",
    "Retry",
    "Sink",
    "Timed",
    "WorkerFunc",
    "check_item_timeout",
    "check_retry",
    "unwrap",
]

T = TypeVar("T")

WorkerFunc = Callable[[T], Awaitable[Any]]
ErrorHandler = Callable[[Exception, T], Awaitable[object]]
#: Told each final outcome: ``sink(item, value, error, attempts, duration)``,
#: the fields of an `Outcome` (a map's results make one; an Executor's ledger
#: needs none).
Sink = Callable[[T, Any, "Exception | None", int, float], object]

_PROCESSING: Final = QueueStatus.PROCESSING


class Retry:
    """An item coming back for another call: how many it has had, since when."""

    __slots__ = ("attempts", "first", "item")

    def __init__(self, item: object, attempts: int, first: float) -> None:
        # Any, not a type variable: `type(entry) is Retry` cannot tell a type
        # checker what a generic Retry holds (an item could be a Retry too).
        self.item: Any = item
        self.attempts = attempts
        self.first = first


class HoldEnd:
    """The mark in a queue's delay line that ends the queue's hold when due."""

    __slots__ = ()


#: What a queue's delay line holds: items waiting out a backoff, the cancel
#: scopes of calls with a deadline (on an injected clock), and the hold's end.
Timed: TypeAlias = "Retry | CancelScope | HoldEnd"


def unwrap(entry: T | Retry) -> T:
    return entry.item if type(entry) is Retry else entry  # type: ignore[return-value]


class Job(Generic[T]):
    """How one set of workers handles an item: what to call, what around it,
    and who is told how it ended (the hooks)."""

    __slots__ = (
        "func",
        "gate",
        "on_abandoned",
        "on_error",
        "plain",
        "retry",
        "sink",
        "timed",
        "timeout",
    )

    def __init__(
        self,
        func: WorkerFunc[T],
        on_error: ErrorHandler[T] | None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        sink: Sink[T] | None = None,
        gate: Gate | None = None,
        on_abandoned: Callable[[T, float | None], object] | None = None,
    ) -> None:
        self.func = func
        self.on_error = on_error
        self.retry = retry
        self.timeout = timeout
        #: Told each final outcome (a map's results, an Executor's ledger).
        self.sink = sink
        #: The rate limiters each call takes a token from first (retries too);
        #: a `RetryAfter` holds them.
        self.gate = gate
        #: Told of each item given up in flight (its call cancelled), and when
        #: its call started (None if it had not, or had ended; timed only for
        #: a job with a sink).
        self.on_abandoned = on_abandoned
        # Nothing around the call but perhaps the gate, which the worker loop
        # asks without an await (and a sink for its outcome): it runs the call
        # inline, the hot path.
        self.plain = retry is None and timeout is None
        # Its calls are timed (for the sink, or the gate): one clock reading
        # serves both.
        self.timed = sink is not None or gate is not None


def check_retry(retry: object) -> RetryPolicy | None:
    """Return ``retry`` if it is a RetryPolicy or None."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(
            f"retry must be a sluicegate.RetryPolicy or None, got {retry!r}"
        )
    return retry


def check_item_timeout(item_timeout: object) -> float | None:
    """Return ``item_timeout`` if it is a number of seconds > 0, or None."""
    seconds = check_seconds("item_timeout", item_timeout, allow_none=True)
    if seconds == 0:
        raise ValueError("item_timeout must be > 0 seconds (None: no limit), got 0")
    return seconds


class Calls(Generic[T]):
    """How one queue's items are called, and their outcomes settled.

    ``core`` is the core of the queue that owns it: its books hear of each
    item finished or given up, and ``timers`` of each retry to wait out.
    ``clock`` is the queue's, and ``now`` its reader (the queue binds it again
    when it starts). Failures no handler takes go to ``log``. It counts the
    final failures (`errors`; by type, `error_types`) and the `retries`.
    """

    __slots__ = (
        "_clock",
        "_core",
        "_finished",
        "_log",
        "_said_not_awaitable",
        "_timers",
        "error_types",
        "errors",
        "now",
        "retries",
    )

    def __init__(
        self,
        core: Core[T],
        clock: Clock,
        timers: Timers,
        log: FailureLog,
    ) -> None:
        self._core = core
        # Bound once: called once per item.
        self._finished = core.books.finished
        self._clock = clock
        self.now: Callable[[], float] = clock.current_time
        self._timers = timers
        self._log = log
        self.errors = 0  # items whose final outcome was a failure
        self.error_types: dict[str, int] = {}
        self.retries = 0  # calls scheduled again after a failure
        self._said_not_awaitable = False

    async def handle(self, entry: T | Retry, job: Job[T], worker: object) -> None:
        """Handle one item with what the job puts around its call.

        With a shared concurrency limit (an `anyio.CapacityLimiter`), the
        item first borrows a token from it on behalf of ``worker``, and gives
        it back once handled, its failure's handling included (a retry waits
        out its backoff without one).
        """
        capacity = self._core.capacity
        if capacity is None:
            await self._handle(entry, job)
            return
        try:
            await capacity.acquire_on_behalf_of(worker)
        except BaseException:
            self._core.abandoned(unwrap(entry), job, None)  # (nothing borrowed)
            raise
        try:
            await self._handle(entry, job)
        finally:
            capacity.release_on_behalf_of(worker)

    async def _handle(self, entry: T | Retry, job: Job[T]) -> None:
        if type(entry) is Retry:
            item: T = entry.item
            attempts = entry.attempts + 1
            first: float | None = entry.first
        else:
            item = entry  # type: ignore[assignment]
            attempts = 1
            first = None
        now = self.now
        call: Awaitable[object] | None = None
        started: float | None = None
        try:
            gate = job.gate
            if gate is not None and not gate.admit(now()):
                await gate.wait()  # before the clock of item_timeout starts
            started = now()
            if first is None:
                first = started
            if job.timeout is None:
                call = job.func(item)
                value = await call
            else:
                with self._deadline(started + job.timeout) as scope:
                    call = job.func(item)
                    value = await call
                if scope.cancelled_caught:
                    raise ItemTimeoutError(
                        f"the call took longer than item_timeout ({job.timeout:g} s)"
                    )
        except Exception as exc:
            await self.failed(exc, item, job, call, attempts=attempts, first=first)
            return
        except BaseException as exc:
            stray = stray_cancellation(exc)
            if stray is None:
                self._core.abandoned(item, job, started)
                raise
            await self.failed(stray, item, job, call, attempts=attempts, first=first)
            return
        if job.sink is not None:
            job.sink(item, value, None, attempts, now() - first)
        self._finished()

    @contextmanager
    def _deadline(self, deadline: float) -> Generator[CancelScope, None, None]:
        """A cancel scope that is cancelled when the queue's clock reaches
        ``deadline``."""
        if isinstance(self._clock, AnyIOClock):
            with CancelScope(deadline=deadline) as scope:
                yield scope
            return
        with CancelScope() as scope:
            line = self._timers.line
            entry = line.add(scope, deadline)
            try:
                yield scope
            finally:
                line.withdraw(entry)

    async def failed(
        self,
        exc: Exception,
        item: T,
        job: Job[T],
        call: object,
        *,
        attempts: int = 1,
        first: float | None = None,
    ) -> None:
        """Retry ``item`` if its job's policy says so; else settle its failure.

        A `RetryAfter` holds the queue (and the job's rate limiter) first,
        whatever becomes of the item. A final failure counts the item as
        processed with an error once its handler has run; if the handler is
        cancelled, the item is unprocessed.
        """
        if call is not None and isinstance(exc, TypeError) and not isawaitable(call):
            exc = not_awaitable("worker_func", job.func, call)
        if isinstance(exc, RetryAfter):
            # Server pushback, about the service and not the item (retried or
            # not): this queue starts no call until then, and every queue
            # sharing the limiter backs off too.
            self._core.hold(exc.seconds)
            if job.gate is not None:
                job.gate.hold(exc.seconds)
        if isinstance(exc, NotAwaitableError) and not self._said_not_awaitable:
            self._said_not_awaitable = True
            self._log.logger.warning("%s", exc)
        if job.retry is not None and self._retry_later(exc, item, job, attempts, first):
            return
        try:
            await self._report(exc, item, job.on_error)
        except BaseException:
            self._core.abandoned(item, job, None)  # (its call had ended)
            raise
        self.errors += 1
        name = type(exc).__qualname__
        self.error_types[name] = self.error_types.get(name, 0) + 1
        if job.sink is not None:
            duration = 0.0 if first is None else self.now() - first
            job.sink(item, None, exc, attempts, duration)
        self._finished()

    def _retry_later(
        self,
        exc: Exception,
        item: T,
        job: Job[T],
        attempts: int,
        first: float | None,
    ) -> bool:
        """Put ``item`` in the delay line for another call, if ``job``'s retry
        policy allows."""
        policy = job.retry
        assert policy is not None  # (the caller checked)
        if attempts >= policy.attempts or not policy.retries(exc):
            return False
        if self._core.status is not _PROCESSING:
            # Stopped while the call ran (by its own worker, say): no next run
            # takes it; it is listed as unprocessed, as a delayed item would be.
            self._core.abandoned(item, job, None)
            return True
        now = self.now()
        if first is None:
            first = now
        delay = exc.seconds if isinstance(exc, RetryAfter) else policy.delay(attempts)
        if policy.timeout is not None and now + delay - first > policy.timeout:
            return False
        self.retries += 1
        self._timers.retry_later(Retry(item, attempts, first), now + delay)
        return True

    async def _report(
        self, exc: Exception, item: T, on_error: ErrorHandler[T] | None
    ) -> None:
        """Hand a final failure to ``on_error``, or without one to the failure
        log; a handler that fails is logged, and its error goes no further."""
        if on_error is None:
            self._log.log(exc, item)
            return
        call: Awaitable[object] | None = None
        try:
            call = on_error(exc, item)
            await call
        except Exception as handler_exc:
            if not isawaitable(call) and isinstance(handler_exc, TypeError):
                handler_exc = not_awaitable("error_handler", on_error, call)
            self._log.logger.error(
                "error_handler failed on %r", item, exc_info=handler_exc
            )
        except BaseException as handler_exc:
            stray = stray_cancellation(handler_exc)
            if stray is None:
                raise
            self._log.logger.error("error_handler failed on %r", item, exc_info=stray)
