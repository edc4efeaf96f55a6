"""The work queue's calls to Redis, made so that cancellation never reaches coredis.

coredis 6.9 loses a connection-pool slot for good when a call is cancelled
while it blocks (XREADGROUP ... BLOCK) or while its connection is being opened,
and also when a blocking call's connection dies under it (CLIENT KILL, a server
restart): the pool hands out one connection fewer each time, and once none is
left every command waits forever. So:

- every call runs in a shielded cancel scope with a bound of its own, and the
  caller looks for cancellation between calls, where nothing is half done;
- the one blocking command, the fetcher's XREADGROUP, leases its connection
  itself and gives the slot back if the connection died (`read_group`);
- a script is called by its SHA and loaded again after ``SCRIPT FLUSH``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

from anyio import CancelScope, fail_after
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import NoScriptError
from coredis.pool import ConnectionPool

__all__ = ["TRANSIENT", "Script", "read_group", "shielded"]

R = TypeVar("R")

#: Connection-level trouble worth trying again after a pause: the server went
#: away or is still loading its data, a connection was killed, a reply did not
#: come in time.
TRANSIENT: tuple[type[Exception], ...] = (RedisConnectionError, TimeoutError, OSError)


async def shielded(call: Callable[[], Awaitable[R]], timeout: float) -> R:
    """Await ``call()`` where no cancellation reaches it, for at most ``timeout``.

    The caller looks for cancellation afterwards, once it has dealt with the
    result (entries read must be handed on, an accepted put reported).

    Raises:
        TimeoutError: no answer within ``timeout`` seconds.
    """
    with CancelScope(shield=True), fail_after(timeout):
        result = await call()
    return result


class Script:
    """A Lua script shipped beside this module, called by its SHA.

    After ``SCRIPT FLUSH`` (or on a server that restarted) the call fails with
    NOSCRIPT: the script is loaded again and the call made once more.
    """

    __slots__ = ("name", "sha", "source")

    def __init__(self, filename: str) -> None:
        self.name = filename
        self.source = (resources.files(__package__) / filename).read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(
        self, client: Any, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> object:
        try:
            return await client.evalsha(self.sha, keys, args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, keys, args)


async def read_group(
    client: Any,
    *,
    group: str,
    consumer: str,
    stream: str,
    count: int,
    block_ms: int,
) -> list[Any]:
    """``XREADGROUP GROUP group consumer COUNT count BLOCK block_ms STREAMS
    stream >``: the new entries, as ``[id, [field, value, ...]]`` lists.

    Call it shielded (`shielded`). On a plain connection pool it leases the
    connection itself, so that a connection that dies while blocked (killed,
    timed out, the server restarted) gives its pool slot back.
    """
    pool = client.connection_pool
    args = (
        b"GROUP",
        group,
        consumer,
        b"COUNT",
        count,
        b"BLOCK",
        block_ms,
        b"STREAMS",
        stream,
        b">",
    )
    if type(pool) is not ConnectionPool:  # a cluster: coredis routes it
        reply = await client.xreadgroup(
            group, consumer, {stream: ">"}, count=count, block=block_ms
        )
        entries = next(iter(reply.values())) if reply else ()
        return [[entry.identifier, _flat(entry.field_values)] for entry in entries]
    connection = await pool.get_connection()
    try:
        request = connection.create_request(
            b"XREADGROUP",
            *args,
            decode=False,
            timeout=block_ms / 1000 + 5,
            disconnect_on_cancellation=True,
        )
        raw = await request
    finally:
        pool.release(connection)
        if not connection.usable:
            _give_slot_back(pool)
    if not raw:
        return []
    # RESP3 answers {stream: entries}.
    return list(next(iter(raw.values())))


def _flat(mapping: dict[Any, Any]) -> list[Any]:
    flat: list[Any] = []
    for field, value in mapping.items():
        flat += [field, value]
    return flat


def _give_slot_back(pool: ConnectionPool[Any]) -> None:
    # coredis's release() keeps only a usable connection; the slot of a dead
    # one would be gone for good. An empty slot (None) opens a new connection.
    available = pool._available_connections
    if not available.full():
        available.append_nowait(None)
