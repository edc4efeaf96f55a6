"""RateLimiter: a token bucket; waiters queue in FIFO order, only the head sleeps."""

from __future__ import annotations

import math
from collections.abc import Callable

from anyio import WouldBlock

from ._checks import check_hold
from ._clock import AnyIOClock, Clock, check_clock
from ._head_of_line import HeadOfLine

__all__ = ["HeadOfLine", "RateLimiter", "taker"]


class RateLimiter(HeadOfLine):
    """A token bucket: ``rate`` tokens per ``period`` seconds, ``burst`` at most.

    With the default burst of 1 it grants at most ``rate`` tokens in every
    window of ``period`` seconds (``RateLimiter(50)``: at most 50 in any one
    second), from the first call on; with ``burst=b``, at most
    ``b + rate * t / period`` in every window of t seconds.

    The price of a burst of 1: every grant waits for its own token, so time
    lost to a timer that wakes late (about a millisecond on asyncio and uvloop,
    whose timers count whole milliseconds) is never caught up, and a busy
    limiter grants a little less than its rate. Above a few hundred calls per
    second, pass a burst (say ``burst=rate / 100``, 10 ms worth) to keep the
    full rate, at the price of the exact window.

    The bucket starts full and refills continuously. `acquire` takes tokens at
    once when nobody waits and the bucket has them. Otherwise the caller joins a
    line served in arrival order (FIFO): only the task at the head sleeps, until
    the bucket will hold its tokens; it takes them from the bucket at the time
    it actually wakes, then hands the head of the line to the next waiter. A
    newcomer never jumps the line, and a cancelled or timed-out acquire simply
    leaves it: nothing was reserved for it, nothing is wasted, and the waiters
    behind it move up.

    Tokens leave the bucket at the moment `acquire` returns, so the bound is
    counted on the times `acquire` returns, however many tasks wait and however
    late the event loop runs them. After a stall (blocking work, a GC pause) the
    bucket holds at most ``burst`` tokens: that many are granted at once, and
    the waiters after them follow at the rate.

    The settings may change while the limiter runs (`rate`, `period` and `burst`
    are settable; `configure` sets several at once), say from a server's
    ``x-ratelimit-*`` headers, and `hold` or `hold_until` stops every grant
    until a deadline, say on an HTTP 429 with ``Retry-After``. See those for
    what the bound is across a change or a hold.

    One limiter may be shared by several queues and executors (in one event
    loop), to cap their combined rate, or to make them all back off together.

    Args:
        rate: Tokens added per ``period``; a number > 0.
        period: Seconds over which ``rate`` tokens are added; a number > 0.
        burst: The bucket's size: the most tokens granted at once; a number
            >= 1. None (the default) is 1.
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
        self._burst = 1.0 if burst is None else _check_burst(burst)
        self._per_second = self._rate / self._period
        self._clock: Clock = check_clock(clock)
        self._tokens = self._burst
        # The time the bucket held `_tokens`: its last refill, or the end of a
        # hold (it refills from then on); None until first used.
        self._updated: float | None = None
        # No grant before this time on the limiter's clock (hold_until).
        self._held_until = -math.inf
        # Counts changes of the settings and holds: the head recomputes its
        # deadline then (woken, it sleeps again to its new deadline).
        self._version = 0
        super().__init__()

    @property
    def rate(self) -> float:
        """Tokens added per `period`; settable (see `configure`)."""
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        self.configure(rate=rate)

    @property
    def period(self) -> float:
        """Seconds over which `rate` tokens are added; settable (see `configure`)."""
        return self._period

    @period.setter
    def period(self, period: float) -> None:
        self.configure(period=period)

    @property
    def burst(self) -> float:
        """The most tokens the bucket holds; settable (see `configure`)."""
        return self._burst

    @burst.setter
    def burst(self, burst: float) -> None:
        self.configure(burst=burst)

    def configure(
        self,
        *,
        rate: float | None = None,
        period: float | None = None,
        burst: float | None = None,
    ) -> None:
        """Change any of `rate`, `period` and `burst` at once; None leaves one as is.

        The change takes effect now. The bucket is first refilled up to now at
        the old settings, then refills at the new rate, and a lowered burst
        empties it down to the new burst: in any window of t seconds that starts
        at the change or later, at most ``burst + rate * t / period`` tokens
        (the new settings) are granted. Raising burst adds no tokens; the bucket
        fills up to it at the rate. During a hold the bucket stays empty and
        refills at the new rate from the hold's end. A task sleeping at the
        head of the line wakes at the time the new settings give, earlier or
        later. Setting the values already in force changes nothing, so it is
        cheap to call on every response.

        A waiter that asked for more tokens than a lowered burst gets the
        ValueError of `acquire` when its turn comes.

        Reads the clock, so (with the default clock, and once the limiter has
        been used) call it inside the event loop.

        Raises:
            TypeError, ValueError: as for the constructor; nothing is changed.
        """
        new_rate = self._rate if rate is None else _positive_finite("rate", rate)
        new_period = (
            self._period if period is None else _positive_finite("period", period)
        )
        new_burst = self._burst if burst is None else _check_burst(burst)
        if (new_rate, new_period, new_burst) == (self._rate, self._period, self._burst):
            return
        if self._updated is None:
            # Never used: the bucket starts full, at the new size.
            self._tokens = new_burst
        else:
            self._refill(self._clock.current_time())
            self._tokens = min(self._tokens, new_burst)
        self._rate = new_rate
        self._period = new_period
        self._burst = new_burst
        self._per_second = new_rate / new_period
        self._version += 1
        self._wake_the_head()

    def hold_until(self, deadline: float) -> None:
        """Grant nothing before ``deadline``, a time on the limiter's clock.

        For a server's pushback (HTTP 429 or 503 with ``Retry-After``): every
        queue and executor sharing this limiter stops starting work until then.
        A later deadline extends the hold; an earlier one (or one in the past)
        changes nothing.

        The hold empties the bucket, and it refills only from ``deadline`` on:
        grants resume at the rate, not in a burst. In the t seconds after the
        hold ends at most ``rate * t / period`` tokens are granted, whatever
        the burst, and ``burst + rate * t / period`` stays the bound for every
        window, including windows across the hold's start.

        While held, `acquire_nowait` raises WouldBlock and `acquire` waits in
        line; the head sleeps until the bucket, refilled from the hold's end,
        has its tokens (a task already asleep there is woken to sleep on to
        that time).

        Reads the clock, so (with the default clock) call it inside the event
        loop.

        Raises:
            TypeError: deadline is not a number.
            ValueError: deadline is NaN or infinite.
        """
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
            raise TypeError(
                "deadline must be a number (a time on the limiter's clock), "
                f"got {deadline!r} ({type(deadline).__name__})"
            )
        if not math.isfinite(deadline):
            raise ValueError(f"deadline must be a finite number, got {deadline!r}")
        if deadline > self._held_until:
            self._hold(self._clock.current_time(), float(deadline))

    def hold(self, seconds: float) -> None:
        """Grant nothing for the next ``seconds``: `hold_until` now + seconds.

        The bucket is empty when the hold ends: grants resume at the rate (see
        `hold_until`). ``hold(0)`` changes nothing. Reads the clock, so (with
        the default clock) call it inside the event loop.

        Raises:
            TypeError: seconds is not a number.
            ValueError: seconds is negative, NaN or infinite.
        """
        if check_hold(seconds):
            now = self._clock.current_time()
            self._hold(now, now + seconds)

    def _hold(self, now: float, deadline: float) -> None:
        """Hold from ``now`` until ``deadline``, with the bucket empty then."""
        if deadline <= max(now, self._held_until):
            return
        # What was granted stays granted; the tokens left are dropped, and the
        # bucket refills from the deadline on (`_refill` keeps it so).
        self._refill(now)
        self._held_until = self._updated = deadline
        self._tokens = 0.0
        # The head, if asleep, sleeps on to its new time.
        self._version += 1
        self._wake_the_head()

    @property
    def held_until(self) -> float | None:
        """The time the current hold ends, on the limiter's clock; None if not held.

        Reads the clock, so (with the default clock) read it inside the event loop.
        """
        held_until = self._held_until
        if held_until > self._clock.current_time():
            return held_until
        return None

    @property
    def available(self) -> float:
        """Tokens in the bucket now: from 0 to `burst` (0 while held).

        While tasks wait, or the limiter is held, these are not free for the
        taking: the head of the line takes them when it wakes. Reads the clock,
        so (with the default clock) read it inside the event loop.
        """
        self._refill(self._clock.current_time())
        return max(0.0, self._tokens)  # (a rounding's debt is no token)

    def acquire_nowait(self, tokens: float = 1) -> None:
        """Take ``tokens`` if nobody waits and the bucket has them, without yielding.

        Raises:
            anyio.WouldBlock: the bucket has too few tokens, tasks wait in
                `acquire` (they come first), or the limiter is held; nothing
                was taken.
            TypeError, ValueError: as for `acquire`.
        """
        if type(tokens) is not int or tokens != 1:
            _check_tokens(tokens, self._burst)
        if not self.take_at(self._clock.current_time(), tokens):
            raise WouldBlock

    def reads_clock(self, clock: Clock | None) -> bool:
        """True if this limiter reads ``clock`` (None: the event loop's).

        Then a reading of ``clock`` may be passed to `take_at`.
        """
        if clock is None:
            return isinstance(self._clock, AnyIOClock)
        return self._clock is clock

    def take_at(self, now: float, tokens: float = 1) -> bool:
        """Take ``tokens`` at time ``now`` if nobody waits, the limiter is not
        held and the bucket has them; else take nothing and return False.

        `acquire_nowait` without the clock reading and the checks, for code
        that has just read the limiter's clock (see `reads_clock`) and needs
        the time itself, as a queue does to time the call it starts: one
        reading for both. ``now`` must be that reading, and ``tokens`` a number
        > 0 and at most `burst` (unchecked).
        """
        if self._has_head or now < self._held_until:
            return False
        # `_refill`, written out: this runs once per call on the hot path. Past
        # the hold, `_updated` is at most now: the refill counts from its end.
        have = self._tokens
        updated = self._updated
        if updated is not None and now > updated:
            have += (now - updated) * self._per_second
            if have > self._burst:  # noqa: PLR1730 (cheaper than min() here)
                have = self._burst
        self._updated = now
        if have < tokens:
            self._tokens = have
            return False
        self._tokens = have - tokens
        return True

    async def acquire(self, tokens: float = 1) -> None:
        """Take ``tokens`` from the bucket, waiting in line for the refill if needed.

        Returns at once, without yielding, when nobody waits, the limiter is not
        held and the bucket has the tokens. Otherwise waits its turn in arrival
        order; only the head of the line sleeps (past the end of a hold, too),
        and it takes its tokens when it wakes.

        If cancelled (a timeout included) while waiting, the caller leaves the
        line and nothing is taken: the waiters behind it move up, and the tokens
        the bucket gathered meanwhile go to the next in line.

        Raises:
            TypeError: tokens is not a number.
            ValueError: tokens <= 0 or more than `burst` (it could never be
                granted), also when burst is lowered below tokens while the
                caller waits.
        """
        if type(tokens) is not int or tokens != 1:
            _check_tokens(tokens, self._burst)
        if self.take_at(self._clock.current_time(), tokens):
            return
        await self._wait_for_turn()
        try:
            await self._take_as_head(tokens)
        finally:
            self._pass_the_head()

    async def _take_as_head(self, tokens: float) -> None:
        clock = self._clock
        now = clock.current_time()
        version = -1
        due = now
        while True:
            refills_from = self._refill(now)
            if version != self._version:
                # Nobody else takes from the bucket while a head exists, so the
                # time the bucket has our tokens stays right until the settings
                # change or a hold empties it.
                version = self._version
                if tokens > self._burst:
                    _check_tokens(tokens, self._burst)
                deficit = max(0.0, tokens - self._tokens)
                due = refills_from + deficit / self._per_second
            deadline = max(due, self._held_until)
            # Timers may fire a little early (uvloop's count whole milliseconds):
            # the tokens are taken only once the clock has reached the deadline.
            if now >= deadline:
                break
            await self._sleep_as_head(clock, deadline)
            now = clock.current_time()
        # Refilled at the time we actually woke, however late: a late wake finds
        # at most a full bucket, so a stall cannot release more. At the deadline
        # the refill has paid for the tokens, but for rounding: a shortfall of
        # an ulp stays owed (the next due time pays it), else it would add up,
        # grant after grant, and one window of `period` could hold rate + 1.
        self._tokens -= tokens

    def _refill(self, now: float) -> float:
        """Bring the bucket up to ``now``; return the time it refills from:
        ``now``, or the end of the hold in force."""
        updated = self._updated
        if updated is not None and now > updated:
            refill = (now - updated) * self._per_second
            self._tokens = min(self._burst, self._tokens + refill)
        elif updated is not None and now < self._held_until:
            # Held: the bucket stays empty until the hold ends, at `_updated`.
            return updated
        # A clock that went back is another event loop's: count from its now.
        self._updated = now
        return now

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self._rate:g}, period={self._period:g}, "
            f"burst={self._burst:g})"
        )


def taker(limiters: tuple[RateLimiter, ...]) -> Callable[[float], bool]:
    """``take(now)``: take one token from each of ``limiters`` at ``now``, or none.

    ``now`` is a reading of the clock they all read (see
    `RateLimiter.reads_clock`). If one of them cannot grant its token, the
    tokens the ones before it granted are put back, which at the same ``now``
    leaves their buckets as they were: ``take`` returns False having taken
    nothing. For one or two limiters it is a single call (the hot path).
    """
    if len(limiters) == 1:
        return limiters[0].take_at
    if len(limiters) == 2:  # the Executor's: its start rate and a limiter
        first, second = limiters
        take_first, take_second = first.take_at, second.take_at

        def take_both(now: float) -> bool:
            if not take_first(now):
                return False
            if take_second(now):
                return True
            first._tokens += 1  # (see take_all below)
            return False

        return take_both

    def take_all(now: float) -> bool:
        for index, limiter in enumerate(limiters):
            if not limiter.take_at(now):
                for granted in limiters[:index]:
                    # take_at refilled it up to now and took the token: at that
                    # same time, adding it back undoes the grant exactly.
                    granted._tokens += 1
                return False
        return True

    return take_all


def _check_tokens(tokens: object, burst: float) -> None:
    """Raise unless ``tokens`` is a number > 0 and at most ``burst``."""
    if isinstance(tokens, bool) or not isinstance(tokens, (int, float)):
        raise TypeError(f"tokens must be a number, got {tokens!r}")
    if not 0 < tokens <= burst:
        raise ValueError(
            f"tokens must be > 0 and at most burst ({burst:g}), got {tokens!r}"
        )


def _positive_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number, got {value!r} ({type(value).__name__})"
        )
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_burst(burst: object) -> float:
    value = _positive_finite("burst", burst)
    if value < 1:
        raise ValueError(f"burst must be at least 1, got {burst!r}")
    return value
