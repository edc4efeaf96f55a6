"""Attacks on the delay line: items waiting out a retry's backoff.

- cancelled at every suspension: puts, then join, stop, stop(timeout=0) or
  stop_workers, while items wait in the delay line and a rate limiter is held
  (RetryAfter), beside the workers and inside ``async with``;
- the task that releases retries dies with its task group while workers of
  other groups run on (a bug these attacks found);
- restart after a stop that listed delayed items;
- 100,000 items in the delay line at once, released or listed.

The books are checked at every suspension (tests/watch.py).
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import pytest
from anyio.abc import TaskGroup
from books import assert_books
from fake_clock import FakeClock, all_blocked
from support import delay_line_empty
from watch import Watch, assert_accounted, sweep, tasks, watching

from sluicegate import (
    BoundedQueue,
    QueueStateError,
    QueueStatus,
    RateLimiter,
    RetryAfter,
    RetryPolicy,
)

GUARD = 10
#: Backoffs of 0.2 s then 0.4 s: several turns of the asyncio watcher's clock.
POLICY = RetryPolicy(attempts=3, backoff=0.2, jitter=False)


pytestmark = pytest.mark.usefixtures("quiet_worker_errors")  # items fail on purpose


class Plan:
    """A worker function and error handler with outcomes known by item.

    By ``item % 5``: 0 fails once, 1 fails twice, 2 fails every time (its
    final failure goes to the handler), 3 succeeds, 4 raises RetryAfter(0.3)
    once (a hold on the rate limiter). Each call takes ``item % 3``
    checkpoints first. `done` counts final outcomes: a success, or a final
    failure once the handler has run.
    """

    FAILS = (1, 2, 99, 0, 1)

    def __init__(self) -> None:
        self.calls: Counter[int] = Counter()
        self.done: Counter[int] = Counter()

    async def work(self, item: int) -> None:
        self.calls[item] += 1
        for _ in range(item % 3):
            await anyio.lowlevel.checkpoint()
        if self.calls[item] <= self.FAILS[item % 5]:
            if item % 5 == 4:
                raise RetryAfter(0.3)
            raise KeyError(item)
        self.done[item] += 1  # no await after it: cannot be cancelled now

    async def on_error(self, exc: Exception, item: int) -> None:
        await anyio.lowlevel.checkpoint()
        self.done[item] += 1


async def put_all(queue: BoundedQueue[int], items: range, accepted: set[int]) -> None:
    for item in items:
        if await queue.put(item):
            accepted.add(item)


def limiter_for(watch: Watch) -> RateLimiter:
    return RateLimiter(50, 1, burst=5, clock=watch.clock)


# -- cancelled at every suspension, items delayed --------------------------------

CALLS: dict[str, Callable[[BoundedQueue[int]], Awaitable[None]]] = {
    "join": lambda queue: queue.join(),
    "stop": lambda queue: queue.stop(),
    # (A timeout > 0 would run on the loop's real clock on asyncio.)
    "stop(timeout=0)": lambda queue: queue.stop(timeout=0),
    "stop_workers": lambda queue: queue.stop_workers(),
}


async def run_on(
    queue: BoundedQueue[int],
    plan: Plan,
    accepted: set[int],
    limiter: RateLimiter,
    task_group: TaskGroup | None,
) -> None:
    """After the attack: the queue runs on (a stopped one starts again), takes
    new items and, stopped, has every item accounted for."""
    if queue.status is not QueueStatus.PROCESSING:
        await queue.stop()  # a stop cut short finishes as a stop does
        assert queue.status is QueueStatus.STOPPED
        await queue.start()
    await queue.start_workers(
        plan.work,
        2,
        plan.on_error,
        task_group=task_group,
        retry=POLICY,
        rate_limiter=limiter,
    )
    await put_all(queue, range(100, 104), accepted)
    await queue.join()
    await queue.stop()


@pytest.mark.parametrize("inside", [False, True], ids=["beside", "async-with"])
@pytest.mark.parametrize("call", list(CALLS))
async def test_cancelled_at_every_suspension_with_items_delayed(
    call: str, inside: bool
) -> None:
    """Ten items through a queue of four, most failing and retried after a
    backoff, one holding the rate limiter; puts then ``call``, cancelled at
    each suspension. Every accepted item ends processed or unprocessed, once;
    no task is left; the books balance at every suspension."""

    async def scenario(watch: Watch, n: int | None) -> None:
        plan = Plan()
        queue: BoundedQueue[int] = BoundedQueue(maxsize=4, clock=watch.clock)
        limiter = limiter_for(watch)
        watch.watch(queue)
        accepted: set[int] = set()
        before = tasks()

        async def attack(task_group: TaskGroup | None) -> None:
            await queue.start_workers(
                plan.work,
                2,
                plan.on_error,
                task_group=task_group,
                retry=POLICY,
                rate_limiter=limiter,
            )
            with watch.cancelled_at(n):
                await put_all(queue, range(10), accepted)
                await CALLS[call](queue)
            await run_on(queue, plan, accepted, limiter, task_group)

        if inside:
            async with queue:
                await attack(None)
        else:
            async with anyio.create_task_group() as tg:
                await queue.start()
                await attack(tg)
        assert tasks() == before
        assert_accounted(queue, accepted, plan.done)
        assert queue.delayed == 0

    await sweep(scenario)


async def test_stop_from_a_worker_while_items_are_delayed_lists_them() -> None:
    """A worker stops its own queue while other items wait for a retry, and
    its own item then fails: the delayed items and its item are listed as
    unprocessed, never retried, also once the queue is started again."""
    plan = Plan()
    clock = FakeClock()  # never moved: the retries stay delayed
    stopped = anyio.Event()

    async def work(item: int) -> None:
        if item == 99:
            await queue.stop()
            stopped.set()
            raise KeyError(item)  # retryable, but the queue has stopped
        await plan.work(item)

    queue: BoundedQueue[int] = BoundedQueue(maxsize=10, clock=clock)
    with anyio.fail_after(GUARD):
        async with watching(queue) as watch:
            async with anyio.create_task_group() as tg:
                await queue.start()
                await queue.start_workers(
                    work, 2, plan.on_error, task_group=tg, retry=POLICY
                )
                for item in (0, 1, 2):  # all fail their first call
                    await queue.put(item)
                await watch.settle()
                assert queue.delayed == 3
                await queue.put(99)
                await stopped.wait()
                await watch.settle()
            assert queue.status is QueueStatus.STOPPED
            assert sorted(queue.unprocessed) == [0, 1, 2, 99]
            assert queue.delayed == 0
            calls = Counter(plan.calls)
            async with anyio.create_task_group() as tg:
                await queue.start()
                await queue.start_workers(plan.work, 2, plan.on_error, task_group=tg)
                await queue.put(3)
                await queue.join()
                clock.advance(5)  # past every backoff: nothing comes back
                await watch.settle()
                await queue.stop()
    assert plan.calls - calls == Counter({3: 1})
    assert_accounted(queue, {0, 1, 2, 3, 99}, plan.done)


# -- the task that releases retries -----------------------------------------------


async def test_retries_are_released_after_the_releasing_tasks_group_is_cancelled() -> (
    None
):
    """Regression: without ``async with``, the task that releases retries runs
    beside the first workers, in their task group. Cancel that group while a
    worker of another group runs on: an item failing there was retried never
    (it stayed delayed, past its backoff, with an idle worker beside it)."""
    plan = Plan()
    with anyio.fail_after(GUARD):
        async with watching() as watch:
            queue: BoundedQueue[int] = BoundedQueue(clock=watch.clock)
            watch.watch(queue)
            async with anyio.create_task_group() as outer:
                await queue.start()
                async with anyio.create_task_group() as first:
                    await queue.start_workers(
                        plan.work, 1, task_group=first, retry=POLICY
                    )
                    await queue.start_workers(
                        plan.work, 1, task_group=outer, retry=POLICY
                    )
                    await watch.settle()
                    first.cancel_scope.cancel()
                assert queue.worker_count == 1
                await queue.put(0)  # fails once, then succeeds after 0.2 s
                await watch.sleep(2)
                assert queue.delayed == 0, "the retry was never released"
                await queue.join()
                await queue.stop()
    assert plan.calls[0] == 2
    assert_accounted(queue, {0}, plan.done)


async def test_item_timeouts_fire_after_the_releasing_tasks_group_is_cancelled() -> (
    None
):
    """On an injected clock item timeouts wait in the same delay line: the
    call of a worker in a surviving group is still cut short at its deadline
    once the task that kept them has died with its group."""
    clock = FakeClock()
    cut: list[int] = []
    failed: list[BaseException] = []

    async def hang(item: int) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cut.append(item)
            raise

    async def on_error(exc: Exception, item: int) -> None:
        failed.append(exc)

    queue: BoundedQueue[int] = BoundedQueue(clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as outer:
            await queue.start()
            async with anyio.create_task_group() as first:
                await queue.start_workers(hang, 1, task_group=first, item_timeout=1)
                await queue.start_workers(
                    hang, 1, on_error, task_group=outer, item_timeout=1
                )
                await all_blocked()
                first.cancel_scope.cancel()
            await queue.put(0)
            await all_blocked()
            clock.advance(2)  # past the deadline
            await all_blocked()
            assert cut == [0], "the call ran on past its item_timeout"
            await queue.join()
            await queue.stop()
    assert len(failed) == 1
    assert queue.metrics["processed"] == 1
    assert_books(queue)


# -- restart ---------------------------------------------------------------------


@pytest.mark.parametrize("inside", [False, True], ids=["beside", "async-with"])
async def test_restart_after_a_stop_that_listed_delayed_items(inside: bool) -> None:
    """Items delayed at a stop are listed after the buffered ones, in the order
    they fall due; started again, the queue releases the new run's retries
    (inside ``async with``, its block's task does), never the old ones."""
    calls: Counter[int] = Counter()
    done: Counter[int] = Counter()
    gate = anyio.Event()
    due = {0: 0.9, 1: 0.3, 2: 0.6}  # item -> its RetryAfter

    async def work(item: int) -> None:
        calls[item] += 1
        if item == 50:
            await gate.wait()
        elif calls[item] == 1:
            # A RetryAfter pauses the queue: the first three calls all start
            # (three workers) before the first of them raises.
            await anyio.lowlevel.checkpoint()
            raise RetryAfter(due.get(item, 0.5))
        done[item] += 1

    async def runs(
        watch: Watch, queue: BoundedQueue[int], task_group: TaskGroup | None
    ) -> None:
        await queue.start_workers(work, 3, task_group=task_group, retry=POLICY)
        for item in (0, 1, 2):
            await queue.put(item)
        await watch.settle()
        assert queue.delayed == 3
        await queue.put(50)  # the worker waits on it
        await queue.put(7)
        await queue.put(8)  # buffered
        await watch.settle()
        await queue.stop(timeout=0)
        # cancelled in flight, then buffered, then delayed in due order
        assert queue.unprocessed == [50, 7, 8, 1, 2, 0]
        await queue.start()
        await queue.start_workers(work, 1, task_group=task_group, retry=POLICY)
        await queue.put(20)  # fails once, retried in the new run
        await queue.join()
        await watch.sleep(2)
        await queue.stop()

    with anyio.fail_after(GUARD):
        async with watching() as watch:
            queue: BoundedQueue[int] = BoundedQueue(maxsize=10, clock=watch.clock)
            watch.watch(queue)
            if inside:
                async with queue:
                    await runs(watch, queue, None)
            else:
                async with anyio.create_task_group() as tg:
                    await queue.start()
                    await runs(watch, queue, tg)
    # (50 waited on the gate, if its worker took it before the stop)
    assert [calls[item] for item in (0, 1, 2, 7, 8, 20)] == [1, 1, 1, 0, 0, 2]
    assert done == Counter({20: 1})
    assert_accounted(queue, {0, 1, 2, 7, 8, 20, 50}, done)


async def test_a_start_at_every_suspension_of_an_async_with_block() -> None:
    """Regression: another task starts the queue at each suspension of an
    ``async with`` block, items delayed and running. Started while the block
    exits, after its stop (its task group still closing), the new run put the
    task that releases retries in that closing group: the block never exited
    (found by two maps on one queue, tests/test_attack_map.py). The new run
    is not the block's: it runs on after the block, until stopped."""

    async def scenario(watch: Watch, n: int | None) -> None:
        plan = Plan()
        queue: BoundedQueue[int] = BoundedQueue(maxsize=4, clock=watch.clock)
        watch.watch(queue)
        accepted: set[int] = set()
        before = tasks()

        async def start() -> None:
            with contextlib.suppress(QueueStateError):  # refused while STOPPING
                await queue.start()

        async with anyio.create_task_group() as tg:
            with watch.at(n, lambda: tg.start_soon(start)):
                async with queue:
                    await queue.start_workers(plan.work, 2, plan.on_error, retry=POLICY)
                    await put_all(queue, range(6), accepted)
        if queue.status is QueueStatus.PROCESSING:  # started again meanwhile
            async with anyio.create_task_group() as tg:
                await queue.start_workers(
                    plan.work, 2, plan.on_error, task_group=tg, retry=POLICY
                )
                await put_all(queue, range(10, 12), accepted)
                await queue.join()
                await queue.stop()
        assert tasks() == before
        assert_accounted(queue, accepted, plan.done)

    await sweep(scenario)


async def test_an_async_with_refused_by_a_stopping_queue_leaves_the_stop_alone() -> (
    None
):
    """Regression: a block entered while the queue stops (a stop waits for a
    busy worker) is refused, and its exit stopped the queue there and then:
    STOPPED, while the worker still ran its item."""
    release = anyio.Event()

    async def work(item: int) -> None:
        await release.wait()

    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, 1, task_group=tg)
            await queue.put(1)
            await all_blocked()  # the worker holds the item
            tg.start_soon(queue.stop)
            await all_blocked()
            assert queue.status is QueueStatus.STOPPING
            with pytest.raises(QueueStateError, match="stopping"):
                async with queue:
                    pass
            assert queue.status is QueueStatus.STOPPING
            release.set()
    assert queue.status is QueueStatus.STOPPED
    assert queue.metrics["processed"] == 1
    assert_books(queue)


