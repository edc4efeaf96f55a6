# pyright: standard
"""The entries this process holds: taken from the group, kept, handed back.

`Fetcher` reads new entries (and takes over idle ones) as workers come free
and hands them to the local queue of one `process` call (`Processing`);
renews what it holds with a heartbeat, so that no other process takes over an
item a live worker runs; forgets an entry once it is settled; and hands back
to the group what this process will not finish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from anyio import CancelScope, Event, current_time, sleep
from anyio.lowlevel import checkpoint
from coredis.exceptions import ResponseError, UnblockedError

from sluicegate._queue import BoundedQueue

from ._calls import TRANSIENT, read_group
from ._client import ints, shielded
from ._retrying import Backoff, QueueCalls
from ._scripts import DEAD, GROUP, HEARTBEAT, RECLAIM, RELEASE, ensure_group
from ._serializer import Serializer, load_item

__all__ = ["BLOCK_MS", "RELEASED_IDLE_MS", "Entry", "Fetcher", "Processing"]

T = TypeVar("T")

#: How long the fetcher's XREADGROUP blocks: the longest a stop waits for it.
BLOCK_MS: Final = 200
#: Set on a released entry: idle long enough for any XAUTOCLAIM to take it.
RELEASED_IDLE_MS: Final = 10**12


class Entry(Generic[T]):
    """One stream entry this process fetched: its id, its item, its deliveries."""

    __slots__ = ("deliveries", "id", "item")

    def __init__(self, entry_id: bytes, item: T, deliveries: int) -> None:
        self.id = entry_id
        self.item = item
        self.deliveries = deliveries

    def __repr__(self) -> str:
        return f"<entry {self.id.decode()} {self.item!r}>"


class Processing(Generic[T]):
    """One `process` call's state: its workers' local queue, its two tasks."""

    def __init__(self, local: BoundedQueue[Entry[T]], capacity: int) -> None:
        self.local = local
        self.capacity = capacity
        self.fetch_scope = CancelScope()
        self.fetched_all = Event()
        self.heartbeat_scope = CancelScope()
        self.released: set[bytes] = set()


class Fetcher(Generic[T]):
    """What one RedisWorkQueue object holds of its queue, for the object's life.

    Args:
        calls: The queue's Redis calls (its client, bounds and logger).
        stream, books, dead: The queue's keys.
        consumer: This queue object's consumer name in the group.
        claim_idle, max_deliveries: As the queue was given them.
        serializer: How the queue's items are stored.
        counts: The queue's own counts, which this adds to.
        unprocessed: The queue's list of items handed back unprocessed.
        on_settled: Called each time an entry is settled or handed back.
    """

    def __init__(
        self,
        calls: QueueCalls,
        *,
        stream: str,
        books: str,
        dead: str,
        consumer: str,
        claim_idle: float,
        max_deliveries: int,
        serializer: Serializer,
        counts: dict[str, int],
        unprocessed: list[T],
        on_settled: Callable[[], None],
    ) -> None:
        self._calls = calls
        self._stream = stream
        self._books_key = books
        self._dead = dead
        self._consumer = consumer
        self._claim_idle = claim_idle
        self._max_deliveries = max_deliveries
        self._serializer = serializer
        self._counts = counts
        self._unprocessed = unprocessed
        self._on_settled = on_settled
        # Fetched entries not yet settled (buffered or running), by id: the
        # heartbeat renews them, a stop hands back those not started.
        self.held: dict[bytes, Entry[T]] = {}
        self._room_for_fetch: Event | None = None
        self._claim_cursor = b"0-0"

    @property
    def _logger(self) -> logging.Logger:
        return self._calls.logger

    @property
    def _name(self) -> str:
        return self._calls.name

    def unhold(self, entry: Entry[T]) -> None:
        """Forget a settled or handed-back entry: room for the fetcher."""
        self.held.pop(entry.id, None)
        if self._room_for_fetch is not None:
            self._room_for_fetch.set()
            self._room_for_fetch = None
        self._on_settled()

    async def fetch(self, processing: Processing[T]) -> None:
        """The fetcher: read as many entries as there are free workers (taking
        over idle ones first, when due), and hand them to the workers."""
        claim_every = self._claim_idle / 2
        next_claim = current_time()
        trouble = Backoff()
        try:
            with processing.fetch_scope:
                while True:
                    free = processing.capacity - len(self.held)
                    if free <= 0:
                        self._room_for_fetch = Event()
                        await self._room_for_fetch.wait()
                        continue
                    try:
                        entries: list[Entry[T]] = []
                        if current_time() >= next_claim:
                            entries, more = await self._reclaim(free)
                            if not more:
                                next_claim = current_time() + claim_every
                        if not entries:
                            entries = await self._read(free)
                    except TRANSIENT as exc:
                        await trouble.pause(self._logger, self._name, exc)
                        continue
                    except ResponseError as exc:
                        # UNBLOCKED: the stream was deleted under XREADGROUP.
                        if "NOGROUP" not in str(exc) and not isinstance(
                            exc, UnblockedError
                        ):
                            raise
                        # The stream or group is gone (deleted, or a server
                        # restarted empty): make them again.
                        await shielded(
                            lambda: ensure_group(self._calls.client, self._stream),
                            self._calls.call_timeout,
                        )
                        continue
                    trouble.reset()
                    self._hand_over(entries, processing)
                    await checkpoint()
        finally:
            processing.fetched_all.set()

    async def _read(self, count: int) -> list[Entry[T]]:
        raw = await shielded(
            lambda: read_group(
                self._calls.client,
                group=GROUP,
                consumer=self._consumer,
                stream=self._stream,
                count=count,
                block_ms=BLOCK_MS,
            ),
            BLOCK_MS / 1000 + self._calls.call_timeout,
        )
        return await self._entries([(e[0], e[1], 1) for e in raw])

    async def _reclaim(self, count: int) -> tuple[list[Entry[T]], bool]:
        """Take over idle entries; True too if the scan of the PEL goes on."""
        raw = await self._calls.call(
            RECLAIM,
            [self._stream, self._books_key, self._dead],
            [
                GROUP,
                self._consumer,
                int(self._claim_idle * 1000),
                self._claim_cursor,
                count,
                self._max_deliveries,
            ],
        )
        if not (isinstance(raw, list) and len(raw) == 3):
            raise RuntimeError(f"unexpected reply from the reclaim script: {raw!r}")
        cursor, taken, dead = raw
        if not (isinstance(cursor, bytes) and isinstance(taken, list)):
            raise RuntimeError(f"unexpected reply from the reclaim script: {raw!r}")
        self._claim_cursor = cursor
        self._counts["dead_lettered_here"] += int(dead)
        self._counts["reclaimed"] += len(taken)
        entries = await self._entries([(e[0], e[1], int(e[2])) for e in taken])
        self._counts["redelivered"] += sum(1 for e in entries if e.deliveries > 1)
        return entries, cursor != b"0-0"

    async def _entries(self, raw: list[tuple[Any, Any, int]]) -> list[Entry[T]]:
        """Decode fetched entries; one that cannot be read goes to the dead
        stream at once (it would fail the same way everywhere)."""
        entries: list[Entry[T]] = []
        unreadable: list[bytes] = []
        for entry_id, fields, deliveries in raw:
            if not isinstance(entry_id, bytes) or not isinstance(fields, list):
                raise RuntimeError(f"unexpected stream entry: {entry_id!r} {fields!r}")
            try:
                item = load_item(self._serializer, fields)
            except Exception as exc:
                self._logger.error(
                    "RedisWorkQueue %r: entry %s cannot be read (%r): dead-lettered",
                    self._name,
                    entry_id.decode(),
                    exc,
                )
                unreadable.append(entry_id)
                continue
            entries.append(Entry(entry_id, item, deliveries))
        if unreadable:
            args: list[str | bytes | int] = [GROUP, "unreadable", *unreadable]
            moved = await self._calls.call_retrying(
                DEAD, [self._stream, self._books_key, self._dead], args
            )
            self._counts["dead_lettered_here"] += ints([moved], 1, "the dead script")[0]
        return entries

    def _hand_over(self, entries: list[Entry[T]], processing: Processing[T]) -> None:
        local = processing.local
        for entry in entries:
            self.held[entry.id] = entry
            local.put_nowait(entry)  # room: held entries never exceed capacity

    async def heartbeat(self, processing: Processing[T]) -> None:
        """Renew the entries this process holds every claim_idle / 3 seconds,
        so that no other process takes over an item a live worker runs."""
        trouble = Backoff()
        with processing.heartbeat_scope:
            while True:
                await sleep(self._claim_idle / 3)
                if not self.held:
                    continue
                args: list[str | bytes | int] = [GROUP, self._consumer, *self.held]
                try:
                    await self._calls.call(HEARTBEAT, [self._stream], args)
                except TRANSIENT as exc:
                    await trouble.pause(self._logger, self._name, exc)
                else:
                    trouble.reset()

    async def release(self, entries: list[Entry[T]], processing: Processing[T]) -> None:
        """Hand ``entries`` back to the group, idle enough for any process to
        take over at once, and list their items as unprocessed (each once,
        even if the hand-back itself fails)."""
        entries = [e for e in entries if e.id not in processing.released]
        if not entries:
            return
        processing.released.update(e.id for e in entries)
        ids = [e.id for e in entries]
        try:
            with CancelScope(shield=True):
                await self._calls.call_retrying(
                    RELEASE,
                    [self._stream],
                    [GROUP, self._consumer, RELEASED_IDLE_MS, *ids],
                )
        finally:
            for entry in entries:
                self._unprocessed.append(entry.item)
                self._counts["released"] += 1
                self.unhold(entry)
