"""WaiterLine: the order it serves in, what a leaver costs, lost wake-ups.

And random park, cancel and wake sequences, and compaction, that keep its count.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from fake_clock import all_blocked
from support import (
    GUARD,
    check_line_compact,
    check_line_idle,
    line_entries,
    producers_line,
)

from sluicegate import (
    BoundedQueue,
)
from sluicegate import _waiters as waiters_module
from sluicegate._waiters import WaiterLine


@pytest.fixture(params=["unbound", "bound"])
def bound(request: pytest.FixtureRequest) -> bool:
    """Each line test runs on anyio's Event, and bound to the running loop's
    own primitive (a bare future on asyncio), as a started queue's lines are."""
    return bool(request.param == "bound")


def _line(bound: bool, **kwargs: Any) -> WaiterLine:
    line = WaiterLine(**kwargs)
    if bound:
        line.bind()
    return line


async def _park_and_record(line: WaiterLine, name: int, woken: list[int]) -> None:
    await line.park()
    woken.append(name)


@pytest.mark.parametrize(("lifo", "order"), [(False, [0, 1, 2]), (True, [2, 1, 0])])
async def test_wakes_in_fifo_or_lifo_order(
    lifo: bool, order: list[int], bound: bool
) -> None:
    line = _line(bound, lifo=lifo)
    woken: list[int] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for name in range(3):
                tg.start_soon(_park_and_record, line, name, woken)
                await all_blocked()
            assert line.parked == 3
            for _ in range(3):
                assert line.wake_one()
                await all_blocked()
    assert woken == order
    assert (line.parked, line.woken, line.wake_one()) == (0, 0, False)


async def test_a_leaver_is_skipped_and_the_next_is_woken(bound: bool) -> None:
    line = _line(bound)
    woken: list[int] = []
    scopes = [anyio.CancelScope() for _ in range(3)]

    async def park(name: int) -> None:
        with scopes[name]:
            await _park_and_record(line, name, woken)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for name in range(3):
                tg.start_soon(park, name)
                await all_blocked()
            scopes[0].cancel()
            scopes[1].cancel()
            await all_blocked()
            assert line.parked == 1
            line.wake_one()
    assert woken == [2]


async def test_a_wake_lost_to_cancellation_is_passed_on(bound: bool) -> None:
    passed_on: list[bool] = []
    line: WaiterLine = _line(
        bound, on_lost_wake=lambda: passed_on.append(line.wake_one())
    )
    woken: list[int] = []
    first = anyio.CancelScope()

    async def park_first() -> None:
        with first:
            await _park_and_record(line, 0, woken)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(park_first)
            await all_blocked()
            tg.start_soon(_park_and_record, line, 1, woken)
            await all_blocked()
            first.cancel()  # the first is cancelled, and before it resumes ...
            line.wake_one()  # ... it is woken
    assert (woken, passed_on) == ([1], [True])
    assert (line.parked, line.woken) == (0, 0)


async def test_wake_all_wakes_every_parked_task(bound: bool) -> None:
    line = _line(bound)
    woken: list[int] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for name in range(5):
                tg.start_soon(_park_and_record, line, name, woken)
            await all_blocked()
            assert line.wake_all() == 5
    assert sorted(woken) == [0, 1, 2, 3, 4]


class _CountingWaiter(waiters_module._Waiter):
    """A waiter that counts how often it is compared: a scan compares many."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        _CountingWaiter.comparisons += 1
        return self is other

    __hash__ = object.__hash__


async def test_expiring_producers_leave_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2,000 producers blocked on a full queue, timing out in random order.

    Leaving the line must not search it: no waiter is ever compared with another
    (a deque.remove would compare about n/2 of them per leaver).
    """
    monkeypatch.setattr(waiters_module, "_Waiter", _CountingWaiter)
    _CountingWaiter.comparisons = 0
    rng = random.Random(9)
    results: list[bool] = []
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1)

    async def producer(i: int) -> None:
        results.append(await queue.put(i, timeout=rng.uniform(0.001, 0.05)))

    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.put(-1)
            for i in range(2_000):
                tg.start_soon(producer, i)
    assert results == [False] * 2_000
    assert queue.metrics["backpressure_events"] == 2_000
    assert _CountingWaiter.comparisons == 0
    # Leavers were dropped in bulk.
    assert len(line_entries(producers_line(queue))) <= 64


async def test_a_started_queue_parks_on_the_loops_own_primitive(
    anyio_backend_name: str,
) -> None:
    """On asyncio a started queue's producers park on bare futures of the loop,
    elsewhere on the backend's Event; a blocked put is woken either way."""
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1)
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.put(0)
            tg.start_soon(queue.put, 1)
            await all_blocked()
            (waiter,) = line_entries(producers_line(queue))
            on_asyncio = anyio_backend_name == "asyncio"
            awaited = waiter.event.wait()
            # A bare future of the loop on asyncio; an Event's coroutine on trio.
            assert hasattr(awaited, "set_result") is on_asyncio
            assert isinstance(waiter.event, anyio.Event) is not on_asyncio
            if not on_asyncio:
                awaited.close()  # type: ignore[attr-defined]
            assert queue.get_nowait() == 0
            await all_blocked()
            assert queue.size == 1
            queue.task_done()
            assert queue.get_nowait() == 1
            queue.task_done()


