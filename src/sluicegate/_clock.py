"""Clock: where time is read and waited for; the event loop's unless one is given."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio
from anyio.lowlevel import current_token

__all__ = ["AnyIOClock", "Clock", "check_clock", "loop_clock", "reader"]


class Clock(Protocol):
    """Where sluicegate reads the time and sleeps; AnyIO's clock by default.

    Pass your own (to a RateLimiter, a queue or an Executor) to drive it in
    virtual time, in tests or simulations.
    """

    def current_time(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `current_time()` has reached ``deadline``."""
        ...


class AnyIOClock:
    """The running event loop's clock (trio's MockClock included).

    On asyncio it is read through `time.monotonic`, the clock the default
    loop's ``time()`` returns and uvloop's rounds down to whole milliseconds
    (once per turn of the loop): a rate limit then sees time pass between two
    grants in one turn, and is not capped at one burst per millisecond.
    """

    def current_time(self) -> float:
        return loop_clock()()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock as a plain function, to bind once per run.

    ``anyio.current_time()`` looks the backend up on every call; the function
    returned here does not (and is finer on uvloop: see `AnyIOClock`). It is
    valid while this event loop runs.
    """
    token = current_token()
    loop_time: Callable[[], float] | None = getattr(token.native_token, "time", None)
    if not callable(loop_time):
        return token.backend_class.current_time
    kind = type(token.native_token)
    reads_monotonic = _MONOTONIC_LOOPS.get(kind)
    if reads_monotonic is None:
        # Its time() is monotonic's, or that rounded down (by less than a turn
        # of the loop): checked once per kind of loop. The loop is read first:
        # a reading of monotonic taken after it is never behind it.
        loop_now = loop_time()
        lag = time.monotonic() - loop_now
        reads_monotonic = _MONOTONIC_LOOPS[kind] = 0 <= lag < _MAX_LAG
    return time.monotonic if reads_monotonic else loop_time


#: Kinds of asyncio loop, and whether their time() is time.monotonic's.
_MONOTONIC_LOOPS: dict[type, bool] = {}
_MAX_LAG = 1.0


def reader(clock: Clock | None) -> Callable[[], float]:
    """How to read ``clock`` (None: the event loop's) on a hot path in the
    running event loop."""
    if clock is None or isinstance(clock, AnyIOClock):
        return loop_clock()
    return clock.current_time


def check_clock(clock: object) -> Clock:
    """Return ``clock``, or the event loop's for None; TypeError for a non-clock."""
    if clock is None:
        return AnyIOClock()
    if not (
        callable(getattr(clock, "current_time", None))
        and callable(getattr(clock, "sleep_until", None))
    ):
        raise TypeError(
            "clock must have current_time() and async sleep_until(deadline) "
            f"methods, got {clock!r}"
        )
    return clock  # type: ignore[return-value]
