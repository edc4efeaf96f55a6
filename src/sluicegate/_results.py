"""Outcome: how one item's handling ended, as `WorkQueue.map` yields it."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from anyio import Event

__all__ = ["MapResults", "Outcome"]

T = TypeVar("T")
R = TypeVar("R")


class Outcome(Generic[T, R]):
    """One item and how its handling ended: the value its call returned, or the
    exception of its last attempt.

    Attributes:
        item: The input item.
        value: What the worker function returned (None if it failed).
        error: The exception of the last attempt, or None if it succeeded.
        attempts: How many calls were made, retries included.
        duration: Seconds from the first call's start to the end of the last,
            backoff delays included.
    """

    __slots__ = ("attempts", "duration", "error", "item", "value")

    def __init__(
        self,
        item: T,
        value: R | None,
        error: Exception | None,
        attempts: int,
        duration: float,
    ) -> None:
        self.item = item
        self.value = value
        self.error = error
        self.attempts = attempts
        self.duration = duration

    @property
    def ok(self) -> bool:
        """True if the item succeeded."""
        return self.error is None

    def unwrap(self) -> R:
        """The value, or raise the error the item failed with."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]

    def __repr__(self) -> str:
        how = f"value={self.value!r}" if self.error is None else f"error={self.error!r}"
        return (
            f"Outcome(item={self.item!r}, {how}, attempts={self.attempts}, "
            f"duration={self.duration:.3g})"
        )


class MapResults(Generic[T, R]):
    """The outcomes of a `WorkQueue.map`, read with ``async for``.

    Outcomes come as items finish, or in input order (``ordered=True``). The
    feed reads a new item only while fewer than ``window`` items are read and
    not yet yielded, so a slow reader slows the feed, and the outcomes held here
    never number more than ``window``.
    """

    def __init__(self, window: int, *, ordered: bool, raise_errors: bool) -> None:
        self._window = window
        self._ordered = ordered
        self._raise_errors = raise_errors
        self._ready: deque[Outcome[T, R]] = deque()
        # Ordered: each outcome's input position, by its item's identity (the
        # same object twice is the same input either way), and the ready ones.
        self._positions: dict[int, deque[int]] = {}
        self._by_position: dict[int, Outcome[T, R]] = {}
        self._next = 0  # the next position to yield (ordered)
        self._read = 0  # items read from the input
        self._yielded = 0
        self._all_read = False
        self._exhausted = False
        self._reader: Event | None = None  # set when the reader may go on
        self._feeder: Event | None = None  # set when the window has room

    def __aiter__(self) -> MapResults[T, R]:
        return self

    async def __anext__(self) -> Outcome[T, R]:
        while True:
            outcome = self._pop()
            if outcome is not None:
                break
            if self._all_read and self._yielded == self._read:
                self._exhausted = True
                raise StopAsyncIteration
            self._reader = Event()
            await self._reader.wait()
        self._yielded += 1
        if self._feeder is not None:
            self._feeder.set()
        if self._raise_errors and outcome.error is not None:
            raise outcome.error
        return outcome

    def _pop(self) -> Outcome[T, R] | None:
        if not self._ordered:
            return self._ready.popleft() if self._ready else None
        outcome = self._by_position.pop(self._next, None)
        if outcome is not None:
            self._next += 1
        return outcome

    async def _reserve(self, item: T) -> None:
        """Wait for room in the window, then count ``item`` as read."""
        while self._read - self._yielded >= self._window:
            self._feeder = Event()
            await self._feeder.wait()
            self._feeder = None
        if self._ordered:
            self._positions.setdefault(id(item), deque()).append(self._read)
        self._read += 1

    def _deliver(self, outcome: Outcome[T, R]) -> None:
        """Take an outcome from a worker (never waits)."""
        if self._ordered:
            key = id(outcome.item)
            positions = self._positions[key]
            self._by_position[positions.popleft()] = outcome
            if not positions:
                del self._positions[key]
        else:
            self._ready.append(outcome)
        if self._reader is not None:
            self._reader.set()

    def _fed_all(self) -> None:
        self._all_read = True
        if self._reader is not None:
            self._reader.set()
