"""Storms: tasks cancelled or timed out at random lose and repeat nothing.

Against the queue, its stops and the rate limiter: no item is lost or repeated,
every bound holds, and nothing is left waiting. The storms of producers run
many seeds on every backend: producers whose scopes expire at random (tiny put
timeouts, short move_on_after deadlines) while workers drain the queue. The
soak pushes 200,000 items through 200 workers with 1% failures while producers
are cancelled at random. Both check, item by item, that every item for which
put returned True was handled exactly once and that no other item was handled.
"""

from __future__ import annotations

import contextlib
import random
from bisect import bisect_right
from collections import Counter

import anyio
import pytest
from fake_clock import FakeClock, all_blocked, max_in_window
from support import (
    GUARD,
    SEEDS,
    assert_books,
    cancel_at,
    check_limiter_free,
    check_line_compact,
    check_nothing_lost,
    in_virtual_time,
    limiter_line,
    lost_wake,
)

from sluicegate import (
    BoundedQueue,
    QueueStateError,
    QueueStatus,
    RateLimiter,
    WorkQueue,
)
from sluicegate._workers import WorkerPool

# -- producers expiring at random, consumers cancelled at random, and a soak -----------


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


# -- puts and gets expiring while the queue restarts and its limit changes -------------


DEADLINES: list[float | None] = [0, 1e-6, 1e-4, 5e-4, 1e-3, None]


@pytest.mark.usefixtures("quiet_worker_errors")
@pytest.mark.parametrize("seed", SEEDS)
async def test_storm_of_expiring_puts_and_gets_with_restarts_and_limit_changes(
    seed: int,
) -> None:
    """Producers and get() callers give up at random deadlines while the queue is
    restarted and its limit changed: no item is lost or repeated, the limit holds,
    and whenever everything is quiet no buffered item waits for a parked consumer.
    """
    rng = random.Random(seed)
    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=rng.choice([1, 2, 4]), concurrency_limit=rng.choice([None, 1, 2, 3])
    )
    accepted: set[int] = set()
    handled: Counter[int] = Counter()
    over_limit: list[tuple[int, int]] = []
    lost_wakes: list[str] = []
    running = 0
    next_item = 0
    gate = [anyio.Event()]  # closed to let the queue settle
    gate[0].set()

    async def work(item: int) -> None:
        nonlocal running
        limit = queue.concurrency_limit
        if limit is not None and running >= limit:
            over_limit.append((running, limit))
        running += 1
        try:
            for _ in range(rng.randrange(3)):
                await anyio.sleep(rng.choice([0, 1e-4]))
            handled[item] += 1
            assert_books(queue)
            if rng.random() < 0.1:
                raise KeyError(item)
        finally:
            running -= 1

    async def producer() -> None:
        nonlocal next_item
        while True:
            await gate[0].wait()
            item = next_item
            next_item += 1
            try:
                with anyio.move_on_after(rng.choice(DEADLINES)):
                    if await queue.put(item, timeout=rng.choice(DEADLINES)):
                        accepted.add(item)
            except QueueStateError:
                await anyio.sleep(1e-4)
            assert_books(queue)
            await anyio.sleep(1e-4)

    async def getter() -> None:
        while True:
            await gate[0].wait()
            try:
                with anyio.move_on_after(rng.choice(DEADLINES)):
                    item = await queue.get()
                    handled[item] += 1
                    await anyio.sleep(rng.choice([0, 1e-4]))
                    queue.task_done()
            except QueueStateError:
                await anyio.sleep(1e-4)
            assert_books(queue)
            await anyio.sleep(1e-4)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, rng.randint(1, 4), task_group=tg)
            for _ in range(rng.randint(1, 4)):
                tg.start_soon(producer)
            for _ in range(rng.randint(0, 3)):
                tg.start_soon(getter)
            for step in range(150):
                await anyio.sleep(rng.choice([1e-4, 5e-4]))
                assert_books(queue)
                r = rng.random()
                if r < 0.25:
                    queue.concurrency_limit = rng.choice([None, 1, 2, 3])
                elif r < 0.3:
                    await queue.stop(timeout=rng.choice([0, 1e-4, None]))
                    assert_books(queue)
                    assert queue.worker_count == 0
                    await queue.start()
                    await queue.start_workers(work, rng.randint(1, 4), task_group=tg)
                elif r < 0.35:
                    gate[0] = anyio.Event()
                    await anyio.sleep(0.002)  # past every deadline in DEADLINES
                    await all_blocked()
                    why = lost_wake(queue)
                    gate[0].set()
                    if why:
                        lost_wakes.append(f"step {step}: {why}")
            tg.cancel_scope.cancel()
        await queue.stop()
    assert lost_wakes == []
    assert over_limit == []
    check_nothing_lost(queue, accepted, handled)


