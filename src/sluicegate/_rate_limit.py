"""RateLimiter: a token bucket; waiters queue in FIFO order, only the head sleeps."""

from __future__ import annotations

import math
from typing import Protocol

import anyio
from anyio import WouldBlock

from ._waiters import WaiterLine

__all__ = ["Clock", "RateLimiter"]


class Clock(Protocol):
    """Where a RateLimiter reads the time and sleeps; AnyIO's clock by default.

    Pass your own to drive a limiter in virtual time, in tests or simulations.
    """

    def current_time(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `current_time()` has reached ``deadline``."""
        ...


class _AnyIOClock:
    """The running event loop's clock (trio's MockClock included)."""

    def current_time(self) -> float:
        return anyio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)


class RateLimiter:
    """A token bucket: ``rate`` tokens per ``period`` seconds, ``burst`` at most.

    The bucket starts full and refills continuously. `acquire` takes tokens at
    once when nobody waits and the bucket has them. Otherwise the caller joins a
    line served in arrival order (FIFO): only the task at the head sleeps, until
    the bucket will hold its tokens; it takes them from the bucket at the time
    it actually wakes, then hands the head of the line to the next waiter. A
    newcomer never jumps the line, and a cancelled or timed-out acquire simply
    leaves it: nothing was reserved for it, nothing is wasted, and the waiters
    behind it move up.

    Tokens leave the bucket at the moment `acquire` returns, so in any window of
    t seconds at most ``burst + rate * t / period`` tokens are granted, counted
    on the times `acquire` returns, however many tasks wait and however late the
    event loop runs them. After a stall (blocking work, a GC pause) the bucket
    holds at most ``burst`` tokens: that many are granted at once, and the
    waiters after them follow at the rate.

    One limiter may be shared by several queues and executors (in one event
    loop), to cap their combined rate.

    Args:
        rate: Tokens added per ``period``; a number > 0.
        period: Seconds over which ``rate`` tokens are added; a number > 0.
        burst: The bucket's size: the most tokens granted at once. At least 1;
            by default ``rate`` (or 1 if rate is below 1).
        clock: Where to read the time and sleep; the event loop's by default.

    Raises:
        TypeError: an argument is not a number.
        ValueError: rate or period <= 0, NaN or infinite; burst < 1.
    """

    def __init__(
        self,
        rate: float,
        period: float = 1.0,
        *,
        burst: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._rate = _positive_finite("rate", rate)
        self._period = _positive_finite("period", period)
        if burst is None:
            burst = max(self._rate, 1.0)
        self._burst = _positive_finite("burst", burst)
        if self._burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self._per_second = self._rate / self._period
        if clock is not None and not (
            callable(getattr(clock, "current_time", None))
            and callable(getattr(clock, "sleep_until", None))
        ):
            raise TypeError(
                "clock must have current_time() and async sleep_until(deadline) "
                f"methods, got {clock!r}"
            )
        self._clock: Clock = _AnyIOClock() if clock is None else clock
        self._tokens = self._burst
        self._updated: float | None = None
        # True while a task holds the head of the line, or has been woken to take
        # it and has not run yet; anyone parked in the line implies it.
        self._has_head = False
        self._line = WaiterLine(on_lost_wake=self._pass_the_head)

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
    def available(self) -> float:
        """Tokens in the bucket now: from 0 to `burst`.

        While tasks wait these are not free for the taking: the head of the line
        takes them when it wakes. Reads the clock, so (with the default clock)
        read it inside the event loop.
        """
        self._refill(self._clock.current_time())
        return self._tokens

    def acquire_nowait(self, tokens: float = 1) -> None:
        """Take ``tokens`` if nobody waits and the bucket has them, without yielding.

        Raises:
            anyio.WouldBlock: the bucket has too few tokens, or tasks wait in
                `acquire` (they come first); nothing was taken.
            TypeError, ValueError: as for `acquire`.
        """
        if type(tokens) is not int or tokens != 1:
            self._check_tokens(tokens)
        if not self._take(self._clock.current_time(), tokens):
            raise WouldBlock

    def _uses_clock(self, clock: Clock | None) -> bool:
        """True if this limiter reads ``clock`` (None: the event loop's)."""
        if clock is None:
            return isinstance(self._clock, _AnyIOClock)
        return self._clock is clock

    def _take(self, now: float, tokens: float) -> bool:
        """Take ``tokens`` at time ``now`` if nobody waits and the bucket has
        them; else False."""
        if self._has_head:
            return False
        self._refill(now)
        if self._tokens < tokens:
            return False
        self._tokens -= tokens
        return True

    async def acquire(self, tokens: float = 1) -> None:
        """Take ``tokens`` from the bucket, waiting in line for the refill if needed.

        Returns at once, without yielding, when nobody waits and the bucket has
        the tokens. Otherwise waits its turn in arrival order; only the head of
        the line sleeps, and it takes its tokens when it wakes.

        If cancelled (a timeout included) while waiting, the caller leaves the
        line and nothing is taken: the waiters behind it move up, and the tokens
        the bucket gathered meanwhile go to the next in line.

        Raises:
            TypeError: tokens is not a number.
            ValueError: tokens <= 0 or more than `burst` (it could never be
                granted).
        """
        if type(tokens) is not int or tokens != 1:
            self._check_tokens(tokens)
        if self._take(self._clock.current_time(), tokens):
            return
        if self._has_head:
            # Woken only when the head of the line is handed on to us; if
            # cancelled after that, the line passes it on (_pass_the_head).
            await self._line.park()
        else:
            self._has_head = True
        try:
            await self._take_as_head(tokens)
        finally:
            self._pass_the_head()

    async def _take_as_head(self, tokens: float) -> None:
        # Nobody else takes from the bucket while a head exists, so the deadline
        # computed once stays right: the bucket can only fill up meanwhile.
        clock = self._clock
        now = clock.current_time()
        self._refill(now)
        if self._tokens < tokens:
            deadline = now + (tokens - self._tokens) / self._per_second
            # Timers may fire a little early (uvloop's count whole milliseconds):
            # the tokens are taken only once the clock has reached the deadline.
            while now < deadline:
                await clock.sleep_until(deadline)
                now = clock.current_time()
            # Refill at the time we actually woke, however late: a late wake
            # finds at most a full bucket, so a stall cannot release more.
            self._refill(now)
        # At the deadline the refill has paid for the tokens, but for rounding.
        self._tokens = max(0.0, self._tokens - tokens)

    def _pass_the_head(self) -> None:
        if not self._line.wake_one():
            self._has_head = False

    def _refill(self, now: float) -> None:
        updated = self._updated
        if updated is not None and now > updated:
            refill = (now - updated) * self._per_second
            self._tokens = min(self._burst, self._tokens + refill)
        # A clock that went back is another event loop's: count from its now.
        self._updated = now

    def _check_tokens(self, tokens: object) -> None:
        if isinstance(tokens, bool) or not isinstance(tokens, (int, float)):
            raise TypeError(f"tokens must be a number, got {tokens!r}")
        if not 0 < tokens <= self._burst:
            raise ValueError(
                f"tokens must be > 0 and at most burst ({self._burst:g}), "
                f"got {tokens!r}"
            )

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self._rate:g}, period={self._period:g}, "
            f"burst={self._burst:g})"
        )


def _positive_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number, got {value!r} ({type(value).__name__})"
        )
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
