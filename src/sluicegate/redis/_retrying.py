# pyright: standard
"""How the work queue's parts call Redis: bounded, in bytes, and through
connection trouble.

`QueueCalls` holds the client (None until a URL's ``async with`` opens one)
and runs a script once (`QueueCalls.call`) or again after each pause of a
`Backoff` until ``reconnect_timeout`` runs out (`QueueCalls.call_retrying`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from anyio import CancelScope, current_time, sleep

from sluicegate._exceptions import QueueStateError

from ._calls import TRANSIENT
from ._client import LuaScript

__all__ = ["Backoff", "QueueCalls"]


class Backoff:
    """Pauses between attempts through connection trouble: 50 ms doubling to
    1 s; the first trouble of a stretch is logged as a warning."""

    __slots__ = ("delay", "logged")

    def __init__(self) -> None:
        self.delay = 0.05
        self.logged = False

    async def pause(self, logger: logging.Logger, name: str, exc: Exception) -> None:
        if not self.logged:
            self.logged = True
            logger.warning("RedisWorkQueue %r: Redis trouble (%r); retrying", name, exc)
        await sleep(self.delay)
        self.delay = min(self.delay * 2, 1.0)

    def reset(self) -> None:
        self.delay = 0.05
        self.logged = False


class QueueCalls:
    """The Redis calls of one RedisWorkQueue: its client, its time bounds,
    and where its trouble is logged (as the queue ``name``)."""

    __slots__ = ("call_timeout", "client", "logger", "name", "reconnect_timeout")

    def __init__(
        self,
        client: Any,
        *,
        name: str,
        logger: logging.Logger,
        call_timeout: float,
        reconnect_timeout: float,
    ) -> None:
        self.client = client
        self.name = name
        self.logger = logger
        self.call_timeout = call_timeout
        self.reconnect_timeout = reconnect_timeout

    async def call(
        self, script: LuaScript, keys: list[str], args: Sequence[Any]
    ) -> object:
        """Run ``script`` shielded, bounded by call_timeout; replies as bytes
        (a client that decodes replies would garble binary items)."""
        client = self.client
        if client is None:
            raise QueueStateError(
                "this RedisWorkQueue was given a URL, and the client it opens "
                "lives only inside `async with queue:`; call it there"
            )
        with client.decoding(False) if hasattr(client, "decoding") else nullcontext():
            return await script.run(client, keys, args, timeout=self.call_timeout)

    async def call_retrying(
        self, script: LuaScript, keys: list[str], args: Sequence[Any]
    ) -> object:
        """`call`, tried again through connection trouble for up to
        reconnect_timeout (every script but reclaim is safe to repeat)."""
        deadline = current_time() + self.reconnect_timeout
        trouble = Backoff()
        while True:
            try:
                return await self.call(script, keys, args)
            except TRANSIENT as exc:
                if current_time() + trouble.delay > deadline:
                    raise
                with CancelScope(shield=True):
                    await trouble.pause(self.logger, self.name, exc)