# -- 100,000 items in the delay line --------------------------------------------

MANY = 100_000


@pytest.mark.parametrize("then", ["released", "stopped"])
async def test_a_hundred_thousand_items_in_the_delay_line(
    then: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every item fails its first call and waits out a jittered backoff, all
    at once in the delay line (they count against maxsize). Released, each
    runs once more, in the order they fell due; stopped, all are listed in
    that order. (The jitter is drawn from a seeded generator, so the test
    knows each item's due time: items fail in the order they were put.)"""
    monkeypatch.setattr(random, "random", random.Random(7).random)
    draws = random.Random(7)
    due = {item: draws.random() * 10 for item in range(MANY)}
    expected = sorted(range(MANY), key=lambda item: (due[item], item))
    clock = FakeClock()
    calls: Counter[int] = Counter()
    policy = RetryPolicy(attempts=2, backoff=10, max_backoff=10)
    order: list[int] = []

    async def work(item: int) -> None:
        calls[item] += 1
        if calls[item] == 1:
            raise KeyError(item)
        order.append(item)

    queue: BoundedQueue[int] = BoundedQueue(maxsize=MANY, clock=clock)
    with anyio.fail_after(60):
        async with queue:
            await queue.start_workers(work, 4, retry=policy)
            for item in range(MANY):
                queue.put_nowait(item)
            await all_blocked()
            assert queue.delayed == MANY
            assert queue.is_full
            assert_books(queue)
            if then == "released":
                for _ in range(10):
                    clock.advance(1)  # a tenth of them falls due each time
                    await all_blocked()
                    assert_books(queue)
                await queue.join()
            else:
                await queue.stop()
    assert_books(queue)
    assert queue.delayed == 0
    assert delay_line_empty(queue)  # nothing left behind in the line
    if then == "released":
        assert queue.metrics["processed"] == MANY
        assert order == expected
        assert queue.unprocessed == []
    else:
        assert queue.metrics["processed"] == 0
        assert queue.unprocessed == expected
        assert queue.metrics["retries"] == MANY
