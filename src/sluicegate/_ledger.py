"""EventLedger: what an Executor knows of the events it was given, and how each ended.

Nothing is written on a user's event but its `Execution` record. Which
executor holds an event is kept here, keyed by ``id(event)``: that is the
event's own from the moment it is given until it is settled, because its
executor keeps it alive meanwhile (pending, in its queue, or running). Once
settled the entry goes, and the event's status (no longer PENDING) keeps it
from being run again: an event is given once, to one executor, for ever.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from contextlib import contextmanager
from itertools import chain
from typing import Any, Generic, TypeAlias, TypeVar

from ._calls import Sink
from ._events import Event, ExecutionStatus

__all__ = ["EventLedger", "claimed"]

E = TypeVar("E", bound="Event[Any]")

# Bound once: reading an enum member costs a lookup, several times per event.
_PENDING = ExecutionStatus.PENDING
_PROCESSING = ExecutionStatus.PROCESSING
_COMPLETED = ExecutionStatus.COMPLETED
_FAILED = ExecutionStatus.FAILED
_CANCELLED = ExecutionStatus.CANCELLED

#: A ledger, weakly: dead once its executor is gone.
_Owner: TypeAlias = "weakref.ref[EventLedger[Any]]"

#: The ledger holding each event that was given to an executor and is not
#: settled yet, by id(). One for every executor in the process, so that an
#: event given to two is refused by the second.
_HELD: dict[int, _Owner] = {}
#: The least size of `_HELD` seen at a ledger's end since it was last rid of
#: the entries of ledgers that are gone.
_low = [0]


def claimed(event: Event[Any]) -> bool:
    """Whether ``event`` was given to an executor: one holds it, or it has run
    (it is no longer PENDING)."""
    owner = _HELD.get(id(event))
    return (
        owner is not None and owner() is not None
    ) or event.execution.status is not _PENDING


def _forget(owner: _Owner) -> None:
    """A ledger is gone: its entries are stale (a lookup treats them as free).

    They are dropped, with those of any other ledger gone, once `_HELD` is more
    than twice the least size seen since that was last done: then more than
    half of it was added since, so each entry is looked at O(1) times.
    """
    size = len(_HELD)
    if size <= 2 * _low[0]:
        _low[0] = min(_low[0], size)
        return
    for key, held_by in list(_HELD.items()):
        if held_by() is None:
            _HELD.pop(key, None)
    _low[0] = len(_HELD)


class EventLedger(Generic[E]):
    """An Executor's books of events: claims, pending events, outcomes.

    It claims each event given to the executor (`claim`; refusing one given to
    an executor before), keeps those appended but not queued yet (`pending`)
    and those being put (`drawn`), and settles each one: `complete`, `fail`
    or `record` (an `Outcome`), or `cancel`. Settling fills the event's
    `Execution`, appends it to its history (`completed`, `failed`,
    `cancelled`: each keeps the newest ``history`` events, all for None),
    counts it, and hands it to the sink `deliver_to` set for it, if any.
    """

    __slots__ = (
        "__weakref__",
        "_event_type",
        "_me",
        "_retry_starts",
        "_sinks",
        "cancelled",
        "cancelled_count",
        "completed",
        "completed_count",
        "drawn",
        "failed",
        "failed_count",
        "now",
        "pending",
    )

    def __init__(self, event_type: type[E], history: int | None) -> None:
        self._event_type = event_type
        me: EventLedger[Any] = self
        self._me: _Owner = weakref.ref(me, _forget)
        self.pending: deque[E] = deque()
        # Events taken from `pending` (or drawn from a batch) that the queue
        # has not accepted yet: still pending, so that each one is counted.
        self.drawn: dict[int, E] = {}
        self.completed: deque[E] = deque(maxlen=history)
        self.failed: deque[E] = deque(maxlen=history)
        self.cancelled: deque[E] = deque(maxlen=history)
        self.completed_count = 0
        self.failed_count = 0
        self.cancelled_count = 0
        # Where each settled event's outcome goes, by id(): `Executor.completed`.
        self._sinks: dict[int, Sink[E]] = {}
        #: The clock reader events are timed with (the executor binds it to
        #: the running loop when it starts).
        self.now: Callable[[], float] = _unbound_clock
        # Events whose last call is a retry: when it started, by id() (an
        # outcome's duration spans every attempt; the record keeps the last's).
        self._retry_starts: dict[int, float] = {}

    # -- claims ---------------------------------------------------------------------

    def claim(self, event: E) -> None:
        """Record ``event`` as this executor's.

        Raises:
            TypeError: event is not an instance of the executor's event type.
            ValueError: an executor holds the event already, or it has run.
        """
        event_type = self._event_type
        if type(event) is not event_type and not isinstance(event, event_type):
            raise TypeError(
                f"event must be an instance of {event_type.__qualname__}, got "
                f"{type(event).__qualname__}: {event!r}"
            )
        key = id(event)
        if key in _HELD or event.execution.status is not _PENDING:
            owner = _HELD.get(key)
            if (
                owner is not None and owner() is not None
            ) or event.execution.status is not _PENDING:
                raise ValueError(
                    f"event {event!r} was already given to "
                    f"{self._holder(event, owner)} (it is invoked once): create "
                    "a new event to run the work again"
                )
            # Else an executor that is gone was given it, and never ran it.
        _HELD[key] = self._me

    def _holder(self, event: E, owner: _Owner | None) -> str:
        """Which executor ``event`` was given to, as the error says it."""
        if owner is self._me:
            return "this executor"
        if owner is not None and owner() is not None:
            return "another executor"
        histories = (self.completed, self.failed, self.cancelled)
        if any(seen is event for seen in chain(*histories)):
            return "this executor"
        # A bounded history may have dropped it.
        return "another executor" if self.completed.maxlen is None else "an executor"

    def release(self, event: E) -> None:
        """Forget the claim on ``event``, which was not accepted: it may be
        given again."""
        key = id(event)
        if _HELD.get(key) is self._me:
            del _HELD[key]

    # -- the events' lives ----------------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Events appended or drawn that the queue has not accepted."""
        return len(self.pending) + len(self.drawn)

    def pending_events(self) -> list[E]:
        """Those events: the ones being put first."""
        return [*self.drawn.values(), *self.pending]

    @contextmanager
    def drawing(self, event: E) -> Generator[None, None, None]:
        """Count ``event`` as pending (drawn) while the block puts it."""
        self.drawn[id(event)] = event
        try:
            yield
        finally:
            del self.drawn[id(event)]

    def start(self, event: E) -> Awaitable[Any]:
        """Mark ``event`` PROCESSING, count the attempt and call its invoke: the
        coroutine returned is the call (a job's function)."""
        execution = event.execution
        if execution.attempts:  # a retry: its duration is timed from now
            self._retry_starts[id(event)] = self.now()
        execution.status = _PROCESSING
        execution.attempts += 1
        return event.invoke()

    def complete(self, event: E, response: object) -> None:
        """Settle ``event`` as COMPLETED with ``response``."""
        execution = event.execution
        execution.status = _COMPLETED
        execution.response = response
        execution.error = None
        self.completed.append(event)
        self.completed_count += 1
        # `_settled`, written out: once per event on the hot path.
        key = id(event)
        _HELD.pop(key, None)
        if self._sinks:
            sink = self._sinks.pop(key, None)
            if sink is not None:
                _tell(sink, event)

    def fail(self, event: E, error: BaseException) -> None:
        """Settle ``event`` as FAILED with ``error``."""
        execution = event.execution
        execution.status = _FAILED
        execution.error = error
        self.failed.append(event)
        self.failed_count += 1
        self._settled(event)

    def record(
        self,
        event: E,
        value: object,
        error: Exception | None,
        attempts: int,
        duration: float,
    ) -> None:
        """Settle ``event`` from its final outcome (a job's sink): COMPLETED or
        FAILED, with its attempts and its last call's duration (``duration``
        spans every attempt: a retry's is timed from its own start)."""
        execution = event.execution
        retries = self._retry_starts
        if retries:
            started = retries.pop(id(event), None)
            if started is not None:
                duration = self.now() - started
        execution.duration = duration
        execution.attempts = attempts
        if error is None:
            self.complete(event, value)
        else:
            self.fail(event, error)

    def cancel(self, event: E) -> None:
        """Settle ``event`` as CANCELLED, unless it has been settled already."""
        execution = event.execution
        if execution.status is _PENDING or execution.status is _PROCESSING:
            execution.status = _CANCELLED
            self.cancelled.append(event)
            self.cancelled_count += 1
            self._settled(event)

    def abandoned(self, event: E, started: float | None) -> None:
        """``event``'s call, begun at ``started`` (None: unknown), was
        cancelled (a job's hook): settle it as CANCELLED, timed until now."""
        retry_started = self._retry_starts.pop(id(event), None)
        if retry_started is not None:
            started = retry_started
        if started is not None:
            event.execution.duration = self.now() - started
        self.cancel(event)

    def cancel_leftovers(self, unprocessed: Iterable[E]) -> None:
        """Cancel what can no longer run: the pending events and ``unprocessed``
        (those its stopped queue lists)."""
        pending = self.pending
        while pending:
            self.cancel(pending.popleft())
        for event in unprocessed:
            self.cancel(event)

    def deliver_to(self, event: E, sink: Sink[E]) -> None:
        """Hand ``event``'s `Outcome` to ``sink`` once it is settled (a CANCELLED
        one's is an outcome with no value and no error)."""
        self._sinks[id(event)] = sink

    def _settled(self, event: E) -> None:
        key = id(event)
        _HELD.pop(key, None)
        if self._sinks:
            sink = self._sinks.pop(key, None)
            if sink is not None:
                _tell(sink, event)

    def counts(self) -> dict[str, int]:
        """The ``completed``, ``failed`` and ``cancelled`` counts, in full."""
        return {
            "completed": self.completed_count,
            "failed": self.failed_count,
            "cancelled": self.cancelled_count,
        }


def _unbound_clock() -> float:
    raise RuntimeError("the executor's clock is bound when it starts")


def _tell(sink: Sink[E], event: E) -> None:
    """Hand a settled event's outcome to ``sink``, from its execution."""
    execution = event.execution
    error = execution.error if isinstance(execution.error, Exception) else None
    sink(
        event, execution.response, error, execution.attempts, execution.duration or 0.0
    )
