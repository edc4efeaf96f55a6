"""Clock: where time is read and waited for; the event loop's unless one is given."""

from __future__ import annotations

from typing import Protocol

import anyio

__all__ = ["AnyIOClock", "Clock", "check_clock"]


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
    """The running event loop's clock (trio's MockClock included)."""

    def current_time(self) -> float:
        return anyio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)


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
