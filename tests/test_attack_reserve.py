"""Attacks on the workers held in reserve (`WorkerPool.EAGER` is 2 here, so
that every worker after a call's second starts on demand, as items need it).

- a group of workers with a reserve cancelled at every suspension of a burst
  of puts, items retried: the surviving worker takes all that is left;
- an item put while a reserve's task group is being cancelled (a bug these
  attacks found: a worker was started there for it, and died with it);
- storms: bursts of puts, groups of workers with reserves started and
  cancelled, stop_workers, stop and restart, limit changes, retries; whenever
  all is quiet no buffered item waits while a worker could take it.

The books are checked at every suspension (tests/watch.py).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import Counter
from collections.abc import Iterator

import anyio
import pytest
from fake_clock import all_blocked
from support import (
    idle_workers_line,
    slot_count,
    slots_in_use,
    workers_in_reserve,
    workers_starting,
)
from watch import Watch, assert_accounted, sweep, tasks, watching

from sluicegate import BoundedQueue, QueueStateError, RetryPolicy
from sluicegate._workers import WorkerPool

GUARD = 10
POLICY = RetryPolicy(attempts=2, backoff=0.2, jitter=False)


@pytest.fixture(autouse=True)
def eager_two(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(WorkerPool, "EAGER", 2)
    logger = logging.getLogger("sluicegate")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # items fail on purpose
    yield
    logger.setLevel(level)


class Work:
    """Counts final outcomes; items with ``item % 4 == 1`` fail once (retried
    under POLICY), and each call takes ``item % 3`` checkpoints."""

    def __init__(self) -> None:
        self.calls: Counter[int] = Counter()
        self.done: Counter[int] = Counter()

    async def work(self, item: int) -> None:
        self.calls[item] += 1
        for _ in range(item % 3):
            await anyio.lowlevel.checkpoint()
        if item % 4 == 1 and self.calls[item] == 1:
            raise KeyError(item)
        self.done[item] += 1


def stranded(queue: BoundedQueue[int]) -> str | None:
    """Call when all is quiet: what a buffered item waits for in vain."""
    if workers_starting(queue):
        return f"{workers_starting(queue)} workers counted as on their way"
    if not queue.size:
        return None
    idle = idle_workers_line(queue).parked + workers_in_reserve(queue)
    if idle and slots_in_use(queue) < slot_count(queue):
        return f"size={queue.size} with {idle} idle workers (parked or in reserve)"
    return None


async def put_all(queue: BoundedQueue[int], items: range, accepted: set[int]) -> None:
    for item in items:
        with contextlib.suppress(QueueStateError):  # stopped meanwhile
            if await queue.put(item):
                accepted.add(item)


# -- a group with a reserve cancelled at every suspension ------------------------


async def test_a_group_with_a_reserve_cancelled_at_every_suspension() -> None:
    async def scenario(watch: Watch, n: int | None) -> None:
        work = Work()
        queue: BoundedQueue[int] = BoundedQueue(maxsize=6, clock=watch.clock)
        watch.watch(queue)
        accepted: set[int] = set()
        before = tasks()
        async with anyio.create_task_group() as outer:
            await queue.start()
            await queue.start_workers(work.work, 1, task_group=outer, retry=POLICY)
            with watch.cancelled_at(n):
                async with anyio.create_task_group() as doomed:
                    # two start at once, six on demand
                    await queue.start_workers(
                        work.work, 8, task_group=doomed, retry=POLICY
                    )
                    await put_all(queue, range(16), accepted)
                    await queue.join()
                    doomed.cancel_scope.cancel()
            assert queue.worker_count == 1  # the group's reserve went with it
            await put_all(queue, range(100, 104), accepted)
            await queue.join()  # the survivor takes all that is left
            await watch.settle()
            assert stranded(queue) is None
            await queue.stop()
        assert tasks() == before
        assert_accounted(queue, accepted, work.done)
        assert len(queue.unprocessed) <= 8  # at most one in each dying worker

    await sweep(scenario)


async def test_an_item_put_as_a_reserves_group_is_cancelled_waits_for_a_live_one() -> (
    None
):
    """Regression: all workers are busy and a group with workers in reserve
    is cancelled. An item put before its workers have gone started one of
    its reserve for it in the cancelled group, which took the item and died
    with it at its first await: listed unprocessed, while a live worker of
    another group would have taken it once free."""
    release = anyio.Event()
    done: list[str] = []

    async def work(item: str) -> None:
        await release.wait()
        done.append(item)

    queue: BoundedQueue[str] = BoundedQueue(maxsize=10)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as outer:
            await queue.start()
            await queue.start_workers(work, 1, task_group=outer)
            async with anyio.create_task_group() as doomed:
                await queue.start_workers(work, 6, task_group=doomed)  # 2 + 4
                for item in ("a", "b", "c"):
                    await queue.put(item)
                await all_blocked()  # every started worker holds an item
                assert workers_in_reserve(queue) == 4
                doomed.cancel_scope.cancel()
                await queue.put("d")  # at once: no worker idle
            assert queue.worker_count == 1
            release.set()
            await queue.join()
            await queue.stop()
    # Two of a, b, c were cancelled in flight with the group's workers; the
    # live worker ran the third, then d.
    assert len(queue.unprocessed) == 2
    assert "d" in done
    assert sorted(done + queue.unprocessed) == ["a", "b", "c", "d"]


# -- storms ----------------------------------------------------------------------


async def storm(watch: Watch, rng: random.Random) -> None:
    """One storm: see the module's docstring."""
    work = Work()
    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=rng.choice([4, 16]),
        concurrency_limit=rng.choice([None, 2, 5]),
        clock=watch.clock,
    )
    watch.watch(queue)
    accepted: set[int] = set()
    found: list[str] = []
    next_item = 0
    scopes: list[anyio.CancelScope] = []
    before = tasks()

    async def burst() -> None:
        nonlocal next_item
        start, next_item = next_item, next_item + rng.randint(1, 20)
        await put_all(queue, range(start, next_item), accepted)

    async def group(scope: anyio.CancelScope) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                with contextlib.suppress(QueueStateError):  # stopped meanwhile
                    await queue.start_workers(
                        work.work, rng.randint(1, 12), task_group=tg, retry=POLICY
                    )

    async with anyio.create_task_group() as tg:
        await queue.start()
        async with anyio.create_task_group() as bursts:
            for step in range(100):
                r = rng.random()
                if r < 0.2 or not scopes:
                    scopes.append(anyio.CancelScope())
                    tg.start_soon(group, scopes[-1])
                elif r < 0.3:
                    scopes.pop(rng.randrange(len(scopes))).cancel()
                elif r < 0.35:
                    await queue.stop_workers(rng.choice([None, 0]))
                    scopes.clear()
                elif r < 0.4:
                    await queue.stop(rng.choice([None, 0]))
                    scopes.clear()
                    await queue.start()
                elif r < 0.5:
                    queue.concurrency_limit = rng.choice([None, 1, 3, 8])
                else:
                    bursts.start_soon(burst)
                for _ in range(rng.choice([0, 1, 3])):
                    await anyio.lowlevel.checkpoint()
                if rng.random() < 0.2:
                    await watch.settle()
                    why = stranded(queue)
                    if why:
                        found.append(f"step {step}: {why}")
            bursts.cancel_scope.cancel()
        # The storm is over: a new group, and every accepted item (retries
        # included) is processed.
        tg.start_soon(group, anyio.CancelScope())
        await queue.join()
        await queue.stop()
        tg.cancel_scope.cancel()
    assert found == []
    assert tasks() == before
    assert_accounted(queue, accepted, work.done)


@pytest.mark.parametrize("seed", range(6))
async def test_storms_of_puts_and_cancelled_groups_with_reserves(seed: int) -> None:
    with anyio.fail_after(GUARD):
        async with watching() as watch:
            await storm(watch, random.Random(seed))
