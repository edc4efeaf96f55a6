"""RateLimiter: a token bucket whose waiters queue in FIFO order.

Time comes from an injected FakeClock (virtual time on every backend), and once
from the event loop's own clock, which on trio is a MockClock.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import TaskStatus
from books import assert_books
from fake_clock import FakeClock, all_blocked, max_in_window
from support import GUARD, take_at

from sluicegate import (
    Event,
    Executor,
    QueueConfig,
    RateLimiter,
    RateLimiterProtocol,
    RetryAfter,
    RetryPolicy,
    WorkQueue,
)
from sluicegate._clock import AnyIOClock


async def admit_all(
    limiter: RateLimiter, clock: FakeClock, tasks: int, tokens: float = 1
) -> tuple[list[int], list[float]]:
    """Start ``tasks`` acquirers at once; return admission order and times."""
    order: list[int] = []
    times: list[float] = []

    async def acquirer(i: int) -> None:
        await limiter.acquire(tokens)
        order.append(i)
        times.append(clock.current_time())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as inner:
                for i in range(tasks):
                    inner.start_soon(acquirer, i)
                    await all_blocked()  # arrival order = i, all at time 0
                tg.start_soon(clock.autojump)
            tg.cancel_scope.cancel()
    return order, times


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0,), {}, ValueError, "rate must be a finite number > 0, got 0"),
        ((-1,), {}, ValueError, "rate must be a finite number > 0, got -1"),
        ((math.nan,), {}, ValueError, "rate must be a finite number > 0, got nan"),
        ((math.inf,), {}, ValueError, "rate must be a finite number > 0, got inf"),
        (("5",), {}, TypeError, "rate must be a number, got '5'"),
        ((True,), {}, TypeError, "rate must be a number, got True"),
        ((5, 0), {}, ValueError, "period must be a finite number > 0, got 0"),
        ((5, math.nan), {}, ValueError, "period must be a finite number > 0"),
        ((5, None), {}, TypeError, "period must be a number, got None"),
        ((5,), {"burst": 0.5}, ValueError, "burst must be at least 1, got 0.5"),
        ((5,), {"burst": 0}, ValueError, "burst must be a finite number > 0, got 0"),
        ((5,), {"burst": math.nan}, ValueError, "burst must be a finite number > 0"),
        ((5,), {"burst": "2"}, TypeError, "burst must be a number"),
    ],
)
def test_constructor_validates(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RateLimiter(*args, **kwargs)


def test_defaults() -> None:
    limiter = RateLimiter(10)
    assert (limiter.rate, limiter.period, limiter.burst) == (10, 1.0, 1)
    assert RateLimiter(10, clock=FakeClock()).available == 1, "a full bucket"
    assert RateLimiter(0.5, 1).burst == 1
    assert RateLimiter(3, 2, burst=7).burst == 7
    assert repr(RateLimiter(3, 2, burst=7)) == "RateLimiter(rate=3, period=2, burst=7)"


@pytest.mark.parametrize(
    ("tokens", "error", "match"),
    [
        (0, ValueError, "tokens must be > 0 and at most burst \\(4\\), got 0"),
        (-1, ValueError, "tokens must be > 0"),
        (5, ValueError, "at most burst \\(4\\), got 5"),
        (math.nan, ValueError, "tokens must be > 0"),
        ("1", TypeError, "tokens must be a number, got '1'"),
        (True, TypeError, "tokens must be a number, got True"),
        (None, TypeError, "tokens must be a number, got None"),
    ],
)
async def test_acquire_validates(
    tokens: Any, error: type[Exception], match: str
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, burst=4, clock=clock)
    with pytest.raises(error, match=match):
        await limiter.acquire(tokens)
    assert limiter.available == 4


async def test_burst_is_granted_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 1, burst=5, clock=clock)
    for _ in range(5):
        await limiter.acquire()
    assert clock.current_time() == 0
    assert limiter.available == 0


async def test_refills_continuously() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, 2, burst=4, clock=clock)  # 2 tokens per second
    await limiter.acquire(4)
    clock.advance(0.5)
    assert limiter.available == pytest.approx(1.0)
    clock.advance(10)
    assert limiter.available == 4, "never more than burst"


@pytest.mark.parametrize(
    ("rate", "period", "burst"), [(5, 1, 3), (2, 0.5, 1), (10, 3, 10)]
)
async def test_many_waiters_never_exceed_the_bound(
    rate: float, period: float, burst: float
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, period, burst=burst, clock=clock)
    _, times = await admit_all(limiter, clock, tasks=40)
    assert len(times) == 40
    for window in (0, 0.1, 0.25, 0.5, 1, 2, 3.3, 10):
        allowed = burst + rate * window / period
        assert max_in_window(times, window) <= allowed + 1e-9, window
    # And it is no slower than it must be: the last token is due exactly when the
    # bucket has refilled enough for it.
    assert max(times) == pytest.approx((40 - burst) * period / rate)


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 1, burst=1, clock=clock)
    order, times = await admit_all(limiter, clock, tasks=6)
    assert order == list(range(6))
    assert times == [0, 1, 2, 3, 4, 5]


async def test_mixed_token_sizes_respect_the_bound() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 1, burst=3, clock=clock)
    granted: list[tuple[float, float]] = []
    rng = random.Random(7)

    async def acquirer(tokens: float) -> None:
        await limiter.acquire(tokens)
        granted.append((clock.current_time(), tokens))

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as inner:
                for _ in range(30):
                    inner.start_soon(acquirer, rng.choice([1, 2, 3, 0.5]))
            tg.cancel_scope.cancel()
    for start, _ in granted:
        for window in (0, 0.5, 1, 2.5):
            in_window = sum(n for t, n in granted if start <= t <= start + window)
            assert in_window <= 3 + 3 * window + 1e-9


async def test_give_back_never_overfills_the_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 1, burst=1, clock=clock)
    await limiter.acquire()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire)
            await anyio.wait_all_tasks_blocked()
            clock._now += 10  # time passes without waking the waiter
            tg.cancel_scope.cancel()
    assert limiter.available == 1


async def test_uses_the_event_loop_clock_by_default() -> None:
    limiter = RateLimiter(1000, 1, burst=1)
    started = anyio.current_time()
    await limiter.acquire()
    await limiter.acquire()  # waits about a millisecond on the loop's clock
    assert anyio.current_time() - started >= 0.001 - 1e-6


async def test_work_queue_takes_a_token_per_item() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 1, burst=1, clock=clock)
    starts: list[float] = []

    async def work(item: int) -> None:
        starts.append(clock.current_time())

    queue: WorkQueue[int] = WorkQueue(maxsize=4, rate_limiter=limiter)
    assert queue.rate_limiter is limiter
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            await queue.batch_process(range(7), work, num_workers=4)
            tg.cancel_scope.cancel()
    assert starts == [0, 0.5, 1, 1.5, 2, 2.5, 3]


async def test_one_limiter_shared_by_two_queues() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, 1, burst=2, clock=clock)
    starts: list[float] = []

    async def work(item: int) -> None:
        starts.append(clock.current_time())

    first: WorkQueue[int] = WorkQueue(rate_limiter=limiter)
    second: WorkQueue[int] = WorkQueue(rate_limiter=limiter)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as batches:
                batches.start_soon(first.batch_process, range(10), work, 3)
                batches.start_soon(second.batch_process, range(10), work, 3)
            tg.cancel_scope.cancel()
    assert len(starts) == 20
    for window in (0, 0.25, 1, 2):
        assert max_in_window(starts, window) <= 2 + 4 * window + 1e-9


def test_rate_limiter_argument_is_checked() -> None:
    with pytest.raises(
        TypeError, match="rate_limiter must be a RateLimiter, or an object with"
    ):
        WorkQueue(rate_limiter=5)  # type: ignore[arg-type]


async def test_cancelling_a_waiter_in_the_middle_keeps_the_bound() -> None:
    """A newcomer arriving after a waiter was cancelled queues behind the ones
    still waiting: it never goes at the same moment as them."""
    clock = FakeClock()
    limiter = RateLimiter(1, 1, burst=1, clock=clock)
    granted: list[tuple[str, float]] = []
    both_granted = anyio.Event()

    async def acquirer(
        name: str, *, task_status: TaskStatus[anyio.CancelScope]
    ) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await limiter.acquire()
            granted.append((name, clock.current_time()))
            if len(granted) == 2:
                both_granted.set()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await limiter.acquire()  # A: the only token, at t=0
            b = await tg.start(acquirer, "b")  # due at t=1
            await tg.start(acquirer, "c")  # due at t=2
            b.cancel()
            await all_blocked()
            await tg.start(acquirer, "d")
            tg.start_soon(clock.autojump)
            await both_granted.wait()
            tg.cancel_scope.cancel()
    assert sorted(name for name, _ in granted) == ["c", "d"]
    times = [t for _, t in granted]
    assert max_in_window(times, 0) == 1, granted


@pytest.mark.parametrize("seed", range(10))
async def test_random_cancellation_under_contention_keeps_the_bound(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(10, 1, burst=3, clock=clock)
    granted: list[float] = []

    async def waiter(patience: float) -> None:
        if await acquire_or_give_up(limiter, clock, patience):
            granted.append(clock.current_time())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as waiters:
                for _ in range(150):
                    waiters.start_soon(waiter, rng.choice([rng.uniform(0, 3), 100]))
                    await clock.sleep_until(clock.current_time() + rng.uniform(0, 0.05))
            tg.cancel_scope.cancel()
    assert granted
    for window in (0, 0.05, 0.1, 0.5, 2):
        assert max_in_window(granted, window) <= 3 + 10 * window + 1e-9, window


class EarlyClock(FakeClock):
    """A clock whose timers fire up to a millisecond early, as uvloop's can
    (they count whole milliseconds); asked again, they reach the deadline."""

    async def sleep_until(self, deadline: float) -> None:
        early = deadline - 0.001
        await super().sleep_until(early if early > self.current_time() else deadline)


async def test_a_timer_that_fires_early_does_not_grant_early() -> None:
    clock = EarlyClock()
    limiter = RateLimiter(10, 1, burst=1, clock=clock)
    granted: list[float] = []

    async def acquirer() -> None:
        await limiter.acquire()
        granted.append(clock.current_time())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as inner:
                for _ in range(4):
                    inner.start_soon(acquirer)
            tg.cancel_scope.cancel()
    assert granted == pytest.approx([0, 0.1, 0.2, 0.3])
    for earlier, later in itertools.pairwise(granted):
        assert later - earlier >= 0.1 - 1e-9


# -- cancelled waiters, storms and stalls ------------------------------------------


async def acquire_or_give_up(
    limiter: RateLimiter, clock: FakeClock, patience: float
) -> bool:
    """``with move_on_after(patience): await limiter.acquire()`` on the fake clock;
    True if the token was granted."""
    deadline = clock.current_time() + patience
    async with anyio.create_task_group() as tg:

        async def give_up() -> None:
            await clock.sleep_until(deadline)
            tg.cancel_scope.cancel()

        tg.start_soon(give_up)
        await limiter.acquire()
        tg.cancel_scope.cancel()
        return True
    return False


async def storm(
    limiter: RateLimiter,
    clock: FakeClock,
    patience: list[float],
    arrivals_per_second: float,
) -> list[float]:
    """One caller per entry of ``patience``, arriving evenly at the given rate, each
    giving up after its patience; return the times the tokens were granted, once
    every caller has got its token or given up."""
    granted: list[float] = []
    gave_up = 0
    start = clock.current_time()

    async def caller(patience: float) -> None:
        nonlocal gave_up
        if await acquire_or_give_up(limiter, clock, patience):
            granted.append(clock.current_time())
        else:
            gave_up += 1

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as callers:
                for i, p in enumerate(patience):
                    await clock.sleep_until(start + i / arrivals_per_second)
                    callers.start_soon(caller, p)
            tg.cancel_scope.cancel()
    assert len(granted) + gave_up == len(patience)
    return granted


@pytest.mark.parametrize("seed", range(4))
async def test_random_give_ups_keep_the_rate_for_the_whole_run(seed: int) -> None:
    """Callers arrive twice as fast as the rate and give up at random: every
    give-up returns its place, so the limiter grants at its full rate throughout."""
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(100, burst=5, clock=clock)
    patience = [rng.uniform(0, 0.3) for _ in range(600)]  # 3 s at 200/s
    granted = await storm(limiter, clock, patience, arrivals_per_second=200)
    for start in (0, 0.5, 1, 1.5, 2, 2.5):
        in_window = sum(start <= t < start + 0.5 for t in granted)
        assert in_window >= 49, (start, in_window)  # 50 per half second
    for window in (0, 0.01, 0.1, 0.5, 1, 3):
        assert max_in_window(granted, window) <= 5 + 100 * window + 1e-9, window
    assert 0 <= limiter.available <= limiter.burst


async def test_a_fresh_acquire_after_a_storm_waits_about_one_token() -> None:
    """The storm of the issue: 200 callers/s against 100/s, each giving up after
    0.1 s. Nothing stays reserved for callers who left, so the bucket ends in no
    debt and a fresh caller waits at most one token's time."""
    clock = FakeClock()
    limiter = RateLimiter(100, burst=5, clock=clock)
    await storm(limiter, clock, [0.1] * 400, arrivals_per_second=200)
    before = clock.current_time()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            await limiter.acquire()
            tg.cancel_scope.cancel()
    waited = clock.current_time() - before
    assert waited <= 1 / 100 + 1e-9, waited
    assert 0 <= limiter.available <= limiter.burst