@pytest.mark.parametrize("eager", [None, 2])
@pytest.mark.parametrize("seed", SEEDS)
async def test_bursts_to_many_workers_woken_a_few_at_a_time_leave_none_waiting(
    seed: int, eager: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bursts of items reach many idle workers while others are busy (for a turn
    or held for long), groups of workers are cancelled at random (some just
    woken), and the limit changes: whenever everything is quiet, no buffered item
    waits while an idle worker (parked, or in reserve) could take it; nothing is
    lost or repeated. With ``eager=2`` every worker after a group's second is
    held in reserve, so that workers are started for items all the while."""
    if eager is not None:
        monkeypatch.setattr(WorkerPool, "EAGER", eager)
    rng = random.Random(seed)
    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=rng.choice([4, 16, 64]), concurrency_limit=rng.choice([None, 3, 8])
    )
    accepted: set[int] = set()
    handled: Counter[int] = Counter()
    lost_wakes: list[str] = []
    holds: list[anyio.Event] = []
    next_item = 0

    async def work(item: int) -> None:
        if rng.random() < 0.05:
            hold = anyio.Event()
            holds.append(hold)
            await hold.wait()  # busy for long, holding its slot
        for _ in range(rng.randrange(3)):
            await anyio.lowlevel.checkpoint()
        handled[item] += 1  # done (no await after it: cannot be cancelled now)

    async def burst() -> None:
        nonlocal next_item
        for _ in range(rng.randint(1, 40)):
            item = next_item
            next_item += 1
            try:
                if await queue.put(item):
                    accepted.add(item)
            except QueueStateError:
                return  # stopped at the end, while this burst waited for room

    async def group(scope: anyio.CancelScope) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                try:
                    await queue.start_workers(work, rng.randint(1, 30), task_group=tg)
                except QueueStateError:
                    return  # started after the final stop

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            scopes: list[anyio.CancelScope] = []
            for step in range(120):
                r = rng.random()
                if r < 0.2 or not scopes:
                    scopes.append(anyio.CancelScope())
                    tg.start_soon(group, scopes[-1])
                elif r < 0.3:
                    scopes.pop(rng.randrange(len(scopes))).cancel()
                elif r < 0.4:
                    queue.concurrency_limit = rng.choice([None, 1, 3, 8])
                elif r < 0.5 and holds:
                    holds.pop(rng.randrange(len(holds))).set()
                else:
                    tg.start_soon(burst)
                if rng.random() < 0.3:
                    await all_blocked()
                    why = lost_wake(queue)
                    if why:
                        lost_wakes.append(f"step {step}: {why}")
                else:
                    await anyio.lowlevel.checkpoint()
                assert_books(queue)
            for hold in holds:
                hold.set()
            await queue.stop()
            tg.cancel_scope.cancel()
    assert lost_wakes == []
    check_nothing_lost(queue, accepted, handled)


# -- a storm of stops ------------------------------------------------------------------


STOP_TIMEOUTS: list[float | None] = [None, 0, 1e-4, 1e-3]


@pytest.mark.parametrize("seed", range(10))
async def test_concurrent_stops_from_workers_handlers_and_outside_lose_nothing(
    seed: int,
) -> None:
    """stop and stop_workers, with and without timeouts, some cancelled, called
    at once by workers, error handlers and outside tasks while producers put."""
    rng = random.Random(seed)
    queue: BoundedQueue[int] = BoundedQueue(maxsize=rng.choice([2, 8]))
    handled: Counter[int] = Counter()
    accepted: set[int] = set()
    ids = iter(range(10**6))

    async def call_stop() -> None:
        timeout = rng.choice(STOP_TIMEOUTS)
        stop = rng.choice([queue.stop, queue.stop, queue.stop_workers])
        with anyio.move_on_after(rng.choice([None, None, 0, 1e-4])):
            await stop(timeout)

    async def work(item: int) -> None:
        r = rng.random()
        for _ in range(rng.randrange(3)):
            await anyio.sleep(rng.choice([0, 1e-4]))
        if r < 0.1:
            await call_stop()
        elif r < 0.2:
            raise KeyError(item)
        handled[item] += 1

    async def on_error(exc: Exception, item: int) -> None:
        if rng.random() < 0.5:
            await call_stop()
        handled[item] += 1  # not reached if the stop cancels the handler

    async def producer() -> None:
        for _ in range(rng.randint(5, 30)):
            item = next(ids)
            try:
                if await queue.put(item, timeout=rng.choice([None, 0, 1e-4])):
                    accepted.add(item)
            except QueueStateError:
                return

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, rng.randint(1, 5), on_error, task_group=tg)
            for _ in range(rng.randint(1, 3)):
                tg.start_soon(producer)
            for _ in range(rng.randint(0, 3)):
                await anyio.sleep(rng.choice([0, 1e-4, 5e-4]))
                tg.start_soon(call_stop)
            await anyio.sleep(0.002)
            # stop_workers alone leaves producers waiting on a full queue: a real
            # stop ends them.
            await queue.stop()
    check_nothing_lost(queue, accepted, handled)


# -- the rate limiter's bound under storms ---------------------------------------------


def max_tokens_in_window(grants: list[tuple[float, float]], window: float) -> float:
    """The most tokens granted in any closed window of ``window`` seconds."""
    grants = sorted(grants)
    times = [t for t, _ in grants]
    return max(
        (
            sum(n for _, n in grants[i : bisect_right(times, t + window + 1e-9)])
            for i, t in enumerate(times)
        ),
        default=0.0,
    )


@pytest.mark.parametrize("seed", SEEDS)
async def test_weighted_acquires_with_cancellation_keep_the_bound_and_fifo(
    seed: int,
) -> None:
    """Waiters of random weights and patience, and acquire_nowait calls: in every
    window at most burst + rate * window / period tokens, served in arrival
    order."""
    rng = random.Random(seed)
    clock = FakeClock()
    rate, period, burst = rng.choice([(10, 1, 3), (2, 0.5, 4.5), (1, 1, 1), (7, 2, 7)])
    limiter = RateLimiter(rate, period, burst=burst, clock=clock)
    grants: list[tuple[float, float]] = []
    arrivals: list[int] = []
    served: list[int] = []

    async def waiter(i: int, tokens: float, patience: float | None) -> None:
        async with anyio.create_task_group() as tg:
            if patience is not None:
                deadline = clock.current_time() + patience
                tg.start_soon(cancel_at, clock, deadline, tg.cancel_scope)
            arrivals.append(i)
            await limiter.acquire(tokens)
            grants.append((clock.current_time(), tokens))
            served.append(i)
            tg.cancel_scope.cancel()

    async def arrive_and_wait() -> None:
        async with anyio.create_task_group() as waiters:
            for i in range(120):
                tokens = rng.choice([1, 1, 0.5, min(burst, 2), burst, min(burst, 1.7)])
                if rng.random() < 0.15:
                    with contextlib.suppress(anyio.WouldBlock):
                        limiter.acquire_nowait(tokens)
                        grants.append((clock.current_time(), tokens))
                else:
                    patience = rng.choice([None, rng.uniform(0, 2), 0.0, 1e-9])
                    waiters.start_soon(waiter, i, tokens, patience)
                for _ in range(rng.choice([0, 1, 5])):
                    await anyio.lowlevel.checkpoint()
                pause = rng.choice([0, 0.01, 0.2])
                await clock.sleep_until(clock.current_time() + pause)

    with anyio.fail_after(GUARD):
        await in_virtual_time(clock, arrive_and_wait)
    for window in (0, 0.01, 0.1, 0.5, 1, 3, 10):
        bound = burst + rate * window / period
        assert max_tokens_in_window(grants, window) <= bound + 1e-6, window
    position = {i: n for n, i in enumerate(arrivals)}
    assert served == sorted(served, key=position.__getitem__)
    check_limiter_free(limiter)


async def test_a_limiter_shared_by_three_queues_keeps_its_bound_through_a_stop() -> (
    None
):
    clock = FakeClock()
    limiter = RateLimiter(20, 1, burst=5, clock=clock)
    starts: list[float] = []

    async def work(item: int) -> None:
        starts.append(clock.current_time())

    queues = [WorkQueue[int](maxsize=3, rate_limiter=limiter) for _ in range(3)]

    async def batch(wq: WorkQueue[int]) -> None:
        with contextlib.suppress(QueueStateError):  # queues[1] is stopped
            await wq.batch_process(range(40), work, 3)

    async def run_batches() -> None:
        async with anyio.create_task_group() as batches:
            for wq in queues:
                batches.start_soon(batch, wq)
            await clock.sleep_until(1.0)
            await queues[1].stop(timeout=0)

    with anyio.fail_after(GUARD):
        await in_virtual_time(clock, run_batches)
    for window in (0, 0.1, 0.5, 1, 2):
        assert max_in_window(starts, window) <= 5 + 20 * window + 1e-6, window
    for wq in queues:
        assert_books(wq.queue)
    check_limiter_free(limiter)


async def test_many_cancelled_limiter_waiters_keep_its_line_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 1000, burst=1, clock=clock)
    limiter.acquire_nowait()  # empty for a long while: every acquire waits
    with anyio.fail_after(GUARD):
        for _ in range(6):
            async with anyio.create_task_group() as waiters:
                for _ in range(150):
                    waiters.start_soon(limiter.acquire)
                await all_blocked()
                waiters.cancel_scope.cancel()
            check_line_compact(limiter_line(limiter))
    check_limiter_free(limiter)
