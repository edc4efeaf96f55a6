# pyright: standard
"""RedisRateLimiter: one token bucket shared through Redis by every process."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

from anyio.lowlevel import checkpoint_if_cancelled
from coredis.exceptions import InvalidResponse

from sluicegate._checks import check_hold
from sluicegate._clock import AnyIOClock
from sluicegate._rate_limit import (
    HeadOfLine,
    _check_burst,
    _check_tokens,
    _positive_finite,
)

from ._client import (
    CALL_TIMEOUT,
    LuaScript,
    RedisClient,
    check_client,
    check_timeout,
    ints,
    open_client,
    tagged_key,
)

__all__ = ["RedisRateLimiter"]

_SCRIPT: Final = LuaScript("limiter.lua")
_MICRO: Final = 1_000_000


class RedisRateLimiter(HeadOfLine):
    """`RateLimiter`'s token bucket, shared through Redis by everyone using ``key``.

    Every `RedisRateLimiter` on the same Redis (or Redis Cluster) and the same
    ``key``, in any process on any host, takes tokens from one bucket: with
    the default burst of 1, at most ``rate`` tokens are granted in every
    window of ``period`` seconds from the first call on, and with
    ``burst=b`` at most ``b + rate * t / period`` in every window of t
    seconds, counted on the Redis server's clock, so the hosts' clocks need
    not agree. Give every user of a key the same rate, period and burst. As
    with `RateLimiter`, a burst of 1 makes every grant wait for its own token
    (here a round trip to Redis too); at high rates pass a burst to keep the
    full rate, at the price of the exact window.

    Each attempt to take tokens is one atomic Lua script (GCRA) that reads the
    server's time and either takes the tokens or says how long until they will
    be there. Within a process, callers wait in one line served in arrival
    order, and only the head of the line talks to Redis: it sleeps for the time
    the server named, then asks again; nobody polls. Between processes the
    bucket is first come, first served.

    Nothing is reserved for a waiter, so a cancelled or timed-out `acquire`
    wastes nothing: while it sleeps nothing was taken, and if the server had
    just granted its tokens when it was cancelled, they are given back. No
    cancellation reaches a coredis call (each is shielded, for at most
    ``timeout`` seconds): coredis loses a pool connection to a call cancelled
    at the wrong moment.

    The state lives in ``{key}:state`` (a hash; it expires once the bucket is
    full again) and ``{key}:call:<id>`` (one small key per limiter object, for
    60 s after its last grant, so that a call coredis repeats after a lost
    reply is not counted twice). All share the hash tag ``{key}``, so they sit
    in one Cluster slot. A Redis that loses the state (a restart without
    persistence, an eviction) starts over with a full bucket.

    Use it as `RateLimiter` is used: pass it to a `WorkQueue` or `Executor`
    (``rate_limiter=``), or ``await limiter.acquire()``, or ``async with
    limiter:``. To have it open its own client from a URL, see `from_url`.

    Args:
        client: An open ``coredis.Redis`` or ``coredis.RedisCluster`` (its
            owner enters it with ``async with client:`` before use).
        key: The name all users of this bucket share; a non-empty str.
        rate: Tokens added per ``period``; a number > 0.
        period: Seconds over which ``rate`` tokens are added; a number > 0.
        burst: The bucket's size: the most tokens granted at once; a number
            >= 1. None (the default) is 1.
        timeout: The longest one call to Redis may take (connecting and
            coredis's retries included) before `acquire` raises TimeoutError.

    Raises:
        TypeError: client is not a coredis client; key is not a str; a
            number is not a number.
        ValueError: rate, period or timeout <= 0, NaN or infinite; burst < 1;
            key is empty or starts with ``}``.
    """

    def __init__(
        self,
        client: RedisClient,
        key: str,
        rate: float,
        period: float = 1.0,
        *,
        burst: float | None = None,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._rate, self._period, self._burst = _check_settings(rate, period, burst)
        self._timeout = check_timeout(timeout)
        self._state_key = tagged_key(key, "state")
        self._client = check_client(client)
        self._key = key
        # This object's calls, told apart from every other limiter's.
        self._call_key = tagged_key(key, f"call:{uuid.uuid4().hex}")
        self._calls = 0
        self._interval = repr(self._period / self._rate * _MICRO)
        self._clock = AnyIOClock()
        # A hold not yet sent to Redis: its end on the local clock.
        self._hold_until = -math.inf
        # (The head sleeps between calls: `hold` wakes it to send a hold.)
        super().__init__()

    @classmethod
    @asynccontextmanager
    async def from_url(
        cls,
        url: str,
        key: str,
        rate: float,
        period: float = 1.0,
        *,
        burst: float | None = None,
        timeout: float = CALL_TIMEOUT,
        **client_settings: Any,
    ) -> AsyncIterator[RedisRateLimiter]:
        """Open a client to ``url`` for a limiter; close it when the block ends.

        ::

            async with RedisRateLimiter.from_url(url, "api", rate=10) as limiter:
                async with WorkQueue(work, rate_limiter=limiter) as queue:
                    ...

        ``client_settings`` go to ``coredis.Redis.from_url`` (by default,
        connect and stream timeouts of 2 s). For a Redis Cluster, open a
        ``coredis.RedisCluster`` yourself and pass it to the constructor.

        Raises:
            TypeError, ValueError: as for the constructor, before connecting.
        """
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {url!r} ({type(url).__name__})")
        _check_settings(rate, period, burst)
        check_timeout(timeout)
        tagged_key(key, "state")
        async with open_client(url, **client_settings) as client:
            yield cls(client, key, rate, period, burst=burst, timeout=timeout)

    @property
    def key(self) -> str:
        """The name shared by every user of this bucket."""
        return self._key

    @property
    def rate(self) -> float:
        """Tokens added per `period`."""
        return self._rate

    @property
    def period(self) -> float:
        """Seconds over which `rate` tokens are added."""
        return self._period

    @property
    def burst(self) -> float:
        """The most tokens the bucket holds."""
        return self._burst

    @property
    def client(self) -> RedisClient:
        """The coredis client this limiter talks through."""
        return self._client

    def hold(self, seconds: float) -> None:
        """Make every user of the key grant nothing for the next ``seconds``.

        For a server's pushback (HTTP 429 or 503 with ``Retry-After``). This
        method cannot wait for Redis, so it records the hold and the limiter
        sends it with its next call to Redis: at once if a caller of `acquire`
        is waiting in this process (the head of the line is woken to send it),
        else with the next `acquire`. The server then grants nothing to
        anyone until its own clock has passed the time of that call plus what
        was left of the hold. A later end extends a hold; an earlier one
        changes nothing. As with `RateLimiter`, the hold empties the shared
        bucket, which refills only from the hold's end: in the t seconds after
        it at most ``rate * t / period`` tokens are granted, whatever the burst.

        ``hold(0)`` changes nothing. Reads the clock, so call it inside the
        event loop.

        Raises:
            TypeError: seconds is not a number.
            ValueError: seconds is negative, NaN or infinite.
        """
        if not check_hold(seconds):
            return
        self._hold_until = max(self._hold_until, self._clock.current_time() + seconds)
        self._wake_the_head()

    async def acquire(self, tokens: float = 1) -> None:
        """Take ``tokens`` from the shared bucket, waiting in line for them if needed.

        Always asks Redis (one script call) once it is this caller's turn; if
        the bucket lacks the tokens, sleeps as long as the server says, then
        asks again. Callers in this process are served in arrival order.

        If cancelled (a timeout included), the caller leaves the line and
        nothing is taken: tokens granted in the very call that was cancelled
        are given back. A call to Redis in progress is finished first (at most
        ``timeout`` seconds), then the cancellation goes on.

        Raises:
            TypeError: tokens is not a number.
            ValueError: tokens <= 0 or more than `burst` (it could never be
                granted).
            TimeoutError: Redis did not answer within ``timeout`` seconds.
            coredis.exceptions.RedisError: from Redis or coredis, for example
                ConnectionError once coredis has given up reconnecting, or
                InvalidResponse if the script's reply makes no sense.
            QueueStateError: the client is not open.
        """
        await self._acquire(tokens)

    async def _acquire(self, tokens: float = 1) -> float:
        """`acquire`, returning the time of the grant on the server's clock
        (seconds since the epoch): what tests check the bound on."""
        if type(tokens) is not int or tokens != 1:
            _check_tokens(tokens, self._burst)
        await checkpoint_if_cancelled()
        await self._wait_for_turn()
        try:
            return await self._take_as_head(tokens)
        finally:
            self._pass_the_head()

    async def _take_as_head(self, tokens: float) -> float:
        clock = self._clock
        while True:
            await checkpoint_if_cancelled()
            granted, wait, now = await self._call("take", tokens)
            if granted:
                break
            # Sleep on the local clock for what the server said: its clock
            # runs at the same speed, and its "now" came before our reply, so
            # when we ask again the server's clock has passed it too.
            # (Asking before the deadline would be a wasted call.)
            await self._sleep_as_head(clock, clock.current_time() + wait / _MICRO)
        try:
            await checkpoint_if_cancelled()
        except BaseException:
            # Cancelled while the grant was under way: nobody will spend these
            # tokens, so the bucket gets them back. If that fails they stay
            # spent: the bound holds either way, only the budget shrinks.
            with suppress(Exception):
                await self._call("give", tokens)
            raise
        return now / _MICRO

    async def _call(self, op: str, tokens: float) -> tuple[bool, int, int]:
        """One run of the script: (granted, microseconds to wait, server time)."""
        self._calls += 1
        pending = self._hold_until
        hold = 0
        if pending > -math.inf:
            hold = max(0, math.ceil((pending - self._clock.current_time()) * _MICRO))
        reply = await _SCRIPT.run(
            self._client,
            (self._state_key, self._call_key),
            (
                op,
                str(self._calls),
                repr(tokens),
                self._interval,
                repr(self._burst),
                str(hold),
            ),
            self._timeout,
        )
        if self._hold_until == pending:  # sent (a newer hold waits for the next)
            self._hold_until = -math.inf
        granted, wait, now = ints(reply, 3, "RedisRateLimiter's script")
        if granted not in (0, 1) or wait < 0 or (granted and wait):
            raise _bad_reply(reply)
        return bool(granted), wait, now

    def __repr__(self) -> str:
        return (
            f"RedisRateLimiter(key={self._key!r}, rate={self._rate:g}, "
            f"period={self._period:g}, burst={self._burst:g})"
        )


def _check_settings(
    rate: object, period: object, burst: object
) -> tuple[float, float, float]:
    """(rate, period, burst) checked as `RateLimiter` checks them."""
    checked_rate = _positive_finite("rate", rate)
    checked_period = _positive_finite("period", period)
    checked_burst = 1.0 if burst is None else _check_burst(burst)
    return checked_rate, checked_period, checked_burst


def _bad_reply(reply: object) -> InvalidResponse:
    """The error for a reply of the right shape but with wrong values."""
    return InvalidResponse(
        f"RedisRateLimiter's script: expected [granted 0|1, wait >= 0 (0 if "
        f"granted), time], got {reply!r}"
    )
