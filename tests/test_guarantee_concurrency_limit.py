"""concurrency_limit caps the items handled at once, across all workers.

A change holds once the setter returns; a worker with no free slot stays
parked; items waiting for a retry hold no slot (docs/guarantees.rst,
"Concurrency limit").
"""

from __future__ import annotations

import random

import anyio
import pytest
from fake_clock import all_blocked
from support import (
    GUARD,
    SEEDS,
    getters_line,
    idle_workers_line,
    patch_worker_checkpoint,
    put_all,
    slots_in_use,
    virtual_time,
    workers_looking,
)

from sluicegate import BoundedQueue, RetryPolicy, WorkQueue
from sluicegate._waiters import WaiterLine

# -- the limit caps the items in hand --------------------------------------------------


async def test_concurrency_limit_caps_items_in_hand() -> None:
    running = 0
    peak = 0
    gate = anyio.Event()

    async def work(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](concurrency_limit=2) as queue:
            await queue.start_workers(work, 6)
            for i in range(10):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()
            assert running == 2
            queue.concurrency_limit = 4
            await anyio.wait_all_tasks_blocked()
            assert running == 4
            queue.concurrency_limit = 1
            gate.set()
    assert queue.metrics["processed"] == 10
    assert peak == 4


async def test_workers_without_a_free_slot_stay_parked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every slot taken, buffered items wake no idle worker: the workers
    holding the slots take them next (none is woken to find no slot)."""
    gate = anyio.Event()
    calls = 0
    woken: list[WaiterLine] = []
    wake_one = WaiterLine.wake_one

    def counting_wake_one(line: WaiterLine) -> bool:
        woken.append(line)
        return wake_one(line)

    async def work(item: int) -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    monkeypatch.setattr(WaiterLine, "wake_one", counting_wake_one)
    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](concurrency_limit=2) as queue:
            await queue.start_workers(work, 50)
            await anyio.wait_all_tasks_blocked()
            for i in range(10):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()
            assert calls == 2
            assert queue.size == 8
            assert woken.count(idle_workers_line(queue)) == 2  # one per slot, no more
            queue.concurrency_limit = 5  # three more slots: three more wake-ups
            await anyio.wait_all_tasks_blocked()
            assert calls == 5
            assert woken.count(idle_workers_line(queue)) == 5
            gate.set()
    assert queue.metrics["processed"] == 10


async def test_parked_get_is_woken_when_a_limited_worker_cannot_take() -> None:
    """A get() parked while every worker waits on the limiter still gets the item."""
    release = anyio.Event()
    got: list[str] = []

    async def work(item: str) -> None:
        await release.wait()

    queue: BoundedQueue[str] = BoundedQueue(concurrency_limit=1, timeout=None)
    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:

            async def consumer() -> None:
                got.append(await queue.get())
                queue.task_done()

            await queue.start_workers(work, 2)
            await anyio.wait_all_tasks_blocked()  # idle: [worker, worker]
            await queue.put("a")  # a worker takes it and holds the only token
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()  # parked get()
            await queue.put("b")  # the get() is served before the idle worker
            await anyio.wait_all_tasks_blocked()
            assert (queue.size, got) == (0, ["b"])
            release.set()
    assert queue.metrics["processed"] == 2


async def test_a_delayed_item_holds_no_worker() -> None:
    handled: list[tuple[int, float]] = []
    async with virtual_time() as clock:

        async def work(item: int) -> None:
            handled.append((item, clock.current_time()))
            if item == 0 and clock.current_time() == 0:
                raise ConnectionError

        policy = RetryPolicy(backoff=10.0, jitter=False)
        queue: WorkQueue[int] = WorkQueue(retry=policy, clock=clock)
        await queue.batch_process([0, 1, 2], work, num_workers=1)
    assert handled == [(0, 0.0), (1, 0.0), (2, 0.0), (0, 10.0)]


async def test_concurrency_limit_setter_validates() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    with pytest.raises(ValueError, match="concurrency_limit must be at least 1"):
        queue.concurrency_limit = 0
    queue.concurrency_limit = None
    assert queue.concurrency_limit is None


# -- a changed limit holds at once -----------------------------------------------------


async def test_lowered_limit_is_respected_by_idle_workers() -> None:
    running = 0
    peak_after = 0
    lowered = False
    release = anyio.Event()

    async def work(item: int) -> None:
        nonlocal running, peak_after
        running += 1
        if lowered:
            peak_after = max(peak_after, running)
        await release.wait()
        running -= 1

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](concurrency_limit=3) as queue:
            await queue.start_workers(work, 3)
            await anyio.wait_all_tasks_blocked()
            queue.concurrency_limit = 1
            lowered = True
            for i in range(3):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()
            assert running == 1
            release.set()
    assert peak_after == 1
    assert queue.metrics["processed"] == 3


@pytest.mark.plan("R2-6")
async def test_limit_raised_then_lowered_starts_no_extra_item() -> None:
    running = 0
    violations: list[tuple[int, int | None]] = []
    release = anyio.Event()
    queue: BoundedQueue[int] = BoundedQueue(concurrency_limit=1, timeout=None)

    async def work(item: int) -> None:
        nonlocal running
        limit = queue.concurrency_limit
        if limit is not None and running >= limit:
            violations.append((running, limit))
        running += 1
        await release.wait()
        running -= 1

    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 4)
            for i in range(8):
                await queue.put(i)
            await all_blocked()
            queue.concurrency_limit = 4
            queue.concurrency_limit = 1
            await all_blocked()
            assert running == 1
            release.set()
    assert violations == []
    assert queue.metrics["processed"] == 8


@pytest.mark.plan("R2-6")
async def test_limit_lowered_during_a_fairness_checkpoint() -> None:
    """A worker yielding after 64 items in a row checks the limit before the next."""
    running = 0
    violations: list[int] = []
    release = anyio.Event()
    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=1000, concurrency_limit=2, timeout=None
    )

    async def work(item: int) -> None:
        nonlocal running
        limit = queue.concurrency_limit
        assert limit is not None
        if running >= limit:
            violations.append(item)
        if item == 0:
            running += 1
            await release.wait()
            running -= 1

    async def lower_once_64_are_done() -> None:
        while queue.metrics["processed"] < 64:
            await anyio.lowlevel.checkpoint()
        queue.concurrency_limit = 1

    with anyio.fail_after(GUARD):
        async with queue, anyio.create_task_group() as tg:
            for i in range(1000):
                await queue.put(i)
            tg.start_soon(lower_once_64_are_done)
            await queue.start_workers(work, 2)
            await all_blocked()
            assert queue.size > 0  # the worker stopped taking items
            release.set()
    assert violations == []
    assert queue.metrics["processed"] == 1000


async def test_limit_lowered_while_a_worker_looks_still_serves_a_parked_get(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: a worker looks once more before parking (counted as on
    its way), the limit is lowered so it finds no slot, and an item is put
    meanwhile. The worker must pass the item on to the parked get() caller,
    not park beside it (here the busy item waits for the get() caller: a hang).
    """
    queue: BoundedQueue[str] = BoundedQueue(maxsize=10, concurrency_limit=2)
    hold = anyio.Event()  # the long item: set once the get() caller has one
    go = anyio.Event()
    got: list[str] = []
    checkpoint = anyio.lowlevel.checkpoint  # what the queue's module imported

    async def look() -> None:
        if workers_looking(queue) and queue.concurrency_limit == 2:
            # Exactly while the worker looks: lower the limit, put an item.
            queue.concurrency_limit = 1
            queue.put_nowait("x")
        await checkpoint()

    async def work(item: str) -> None:
        if item == "hold":
            await hold.wait()
        else:
            await go.wait()

    async def getter() -> None:
        got.append(await queue.get())
        queue.task_done()
        hold.set()

    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 2)
            await queue.put("hold")
            await queue.put("quick")
            await all_blocked()
            assert queue.size == 0
            async with anyio.create_task_group() as tg:
                tg.start_soon(getter)
                await all_blocked()  # the get() caller is parked
                patch_worker_checkpoint(monkeypatch, look)
                go.set()  # "quick" ends; its worker looks once more
    assert got == ["x"]
    assert queue.concurrency_limit == 1


