"""MapResults: the outcomes of a `WorkQueue.map`, read with ``async for``."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from ._collect import Collector
from ._outcome import Outcome

__all__ = ["MapResults", "Outcome", "collector_of"]

T = TypeVar("T")
R = TypeVar("R")


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

    __slots__ = ("_collector",)

    def __init__(self, window: int, *, ordered: bool, raise_errors: bool) -> None:
        self._collector: Collector[T, R] = Collector(
            window, ordered=ordered, raise_errors=raise_errors
        )

    @property
    def stopped(self) -> bool:
        """True if the queue began to stop before the reader reached the end.

        The map then reads no more items; the outcomes of the calls that
        finished still come, and the reader ends normally once they have.
        """
        return self._collector.stopped

    @property
    def unprocessed(self) -> int:
        """How many of the items read got no outcome: they are listed in the
        queue's ``unprocessed`` (cut short in flight, left buffered or waiting
        for a retry at a stop, or read and never put).

        0 for a map that ran to its end; counted as of now while the block
        runs, and fixed once it has ended.
        """
        return self._collector.lost()

    def __aiter__(self) -> MapResults[T, R]:
        return self

    def __anext__(self) -> Coroutine[Any, Any, Outcome[T, R]]:
        # The collector's coroutine itself, not one awaiting it: no frame more
        # on each resume of the reader.
        return self._collector.next()


def collector_of(results: MapResults[T, R]) -> Collector[T, R]:
    """What ``results`` hold, for the map's feed and workers (by public names)."""
    return results._collector
