# pyright: standard
"""What every part of sluicegate.redis needs around coredis.

- `open_client`: use the caller's open client, or open one from a URL and close
  it on the way out.
- `check_open`: a QueueStateError, not coredis's RuntimeError, for a client
  nobody entered.
- `shielded`: run one coredis call where no cancellation reaches it, for a
  bounded time. coredis (6.x) loses a connection-pool slot for good when a
  call is cancelled while its connection is being opened, or while a blocking
  command waits; after enough of them every command waits for a free
  connection forever. So a caller's cancellation must never reach a coredis
  call: shield it, then ``await anyio.lowlevel.checkpoint_if_cancelled()``.
- `LuaScript`: a Lua script shipped beside the code, run with EVALSHA and,
  after a ``SCRIPT FLUSH`` or a server restart (NOSCRIPT), with EVAL, which
  loads it again.
- `ints`: script replies are untyped; check their shape at runtime.
- `tagged_key`: keys that share one ``{hash tag}``, so that a script touching
  several of them runs on Redis Cluster.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Final, TypeVar

import coredis
from anyio import CancelScope, move_on_after
from anyio.lowlevel import checkpoint_if_cancelled
from coredis.exceptions import InvalidResponse, NoScriptError

from sluicegate._checks import is_number, not_seconds
from sluicegate._exceptions import QueueStateError

__all__ = [
    "CALL_TIMEOUT",
    "LuaScript",
    "RedisClient",
    "check_client",
    "check_open",
    "check_timeout",
    "ints",
    "open_client",
    "shielded",
    "tagged_key",
]

T = TypeVar("T")

#: A client sluicegate.redis accepts: one Redis server, or a Redis Cluster.
RedisClient = coredis.Redis[Any] | coredis.RedisCluster[Any]

#: The default bound on one call to Redis, connecting and coredis's own
#: retries included (`shielded`).
CALL_TIMEOUT: Final = 10.0

#: Settings of a client opened from a URL: coredis's own timeouts fire well
#: before `CALL_TIMEOUT` (three attempts of 2 s), so that it, not the
#: shield's last-resort bound, gives up on a dead server; a connect timed out
#: by coredis keeps its pool slot.
URL_CLIENT_SETTINGS: Final[dict[str, Any]] = {
    "connect_timeout": 2.0,
    "stream_timeout": 2.0,
}


def check_client(client: object, name: str = "client") -> RedisClient:
    """Return ``client`` if it is a coredis ``Redis`` or ``RedisCluster``.

    Raises:
        TypeError: it is not; a URL gets a hint to the URL-taking form.
    """
    if isinstance(client, (coredis.Redis, coredis.RedisCluster)):
        return client
    hint = ""
    if isinstance(client, str):
        hint = " (for a URL, use the class's from_url)"
    raise TypeError(
        f"{name} must be a coredis.Redis or coredis.RedisCluster client{hint}, "
        f"got {client!r} ({type(client).__name__})"
    )


def check_timeout(timeout: object, name: str = "timeout") -> float:
    """Return ``timeout`` as a float if it is a finite number > 0."""
    if not is_number(timeout):
        raise not_seconds(name, timeout)
    if not 0 < timeout < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {timeout!r}")
    return float(timeout)


@asynccontextmanager
async def open_client(
    client_or_url: RedisClient | str, **settings: Any
) -> AsyncIterator[RedisClient]:
    """Yield a client: the caller's own (left open), or one opened from a URL.

    A URL (``redis://``, ``rediss://``, ``unix://``) opens a ``coredis.Redis``
    with `URL_CLIENT_SETTINGS` updated by ``settings``, closed when the block
    ends. A client passed in is yielded as it is: its owner opens it (``async
    with client:``) before use and closes it after.

    Raises:
        TypeError: neither a URL nor a coredis client.
    """
    if not isinstance(client_or_url, str):
        yield check_client(client_or_url)
        return
    client: coredis.Redis[Any] = coredis.Redis.from_url(
        client_or_url, **{**URL_CLIENT_SETTINGS, **settings}
    )
    async with client:
        yield client


def check_open(client: RedisClient) -> None:
    """Raise QueueStateError if ``client``'s connection pool is not open."""
    try:
        client.connection_pool.task_group  # noqa: B018 (raises if not entered)
    except RuntimeError:
        raise QueueStateError(
            f"the Redis client {client!r} is not open: enter it first "
            "(`async with client:`), or pass a URL to have it opened for you"
        ) from None


async def shielded(call: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Await ``call()`` where no cancellation reaches it, for at most ``timeout``.

    The caller's cancellation (a timeout included) waits until the call ends;
    follow with ``await anyio.lowlevel.checkpoint_if_cancelled()`` to deliver
    it, after acting on the result if it must be (say, giving back a token
    that was granted). ``timeout`` bounds the wait if the server never
    answers: the call is then cancelled after all (which may cost coredis a
    pool slot, see the module docstring), so give the client timeouts of its
    own that fire first (`URL_CLIENT_SETTINGS`).

    Raises:
        QueueStateError: the client is not open.
        TimeoutError: no answer within ``timeout`` seconds (or the caller's
            cancellation, if it came meanwhile).
        coredis.exceptions.RedisError: what the call raised.
    """
    with CancelScope(shield=True), move_on_after(timeout):
        return await call()
    await checkpoint_if_cancelled()  # a cancelled caller gets its cancellation
    raise TimeoutError(f"Redis did not answer within {timeout:g} s")


class LuaScript:
    """A Lua script from a file of this package, run by its SHA1.

    `run` sends EVALSHA; on NOSCRIPT (the server's script cache was flushed,
    or the server restarted) it sends EVAL, which runs the script and caches
    it again. Both in one `shielded` call. In a cluster every node keeps its
    own cache; EVAL goes to the node of the keys, like EVALSHA.
    """

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (
            resources.files(__name__.rpartition(".")[0])
            .joinpath(name)
            .read_text(encoding="utf-8")
        )
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def run(
        self,
        client: RedisClient,
        keys: Sequence[str],
        args: Sequence[str | int | float],
        timeout: float = CALL_TIMEOUT,
    ) -> object:
        """Run the script (shielded, see `shielded`) and return its raw reply.

        coredis retries a call that failed with ConnectionError or
        TimeoutError (by default), so the script may run twice for one `run`:
        write scripts that are idempotent, or that tell a repeat by an id in
        ``args``.
        """
        check_open(client)

        async def evalsha_or_eval() -> object:
            try:
                return await client.evalsha(self.sha, keys=keys, args=args)
            except NoScriptError:
                return await client.eval(self.source, keys=keys, args=args)

        return await shielded(evalsha_or_eval, timeout)

    def __repr__(self) -> str:
        return f"<LuaScript {self.name} sha={self.sha[:12]}>"


def ints(reply: object, count: int, what: str) -> tuple[int, ...]:
    """``reply`` as a tuple of ``count`` ints, or InvalidResponse.

    A script's reply is whatever the server sent; a wrong script version, a
    proxy or a module can send something else.
    """
    if (
        not isinstance(reply, (list, tuple))
        or len(reply) != count
        or not all(type(value) is int for value in reply)
    ):
        raise InvalidResponse(
            f"{what}: expected a list of {count} integers from Redis, got {reply!r}"
        )
    return tuple(reply)


def tagged_key(key: object, suffix: str, name: str = "key") -> str:
    """``{key}:suffix``: every key of one object shares the hash tag ``{key}``.

    Redis Cluster puts keys with one hash tag in one slot, so one script may
    touch them all. (A ``}`` inside ``key`` ends the tag early, but at the
    same place in every key made from it, so they still share a slot.)

    Raises:
        TypeError: key is not a str.
        ValueError: key is empty or starts with ``}`` (``{}`` is no hash tag:
            the keys would land in different slots).
    """
    if not isinstance(key, str):
        raise TypeError(f"{name} must be a str, got {key!r} ({type(key).__name__})")
    if not key or key.startswith("}"):
        raise ValueError(
            f"{name} must be a non-empty str that does not start with '}}', got {key!r}"
        )
    return f"{{{key}}}:{suffix}"
