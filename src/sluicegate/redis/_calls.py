# pyright: standard
"""The work queue's blocking read, and what counts as connection trouble.

Besides the slots lost to cancellation (see `_client`), coredis 6.9 loses a
connection-pool slot for good when a blocking command's connection dies under
it (CLIENT KILL, a server restart): ``release()`` keeps only a usable
connection, and nothing puts an empty slot back. The fetcher blocks all the
time, so every restart would cost a slot. `read_group` leases its connection
itself and gives the slot back when the connection died.
"""

from __future__ import annotations

from typing import Any

from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.pool import ConnectionPool

__all__ = ["TRANSIENT", "read_group"]

#: Connection-level trouble worth trying again after a pause: the server went
#: away or is still loading its data, a connection was killed, a reply did not
#: come in time.
TRANSIENT: tuple[type[Exception], ...] = (RedisConnectionError, TimeoutError, OSError)


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

    Call it shielded (`_client.shielded`). On a plain connection pool it leases the
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