# -- random park, cancel and wake ------------------------------------------------------


class RandomLineAttack:
    """Parks, cancels and wakes at random, tracking who should be parked."""

    def __init__(self, rng: random.Random, *, lifo: bool) -> None:
        self.rng = rng
        self.lifo = lifo
        self.lost = 0
        self.line = WaiterLine(lifo=lifo, on_lost_wake=self.count_lost)
        self.parked: list[int] = []  # live parked ids, in arrival order
        self.resumed: list[int] = []
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.next_id = 0

    def count_lost(self) -> None:
        self.lost += 1

    async def parker(self, i: int) -> None:
        with self.scopes[i]:
            await self.line.park()
            self.resumed.append(i)

    def wake(self, times: int) -> list[int]:
        """wake_one ``times`` times; return whom the line should have woken."""
        woke: list[int] = []
        for _ in range(times):
            if self.line.wake_one():
                woke.append(self.parked.pop() if self.lifo else self.parked.pop(0))
            else:
                assert not self.parked
        return woke

    def some_parked(self) -> list[int]:
        return self.rng.sample(self.parked, self.rng.randint(1, len(self.parked)))

    async def settle(self) -> list[int]:
        """Let everything run; return who resumed meanwhile."""
        await all_blocked()
        resumed = list(self.resumed)
        self.resumed.clear()
        return resumed

    async def park_some(self, tg: TaskGroup) -> None:
        for _ in range(self.rng.randint(1, 20)):
            i = self.next_id
            self.next_id += 1
            self.scopes[i] = anyio.CancelScope()
            tg.start_soon(self.parker, i)
            self.parked.append(i)
            await all_blocked()

    async def cancel_some(self) -> None:
        for i in self.some_parked():
            self.scopes[i].cancel()
            self.parked.remove(i)
        assert await self.settle() == []

    async def cancel_then_wake(self) -> None:
        """Cancel some, then wake in the same tick: a leaver woken loses it."""
        cancelled = self.some_parked()
        for i in cancelled:
            self.scopes[i].cancel()
        lost_before = self.lost
        woke = self.wake(self.rng.randint(1, 4))
        self.parked = [i for i in self.parked if i not in cancelled]
        resumed = await self.settle()
        assert set(resumed) == set(woke) - set(cancelled), (resumed, woke, cancelled)
        assert self.lost - lost_before == len(set(woke) & set(cancelled))

    async def wake_then_cancel(self) -> None:
        """Wake some, and cancel some of those before they resume."""
        woke = self.wake(self.rng.randint(1, 4))
        cancelled = [i for i in woke if self.rng.random() < 0.3]
        for i in cancelled:
            self.scopes[i].cancel()
        resumed = await self.settle()
        # those not cancelled resumed (trio: a cancel after the wake-up is too late)
        assert set(resumed) <= set(woke)
        assert set(woke) - set(resumed) <= set(cancelled)

    async def wake_all(self) -> None:
        assert self.line.wake_all() == len(self.parked)
        self.parked.clear()
        await self.settle()


@pytest.mark.parametrize("lifo", [False, True], ids=["fifo", "lifo"])
@pytest.mark.parametrize("seed", range(4))
async def test_random_park_cancel_and_wake_keep_a_waiter_lines_count(
    seed: int, lifo: bool
) -> None:
    attack = RandomLineAttack(random.Random(seed), lifo=lifo)
    line = attack.line
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for _ in range(300):
                r = attack.rng.random()
                if r < 0.4:
                    await attack.park_some(tg)
                elif r < 0.65 and attack.parked:
                    await attack.cancel_some()
                elif r < 0.75 and attack.parked:
                    await attack.cancel_then_wake()
                elif r < 0.85:
                    await attack.wake_then_cancel()
                else:
                    await attack.wake_all()
                assert line.parked == len(attack.parked), (line, attack.parked)
                assert line.woken == 0, line
                check_line_compact(line)
            line.wake_all()
    check_line_idle(line)


async def test_compacting_a_waiter_line_keeps_its_order() -> None:
    """Two in three waiters leave, enough to compact the line: the rest are
    still woken in arrival order."""
    order: list[int] = []
    line = WaiterLine()
    scopes = [anyio.CancelScope() for _ in range(300)]

    async def parker(i: int) -> None:
        with scopes[i]:
            await line.park()
            order.append(i)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(parker, i)
                await all_blocked()
            for i in [*range(0, 300, 3), *range(1, 300, 3)]:
                scopes[i].cancel()
            await all_blocked()
            assert line.parked == 100
            check_line_compact(line)
            while line.wake_one():
                await all_blocked()
    assert order == list(range(2, 300, 3))
