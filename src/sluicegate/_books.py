"""Books: where every item a queue accepted is, and the equation that ties it.

An item accepted by a queue is, at every moment, in exactly one place: waiting in
the buffer, in flight (taken by a worker or a `get` caller), delayed (waiting out
a retry's backoff), processed (its final outcome came, failures included), or
given up (listed in ``unprocessed``)::

    enqueued == processed + len(buffer) + in_flight + delayed + len(unprocessed)

In-flight items are not counted as they come and go (that would cost twice per
item on the hot path): the equation gives them. `Books` also wakes the tasks
joining the queue when what they wait for may have changed.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

from anyio import Event

if TYPE_CHECKING:
    from ._calls import Retry

__all__ = ["Books"]

T = TypeVar("T")


class Books(Generic[T]):
    """The counts of one queue's items, and its buffer (one of their places).

    The worker loop and the put paths update the counts in place (they are
    the hot path); everything else goes through the methods, which keep the
    joiners told.
    """

    __slots__ = (
        "backpressure_events",
        "buffer",
        "delayed",
        "enqueued",
        "join_event",
        "processed",
        "taken_by_get",
        "unprocessed",
    )

    def __init__(self) -> None:
        #: Items waiting to be taken, and items back for a retry (wrapped, to
        #: carry their attempts), oldest first.
        self.buffer: deque[T | Retry] = deque()
        self.enqueued = 0
        self.processed = 0
        self.delayed = 0  # waiting out a backoff: they count against maxsize
        self.taken_by_get = 0  # taken by `get` and not yet marked done
        self.backpressure_events = 0  # puts that gave up on a full queue
        self.unprocessed: list[T] = []
        #: Set (and dropped) when what joiners wait for may have changed; None
        #: while nobody waits in `wait_for_change`. The hot path reads it to
        #: skip `release_joiners_if_done` when nobody joins (read it; never
        #: set it).
        self.join_event: Event | None = None

    def in_flight(self) -> int:
        """Items taken and not finished: what the equation leaves."""
        return (
            self.enqueued
            - self.processed
            - len(self.buffer)
            - self.delayed
            - len(self.unprocessed)
        )

    def unfinished(self) -> int:
        """Items accepted that are neither processed nor given up."""
        return self.enqueued - self.processed - len(self.unprocessed)

    def finished(self) -> None:
        """Count one item as processed."""
        self.processed += 1
        if self.join_event is not None:
            self.release_joiners_if_done()

    def abandoned(self, item: T) -> None:
        """List ``item`` as given up: it will never be processed."""
        self.unprocessed.append(item)
        if self.join_event is not None:
            self.release_joiners_if_done()

    def refused(self, item: T) -> None:
        """Record an item drawn for the queue (by a batch) that was never put.

        It is counted as enqueued and listed in ``unprocessed``, so that every
        item read from a batch's iterable ends processed or listed.
        """
        self.enqueued += 1
        self.unprocessed.append(item)

    async def wait_for_change(self) -> None:
        """Wait until `release_joiners` is next called."""
        if self.join_event is None:
            self.join_event = Event()
        await self.join_event.wait()

    def release_joiners(self) -> None:
        """Wake every task in `wait_for_change`; each looks again at what it
        waits for."""
        if self.join_event is not None:
            self.join_event.set()
            self.join_event = None

    def release_joiners_if_done(self) -> None:
        """`release_joiners`, once no accepted item is left unfinished."""
        if not self.unfinished():
            self.release_joiners()