async def test_after_a_stall_at_most_burst_acquires_return_together() -> None:
    """Time jumps 0.5 s while no task runs (blocking work, a GC pause): the
    waiters resume together, but only the bucket's ``burst`` tokens are granted
    at once and the rest follow at the rate, on the times acquire returns."""
    clock = FakeClock()
    limiter = RateLimiter(50, burst=10, clock=clock)
    returned: list[float] = []

    async def loop() -> None:
        while True:
            await limiter.acquire()
            returned.append(clock.current_time())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            for _ in range(8):
                tg.start_soon(loop)
            await clock.sleep_until(1.0)
            clock.advance(0.5)  # the stall: nobody runs while the clock moves
            assert 0 <= limiter.available <= limiter.burst
            await clock.sleep_until(3.0)
            tg.cancel_scope.cancel()
    assert max_in_window(returned, 0.005) == 10  # the refilled bucket, no more
    for window in (0, 0.005, 0.02, 0.1, 0.5, 1, 3):
        assert max_in_window(returned, window) <= 10 + 50 * window + 1e-9, window


@pytest.mark.parametrize("cancelled", [0, 1, 2], ids=["head", "second", "third"])
async def test_a_cancelled_waiter_lets_the_ones_behind_move_up(cancelled: int) -> None:
    """Whatever its place in line, a cancelled waiter leaves nothing reserved:
    those behind it take its turn, and no more than the rate goes."""
    clock = FakeClock()
    limiter = RateLimiter(1, 1, burst=1, clock=clock)
    await limiter.acquire()  # the only token, at t=0
    granted: dict[int, float] = {}

    async def acquirer(i: int, *, task_status: TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await limiter.acquire()
            granted[i] = clock.current_time()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as waiters:
                scopes = [await waiters.start(acquirer, i) for i in range(4)]
                await all_blocked()
                scopes[cancelled].cancel()
                await all_blocked()
                tg.start_soon(clock.autojump)
            tg.cancel_scope.cancel()
    stayed = [i for i in range(4) if i != cancelled]
    assert granted == dict(zip(stayed, [1.0, 2.0, 3.0], strict=True))


class HookedClock(FakeClock):
    """A FakeClock that calls ``hook`` once, when first read at or after ``at``."""

    def __init__(self, at: float, hook: Callable[[], object]) -> None:
        super().__init__()
        self._at = at
        self._hook: Callable[[], object] | None = hook

    def current_time(self) -> float:
        hook = self._hook
        if hook is not None and self._now >= self._at:
            self._hook = None
            hook()
        return self._now


async def test_a_waiter_cancelled_as_it_is_handed_the_turn_passes_it_on() -> None:
    """The waiter next in line is cancelled just as the head hands it the turn
    (before it can run): the turn goes on to the one behind it, on time."""
    scopes: dict[str, anyio.CancelScope] = {}

    def cancel_second() -> None:
        scopes["second"].cancel()

    # The head, woken at t=1, reads the clock before it takes its token and
    # wakes "second": cancel "second" right then, in the same step.
    clock = HookedClock(1, cancel_second)
    limiter = RateLimiter(1, 1, burst=1, clock=clock)
    await limiter.acquire()  # the only token, at t=0
    granted: dict[str, float] = {}

    async def acquirer(
        name: str, *, task_status: TaskStatus[anyio.CancelScope]
    ) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await limiter.acquire()
            granted[name] = clock.current_time()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as waiters:
                for name in ("first", "second", "third"):
                    scopes[name] = await waiters.start(acquirer, name)
                await all_blocked()
                tg.start_soon(clock.autojump)
            tg.cancel_scope.cancel()
    assert granted == {"first": 1.0, "third": 2.0}


async def test_a_waiter_holds_nothing_and_comes_before_newcomers() -> None:
    """While a task waits the bucket owes nothing (``available`` is never
    negative), yet its tokens are not free for newcomers; cancelled, it leaves
    the bucket as it found it."""
    clock = FakeClock()
    limiter = RateLimiter(1, 1, burst=2, clock=clock)
    await limiter.acquire(2)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire, 2)  # due at t=2
            await all_blocked()
            assert limiter.available == 0
            clock._now += 1  # time passes without waking the waiter
            assert limiter.available == 1
            with pytest.raises(anyio.WouldBlock):
                limiter.acquire_nowait()  # the waiter comes first
            assert not take_at(limiter, clock.current_time(), 1)
            tg.cancel_scope.cancel()
    assert limiter.available == 1  # nothing reserved, nothing lost
    limiter.acquire_nowait()
    assert limiter.available == 0


