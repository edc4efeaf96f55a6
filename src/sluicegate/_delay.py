"""DelayLine: things waiting for their due time; one task sleeps until the earliest.

Used for items waiting out a retry's backoff, and for per-call deadlines on an
injected clock. No polling: the one sleeper wakes when the earliest entry is due,
or when an entry earlier than all others arrives.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from anyio import CancelScope, Event

from ._clock import Clock

__all__ = ["DelayLine", "Entry"]

T = TypeVar("T")

#: Entries withdrawn before they were due are dropped in bulk once there are more
#: of them than this and than live ones: memory O(live entries).
_COMPACT_AFTER: Final = 64


class Entry(Generic[T]):
    """One value waiting in a DelayLine; `DelayLine.withdraw` takes it back."""

    __slots__ = ("due", "live", "value")

    def __init__(self, due: float, value: T) -> None:
        self.due = due
        self.value = value
        self.live = True


class DelayLine(Generic[T]):
    """Values held until their due time, then handed to ``release(values)``.

    `add` costs O(log n); `withdraw` O(1). `run` is the one task that sleeps
    until the earliest due time: start it in the task group of whoever owns the
    line, and cancel it to stop. Values that are due when it wakes are released
    together, in one list in due order, earliest first; ties in the order they
    were added.
    """

    def __init__(self, clock: Clock, release: Callable[[list[T]], object]) -> None:
        self._clock = clock
        self._release = release
        # (due, order, entry): tuples compare in C, and order breaks every tie,
        # so entries themselves are never compared.
        self._heap: list[tuple[float, int, Entry[T]]] = []
        self._live = 0
        self._order = itertools.count()
        # The sleeping runners' scopes, cancelled when they must look again. A
        # set, not one slot: a runner cancelled before it ran may run after its
        # successor has parked, and must not take or clear the successor's wake-up.
        self._sleeping: set[CancelScope] = set()

    def __len__(self) -> int:
        """How many values wait (withdrawn ones not counted)."""
        return self._live

    def add(self, value: T, due: float) -> Entry[T]:
        """Hold ``value`` until the clock reaches ``due``."""
        entry = Entry(due, value)
        heapq.heappush(self._heap, (due, next(self._order), entry))
        self._live += 1
        if self._heap[0][2] is entry:
            self._wake_sleeper()  # a new earliest: sleep until it instead
        return entry

    def withdraw(self, entry: Entry[T]) -> bool:
        """Take back a value not yet released; False if it was released already."""
        if not entry.live:
            return False
        entry.live = False
        self._live -= 1
        stale = len(self._heap) - self._live
        if stale > _COMPACT_AFTER and stale > self._live:
            self._heap = [t for t in self._heap if t[2].live]
            heapq.heapify(self._heap)
        return True

    def drain(self) -> list[T]:
        """Take back every waiting value, earliest due first."""
        values = [t[2].value for t in sorted(self._heap) if t[2].live]
        for _, _, entry in self._heap:
            entry.live = False
        self._heap.clear()
        self._live = 0
        return values

    async def run(self) -> None:
        """Release values as they fall due, for as long as the line is in use."""
        while True:
            self._release_due()
            with CancelScope() as scope:
                self._sleeping.add(scope)
                try:
                    if self._heap:
                        await self._clock.sleep_until(self._heap[0][0])
                    else:
                        await Event().wait()  # until a value arrives
                finally:
                    self._sleeping.discard(scope)

    def _release_due(self) -> None:
        heap = self._heap
        now = self._clock.current_time()
        due: list[T] = []
        while heap and (heap[0][0] <= now or not heap[0][2].live):
            entry = heapq.heappop(heap)[2]
            if entry.live:
                entry.live = False
                self._live -= 1
                due.append(entry.value)
        if due:
            self._release(due)

    def _wake_sleeper(self) -> None:
        for scope in self._sleeping:
            scope.cancel()
