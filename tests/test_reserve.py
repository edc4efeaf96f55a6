"""Workers held in reserve: of the workers one call asks for, the first
`WorkerPool.EAGER` start at once and the rest as items need them.

test_attacks.py's storm of bursts and cancelled groups also runs with a
reserve from the second worker on, so that the on-demand start is exercised
under cancellation, limit changes and stops.
"""

from __future__ import annotations

import anyio
import pytest
from fake_clock import all_blocked
from support import GUARD, workers_in_reserve, workers_starting

from sluicegate import BoundedQueue, QueueStatus, WorkQueue
from sluicegate._workers import WorkerPool

EAGER = WorkerPool.EAGER


def tasks() -> int:
    return len(anyio.get_running_tasks())


class Gate:
    """A worker function whose items all wait until ``needed`` are in progress
    at once: it can finish only if that many workers run together."""

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.running = 0
        self.most = 0
        self.done = 0
        self.all_in = anyio.Event()

    async def work(self, item: int) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running >= self.needed:
            self.all_in.set()
        await self.all_in.wait()
        self.running -= 1
        self.done += 1


async def test_thousands_of_workers_start_only_as_items_need_them() -> None:
    before = tasks()
    gate = Gate(needed=500)
    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](maxsize=1000) as queue:
            await queue.start_workers(gate.work, 1000)
            await all_blocked()
            # The eager ones, and the queue's task that releases retries.
            assert tasks() == before + EAGER + 1
            stats = queue.statistics()
            assert (stats.workers, stats.idle_workers) == (1000, 1000)
            assert queue.worker_count == 1000
            for i in range(500):
                await queue.put(i)  # each item needs a worker of its own
            await queue.join()
            assert gate.most == 500
            assert queue.worker_count == 1000
        assert queue.status is QueueStatus.STOPPED
    assert tasks() == before
    assert queue.metrics["processed"] == 500


async def test_items_buffered_before_the_workers_start_get_reserved_workers() -> None:
    gate = Gate(needed=200)
    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](maxsize=1000) as queue:
            for i in range(200):
                await queue.put(i)
            await queue.start_workers(gate.work, 300)
            await queue.join()
    assert gate.most == 200
    assert queue.metrics["processed"] == 200


async def test_a_concurrency_limit_starts_no_reserved_worker_it_cannot_use() -> None:
    before = tasks()
    gate = Gate(needed=10)
    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](maxsize=1000, concurrency_limit=10) as queue:
            await queue.start_workers(gate.work, 10_000)
            for i in range(1000):
                await queue.put(i)
            await queue.join()
            assert tasks() == before + EAGER + 1  # none from the reserve
            assert workers_in_reserve(queue) == 10_000 - EAGER
    assert gate.most == 10
    assert tasks() == before


async def test_stop_workers_ends_the_reserve_at_once() -> None:
    with anyio.fail_after(GUARD):
        async with BoundedQueue[int]() as queue:
            await queue.start_workers(Gate(1).work, 500)
            await queue.stop_workers()
            assert queue.worker_count == 0
            assert queue.statistics().idle_workers == 0
            await queue.put(1)
            gate = Gate(1)
            await queue.start_workers(gate.work, 100)
            await queue.join()
            assert gate.done == 1


async def test_a_reserve_whose_task_group_was_cancelled_is_withdrawn() -> None:
    """The reserve of workers spawned into a task group that was then cancelled
    is gone once its running workers have ended: no worker is started in a
    task group that is closing (it would never run)."""
    with anyio.fail_after(GUARD):
        async with BoundedQueue[int]() as queue:
            async with anyio.create_task_group() as tg:
                await queue.start_workers(Gate(1).work, 300, task_group=tg)
                await all_blocked()
                tg.cancel_scope.cancel()
            assert queue.worker_count == 0
            await queue.put(1)  # no worker to start: the item waits
            assert queue.size == 1
            gate = Gate(1)
            await queue.start_workers(gate.work, 2)
            await queue.join()
            assert gate.done == 1


async def test_a_batch_with_more_workers_than_eager_ends_them_all() -> None:
    before = tasks()
    gate = Gate(needed=300)
    queue = WorkQueue[int](maxsize=400)
    with anyio.fail_after(GUARD):
        await queue.batch_process(range(300), gate.work, num_workers=400)
    assert gate.most == 300
    assert queue.metrics["processed"] == 300
    assert queue.queue.worker_count == 0
    assert tasks() == before


async def test_a_map_with_more_workers_than_eager_ends_them_all() -> None:
    before = tasks()
    gate = Gate(needed=200)
    queue = WorkQueue[int](maxsize=200)
    with anyio.fail_after(GUARD):
        async with queue.map(gate.work, range(200), num_workers=250) as results:
            outcomes = [outcome async for outcome in results]
    assert len(outcomes) == 200
    assert gate.most == 200
    assert queue.queue.worker_count == 0
    assert tasks() == before


@pytest.fixture
def eager_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WorkerPool, "EAGER", 2)


@pytest.mark.parametrize("timeout", [None, 0])
async def test_stop_before_workers_started_from_reserve_have_run(
    eager_two: None, timeout: float | None
) -> None:
    """Workers started for items, stopped before they ran: every item is
    processed or listed, the queue stops, and started again it serves items."""
    done: list[int] = []

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        done.append(item)

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](maxsize=100) as queue:
            await queue.start_workers(work, 50)
            for i in range(20):
                queue.put_nowait(i)  # starts reserved workers, none has run
            assert workers_starting(queue) > 0
            await queue.stop(timeout)
            assert queue.status is QueueStatus.STOPPED
            assert sorted(done + queue.unprocessed) == list(range(20))
            await queue.start()
            await queue.start_workers(work, 50)
            for i in range(20, 40):
                await queue.put(i)
            await queue.join()
    assert sorted(done + queue.unprocessed) == list(range(40))
    assert set(range(20, 40)) <= set(done)


async def test_a_cancelled_block_with_workers_starting_from_reserve(
    eager_two: None,
) -> None:
    done: list[int] = []

    async def work(item: int) -> None:
        await anyio.sleep(1)
        done.append(item)

    queue = BoundedQueue[int](maxsize=100)
    with anyio.fail_after(GUARD):
        with anyio.CancelScope() as scope:
            async with queue:
                await queue.start_workers(work, 50)
                for i in range(30):
                    queue.put_nowait(i)
                scope.cancel()
                await anyio.lowlevel.checkpoint()
    assert queue.status is QueueStatus.STOPPED
    assert queue.worker_count == 0
    assert sorted(done + queue.unprocessed) == list(range(30))