# -- live changes of rate, period and burst ----------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "error", "match"),
    [
        ("rate", 0, ValueError, "rate must be a finite number > 0, got 0"),
        ("rate", math.nan, ValueError, "rate must be a finite number > 0, got nan"),
        ("rate", math.inf, ValueError, "rate must be a finite number > 0, got inf"),
        ("rate", "5", TypeError, "rate must be a number, got '5'"),
        ("rate", True, TypeError, "rate must be a number, got True"),
        ("period", -1, ValueError, "period must be a finite number > 0, got -1"),
        ("period", b"1", TypeError, "period must be a number"),
        ("burst", 0.5, ValueError, "burst must be at least 1, got 0.5"),
        ("burst", math.nan, ValueError, "burst must be a finite number > 0"),
        ("burst", "2", TypeError, "burst must be a number"),
    ],
)
def test_settings_are_validated_like_the_constructor(
    name: str, value: Any, error: type[Exception], match: str
) -> None:
    limiter = RateLimiter(4, 2, burst=3, clock=FakeClock())
    with pytest.raises(error, match=match):
        setattr(limiter, name, value)
    with pytest.raises(error, match=match):
        limiter.configure(**{name: value})
    # configure validates everything before it changes anything.
    with pytest.raises(error, match=match):
        limiter.configure(**{"rate": 7, "period": 5, "burst": 6, name: value})
    assert (limiter.rate, limiter.period, limiter.burst) == (4, 2, 3)


