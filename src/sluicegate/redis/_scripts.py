# pyright: standard
"""The work queue's side in Redis: its consumer group and its Lua scripts.

Every script is a file beside this module (``queue_*.lua``); the handles here
are the only place the queue's parts name them.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Final

from coredis.exceptions import StreamDuplicateConsumerGroupError

from ._client import LuaScript

__all__ = [
    "ACK",
    "BOOKS",
    "DEAD",
    "GROUP",
    "HEARTBEAT",
    "PUT",
    "RECLAIM",
    "RELEASE",
    "ensure_group",
]

#: The one consumer group every process of a queue reads through.
GROUP: Final = "sluicegate"

PUT = LuaScript("queue_put.lua")
ACK = LuaScript("queue_ack.lua")
RECLAIM = LuaScript("queue_reclaim.lua")
DEAD = LuaScript("queue_dead.lua")
RELEASE = LuaScript("queue_release.lua")
HEARTBEAT = LuaScript("queue_heartbeat.lua")
BOOKS = LuaScript("queue_books.lua")


async def ensure_group(client: Any, stream: str) -> None:
    """Create the stream and its consumer group, unless they exist."""
    with suppress(StreamDuplicateConsumerGroupError):  # BUSYGROUP: it exists
        await client.xgroup_create(stream, GROUP, "0", mkstream=True)
