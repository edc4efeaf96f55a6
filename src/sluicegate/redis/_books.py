# pyright: standard
"""The work queue's global books: what they hold, their one atomic read, and
`Settled`, the wake-up of whoever waits for them to change."""

from __future__ import annotations

import attrs
from anyio import Event, move_on_after

from ._client import ints
from ._retrying import QueueCalls
from ._scripts import BOOKS, GROUP

__all__ = ["RedisQueueBooks", "Settled", "read_books"]


@attrs.frozen
class RedisQueueBooks:
    """The global books of a RedisWorkQueue, read in one atomic call.

    ``enqueued == acknowledged + outstanding + dead_lettered`` always.

    Attributes:
        enqueued: Items ever accepted.
        acknowledged: Items whose worker function returned or whose error was
            recorded.
        dead_lettered: Items moved to the dead stream (delivered more than
            ``max_deliveries`` times, or unreadable).
        outstanding: Items accepted and not yet acknowledged or dead-lettered.
        pending: Of those, items delivered to a worker process (fetched,
            running, or held by a process that died).
        stream_length: Entries in the stream (equal to ``outstanding``).
        dead_length: Entries in the dead stream.
    """

    enqueued: int
    acknowledged: int
    dead_lettered: int
    outstanding: int
    pending: int
    stream_length: int
    dead_length: int


async def read_books(
    calls: QueueCalls, *, stream: str, books: str, dead: str
) -> RedisQueueBooks:
    """Read the books of the queue with these keys, in one script call."""
    raw = await calls.call(BOOKS, [stream, books, dead], [GROUP])
    values = ints(raw, 6, "the books script")
    enqueued, acked, dead_lettered, pending, length, dead_length = values
    return RedisQueueBooks(
        enqueued=enqueued,
        acknowledged=acked,
        dead_lettered=dead_lettered,
        outstanding=enqueued - acked - dead_lettered,
        pending=pending,
        stream_length=length,
        dead_length=dead_length,
    )


class Settled:
    """Wakes whoever waits for the books to change: a join, a put waiting for room.

    Redis cannot tell a process that a count changed, so a waiter reads the books
    again after a while; `wait` returns early when this process settles an item
    (`wake`), which is when its own waiters' books change first.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: Event | None = None

    async def wait(self, seconds: float) -> None:
        """Wait until `wake` is called, or for ``seconds`` at most."""
        if self._event is None:
            self._event = Event()
        with move_on_after(seconds):
            await self._event.wait()

    def wake(self) -> None:
        """Wake every waiter now; a later `wait` waits for the next wake."""
        if self._event is not None:
            self._event.set()
            self._event = None