def test_the_default_burst_stays_one_whatever_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    limiter.rate = 4
    assert (limiter.rate, limiter.burst) == (4, 1)
    limiter.rate = 0.5
    assert limiter.burst == 1
    limiter.period = 3
    assert (limiter.rate, limiter.period, limiter.burst) == (0.5, 3, 1)
    limiter.burst = 2
    limiter.rate = 8
    assert limiter.burst == 2, "a burst set stays set"
    limiter.configure(rate=6, period=2)
    assert (limiter.rate, limiter.period, limiter.burst) == (6, 2, 2)
    assert repr(limiter) == "RateLimiter(rate=6, period=2, burst=2)"
    fixed = RateLimiter(3, burst=7, clock=clock)
    fixed.configure(rate=9)
    assert fixed.burst == 7
    # Never used yet: the bucket starts full, at its new size.
    assert fixed.available == 7


async def test_a_change_refills_at_the_old_rate_up_to_now() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, burst=10, clock=clock)
    await limiter.acquire(10)
    clock.advance(1)  # 2 tokens at the old rate
    limiter.configure(rate=100)
    assert limiter.available == pytest.approx(2)
    clock.advance(0.01)  # 1 token at the new rate
    assert limiter.available == pytest.approx(3)
    limiter.period = 2  # now 50 per second
    clock.advance(0.02)
    assert limiter.available == pytest.approx(4)


async def test_lowering_burst_caps_a_full_bucket_raising_it_adds_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=10, clock=clock)
    await limiter.acquire()  # in use: the bucket holds 9
    limiter.burst = 3
    assert limiter.available == 3
    limiter.burst = 20
    assert limiter.available == 3, "raising burst gives no tokens"
    limiter.burst = 3
    _, times = await admit_all(limiter, clock, tasks=8)
    assert times == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0.5])


async def take_forever(
    limiter: RateLimiter, clock: FakeClock, returned: list[float], tokens: float = 1
) -> None:
    while True:
        await limiter.acquire(tokens)
        returned.append(clock.current_time())


async def test_lowering_the_rate_mid_run_keeps_the_new_bound_from_the_change() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, burst=10, clock=clock)
    returned: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            for _ in range(6):
                tg.start_soon(take_forever, limiter, clock, returned)
            await clock.sleep_until(1.02)  # mid-run: the head sleeps until 1.05
            limiter.configure(rate=3, period=2, burst=2)  # 1.5 per second
            await clock.sleep_until(6.0)
            tg.cancel_scope.cancel()
    before = [t for t in returned if t < 1.02]
    after = [t for t in returned if t >= 1.02]
    assert len(before) == 10 + 20  # burst, then the old rate: not slowed down
    for window in (0, 0.3, 2 / 3, 1, 2, 4.9):
        assert max_in_window(after, window) <= 2 + 1.5 * window + 1e-9, window
    # And not slower than the new settings allow: the bucket held 0.4 tokens at
    # the change, so the first grant is due 0.4 s later, then one every 2/3 s.
    assert after[0] == pytest.approx(1.42)
    assert after == pytest.approx([1.42 + i / 1.5 for i in range(len(after))])
    assert len(after) == 7