@pytest.mark.parametrize("seed", SEEDS)
async def test_concurrency_limit_flipped_under_load_is_never_exceeded(
    seed: int,
) -> None:
    """The limit changes all the time, from outside and from inside workers: no
    item starts while as many as the current limit run, and once idle no token
    stays borrowed and no wake-up is left pending."""
    rng = random.Random(seed)
    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=50, concurrency_limit=rng.choice([None, 1, 3])
    )
    running = 0
    over_limit: list[tuple[int, int, int]] = []

    async def work(item: int) -> None:
        nonlocal running
        limit = queue.concurrency_limit
        if limit is not None and running >= limit:
            over_limit.append((item, running, limit))
        running += 1
        try:
            if rng.random() < 0.2:
                queue.concurrency_limit = rng.choice([None, 1, 2, 3, 5, 8])
            for _ in range(rng.randrange(4)):
                await anyio.sleep(rng.choice([0, 1e-4]))
        finally:
            running -= 1

    async def flipper() -> None:
        for _ in range(200):
            queue.concurrency_limit = rng.choice([None, 1, 1, 2, 3, 5, 8])
            for _ in range(rng.randrange(5)):
                await anyio.lowlevel.checkpoint()
            if rng.random() < 0.1:
                await anyio.sleep(1e-4)

    async def getter() -> None:
        while True:
            await queue.get()
            await anyio.lowlevel.checkpoint()
            queue.task_done()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, rng.randint(2, 12), task_group=tg)
            if rng.random() < 0.5:
                tg.start_soon(getter)
            async with anyio.create_task_group() as load:
                load.start_soon(put_all, queue, range(1000), set())
                load.start_soon(flipper)
            queue.concurrency_limit = rng.choice([None, 1, 4])
            await queue.join()
            await all_blocked()
            assert queue.size == 0
            assert idle_workers_line(queue).woken == 0
            assert getters_line(queue).woken == 0
            assert slots_in_use(queue) == 0
            tg.cancel_scope.cancel()
        await queue.stop()
    assert over_limit == []
    assert queue.metrics["processed"] == 1000


async def test_concurrency_limit_holds_across_a_restart_while_an_old_worker_runs() -> (
    None
):
    """Regression: a worker stops its queue and goes on with its item; the queue
    is started again (join returned on STOPPED) with a new worker, which must not
    run beside the old one under limit 1."""
    release = anyio.Event()
    running = 0
    over_limit: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue(concurrency_limit=1)

    async def work(item: int) -> None:
        nonlocal running
        if running >= 1:
            over_limit.append(item)
        running += 1
        try:
            if item == 0:
                await queue.stop()
                await release.wait()
            else:
                await anyio.lowlevel.checkpoint()
        finally:
            running -= 1

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, 1, task_group=tg)
            await queue.put(0)
            await queue.join()  # returns: the queue is STOPPED
            await queue.start()
            await queue.start_workers(work, 1, task_group=tg)
            await queue.put(1)
            await all_blocked()
            release.set()
            await queue.stop()
    assert over_limit == []
