"""Gate: a token from each rate limiter, at one clock reading, before a call starts.

Also RateLimiter's two methods the gate asks: `take_at` and `reads_clock`. Time
comes from an injected FakeClock.
"""

from __future__ import annotations

import anyio
import pytest
from fake_clock import FakeClock, all_blocked
from support import GUARD

from sluicegate import RateLimiter
from sluicegate._clock import AnyIOClock
from sluicegate._gate import Gate


class Recording:
    """A RateLimiterProtocol that is no RateLimiter: it grants at once, and
    records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def acquire(self, tokens: float = 1) -> None:
        self.asked.append(f"acquire({tokens})")
        await anyio.lowlevel.checkpoint()

    def hold(self, seconds: float) -> None:
        self.asked.append(f"hold({seconds})")


def full(clock: FakeClock, burst: float = 2) -> RateLimiter:
    """A full limiter of ``burst`` tokens that refills at 1 per 1000 s."""
    return RateLimiter(1, 1000, burst=burst, clock=clock)


def empty(clock: FakeClock) -> RateLimiter:
    """A limiter whose one token is taken: the next is due in a second."""
    limiter = RateLimiter(1, clock=clock)
    assert limiter.take_at(clock.current_time())
    return limiter


# -- RateLimiter.take_at and reads_clock ---------------------------------------------


def test_take_at_takes_at_the_time_given() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=2, clock=clock)
    assert limiter.take_at(0.0)
    assert limiter.take_at(0.0, 1)
    assert not limiter.take_at(0.5), "half a token refilled: not enough"
    assert limiter.take_at(1.0), "a whole token refilled by 1.0"
    assert not limiter.take_at(1.0)


def test_take_at_refuses_while_held() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=2, clock=clock)
    limiter.hold(5)
    assert not limiter.take_at(4.9)
    assert limiter.take_at(6.0), "refilled from the hold's end"


async def test_take_at_does_not_jump_the_line() -> None:
    clock = FakeClock()
    limiter = empty(clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire)
            await all_blocked()  # the head waits for the token due at 1.0
            assert not limiter.take_at(2.0), "the waiter comes first"
            tg.cancel_scope.cancel()


def test_reads_clock() -> None:
    clock = FakeClock()
    assert RateLimiter(1, clock=clock).reads_clock(clock)
    assert not RateLimiter(1, clock=clock).reads_clock(FakeClock())
    assert not RateLimiter(1, clock=clock).reads_clock(None)
    assert RateLimiter(1).reads_clock(None), "the event loop's"
    assert RateLimiter(1, clock=AnyIOClock()).reads_clock(None)
    assert not RateLimiter(1).reads_clock(clock)


# -- admit ---------------------------------------------------------------------------


def test_admit_takes_a_token_from_every_limiter_when_all_are_free() -> None:
    clock = FakeClock()
    first, second = full(clock), full(clock, burst=3)
    gate = Gate([first, second], clock)
    assert gate.admit(0.0)
    assert (first.available, second.available) == (1, 2)


@pytest.mark.parametrize("binding", [0, 1, 2])
def test_admit_refused_by_one_limiter_takes_nothing_from_any(binding: int) -> None:
    clock = FakeClock()
    limiters = [full(clock) for _ in range(3)]
    limiters[binding] = empty(clock)
    before = [limiter.available for limiter in limiters]
    gate = Gate(limiters, clock)
    assert not gate.admit(0.0)
    assert [limiter.available for limiter in limiters] == before


def test_admit_refused_by_the_second_of_two_puts_the_first_token_back() -> None:
    """The Executor's gate: its start rate, then the user's limiter."""
    clock = FakeClock()
    start_rate, limiter = full(clock), empty(clock)
    gate = Gate([start_rate, limiter], clock)
    assert not gate.admit(0.0)
    assert start_rate.available == 2
    clock.advance(1.0)
    assert gate.admit(1.0)
    assert (start_rate.available, limiter.available) == (1, 0)


def test_admit_with_one_limiter_is_its_take_at() -> None:
    clock = FakeClock()
    limiter = full(clock, burst=1)
    gate = Gate([limiter], clock)
    assert gate.admit(0.0)
    assert not gate.admit(0.0)
    assert gate.admit(1000.0)
    assert gate.admit == limiter.take_at


def test_admit_asks_no_limiter_when_one_is_not_a_rate_limiter() -> None:
    clock = FakeClock()
    limiter, other = full(clock), Recording()
    gate = Gate([limiter, other], clock)
    assert not gate.admit(0.0)
    assert limiter.available == 2
    assert other.asked == []


class Subclassed(RateLimiter):
    """A RateLimiter whose acquire may do more: the gate awaits it."""


@pytest.mark.parametrize("kind", ["on another clock", "a subclass"])
def test_admit_asks_no_limiter_when_a_rate_limiter_has_no_fast_path(
    kind: str,
) -> None:
    clock = FakeClock()
    limiter = full(clock)
    slow = (
        RateLimiter(1, clock=FakeClock())
        if kind == "on another clock"
        else Subclassed(1, clock=clock)
    )
    gate = Gate([limiter, slow], clock)
    assert not gate.admit(0.0)
    assert (limiter.available, slow.available) == (2, 1)


def test_a_gate_skips_none_and_without_limiters_admits() -> None:
    clock = FakeClock()
    limiter = full(clock)
    assert Gate([None, limiter, None], clock).limiters == (limiter,)
    assert Gate([], clock).admit(0.0)


# -- wait ----------------------------------------------------------------------------


async def test_wait_takes_a_token_from_each_limiter_in_turn() -> None:
    clock = FakeClock()
    start_rate, limiter, other = full(clock), empty(clock), Recording()
    gate = Gate([start_rate, limiter, other], clock)
    assert not gate.admit(0.0)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            await gate.wait()
            tg.cancel_scope.cancel()
    assert clock.current_time() == 1.0, "waited for the bound limiter's token"
    assert start_rate.available == pytest.approx(1, abs=0.01)
    assert limiter.available == 0
    assert other.asked == ["acquire(1)"]


async def test_wait_cancelled_leaves_the_earlier_grants_spent_and_takes_no_more() -> (
    None
):
    """Documented: a rate limit counts grants. The limiter waited on takes
    nothing, and those after it are never asked."""
    clock = FakeClock()
    start_rate, limiter, other = full(clock), empty(clock), Recording()
    gate = Gate([start_rate, limiter, other], clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(gate.wait)
            await all_blocked()  # granted by the start rate, waiting in `limiter`
            tg.cancel_scope.cancel()
    assert start_rate.available == 1, "its grant stays spent"
    clock.advance(1.0)
    assert limiter.available == 1, "the token due at 1.0 was not taken"
    assert limiter.take_at(1.0), "and nobody is left waiting in its line"
    assert other.asked == []


# -- hold ----------------------------------------------------------------------------


def test_hold_holds_every_limiter() -> None:
    clock = FakeClock()
    first, second, other = full(clock), full(clock), Recording()
    gate = Gate([first, second, other], clock)
    gate.hold(3)
    assert (first.held_until, second.held_until) == (3.0, 3.0)
    assert other.asked == ["hold(3)"]
    assert not gate.admit(2.9)
    assert "RateLimiter(rate=1" in repr(gate)
