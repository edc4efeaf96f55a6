# pyright: standard
"""Producer: the put side of a RedisWorkQueue, items into the stream as room allows.

Room is global (``maxsize`` outstanding across every process), so the put script
decides, in Redis, how many of a chunk fit. A producer that finds no room waits
and asks again: Redis cannot wake it, but this process settling an item can.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Final, Generic, TypeVar

from anyio import current_time
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from sluicegate._checks import check_seconds
from sluicegate._status import USE_QUEUE_TIMEOUT, UseQueueTimeout

from ._books import Settled
from ._client import ints
from ._config import RedisQueueConfig
from ._retrying import QueueCalls
from ._scripts import PUT
from ._serializer import dump_item

__all__ = ["PUT_CHUNK", "TOKEN_TTL", "Producer"]

T = TypeVar("T")

#: How long a put token lives: a retried put script within it is not run twice.
TOKEN_TTL: Final = 300
#: Items per put script call.
PUT_CHUNK: Final = 256
#: The first and the longest wait of a producer that found no room, in seconds.
FIRST_WAIT: Final = 0.005
LONGEST_WAIT: Final = 0.1


class Producer(Generic[T]):
    """Puts the items of one RedisWorkQueue object, up to `PUT_CHUNK` a call.

    Args:
        calls: The queue's Redis calls.
        config: The queue's validated arguments (keys, maxsize, serializer).
        counts: The queue's own counts; this adds to ``put`` and
            ``backpressure_events``.
        settled: Woken when this process settles an item: room, perhaps.
        check_running: Raises QueueStateError unless the queue takes items;
            called before a put and again after each wait for room.
    """

    def __init__(
        self,
        calls: QueueCalls,
        config: RedisQueueConfig,
        *,
        counts: dict[str, int],
        settled: Settled,
        check_running: Callable[[str], None],
    ) -> None:
        self._calls: Final = calls
        self._config: Final = config
        self._keys: Final = [config.stream, config.books]
        self._counts: Final = counts
        self._settled: Final = settled
        self._check_running: Final = check_running

    async def put_many(
        self, items: Iterable[T], timeout: float | UseQueueTimeout | None
    ) -> int:
        """`RedisWorkQueue.put_many`: check, store every item, then put them."""
        if timeout is USE_QUEUE_TIMEOUT:
            timeout = self._config.timeout
        else:
            timeout = check_seconds("timeout", timeout, allow_none=True)
        _check_items(items)
        self._check_running("put")
        serializer = self._config.serializer
        return await self._put([dump_item(serializer, item) for item in items], timeout)

    async def _put(
        self, payloads: list[tuple[bytes, bytes]], timeout: float | None
    ) -> int:
        deadline = None if timeout is None else current_time() + timeout
        accepted = 0
        delay = FIRST_WAIT
        while accepted < len(payloads):
            # Before each chunk (none is half put): the call itself is
            # shielded, so a cancelled producer with room would never notice.
            await checkpoint_if_cancelled()
            took = await self._put_chunk(payloads[accepted : accepted + PUT_CHUNK])
            accepted += took
            self._counts["put"] += took
            if took:
                delay = FIRST_WAIT
                continue  # room for some, at least: try the rest at once
            # Full: wait for room, waking early when this process settles one.
            now = current_time()
            if deadline is not None and now >= deadline:
                self._counts["backpressure_events"] += 1
                if timeout == 0:
                    await checkpoint()
                return accepted
            await self._settled.wait(
                delay if deadline is None else min(delay, deadline - now)
            )
            delay = min(delay * 2, LONGEST_WAIT)
            self._check_running("put")
        return accepted

    async def _put_chunk(self, payloads: list[tuple[bytes, bytes]]) -> int:
        # One token for the call and all its resends: the script runs once.
        token = self._config.token_prefix + uuid.uuid4().hex
        args: list[str | bytes | int] = [self._config.maxsize, TOKEN_TTL]
        for field, payload in payloads:
            args += [field, payload]
        raw = await self._calls.call_retrying(PUT, [*self._keys, token], args)
        took, _outstanding = ints(raw, 2, "the put script")
        if not 0 <= took <= len(payloads):
            raise RuntimeError(f"the put script accepted {took} of {len(payloads)}")
        return took


def _check_items(items: object) -> None:
    """Raise TypeError unless ``items`` is an iterable, and not one str or bytes."""
    if isinstance(items, (str, bytes)):
        kind = type(items).__name__
        raise TypeError(
            f"items must be an iterable of items, not {kind} (its characters "
            f"or bytes would be put one by one): to put one {kind} item, use "
            f"put(); got {items!r}"
        )
    if not isinstance(items, Iterable):
        raise TypeError(
            f"items must be an iterable of items, got {items!r} "
            f"({type(items).__name__})"
        )
