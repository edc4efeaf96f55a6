"""Outcome: how one item's handling ended, as `WorkQueue.map` yields it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Generic, TypeVar

from ._waiters import OneShot, one_shot_factory

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
        self.item: T = item
        self.value: R | None = value
        self.error: Exception | None = error
        self.attempts: int = attempts
        self.duration: float = duration

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
        self._reader: OneShot | None = None  # set when the reader may go on
        self._feeder: OneShot | None = None  # set when the window has room
        # A plain iterable is read by the reader itself, straight into the
        # queue while both the window and the queue have room (no feed task).
        # Reads the plain iterable given to `_read_from`, until it is exhausted.
        self._fill: Callable[[], None] | None = None
        self._fill_every = 1
        self._filled_at = -1  # `_yielded` at the last fill
        # The reader parks often: it waits on the running loop's cheapest
        # one-shot event, found when it first parks.
        self._one_shot: Callable[[], OneShot] = self._first_one_shot

    def _first_one_shot(self) -> OneShot:
        self._one_shot = one_shot_factory()
        return self._one_shot()

    def __aiter__(self) -> MapResults[T, R]:
        return self

    async def __anext__(self) -> Outcome[T, R]:
        if (
            self._fill is not None
            and self._yielded - self._filled_at >= self._fill_every
        ):
            self._fill()
        while True:
            if self._ordered:
                outcome = self._by_position.pop(self._next, None)
                if outcome is not None:
                    self._next += 1
                    break
            elif self._ready:
                outcome = self._ready.popleft()
                break
            if self._fill is not None and self._yielded != self._filled_at:
                self._fill()  # never wait with room left unfilled
                continue
            if self._all_read and self._yielded == self._read:
                self._exhausted = True
                raise StopAsyncIteration
            self._reader = reader = self._one_shot()
            await reader.wait()
        self._yielded += 1
        feeder = self._feeder
        if feeder is not None:
            self._feeder = None
            feeder.set()
        if self._raise_errors and outcome.error is not None:
            raise outcome.error
        return outcome

    def _read_from(
        self,
        source: Iterator[T],
        room: Callable[[], int],
        put_all: Callable[[list[T]], None],
        refused: Callable[[T], None],
        size: int,
    ) -> None:
        """Read ``source`` in `__anext__`, putting items with ``put_all`` while
        the window and ``room()`` (how many the queue takes now) allow.

        It tops the queue (of ``size`` items) up in chunks: once an eighth of
        it or of the window has been taken, and whenever the reader would wait;
        a chunk goes in with one ``put_all(items)``. ``room()`` raises if the
        queue no longer takes items (it was stopped), before anything is drawn;
        should ``put_all`` refuse a chunk all the same, each of its items goes
        to ``refused`` first, so that none is lost.
        """
        self._fill_every = max(1, min(size, self._window) // 8)

        def fill() -> None:
            self._filled_at = self._yielded
            # Nothing else runs meanwhile: the room found first stays free.
            want = min(self._window - self._read + self._yielded, room())
            if want <= 0:
                return
            chunk: list[T] = []
            try:
                chunk.extend(islice(source, want))
            finally:
                # Should the source fail, `chunk` holds what it gave before:
                # those are put (there is room) before its error goes on.
                if chunk:
                    self._put_chunk(chunk, put_all, refused)
            if len(chunk) < want:
                self._fill = None
                self._all_read = True

        self._fill = fill

    def _put_chunk(
        self,
        chunk: list[T],
        put_all: Callable[[list[T]], None],
        refused: Callable[[T], None],
    ) -> None:
        """Count the items of ``chunk`` as read and put them all."""
        if self._ordered:
            for item in chunk:
                self._count(item)
        else:
            self._read += len(chunk)  # `_count`, written out
        try:
            put_all(chunk)
        except BaseException:
            for item in chunk:
                refused(item)
            raise

    def _full(self) -> bool:
        """True while the window has no room for another item."""
        return self._read - self._yielded >= self._window

    async def _wait_for_room(self) -> None:
        while self._read - self._yielded >= self._window:
            self._feeder = feeder = self._one_shot()
            await feeder.wait()

    def _count(self, item: T) -> None:
        """Count ``item`` as read (there is room for it)."""
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
        reader = self._reader
        if reader is not None:
            self._reader = None
            reader.set()

    def _fed_all(self) -> None:
        self._all_read = True
        reader = self._reader
        if reader is not None:
            self._reader = None
            reader.set()
