"""Dispatch: who is woken, when an item or a place in the buffer comes free.

Blocked producers, parked `get` callers and idle workers wait in lines of their
own (`WaiterLine`) and take or place their item themselves once woken, so that
an item is never handed to a task that might be cancelled before it runs.

The rules, in one place:

- A producer is woken when there is room, one at a time, in the order they
  started waiting.
- A consumer is woken only when the consumers already on their way (woken,
  starting, looking once more before parking) will not take every buffered
  item: `get` callers first, in order, then an idle worker, most recently idle
  first (it keeps few workers busy and warm), or a reserved worker started.
- A worker needs a slot to handle items: at most ``slots`` at once, the
  concurrency limit (none while the queue is held). No worker is woken that
  would find no slot.
- While some workers are busy, new items wake one idle worker, which wakes up
  to two more when it runs if items still wait (`woken`): busy workers coming
  back take items first, and no worker is woken to find none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._status import QueueStatus
from ._waiters import WaiterLine
from ._workers import Worker, WorkerPool

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["Dispatch", "tokens"]

_PROCESSING: Final = QueueStatus.PROCESSING


def tokens(limit: int | None) -> float:
    """How many slots a concurrency limit gives (None: no limit)."""
    return float("inf") if limit is None else limit


class Dispatch:
    """The waiter lines of one queue, its workers, and its concurrency slots.

    ``core`` is the queue's core: its buffer, room and status decide who is
    woken. The worker loop updates ``active`` and ``looking`` in place (the
    hot path).
    """

    __slots__ = (
        "_core",
        "active",
        "getters",
        "held",
        "idle_workers",
        "limit",
        "looking",
        "pool",
        "producers",
        "slots",
        "starting",
    )

    def __init__(self, core: Core[Any], limit: int | None) -> None:
        self._core = core
        self.producers = WaiterLine(on_lost_wake=self.wake_producer)
        self.getters = WaiterLine(on_lost_wake=self.wake_consumer)
        self.idle_workers = WaiterLine(lifo=True, on_lost_wake=self.wake_consumer)
        self.pool = WorkerPool(on_empty=core.last_worker_left)
        self.limit = limit
        # Workers take a slot to handle items, and hold it while the buffer has
        # any: at most `slots` items are handled at once. A worker that finds
        # no slot free stays parked until one is handed over with an item.
        self.slots = tokens(limit)
        self.held = False  # no slot is free until `reopen`
        self.active = 0  # workers holding a slot
        self.looking = 0  # workers that will look at the buffer before parking
        # Workers started that have not run yet: they look in the buffer
        # first, so they are on their way to an item, as woken ones are.
        self.starting = 0

    def bind(self) -> None:
        """Bind the lines to the running event loop (at each start)."""
        for line in (self.producers, self.getters, self.idle_workers):
            line.bind()

    @property
    def consumers_parked(self) -> bool:
        """True if a new item may have someone to wake."""
        return bool(
            self.getters.parked or self.idle_workers.parked or self.pool.reserved
        )

    def set_limit(self, limit: int | None) -> None:
        """Change the concurrency limit (while held, it applies at `reopen`).

        Lowered: workers over the limit give back their slots before their
        next item. Raised: idle workers take the new slots for buffered items.

        Raises:
            ValueError: the queue borrows from a shared CapacityLimiter.
        """
        if self._core.capacity is not None:
            raise ValueError(
                "concurrency_limit: this queue borrows from a shared "
                "anyio.CapacityLimiter; change the limit with its total_tokens"
            )
        self.limit = limit
        if not self.held:
            self.slots = tokens(limit)
            self.wake_consumers()

    def close(self) -> None:
        """No slot is free until `reopen`: the worker loop checks the slots
        before every item anyway, so it stops before its next call at no cost
        to the hot path, and no worker is woken for new items."""
        self.held = True
        self.slots = 0.0

    def reopen(self) -> None:
        """Give the slots back, and wake workers for the buffered items."""
        self.held = False
        self.slots = tokens(self.limit)
        self.wake_consumers()

    def wake_producer(self) -> None:
        """Wake the first blocked producer, if there is room for its item."""
        if self._core.room() > 0:
            self.producers.wake_one()

    def wake_consumers(self) -> None:
        """Wake as many consumers as the buffered items and the slots call for."""
        while self.wake_consumer():
            pass

    def wake_consumer(self, coming: int = 0) -> bool:
        """Wake a parked get() caller, else an idle worker that a slot is free
        for, unless those on their way will take every buffered item; True if
        one was woken. ``coming`` is 1 when the caller is a worker just woken.

        While workers hold slots they may come back for the items before a
        woken worker runs: then only one idle worker is woken at a time, and
        it wakes up to two more if still needed when it runs (`woken`).
        """
        getters = self.getters
        idle = self.idle_workers
        woken = idle.woken + self.starting
        on_their_way = getters.woken + woken + self.looking + coming
        if on_their_way >= len(self._core.books.buffer):
            return False  # those on their way will take every buffered item
        if getters.parked:
            return getters.wake_one()
        if self.active + woken + coming >= self.slots:
            return False  # a worker holding a slot takes it next
        if woken and self.active and not coming:
            return False  # the worker woken first wakes the rest it needs
        return idle.wake_one() or self._start_reserved()

    def _start_reserved(self) -> bool:
        """Start a worker from the pool's reserve, as if woken; True if one was."""
        if self._core.status is not _PROCESSING:
            return False
        worker = self.pool.start_reserved()
        if worker is None:
            return False
        self.starting += 1
        return True

    def entered(self, worker: Worker) -> None:
        """``worker`` runs for the first time: it was on its way to the buffer
        until now, as a woken worker is; it does as one does, and wakes others
        if more items wait than are being come for."""
        self.pool.entered(worker)
        self.starting -= 1
        self.woken()

    def left(self, worker: Worker) -> None:
        """``worker`` ends; woken for an item, then told to stop before it
        ran, it passes the item on."""
        if self._core.books.buffer and self._core.status is _PROCESSING:
            self.wake_consumer()
        self.pool.left(worker)

    async def park_idle(self, worker: Worker) -> None:
        """Park ``worker`` in the idle line (where ending it cancels it) until it
        is woken for an item; then wake the others still needed."""
        worker.parked = True
        await self.idle_workers.park()
        worker.parked = False
        self.woken()

    def woken(self) -> None:
        """A worker woken for an item: wake up to two more, if still needed.

        Each of those does the same, so a burst reaches every idle worker it
        needs within a few turns of the loop; and a worker woken before busy
        workers came back for the items (trio runs a turn's tasks in random
        order) wakes two that find nothing, not one per item.
        """
        if self._core.status is _PROCESSING and self.wake_consumer(coming=1):
            self.wake_consumer(coming=1)

    def wake_all(self) -> None:
        """Wake every parked producer, get() caller and idle worker (each
        looks at the status: a stop)."""
        self.producers.wake_all()
        self.getters.wake_all()
        self.idle_workers.wake_all()

    def consuming(self) -> bool:
        """True while someone may still take buffered items: workers, parked
        get() callers, or items taken by get() and not yet marked done."""
        getters = self.getters
        return bool(
            self.pool.workers
            or self.pool.reserved
            or getters.parked
            or getters.woken
            or self._core.books.taken_by_get
        )
