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

    If the queue is stopped under the map, nothing more is read; the reader
    yields the outcome of every call that finished, then ends: `stopped` is
    True, and `unprocessed` says how many items read got no outcome.
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
        # Set when the queue begins to stop under the map: nothing more is read,
        # and the reader ends once every item read has an outcome or is listed
        # as unprocessed (`_lost()` of them, by the queue's books).
        self._stopped = False
        self._lost: Callable[[], int] = _none
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

    @property
    def stopped(self) -> bool:
        """True if the queue began to stop before the reader reached the end.

        The map then reads no more items; the outcomes of the calls that
        finished still come, and the reader ends normally once they have.
        """
        return self._stopped

    @property
    def unprocessed(self) -> int:
        """How many of the items read got no outcome: they are listed in the
        queue's ``unprocessed`` (cut short in flight, left buffered or waiting
        for a retry at a stop, or read and never put).

        0 for a map that ran to its end; counted as of now while the block
        runs, and fixed once it has ended.
        """
        return self._lost()

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
            if self._stopped and self._stop_is_over():
                if self._by_position:  # ordered: skip positions that never come
                    self._next = min(self._by_position)
                    continue
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

    def _over(self) -> bool:
        """True while more items are read and not yet yielded than the window
        holds (the feed counts an item as read when it draws it, then waits)."""
        return self._read - self._yielded > self._window

    async def _wait_for_room(self) -> None:
        while self._read - self._yielded > self._window:
            self._feeder = feeder = self._one_shot()
            await feeder.wait()

    def _count(self, item: T) -> None:
        """Count ``item`` as read, as the feed draws it (it then waits while
        the window is over)."""
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
        self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None:
            self._reader = None
            reader.set()

    def _count_lost(self, lost: Callable[[], int]) -> None:
        """Count as `unprocessed` ``lost()``: how many of the items read are
        listed in the queue's ``unprocessed``."""
        self._lost = lost

    def _settle(self) -> None:
        """Fix `unprocessed` as it is now: the map has ended."""
        lost = self._lost()
        self._lost = lambda: lost

    def _stop_seen(self) -> None:
        """A step of the queue's stop (it is told of each): read no more, and
        let the reader look whether every outcome has come."""
        if not self._exhausted:
            self._stopped = True
        self._fill = None
        self._wake_reader()

    def _stop_is_over(self) -> bool:
        """True once each item read has its outcome here or yielded, or is
        listed as unprocessed: no other outcome can come."""
        held = len(self._by_position) if self._ordered else len(self._ready)
        return self._read - self._yielded - held <= self._lost()


def _none() -> int:
    return 0
