"""Who is served first: items, producers and get() callers in turn; workers LIFO.

Items leave in the order they were put (a retry back at the front); producers
and get() callers are served in the order they came, get() callers before idle
workers; idle workers the most recent first, woken a few at a time
(docs/guarantees.rst, "Who is served first").
"""

from __future__ import annotations

import anyio
import pytest
from fake_clock import FakeClock, all_blocked
from support import GUARD, delay_each, get_one, virtual_time

from sluicegate import BoundedQueue, RetryPolicy, WorkQueue

# -- items: first in, first out; a retry goes back to the front ------------------------


async def test_a_retried_item_comes_back_before_newer_items() -> None:
    order: list[int] = []
    async with virtual_time() as clock:

        async def work(item: int) -> None:
            order.append(item)
            if item == 0 and order.count(0) == 1:
                raise ConnectionError
            await clock.sleep_until(clock.current_time() + 1)

        policy = RetryPolicy(backoff=0.5, jitter=False)
        queue: WorkQueue[int] = WorkQueue(retry=policy, clock=clock)
        await queue.batch_process(range(4), work, num_workers=1)
    assert order == [0, 1, 0, 2, 3]


async def test_retries_due_together_come_back_in_the_order_they_failed() -> None:
    clock = FakeClock()
    queue: BoundedQueue[int] = BoundedQueue(maxsize=4, clock=clock)
    with anyio.fail_after(GUARD):
        async with queue:
            await delay_each(queue, 1, 2, 3)  # each failed once, at one moment
            assert queue.delayed == 3
            clock.advance(1.0)  # all three fall due together
            await all_blocked()
            got = [await queue.get() for _ in range(3)]
            for _ in got:
                queue.task_done()
    assert got == [1, 2, 3]


# -- producers and get() callers: in the order they started waiting --------------------


@pytest.mark.plan("R2-10")
async def test_get_callers_are_served_in_turn() -> None:
    counts = [0, 0, 0]
    queue: BoundedQueue[int] = BoundedQueue()

    async def consumer(index: int) -> None:
        while True:
            await queue.get()
            counts[index] += 1
            queue.task_done()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            for index in range(3):
                tg.start_soon(consumer, index)
            for i in range(300):
                await all_blocked()
                await queue.put(i)
            await queue.join()
            tg.cancel_scope.cancel()
        await queue.stop()
    assert counts == [100, 100, 100]


@pytest.mark.plan("R2-10")
async def test_parked_get_is_served_before_idle_workers() -> None:
    got: list[int] = []
    handled: list[int] = []

    async def work(item: int) -> None:
        handled.append(item)

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            await queue.start_workers(work, 2)
            await all_blocked()
            tg.start_soon(get_one, queue, got)
            await all_blocked()
            await queue.put(1)
            await all_blocked()
            await queue.put(2)
    assert (got, handled) == ([1], [2])


async def test_a_woken_producer_beaten_to_the_slot_keeps_its_place() -> None:
    """Regression: producers P0, P1, P2 wait on a full queue, in that order. An
    item is taken and P0 woken, but a newcomer's put takes the free slot first:
    P0 must not lose its place to P1 and P2."""
    queue: BoundedQueue[int] = BoundedQueue(maxsize=1)
    accepted: list[str] = []

    async def producer(name: str) -> None:
        await queue.put(0)
        accepted.append(name)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.put(-1)  # full
            for name in ["P0", "P1", "P2"]:
                tg.start_soon(producer, name)
                await all_blocked()
            await queue.get()  # room: P0 is woken
            queue.task_done()
            await queue.put(-2)  # the newcomer: fast path, no yield
            for _ in range(3):
                await all_blocked()
                await queue.get()
                queue.task_done()
            await all_blocked()
            tg.cancel_scope.cancel()
        await queue.stop()
    assert accepted == ["P0", "P1", "P2"]


async def test_a_woken_getter_beaten_to_the_item_keeps_its_place() -> None:
    """Regression: G0, G1, G2 wait in get(), in that order. An item arrives and
    G0 is woken, but a newcomer's get() takes it first: G0 must not lose its
    place."""
    queue: BoundedQueue[int] = BoundedQueue()
    served: list[str] = []

    async def getter(name: str) -> None:
        await queue.get()
        served.append(name)
        queue.task_done()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            for name in ["G0", "G1", "G2"]:
                tg.start_soon(getter, name)
                await all_blocked()
            await queue.put(1)  # wakes G0
            await queue.get()  # the newcomer: fast path, no yield
            queue.task_done()
            for i in range(3):
                await all_blocked()
                await queue.put(2 + i)
            await all_blocked()
            tg.cancel_scope.cancel()
        await queue.stop()
    assert served == ["G0", "G1", "G2"], served


# -- idle workers: one woken per item, and it wakes the rest ---------------------------


async def test_items_put_while_a_worker_is_busy_all_start_at_once() -> None:
    """Idle workers are woken one at a time while another is busy, and the one
    woken wakes the rest: a burst still starts every item at once."""
    gate = anyio.Event()
    running = 0

    async def work(item: int) -> None:
        nonlocal running
        running += 1
        await gate.wait()

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int]() as queue:
            await queue.start_workers(work, 20)
            await queue.put(0)
            await anyio.wait_all_tasks_blocked()
            assert running == 1  # busy until the gate opens
            for i in range(1, 11):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()
            assert running == 11
            assert queue.size == 0
            gate.set()
    assert queue.metrics["processed"] == 11


async def test_a_burst_is_passed_on_when_the_worker_woken_for_it_is_cancelled() -> None:
    gate = anyio.Event()
    started: list[int] = []

    async def work(item: int) -> None:
        started.append(item)
        await gate.wait()

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int]() as queue:
            await queue.start_workers(work, 1)
            await queue.put(0)  # keeps that worker busy
            await anyio.wait_all_tasks_blocked()
            await queue.start_workers(work, 3)
            async with anyio.create_task_group() as tg:
                # Parked last, so woken first (idle workers are woken LIFO).
                await queue.start_workers(work, 1, task_group=tg)
                await anyio.wait_all_tasks_blocked()
                for i in range(1, 4):
                    await queue.put(i)
                tg.cancel_scope.cancel()  # before the woken worker runs
            await anyio.wait_all_tasks_blocked()
            # Every item started (on asyncio the cancelled worker may have taken
            # one first: it is then listed as unprocessed).
            assert set(started) == {0, 1, 2, 3}
            gate.set()
    assert queue.metrics["processed"] + len(queue.unprocessed) == 4
