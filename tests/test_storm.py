"""Storms and a soak: cancellation at random moments never loses or repeats an item.

The storm runs many seeds on every backend: producers whose scopes expire at random
(tiny put timeouts, short move_on_after deadlines) while workers drain the queue.
The soak pushes 200,000 items through 200 workers with 1% failures while producers
are cancelled at random. Both check, item by item, that every item for which put
returned True was handled exactly once and that no other item was handled at all.
"""

from __future__ import annotations

import random
from collections import Counter

import anyio
import pytest

from sluicegate import BoundedQueue, QueueStatus


class Ledger:
    """What producers were told, and what workers did, per item."""

    def __init__(self) -> None:
        self.accepted: set[int] = set()
        self.refused: set[int] = set()  # put returned False
        self.raised: set[int] = set()  # put raised (cancelled): never accepted
        self.handled: Counter[int] = Counter()
        self.failed: set[int] = set()

    def record(self, item: int, outcome: bool | None) -> None:
        """What put answered: True, False, or None when it raised."""
        if outcome is True:
            self.accepted.add(item)
        elif outcome is False:
            self.refused.add(item)
        else:
            self.raised.add(item)

    def check(self, queue: BoundedQueue[int]) -> None:
        m = queue.metrics
        assert queue.status is QueueStatus.STOPPED
        assert queue.worker_count == 0
        assert m["in_flight"] == 0
        assert m["enqueued"] == len(self.accepted)
        repeated = [item for item, n in self.handled.items() if n > 1]
        assert repeated == [], "handled more than once"
        handled = set(self.handled)
        assert handled <= self.accepted, "handled an item that was never accepted"
        unprocessed = queue.unprocessed
        assert len(unprocessed) == len(set(unprocessed))
        assert handled.isdisjoint(unprocessed)
        assert handled | set(unprocessed) == self.accepted, "an accepted item vanished"
        assert m["processed"] == len(handled)
        assert m["errors"] == len(self.failed)
        assert m["enqueued"] == m["processed"] + len(unprocessed)


async def storm(seed: int, producers: int = 30, items_each: int = 30) -> Ledger:
    rng = random.Random(seed)
    ledger = Ledger()
    queue: BoundedQueue[int] = BoundedQueue(maxsize=rng.choice([1, 2, 4, 8]))
    deadlines = [0, 1e-6, 1e-5, 1e-4, 1e-3, None]

    async def work(item: int) -> None:
        for _ in range(rng.randrange(3)):
            await anyio.lowlevel.checkpoint()
        ledger.handled[item] += 1

    async def producer(first: int) -> None:
        for item in range(first, first + items_each):
            outcome = None
            with anyio.move_on_after(rng.choice(deadlines)):
                outcome = await queue.put(item, timeout=rng.choice(deadlines))
            ledger.record(item, outcome)

    with anyio.fail_after(30):
        async with queue:
            await queue.start_workers(work, rng.choice([1, 3, 8]))
            async with anyio.create_task_group() as tg:
                for p in range(producers):
                    tg.start_soon(producer, p * items_each)
    return ledger


@pytest.mark.parametrize("seed", range(25))
async def test_storm_of_expiring_producers(seed: int) -> None:
    ledger = await storm(seed)
    # Every item got exactly one answer, and nothing was lost or repeated.
    assert len(ledger.accepted) + len(ledger.refused) + len(ledger.raised) == 900
    assert set(ledger.handled) == ledger.accepted


async def test_storm_with_consumers_cancelled_at_random() -> None:
    """get() callers whose scopes expire at random take nothing they don't return."""
    rng = random.Random(99)
    queue: BoundedQueue[int] = BoundedQueue(maxsize=4, timeout=None)
    got: Counter[int] = Counter()
    accepted: set[int] = set()

    async def consumer() -> None:
        for _ in range(200):
            with anyio.move_on_after(rng.choice([0, 1e-6, 1e-4, None])):
                item = await queue.get()
                got[item] += 1
                queue.task_done()

    async def producer(first: int) -> None:
        for item in range(first, first + 100):
            if await queue.put(item):
                accepted.add(item)

    with anyio.fail_after(30):
        await queue.start()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(consumer)
            async with anyio.create_task_group() as producers:
                for p in range(4):
                    producers.start_soon(producer, p * 100)
            await queue.join()
            tg.cancel_scope.cancel()
        await queue.stop()
    assert all(n == 1 for n in got.values())
    assert set(got) == accepted
    assert queue.metrics["processed"] == len(accepted)


@pytest.mark.slow
async def test_soak_200k_items_200_workers() -> None:
    rng = random.Random(2026)
    ledger = Ledger()
    total, producers = 200_000, 20
    per_producer = total // producers
    queue: BoundedQueue[int] = BoundedQueue(maxsize=512, concurrency_limit=150)
    scopes: dict[int, anyio.CancelScope] = {}

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        if rng.random() < 0.002:  # chaos: cancel a producer wherever it is
            scopes[rng.randrange(producers)].cancel()
        if rng.random() < 0.01:
            ledger.failed.add(item)
            raise RuntimeError(f"item {item} failed")
        ledger.handled[item] += 1

    async def on_error(exc: Exception, item: int) -> None:
        ledger.handled[item] += 1

    async def producer(p: int) -> None:
        for item in range(p * per_producer, (p + 1) * per_producer):
            outcome = None
            with anyio.CancelScope() as scopes[p]:
                outcome = await queue.put(item, timeout=rng.choice([0.001, None]))
            ledger.record(item, outcome)

    with anyio.fail_after(120):
        async with queue:
            await queue.start_workers(work, 200, on_error)
            async with anyio.create_task_group() as feeding:
                for p in range(producers):
                    scopes[p] = anyio.CancelScope()
                    feeding.start_soon(producer, p)
    ledger.check(queue)
    answered = len(ledger.accepted) + len(ledger.refused) + len(ledger.raised)
    assert answered == total
    assert len(ledger.accepted) > total // 2, "the soak must move most items"
    assert ledger.raised, "chaos must have cancelled some puts"
    assert queue.unprocessed == []