async def test_raising_the_rate_wakes_the_sleeping_head_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.1, burst=1, clock=clock)  # one token per 10 s
    await limiter.acquire()  # the only token, at t=0
    returned: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            for _ in range(3):
                tg.start_soon(take_forever, limiter, clock, returned)
            await clock.sleep_until(1.0)  # the head sleeps until t=10
            assert returned == []
            limiter.rate = 10
            await clock.sleep_until(1.5)
            tg.cancel_scope.cancel()
    # 0.1 token at the change, 0.9 more at 10 per second: due at 1.09.
    assert returned == pytest.approx([1.09, 1.19, 1.29, 1.39, 1.49])


async def test_a_longer_period_makes_the_sleeping_head_wait_longer() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=1, clock=clock)
    await limiter.acquire()
    returned: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            tg.start_soon(take_forever, limiter, clock, returned)
            await clock.sleep_until(0.5)  # the head sleeps until t=1
            limiter.period = 4  # 0.25 per second: 0.5 token more takes 2 s
            await clock.sleep_until(7.0)
            tg.cancel_scope.cancel()
    assert returned == pytest.approx([2.5, 6.5])


async def test_a_waiter_asking_more_than_a_lowered_burst_gets_value_error() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=4, clock=clock)
    await limiter.acquire(4)
    returned: list[float] = []

    async def too_big() -> None:
        with pytest.raises(ValueError, match="at most burst \\(2\\), got 3"):
            await limiter.acquire(3)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as waiters:
                waiters.start_soon(too_big)  # the head: due at t=3
                await all_blocked()
                waiters.start_soon(take_forever, limiter, clock, returned)
                tg.start_soon(clock.autojump)
                await clock.sleep_until(1.0)
                limiter.burst = 2
                await clock.sleep_until(2.5)
                waiters.cancel_scope.cancel()
            tg.cancel_scope.cancel()
    # The one behind moves up and takes the token the bucket gathered.
    assert returned == pytest.approx([1, 2])


# -- holds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "value", "error", "match"),
    [
        ("hold", -1, ValueError, "seconds must be a finite number >= 0, got -1"),
        ("hold", math.nan, ValueError, "seconds must be a finite number >= 0"),
        ("hold", math.inf, ValueError, "seconds must be a finite number >= 0"),
        ("hold", "1", TypeError, "seconds must be a number, got '1'"),
        ("hold", True, TypeError, "seconds must be a number, got True"),
        ("hold", None, TypeError, "seconds must be a number, got None"),
        ("hold_until", math.nan, ValueError, "deadline must be a finite number"),
        ("hold_until", -math.inf, ValueError, "deadline must be a finite number"),
        ("hold_until", "3", TypeError, "deadline must be a number"),
        ("hold_until", False, TypeError, "deadline must be a number"),
    ],
)
def test_hold_validates(
    call: str, value: Any, error: type[Exception], match: str
) -> None:
    clock = FakeClock(5)
    limiter = RateLimiter(1, clock=clock)
    with pytest.raises(error, match=match):
        getattr(limiter, call)(value)
    assert limiter.held_until is None
    limiter.hold(0)
    limiter.hold_until(4)  # in the past
    limiter.hold_until(-1)
    assert limiter.held_until is None
    limiter.acquire_nowait()


async def test_a_hold_refuses_nowait_and_take_and_acquire_waits_for_its_end() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, burst=2, clock=clock)
    limiter.hold(1.5)
    assert limiter.held_until == 1.5
    assert limiter.available == 0, "the hold empties the bucket"
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait()
    assert not take_at(limiter, 1.4, 1)
    returned: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            tg.start_soon(take_forever, limiter, clock, returned)
            await clock.sleep_until(2.0)
            tg.cancel_scope.cancel()
    assert limiter.held_until is None
    # The bucket refills from the end of the hold: the rate, no burst.
    assert returned == pytest.approx([1.7, 1.9])


async def test_a_hold_delays_every_waiter_and_newcomer_including_the_head() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=2, clock=clock)
    await limiter.acquire(2)
    returned: list[float] = []
    gave_up: list[bool] = []

    async def impatient() -> None:
        gave_up.append(not await acquire_or_give_up(limiter, clock, 0.5))

    async def newcomer() -> None:
        await clock.sleep_until(0.7)
        await limiter.acquire()
        returned.append(clock.current_time())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(impatient)  # the head, due at t=0.1; gives up at 0.5
            await all_blocked()
            for _ in range(3):
                tg.start_soon(take_forever, limiter, clock, returned)
            await all_blocked()
            tg.start_soon(newcomer)
            tg.start_soon(clock.autojump)
            await clock.sleep_until(0.05)
            limiter.hold(1)
            assert limiter.held_until == 1.05
            await clock.sleep_until(1.5)
            tg.cancel_scope.cancel()
    assert gave_up == [True]
    # The bucket refills from the end of the hold: the rate, no burst.
    assert min(returned) == pytest.approx(1.15)
    assert returned == pytest.approx([1.15, 1.25, 1.35, 1.45])
    for window in (0, 0.1, 0.25, 0.4):
        assert max_in_window(returned, window) <= 2 + 10 * window + 1e-9


async def test_a_later_hold_extends_an_earlier_one_does_not_shorten() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=1, clock=clock)
    limiter.hold(1)
    limiter.hold_until(0.5)
    limiter.hold(0.2)
    assert limiter.held_until == 1
    returned: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            tg.start_soon(take_forever, limiter, clock, returned)
            await clock.sleep_until(0.5)  # the head sleeps until the hold ends
            limiter.hold(2)
            assert limiter.held_until == 2.5
            limiter.hold_until(2)
            assert limiter.held_until == 2.5
            await clock.sleep_until(5.0)
            tg.cancel_scope.cancel()
    # A token's time after the end of the (extended) hold, then the rate.
    assert returned == pytest.approx([3.5, 4.5])


