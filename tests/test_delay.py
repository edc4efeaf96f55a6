"""DelayLine: values held until due, one sleeper, on an injected clock."""

from __future__ import annotations

import anyio
from fake_clock import FakeClock, all_blocked
from support import GUARD

from sluicegate._delay import DelayLine


async def test_values_come_out_in_due_order_when_due() -> None:
    clock = FakeClock()
    out: list[str] = []
    line: DelayLine[str] = DelayLine(clock, out.extend)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(line.run)
            line.add("late", 2.0)
            line.add("early", 1.0)
            await all_blocked()
            assert out == []
            clock.advance(1.0)
            await all_blocked()
            assert out == ["early"]
            clock.advance(1.0)
            await all_blocked()
            assert out == ["early", "late"]
            tg.cancel_scope.cancel()


async def test_a_withdrawn_value_never_comes_out() -> None:
    clock = FakeClock()
    out: list[str] = []
    line: DelayLine[str] = DelayLine(clock, out.extend)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(line.run)
            entry = line.add("gone", 1.0)
            line.add("kept", 1.0)
            assert line.withdraw(entry)
            assert len(line) == 1
            clock.advance(1.0)
            await all_blocked()
            tg.cancel_scope.cancel()
    assert out == ["kept"]
    assert not line.withdraw(entry)


async def test_a_runner_cancelled_before_it_ran_does_not_silence_the_next() -> None:
    # A queue stopped and started again in its block cancels one runner and
    # starts another at once; the cancelled one may run after the new one has
    # parked (trio picks the order at random), and must not take its wake-up.
    clock = FakeClock()
    out: list[str] = []
    line: DelayLine[str] = DelayLine(clock, out.extend)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(line.run)
            await all_blocked()  # the new runner parks with nothing to wait for
            old = anyio.CancelScope()
            old.cancel()
            tg.start_soon(_run_in, line, old)
            await all_blocked()  # the old one ran, and ended
            line.add("due", 1.0)
            await all_blocked()
            clock.advance(1.0)
            await all_blocked()
            tg.cancel_scope.cancel()
    assert out == ["due"]


async def test_a_runner_cancelled_while_sleeping_leaves_the_other_awake() -> None:
    clock = FakeClock()
    out: list[str] = []
    line: DelayLine[str] = DelayLine(clock, out.extend)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            line.add("first", 5.0)
            tg.start_soon(line.run)
            await all_blocked()
            old = anyio.CancelScope()
            tg.start_soon(_run_in, line, old)
            await all_blocked()  # two runners sleep until 5.0
            old.cancel()
            await all_blocked()
            line.add("earlier", 1.0)  # the live runner must wake for it
            await all_blocked()
            clock.advance(1.0)
            await all_blocked()
            assert out == ["earlier"]
            tg.cancel_scope.cancel()


async def _run_in(line: DelayLine[str], scope: anyio.CancelScope) -> None:
    with scope:
        await line.run()


async def test_values_due_together_come_out_together_in_due_order() -> None:
    clock = FakeClock()
    batches: list[list[str]] = []
    line: DelayLine[str] = DelayLine(clock, batches.append)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(line.run)
            line.add("second", 2.0)
            line.add("first", 1.0)
            line.add("tie", 2.0)  # added after "second": released after it
            line.add("later", 5.0)
            await all_blocked()
            clock.advance(3.0)
            await all_blocked()
            tg.cancel_scope.cancel()
    assert batches == [["first", "second", "tie"]]
