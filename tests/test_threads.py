"""Putting items from other threads, through AnyIO's from_thread bridges.

A queue belongs to the event loop that runs it and is not thread-safe; other
threads reach it through `anyio.from_thread.run` (threads started by
`anyio.to_thread.run_sync`) or a `BlockingPortal` (any thread).
"""

from __future__ import annotations

import threading
from collections import Counter

import anyio
import anyio.from_thread
import anyio.to_thread

from sluicegate import BoundedQueue, QueueStateError


async def test_put_from_a_worker_thread_with_from_thread_run() -> None:
    handled: Counter[int] = Counter()
    answers: list[bool] = []

    async def work(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        handled[item] += 1

    def produce_in_thread() -> None:
        for item in range(200):
            answers.append(anyio.from_thread.run(queue.put, item, None))

    queue: BoundedQueue[int] = BoundedQueue(maxsize=4)
    async with queue:
        await queue.start_workers(work, 3)
        await anyio.to_thread.run_sync(produce_in_thread)
    assert answers == [True] * 200
    assert handled == Counter(range(200))
    assert queue.metrics["processed"] == 200


async def test_put_from_a_plain_thread_through_a_blocking_portal() -> None:
    handled: list[int] = []
    errors: list[BaseException] = []

    async def work(item: int) -> None:
        handled.append(item)

    queue: BoundedQueue[int] = BoundedQueue(maxsize=2)
    async with queue, anyio.from_thread.BlockingPortal() as portal:
        await queue.start_workers(work, 2)

        def produce() -> None:
            try:
                for item in range(50):
                    portal.call(queue.put, item, None)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=produce) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join)
    assert errors == []
    assert sorted(handled) == sorted(list(range(50)) * 3)


async def test_put_from_a_thread_after_stop_gets_the_state_error() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.stop()
    caught: list[BaseException] = []

    def produce() -> None:
        try:
            anyio.from_thread.run(queue.put, 1)
        except QueueStateError as exc:
            caught.append(exc)

    await anyio.to_thread.run_sync(produce)
    assert len(caught) == 1
    assert "stopped" in str(caught[0])
