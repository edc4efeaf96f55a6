"""Collector: the outcomes of one map, on their way from the workers to its reader.

Outcomes come as items finish, or in input order: then each outcome's input
position is found by its item's identity. The window bounds the items read
and not yet yielded, so a slow reader slows the feed. `MapResults` is the
public face; the map's feed, its workers' sink and the queue's stop work
through this object's public names.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Generic, TypeVar

from ._outcome import Outcome
from ._waiters import OneShot, one_shot_factory

__all__ = ["Collector"]

T = TypeVar("T")
R = TypeVar("R")


class Collector(Generic[T, R]):
    """What a map's results hold, and the steps its collaborators take.

    The workers `deliver` outcomes (through the job's sink); the feed `count`s
    each item as it draws it, waits while the window is `over`, and says when
    it has `fed_all`; a plain iterable is read by the reader itself
    (`read_from`). The queue's stop is seen through `stop_seen`, and what the
    queue lists as unprocessed through `count_lost`. `next` is the reader's
    ``__anext__``.
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
        self.exhausted = False
        # Set when the queue begins to stop under the map: nothing more is read,
        # and the reader ends once every item read has an outcome or is listed
        # as unprocessed (`_lost()` of them, by the queue's books).
        self.stopped = False
        self._lost: Callable[[], int] = _none
        self._reader: OneShot | None = None  # set when the reader may go on
        self._feeder: OneShot | None = None  # set when the window has room
        # A plain iterable is read by the reader itself, straight into the
        # queue while both the window and the queue have room (no feed task).
        # Reads the plain iterable given to `read_from`, until it runs out.
        self._fill: Callable[[], None] | None = None
        self._fill_every = 1
        self._filled_at = -1  # `_yielded` at the last fill
        # The reader parks often: it waits on the running loop's cheapest
        # one-shot event, found when it first parks.
        self._one_shot: Callable[[], OneShot] = self._first_one_shot

    def lost(self) -> int:
        """How many of the items read got no outcome (see `MapResults`)."""
        return self._lost()

    def _first_one_shot(self) -> OneShot:
        self._one_shot = one_shot_factory()
        return self._one_shot()

    async def next(self) -> Outcome[T, R]:
        """The next outcome, waiting for it; StopAsyncIteration at the end."""
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
                self.exhausted = True
                raise StopAsyncIteration
            if self.stopped and self._stop_is_over():
                if self._by_position:  # ordered: skip positions that never come
                    self._next = min(self._by_position)
                    continue
                self.exhausted = True
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

    def read_from(
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
                self.count(item)
        else:
            self._read += len(chunk)  # `count`, written out
        try:
            put_all(chunk)
        except BaseException:
            for item in chunk:
                refused(item)
            raise

    def over(self) -> bool:
        """True while more items are read and not yet yielded than the window
        holds (the feed counts an item as read when it draws it, then waits)."""
        return self._read - self._yielded > self._window

    async def wait_for_room(self) -> None:
        while self._read - self._yielded > self._window:
            self._feeder = feeder = self._one_shot()
            await feeder.wait()

    def count(self, item: T) -> None:
        """Count ``item`` as read, as the feed draws it (it then waits while
        the window is over)."""
        if self._ordered:
            self._positions.setdefault(id(item), deque()).append(self._read)
        self._read += 1

    def deliver(
        self,
        item: T,
        value: R | None,
        error: Exception | None,
        attempts: int,
        duration: float,
    ) -> None:
        """Take an item's outcome from a worker (a job's sink; never waits)."""
        outcome = Outcome(item, value, error, attempts, duration)
        if self._ordered:
            key = id(item)
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

    def fed_all(self) -> None:
        self._all_read = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None:
            self._reader = None
            reader.set()

    def count_lost(self, lost: Callable[[], int]) -> None:
        """Count as `unprocessed` ``lost()``: how many of the items read are
        listed in the queue's ``unprocessed``."""
        self._lost = lost

    def settle(self) -> None:
        """Fix `unprocessed` as it is now: the map has ended."""
        lost = self._lost()
        self._lost = lambda: lost

    def stop_seen(self) -> None:
        """A step of the queue's stop (it is told of each): read no more, and
        let the reader look whether every outcome has come."""
        if not self.exhausted:
            self.stopped = True
        self._fill = None
        self._wake_reader()

    def _stop_is_over(self) -> bool:
        """True once each item read has its outcome here or yielded, or is
        listed as unprocessed: no other outcome can come."""
        held = len(self._by_position) if self._ordered else len(self._ready)
        return self._read - self._yielded - held <= self._lost()


def _none() -> int:
    return 0
