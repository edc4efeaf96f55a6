"""Workers: start_workers, idle workers that park, and the reserve.

Of the workers one call asks for, the first `WorkerPool.EAGER` start at once
and the rest as items need them. test_storms.py's storm of bursts and cancelled
groups also runs with a reserve from the second worker on, so that the
on-demand start is exercised under cancellation, limit changes and stops.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import pytest
import trio
from fake_clock import all_blocked
from support import GUARD, assert_books, noop, workers_in_reserve, workers_starting

import sluicegate
from sluicegate import BoundedQueue, QueueStateError, QueueStatus, WorkQueue
from sluicegate._workers import WorkerPool

# -- start_workers ---------------------------------------------------------------------


@pytest.mark.plan("UT-12")
async def test_start_workers_creates_workers() -> None:
    async with BoundedQueue[int]() as queue:
        await queue.start_workers(noop, 3)
        assert queue.worker_count == 3
        await queue.start_workers(noop, 2)
        assert queue.worker_count == 5
    assert queue.worker_count == 0


@pytest.mark.plan("UT-13")
async def test_workers_process_all_items() -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(item)

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](maxsize=4, timeout=None) as queue:
            await queue.start_workers(work, 3)
            for i in range(50):
                assert await queue.put(i)
    assert sorted(seen) == list(range(50))
    assert queue.metrics["processed"] == 50
    assert queue.status is QueueStatus.STOPPED
    assert_books(queue)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((noop, 0), ValueError, "num_workers must be at least 1, got 0"),
        ((noop, -1), ValueError, "num_workers must be at least 1"),
        ((noop, True), TypeError, "num_workers must be an int"),
        ((noop, 2.0), TypeError, "num_workers must be an int"),
        ((42, 1), TypeError, "worker_func must be callable"),
        (("noop", 1), TypeError, "worker_func must be callable"),
        ((noop, 1, "log"), TypeError, "error_handler must be callable"),
    ],
)
async def test_start_workers_validates(
    args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    async with BoundedQueue[int]() as queue:
        with pytest.raises(error, match=match):
            await queue.start_workers(*args)
        assert queue.worker_count == 0


async def test_start_workers_without_task_group_explains_both_fixes() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    with pytest.raises(QueueStateError) as info:
        await queue.start_workers(noop, 1)
    assert "async with queue:" in str(info.value)
    assert "task_group=tg" in str(info.value)
    assert queue.worker_count == 0
    await queue.stop()


async def test_workers_in_the_callers_task_group() -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(item)

    queue: BoundedQueue[int] = BoundedQueue(maxsize=2, timeout=None)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, 2, task_group=tg)
            for i in range(20):
                await queue.put(i)
            await queue.join()
            assert sorted(seen) == list(range(20))
            await queue.stop()
            assert queue.worker_count == 0
    assert queue.status is QueueStatus.STOPPED
    assert_books(queue)


async def test_start_workers_in_a_closed_task_group_leaves_no_phantom() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    async with anyio.create_task_group() as closed:
        pass
    await queue.start()
    with pytest.raises(RuntimeError):
        await queue.start_workers(noop, 2, task_group=closed)
    assert queue.worker_count == 0
    with anyio.fail_after(GUARD):
        await queue.stop()


# -- idle workers park, they do not poll -----------------------------------------------


async def test_idle_workers_do_not_poll(anyio_backend_name: str) -> None:
    """While nothing is queued, no code of sluicegate runs and no timer is set."""
    resumed: list[str] = []
    # Every module of the package, wherever the worker loop lives.
    package = str(Path(sluicegate.__file__).parent) + os.sep

    def profile(frame: FrameType, event: str, arg: object) -> None:
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(package):
            resumed.append(f"{code.co_filename}:{code.co_name}")

    async with BoundedQueue[int]() as queue:
        await queue.start_workers(noop, 50)
        await queue.put(1)
        await queue.join()
        await anyio.wait_all_tasks_blocked()
        if anyio_backend_name == "trio":
            stats = trio.lowlevel.current_statistics()
            assert stats.seconds_to_next_deadline == math.inf
        sys.setprofile(profile)
        try:
            # On trio's mock clock this jumps ahead 1000 s; elsewhere it is a
            # short window in which a polling worker would have woken.
            await anyio.sleep(1000 if anyio_backend_name == "trio" else 0.05)
        finally:
            sys.setprofile(None)
        assert resumed == []
        assert queue.worker_count == 50


# -- the reserve: workers started only as items need them ------------------------------


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


@pytest.fixture
def eager_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WorkerPool, "EAGER", 2)


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