async def test_a_hold_on_a_shared_limiter_holds_both_work_queues() -> None:
    """A worker told to back off (HTTP 429) holds the shared limiter: neither
    queue starts an item until the hold ends."""
    clock = FakeClock()
    limiter = RateLimiter(4, burst=2, clock=clock)
    starts: list[tuple[str, float]] = []
    held_at: list[float] = []

    async def work(item: tuple[str, int]) -> None:
        name, i = item
        now = clock.current_time()
        starts.append((name, now))
        if (name, i) == ("a", 4):
            limiter.hold(3)  # as a RetryAfter(3) handler would
            held_at.append(now)

    first: WorkQueue[tuple[str, int]] = WorkQueue(rate_limiter=limiter)
    second: WorkQueue[tuple[str, int]] = WorkQueue(rate_limiter=limiter)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as batches:
                items_a = [("a", i) for i in range(10)]
                items_b = [("b", i) for i in range(10)]
                batches.start_soon(first.batch_process, items_a, work, 3)
                batches.start_soon(second.batch_process, items_b, work, 3)
            tg.cancel_scope.cancel()
    assert len(starts) == 20
    [hold] = held_at
    assert 0 < hold < 3
    times = [t for _, t in starts]
    assert not [t for t in times if hold < t < hold + 3], starts
    resumed = {name for name, t in starts if t >= hold + 3}
    assert resumed == {"a", "b"}
    # At the rate from the end of the hold (a token every 0.25 s), no burst.
    assert min(t for t in times if t > hold) == pytest.approx(hold + 3.25)
    for window in (0, 0.25, 1, 2, 5):
        assert max_in_window(times, window) <= 2 + 4 * window + 1e-9, window


async def test_a_hold_on_the_event_loop_clock() -> None:
    limiter = RateLimiter(1000, burst=5)
    started = anyio.current_time()
    limiter.hold(0.01)
    held_until = limiter.held_until
    assert held_until is not None
    assert held_until == pytest.approx(started + 0.01, abs=0.005)
    await limiter.acquire()
    # On the limiter's clock (uvloop's own time() lags it by up to a
    # millisecond): a token's time after the end of the hold, which emptied
    # the bucket.
    assert AnyIOClock().current_time() >= held_until + 0.001 - 1e-9
    assert limiter.held_until is None
    limiter.configure(rate=500, burst=2)
    assert 0 <= limiter.available <= 2


@pytest.mark.parametrize("seed", range(6))
async def test_random_changes_holds_and_give_ups_keep_each_settings_bound(
    seed: int,
) -> None:
    """Settings change and holds come at random while callers wait, give up and
    return: between two changes the bound of the settings in force holds, from
    the change on, and nothing is granted while held."""
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(10, burst=3, clock=clock)
    granted: list[float] = []
    changes: list[tuple[float, float, float, float]] = [(0.0, 10, 1, 3)]
    holds: list[tuple[float, float]] = []

    async def changer() -> None:
        now = 0.0
        for _ in range(40):
            now += rng.uniform(0.02, 0.3)
            await clock.sleep_until(now)
            if rng.random() < 0.3:
                seconds = rng.uniform(0, 0.4)
                limiter.hold(seconds)
                holds.append((now, now + seconds))
            else:
                limiter.configure(
                    rate=rng.choice([1, 4, 20, 60]),
                    period=rng.choice([0.5, 1, 2]),
                    burst=rng.choice([1, 2, 5]),
                )
                changes.append((now, limiter.rate, limiter.period, limiter.burst))

    async def caller(patience: float) -> None:
        if await acquire_or_give_up(limiter, clock, patience):
            granted.append(clock.current_time())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as callers:
                callers.start_soon(changer)
                # Rushes and lulls: the bucket is sometimes full, sometimes empty.
                arrival = 0.0
                for _ in range(250):
                    arrival += rng.choice([rng.expovariate(100), rng.uniform(0, 0.3)])
                    await clock.sleep_until(arrival)
                    callers.start_soon(caller, rng.choice([rng.uniform(0, 1), 100]))
            tg.cancel_scope.cancel()
    assert len(granted) > 50
    changes.append((math.inf, 0, 1, 0))
    for (start, rate, period, burst), (end, *_) in itertools.pairwise(changes):
        during = [t for t in granted if start <= t < end]
        for window in (0, 0.05, 0.2, 0.5, 1, 2):
            allowed = burst + rate * window / period
            assert max_in_window(during, window) <= allowed + 1e-9, (start, window)
    for start, end in holds:
        assert not [t for t in granted if start < t < end - 1e-9], (start, end)


async def test_async_with_a_limiter_takes_one_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, burst=2, clock=clock)
    times: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            for _ in range(4):
                async with limiter as entered:
                    assert entered is limiter
                    times.append(clock.current_time())
            tg.cancel_scope.cancel()
    # Two at once (the burst), then one every half second.
    assert times == [0.0, 0.0, 0.5, 1.0]


# -- "n per second" means n in any second; a hold ends at the rate --------------


def most_in_half_open(times: list[float], period: float) -> int:
    """The most timestamps in any half-open window [s, s + period)."""
    ordered = sorted(times)
    # A busiest window can always start at a timestamp.
    return max(
        (bisect.bisect_left(ordered, t + period) - i for i, t in enumerate(ordered)),
        default=0,
    )


def assert_at_the_rate_from(
    times: list[float], start: float, per_second: float
) -> None:
    """In [start, start + t], at most ``per_second * t`` timestamps, for every t:
    what a bucket empty at ``start`` grants."""
    after = sorted(t for t in times if t >= start)
    for count, t in enumerate(after, 1):
        assert count <= per_second * (t - start) + 1e-6, (start, t, count)


