"""RateLimiter: a token bucket whose waiters reserve their turn."""

from __future__ import annotations

import math
from typing import Protocol

import anyio
from anyio import WouldBlock

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
    once when the bucket has them; otherwise the caller reserves its tokens (the
    bucket goes into debt) and sleeps until the refill has paid for them. Each
    waiter therefore wakes at its own time, in the order it arrived, and in any
    window of t seconds at most ``burst + rate * t / period`` tokens are granted,
    however many tasks wait. A cancelled acquire gives its reservation back.

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
        self._reservations = 0  # how many waiters have reserved, ever

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
        """Tokens in the bucket now; negative while waiters hold reservations.

        Reads the clock, so (with the default clock) read it inside the event loop.
        """
        self._refill(self._clock.current_time())
        return self._tokens

    def acquire_nowait(self, tokens: float = 1) -> None:
        """Take ``tokens`` if the bucket has them now, without yielding.

        Raises:
            anyio.WouldBlock: the bucket has too few tokens (or waiters hold
                reservations); nothing was taken or reserved.
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
        """Take ``tokens`` at time ``now`` if the bucket has them; else False."""
        self._refill(now)
        if self._tokens < tokens:
            return False
        self._tokens -= tokens
        return True

    async def acquire(self, tokens: float = 1) -> None:
        """Take ``tokens`` from the bucket, waiting for the refill if needed.

        Returns at once, without yielding, when the bucket has the tokens.
        If cancelled while waiting, the reservation is given back when no later
        waiter has reserved behind it (their wake-up times were set counting
        it; handing its tokens to a newcomer would let two go at once).

        Raises:
            TypeError: tokens is not a number.
            ValueError: tokens <= 0 or more than `burst` (it could never be
                granted).
        """
        if type(tokens) is not int or tokens != 1:
            self._check_tokens(tokens)
        now = self._clock.current_time()
        self._refill(now)
        self._tokens -= tokens
        if self._tokens >= 0:
            return
        deadline = now - self._tokens / self._per_second
        self._reservations += 1
        reservation = self._reservations
        try:
            # Timers may fire a little early (uvloop's count whole milliseconds):
            # the tokens are granted only once the clock has reached the deadline.
            while self._clock.current_time() < deadline:
                await self._clock.sleep_until(deadline)
        except BaseException:
            if reservation == self._reservations:  # the last in line
                self._reservations -= 1
                self._refill(self._clock.current_time())
                self._tokens = min(self._burst, self._tokens + tokens)
            raise

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
