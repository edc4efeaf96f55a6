"""AnyIO memory object streams at both ends of a queue: items read from a receive
stream, outcomes sent into a send stream, and what closing either side does."""

from __future__ import annotations

import anyio
import pytest
from anyio import BrokenResourceError, create_memory_object_stream
from support import GUARD, assert_books

from sluicegate import BoundedQueue, Outcome, WorkQueue


async def double(n: int) -> int:
    await anyio.lowlevel.checkpoint()
    return 2 * n


async def test_map_reads_a_receive_stream_until_its_senders_close() -> None:
    send, receive = create_memory_object_stream[int](0)
    queue = WorkQueue[int](maxsize=4, concurrency_limit=3)

    async def produce() -> None:
        async with send:
            for n in range(200):
                await send.send(n)

    values: list[int] = []
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with receive, queue.map(double, receive) as results:
                async for outcome in results:
                    values.append(outcome.unwrap())
    assert sorted(values) == [2 * n for n in range(200)]
    assert queue.metrics["processed"] == 200
    assert_books(queue)


async def test_map_reads_lazily_so_senders_wait_while_the_queue_is_full() -> None:
    send, receive = create_memory_object_stream[int](0)
    queue = WorkQueue[int](maxsize=2, concurrency_limit=1)
    release = anyio.Event()
    sent = 0

    async def produce() -> None:
        nonlocal sent
        async with send:
            for n in range(100):
                await send.send(n)
                sent += 1

    async def held(n: int) -> int:
        await release.wait()
        return n

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with receive, queue.map(held, receive, window=4) as results:
                await anyio.wait_all_tasks_blocked()
                # The window (4 read, none yielded) bounds what was received.
                assert sent <= 4 + 1
                release.set()
                got = [outcome.unwrap() async for outcome in results]
    assert sorted(got) == list(range(100))


async def test_leaving_a_map_early_closes_its_receive_stream() -> None:
    send, receive = create_memory_object_stream[int](0)
    queue = WorkQueue[int](maxsize=4, concurrency_limit=2)
    broken: list[BaseException] = []
    sent = 0

    async def produce() -> None:
        nonlocal sent
        try:
            async with send:
                for n in range(1_000):
                    await send.send(n)
                    sent += 1
        except BrokenResourceError as exc:
            broken.append(exc)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with receive, queue.map(double, receive) as results:
                seen = 0
                async for _ in results:
                    seen += 1
                    if seen == 10:
                        break
    # The producer learnt at its next send that nobody reads any more.
    assert len(broken) == 1
    assert sent < 1_000
    m = queue.metrics
    assert m["enqueued"] == sent  # every item received was put ...
    assert m["processed"] + m["unprocessed"] == sent  # ... and is accounted for
    assert_books(queue)


async def test_a_cloned_receive_stream_stays_open_for_its_other_readers() -> None:
    send, receive = create_memory_object_stream[int](0)
    other = receive.clone()
    queue = WorkQueue[int](maxsize=4, concurrency_limit=2)

    async def produce() -> None:
        async with send:
            for n in range(20):
                await send.send(n)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with queue.map(double, receive) as results:
                async for _ in results:
                    break
            # The map closed its clone only: the rest still reaches `other`.
            async with other:
                rest = [n async for n in other]
    assert rest  # the producer went on, into the other reader
    assert queue.metrics["enqueued"] + len(rest) == 20


async def test_outcomes_sent_on_into_a_stream_reach_the_next_stage() -> None:
    send, receive = create_memory_object_stream[Outcome[int, int]](2)
    queue = WorkQueue[int](maxsize=4, concurrency_limit=4)
    written: list[int] = []

    async def write() -> None:
        async with receive:
            async for outcome in receive:
                await anyio.lowlevel.checkpoint()
                written.append(outcome.unwrap())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            async with send, queue.map(double, range(300)) as results:
                async for outcome in results:
                    await send.send(outcome)
    assert sorted(written) == [2 * n for n in range(300)]
    assert_books(queue)


async def test_a_full_outcome_stream_slows_the_map_down() -> None:
    send, receive = create_memory_object_stream[Outcome[int, int]](0)
    queue = WorkQueue[int](maxsize=2, concurrency_limit=2)
    drawn = 0

    def items() -> object:
        nonlocal drawn
        for n in range(1_000):
            drawn += 1
            yield n

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:

            async def forward() -> None:
                async with send, queue.map(double, items(), window=3) as results:  # type: ignore[arg-type]
                    async for outcome in results:
                        await send.send(outcome)

            tg.start_soon(forward)
            await anyio.wait_all_tasks_blocked()
            # Nobody reads the outcome stream: the map stops after its window.
            assert drawn <= 3 + 1
            async with receive:
                count = len([o async for o in receive])
    assert count == 1_000


async def test_when_the_outcome_readers_go_away_the_map_ends_with_broken_resource() -> (
    None
):
    send, receive = create_memory_object_stream[Outcome[int, int]](0)
    queue = WorkQueue[int](maxsize=4, concurrency_limit=2)

    async def read_two() -> None:
        async with receive:
            await receive.receive()
            await receive.receive()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_two)
            with pytest.raises(BrokenResourceError):
                async with send, queue.map(double, range(100)) as results:
                    async for outcome in results:
                        await send.send(outcome)
    m = queue.metrics
    assert m["processed"] + m["unprocessed"] == m["enqueued"]
    assert_books(queue)


async def test_batch_process_drains_a_receive_stream() -> None:
    send, receive = create_memory_object_stream[int](0)
    queue = WorkQueue[int](maxsize=4, concurrency_limit=3)
    seen: list[int] = []

    async def record(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(n)

    async def produce() -> None:
        async with send:
            for n in range(150):
                await send.send(n)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with receive:
                await queue.batch_process(receive, record)
    assert sorted(seen) == list(range(150))
    assert_books(queue)


async def test_items_moved_from_a_stream_with_put_keep_backpressure() -> None:
    send, receive = create_memory_object_stream[int](0)
    release = anyio.Event()
    seen: list[int] = []
    sent = 0

    async def handle(n: int) -> None:
        await release.wait()
        seen.append(n)

    async def produce() -> None:
        nonlocal sent
        async with send:
            for n in range(50):
                await send.send(n)
                sent += 1

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](maxsize=2) as queue:
            await queue.start_workers(handle, 1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)

                async def move() -> None:
                    async with receive:
                        async for n in receive:
                            await queue.put(n)

                tg.start_soon(move)
                await anyio.wait_all_tasks_blocked()
                # One in the worker, two buffered, one held by the mover.
                assert sent <= 4
                release.set()
    assert sorted(seen) == list(range(50))
    assert_books(queue)