async def drive(
    limiter: RateLimiter,
    clock: FakeClock,
    rng: random.Random,
    episodes: int,
    holds: list[tuple[float, float]] | None = None,
) -> list[float]:
    """Random traffic: rushes of many callers at once (some with
    `acquire_nowait`), trickles, idle gaps, stalls (the clock jumps ahead while
    waiters wait) and, if ``holds`` is given, holds (recorded there as (start,
    end)). Returns the times the tokens were granted, once all are."""
    granted: list[float] = []
    per_second = limiter.rate / limiter.period

    async def caller() -> None:
        await limiter.acquire()
        granted.append(clock.current_time())

    def arrive(callers: anyio.abc.TaskGroup) -> None:
        if rng.random() < 0.2:
            with contextlib.suppress(anyio.WouldBlock):
                limiter.acquire_nowait()
                granted.append(clock.current_time())
        else:
            callers.start_soon(caller)

    kinds = ["rush", "trickle", "idle", "stall"] + ["hold"] * (holds is not None)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as callers:
                for _ in range(episodes):
                    kind = rng.choice(kinds)
                    now = clock.current_time()
                    if kind == "rush":
                        for _ in range(rng.randint(1, min(60, 2 * int(per_second)))):
                            arrive(callers)
                    elif kind == "trickle":
                        for _ in range(rng.randint(1, 20)):
                            now += rng.expovariate(2 * per_second)
                            await clock.sleep_until(now)
                            arrive(callers)
                    elif kind == "idle":
                        await clock.sleep_until(now + rng.uniform(0, 3 / per_second))
                    elif kind == "stall":  # nobody runs while the clock moves
                        clock.advance(rng.uniform(0, 2 * limiter.period))
                    else:
                        assert holds is not None
                        seconds = rng.uniform(0, 2 * limiter.period)
                        limiter.hold(seconds)
                        holds.append((now, now + seconds))
            tg.cancel_scope.cancel()
    return granted


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("rate", "period"), [(5, 1), (50, 1), (3, 0.5), (7, 2)])
async def test_by_default_n_per_period_means_n_in_every_window_of_period(
    rate: float, period: float, seed: int
) -> None:
    """``RateLimiter(n, period)`` grants at most n in every half-open window of
    ``period`` seconds, from the first call on: after idle gaps, under rushes
    of waiters, and after stalls."""
    rng = random.Random(seed)
    clock = FakeClock(rng.uniform(0, 1000))
    limiter = RateLimiter(rate, period, clock=clock)
    granted = await drive(limiter, clock, rng, episodes=40)
    assert len(granted) > 40
    assert most_in_half_open(granted, period) <= rate


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("burst", [None, 20])
async def test_after_every_hold_grants_resume_at_the_rate(
    burst: float | None, seed: int
) -> None:
    """Holds at random among rushes, trickles, idle gaps and stalls: nothing is
    granted while held; from the end of each hold, at most ``rate * t /
    period`` grants in the t seconds after it, whatever the burst; and the
    bound of the settings holds throughout."""
    rng = random.Random(seed)
    clock = FakeClock(rng.uniform(0, 1000))
    limiter = RateLimiter(10, burst=burst, clock=clock)
    holds: list[tuple[float, float]] = []
    granted = await drive(limiter, clock, rng, episodes=60, holds=holds)
    assert len(granted) > 60
    assert holds
    for start, end in holds:
        assert not [t for t in granted if start < t < end], (start, end)
        assert_at_the_rate_from(granted, end, 10)
    if burst is None:
        assert most_in_half_open(granted, 1) <= 10
    for window in (0, 0.05, 0.5, 1, 3):
        assert max_in_window(granted, window) <= 20 + 10 * window + 1e-9, window


@pytest.mark.parametrize("burst", [1, 20])
@pytest.mark.parametrize("when", ["idle", "waiting", "stalled"])
async def test_a_hold_ends_with_an_empty_bucket(burst: float, when: str) -> None:
    """Whether the bucket was full (nobody called for long), callers were
    waiting, or the event loop stalls past the hold's end: the first grant
    after a hold ending at h comes one token's time after h, and in [h, h + t]
    at most 10 * t are granted."""
    clock = FakeClock()
    limiter = RateLimiter(10, burst=burst, clock=clock)
    returned: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            if when == "idle":
                await clock.sleep_until(5.0)  # the bucket is full
                limiter.hold(1)
                assert limiter.available == 0
                await clock.sleep_until(6.0)
                with pytest.raises(anyio.WouldBlock):
                    limiter.acquire_nowait()
            for _ in range(30):
                tg.start_soon(take_forever, limiter, clock, returned)
            if when != "idle":
                await clock.sleep_until(0.35)
                limiter.hold(1)
            if when == "stalled":
                await clock.sleep_until(1.0)
                clock.advance(1.0)  # to 2.0, 0.65 s past the end of the hold
            await clock.sleep_until(9.0)
            tg.cancel_scope.cancel()
    end = 6.0 if when == "idle" else 1.35
    after = [t for t in returned if t >= end]
    assert after
    assert not [t for t in returned if end - 1 < t < end]
    assert_at_the_rate_from(returned, end, 10)
    if when == "stalled":
        # The bucket refilled from the hold's end (6.5 tokens by 2.0), not from
        # its start, and up to the burst.
        expected = [2.0, 2.1, 2.2] if burst == 1 else [2.0] * 6 + [2.05, 2.15]
        assert after[: len(expected)] == pytest.approx(expected)
    else:
        assert after[:3] == pytest.approx([end + 0.1, end + 0.2, end + 0.3])


