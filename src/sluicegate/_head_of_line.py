"""HeadOfLine: a rate limiter's waiting half, a FIFO line where only the head sleeps."""

from __future__ import annotations

import sys

from anyio import CancelScope

from ._clock import Clock
from ._waiters import WaiterLine

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

__all__ = ["HeadOfLine"]


class HeadOfLine:
    """The waiting half of a rate limiter: a line served in arrival order in
    which only the head asks the bucket, and sleeps until it may ask again.

    A subclass's ``acquire`` calls `_wait_for_turn`, asks (sleeping with
    `_sleep_as_head` in between) and, however that ends, `_pass_the_head`.
    `_wake_the_head` cuts the head's sleep short (new settings, a hold to
    send). ``async with limiter:`` takes one token, as ``acquire()`` does.
    """

    def __init__(self) -> None:
        # True while a task holds the head of the line, or has been woken to take
        # it and has not run yet; anyone parked in the line implies it.
        self._has_head = False
        self._line = WaiterLine(on_lost_wake=self._pass_the_head)
        # The scope the head sleeps in, while it sleeps.
        self._head_sleep: CancelScope | None = None

    async def acquire(self, tokens: float = 1) -> None:
        raise NotImplementedError  # pragma: no cover

    async def _wait_for_turn(self) -> None:
        """Become the head of the line: at once if nobody holds it, else when
        the head before this caller passes it on."""
        if self._has_head:
            # Woken only when the head of the line is handed on to us; if
            # cancelled after that, the line passes it on (_pass_the_head).
            await self._line.park()
        else:
            self._has_head = True

    def _pass_the_head(self) -> None:
        if not self._line.wake_one():
            self._has_head = False

    async def _sleep_as_head(self, clock: Clock, deadline: float) -> None:
        """Sleep until ``clock`` reaches ``deadline``, or `_wake_the_head`."""
        self._head_sleep = scope = CancelScope()
        try:
            with scope:
                # Timers may fire a little early (uvloop's count whole
                # milliseconds): the head sleeps on until the deadline.
                while clock.current_time() < deadline:
                    await clock.sleep_until(deadline)
        finally:
            self._head_sleep = None

    def _wake_the_head(self) -> None:
        if self._head_sleep is not None:
            self._head_sleep.cancel()

    async def __aenter__(self) -> Self:
        """``async with limiter:`` takes one token, as `acquire` does."""
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Nothing to give back: a token is spent once taken."""
