"""Gate: what a call passes before it starts, a token from each of its rate limiters."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._clock import AnyIOClock, Clock
from ._protocols import RateLimiterProtocol
from ._rate_limit import RateLimiter, taker

__all__ = ["Gate", "gate_of"]


class Gate:
    """The rate limiters a call takes a token from, in order, before it starts.

    An Executor's gate holds its start rate and the user's limiter; a queue's,
    its one rate limiter. A job's gate is asked by the worker loop, at the
    reading it times the call from. A caller that has just read ``clock`` asks `admit`
    with that reading, the same one it times the call from; if it is refused,
    it awaits `wait`::

        if not gate.admit(now):
            await gate.wait()

    A `RateLimiter` that reads ``clock`` (None: the event loop's) is asked at
    that reading, without an await (`RateLimiter.take_at`). Any other limiter
    (a `RateLimiterProtocol`, a RateLimiter on another clock or a subclass) has
    no such fast path: `admit` then asks no limiter and returns False, and
    `wait` awaits each one's ``acquire()``.

    Attributes:
        admit: ``admit(now) -> bool``, without yielding: True if every limiter
            granted its token at time ``now``, a reading of ``clock``; else
            False, and nothing is taken (a grant before the refusal is put
            back: at the same time that undoes it exactly).
        limiters: The limiters, in the order they are asked (those given but
            None).
    """

    __slots__ = ("admit", "limiters")

    def __init__(
        self,
        limiters: Iterable[RateLimiterProtocol | None],
        clock: Clock | None = None,
    ) -> None:
        self.limiters = tuple(limiter for limiter in limiters if limiter is not None)
        if isinstance(clock, AnyIOClock):
            clock = None  # the event loop's, as a limiter's own default reads
        fast = tuple(
            limiter
            for limiter in self.limiters
            if type(limiter) is RateLimiter and limiter.reads_clock(clock)
        )
        self.admit: Callable[[float], bool] = (
            taker(fast) if len(fast) == len(self.limiters) else _refuse
        )

    async def wait(self) -> None:
        """Take a token from each limiter in turn, waiting for each as needed.

        Call it after `admit` refused (which took nothing). If cancelled while
        waiting for one limiter, the tokens the limiters before it granted
        stay spent: a rate limit counts grants, and they were granted (that
        limiter itself takes nothing, see `RateLimiter.acquire`).
        """
        for limiter in self.limiters:
            await limiter.acquire()

    def hold(self, seconds: float) -> None:
        """Server pushback: hold every limiter for ``seconds`` (see
        `RateLimiter.hold`), wherever else each one is shared."""
        for limiter in self.limiters:
            limiter.hold(seconds)

    def __repr__(self) -> str:
        return f"Gate({list(self.limiters)!r})"


def gate_of(limiter: RateLimiterProtocol | None, clock: Clock) -> Gate | None:
    """The gate of a queue's job: its one rate limiter, if it has one."""
    return None if limiter is None else Gate((limiter,), clock)


def _refuse(now: float) -> bool:
    """The `Gate.admit` of a gate with a limiter that has no fast path."""
    return False