async def test_a_hold_while_the_head_sleeps_wakes_it_to_its_new_time() -> None:
    """The head sleeps until its token is due at t=1; a hold from 0.5 to 1.5
    empties the bucket, so the token is due one second after the hold ends."""
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock)
    await limiter.acquire()  # the only token, at t=0
    returned: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            tg.start_soon(take_forever, limiter, clock, returned)
            await clock.sleep_until(0.5)
            limiter.hold(1)
            await clock.sleep_until(4.0)
            tg.cancel_scope.cancel()
    assert returned == pytest.approx([2.5, 3.5])


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"rate": 2, "burst": 2}, [1.5, 2.0, 2.5]),  # slower, from the hold's end
        ({"rate": 100}, [1.01, 1.02, 1.03]),  # faster: the head is woken
    ],
)
async def test_configure_during_a_hold_refills_at_the_new_rate_from_its_end(
    settings: dict[str, float], expected: list[float]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=5, clock=clock)
    limiter.hold(1)  # a fresh, full bucket: emptied for the hold's end
    returned: list[float] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            tg.start_soon(take_forever, limiter, clock, returned)
            await clock.sleep_until(0.5)  # the head sleeps until 1.1
            limiter.configure(**settings)
            assert limiter.held_until == 1
            assert limiter.available == 0
            await clock.sleep_until(expected[-1] + 0.001)
            tg.cancel_scope.cancel()
    assert returned == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(3))
async def test_two_work_queues_keep_the_window_across_retry_after_holds(
    seed: int,
) -> None:
    """Two WorkQueues share a default RateLimiter(4); workers of both raise
    RetryAfter now and then. Every one-second window holds at most 4 starts,
    nothing starts while held, and after each hold starts resume at the rate."""
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock)
    starts: list[float] = []
    holds: list[tuple[float, float]] = []

    async def work(item: int) -> None:
        now = clock.current_time()
        starts.append(now)
        if rng.random() < 0.08:
            seconds = rng.uniform(0.1, 2)
            holds.append((now, now + seconds))
            raise RetryAfter(seconds)
        await clock.sleep_until(now + rng.uniform(0, 0.5))

    policy = RetryPolicy(attempts=3)
    first = WorkQueue[int](rate_limiter=limiter, retry=policy, clock=clock)
    second = WorkQueue[int](rate_limiter=limiter, retry=policy, clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as batches:
                batches.start_soon(first.batch_process, range(40), work, 5)
                batches.start_soon(second.batch_process, range(40), work, 3)
            tg.cancel_scope.cancel()
    assert holds
    assert len(starts) >= 80 + len(holds) - 2  # every call, retries included
    for queue in (first, second):
        assert_books(queue)
        assert queue.metrics["processed"] == 40
    assert most_in_half_open(starts, 1) <= 4
    for start, end in holds:
        assert not [t for t in starts if start < t < end], (start, end)
        assert_at_the_rate_from(starts, end, 4)


# -- RateLimiterProtocol: any limiter object ------------------------------------------


class CountingLimiter:
    """A limiter of the user's own: grants at once, records what it was asked."""

    def __init__(self) -> None:
        self.acquired: list[float] = []
        self.held: list[float] = []

    async def acquire(self, tokens: float = 1) -> None:
        await anyio.lowlevel.checkpoint()
        self.acquired.append(tokens)

    def hold(self, seconds: float) -> None:
        self.held.append(seconds)


def test_rate_limiter_satisfies_the_protocol() -> None:
    assert isinstance(RateLimiter(1), RateLimiterProtocol)
    assert isinstance(CountingLimiter(), RateLimiterProtocol)


@pytest.mark.parametrize("limiter", [object(), 5, RateLimiter])
def test_an_object_without_acquire_and_hold_is_refused(limiter: object) -> None:
    with pytest.raises(TypeError, match=r"acquire\(tokens=1\)` and `hold\(seconds\)"):
        WorkQueue(rate_limiter=limiter)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"acquire\(tokens=1\)` and `hold\(seconds\)"):
        Executor(Ping, rate_limiter=limiter)  # type: ignore[arg-type]


async def test_a_work_queue_awaits_a_limiter_of_your_own_per_call() -> None:
    """Each call, retries included, first awaits the limiter's acquire; a
    RetryAfter holds it for the seconds the call asked."""
    limiter = CountingLimiter()
    tries: dict[int, int] = {}

    async def work(item: int) -> None:
        tries[item] = tries.get(item, 0) + 1
        if item == 0 and tries[item] == 1:
            raise RetryAfter(0)

    with anyio.fail_after(GUARD):
        queue = WorkQueue[int](rate_limiter=limiter, retry=RetryPolicy(attempts=2))
        await queue.batch_process(range(5), work, 2)
    assert queue.metrics["processed"] == 5
    assert limiter.acquired == [1] * 6  # five items, one retried
    assert limiter.held == [0.0]


class Ping(Event):
    def __init__(self, pushback: float | None = None) -> None:
        super().__init__()
        self.pushback = pushback

    async def invoke(self) -> str:
        await anyio.lowlevel.checkpoint()
        if self.pushback is not None:
            pushback, self.pushback = self.pushback, None
            raise RetryAfter(pushback)
        return "pong"


async def test_an_executor_awaits_a_limiter_of_your_own_per_call() -> None:
    limiter = CountingLimiter()
    config = QueueConfig(queue_capacity=10, capacity_refresh_time=1e-6)
    with anyio.fail_after(GUARD):
        async with Executor(
            Ping, config, rate_limiter=limiter, retry=RetryPolicy(attempts=2)
        ) as executor:
            await executor.batch_process([Ping(), Ping(0.0), Ping()])
    assert executor.metrics["completed"] == 3
    assert limiter.acquired == [1] * 4
    assert limiter.held == [0.0]
