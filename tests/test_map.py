"""WorkQueue.map: outcomes streamed with backpressure, in order or as they come."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from fake_clock import FakeClock
from support import GUARD, Source, assert_books, double

from sluicegate import QueueStateError, RetryPolicy, WorkQueue


async def test_every_outcome_pairs_an_item_with_its_value() -> None:
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue.map(double, range(50), num_workers=3) as results:
            outcomes = [outcome async for outcome in results]
    assert sorted((o.item, o.value) for o in outcomes) == [
        (i, 2 * i) for i in range(50)
    ]
    assert all(o.ok and o.attempts == 1 and o.error is None for o in outcomes)
    assert queue.status.value == "stopped"  # the map opened it, and closed it
    assert queue.metrics["processed"] == 50


async def test_ordered_outcomes_come_in_input_order() -> None:
    clock = FakeClock()

    async def slower_for_small(item: int) -> int:
        await clock.sleep_until(clock.current_time() + (10 - item % 10))
        return item

    queue: WorkQueue[int] = WorkQueue(maxsize=4, clock=clock)
    seen: list[int] = []
    finish_order: list[int] = []

    async def record(item: int) -> int:
        value = await slower_for_small(item)
        finish_order.append(item)
        return value

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with queue.map(record, range(30), ordered=True, num_workers=5) as rs:
                seen = [outcome.item async for outcome in rs]
            tg.cancel_scope.cancel()
    assert seen == list(range(30))
    assert finish_order != seen  # they did finish out of order


async def test_the_same_object_twice_in_order() -> None:
    token = object()
    items = [token, 1, token, 2, token]

    async def echo(item: object) -> object:
        await anyio.lowlevel.checkpoint()
        return item

    queue: WorkQueue[object] = WorkQueue(maxsize=2)
    with anyio.fail_after(GUARD):
        async with queue.map(echo, items, ordered=True, num_workers=3) as results:
            seen = [outcome.item async for outcome in results]
    assert seen == items


async def test_collected_failures_are_yielded_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails(item: int) -> int:
        raise ValueError(item)

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD), caplog.at_level(logging.DEBUG, "sluicegate"):
        async with queue.map(fails, range(3)) as results:
            errors = [outcome.error async for outcome in results]
    assert len(errors) == 3
    assert caplog.records == []  # the reader has them: the log stays quiet


async def test_collected_failures_are_yielded_and_unwrap_raises() -> None:
    async def picky(item: int) -> int:
        if item % 4 == 0:
            raise ValueError(item)
        return item

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        async with queue.map(picky, range(12), ordered=True) as results:
            outcomes = [outcome async for outcome in results]
    failed = [o for o in outcomes if not o.ok]
    assert [o.item for o in failed] == [0, 4, 8]
    with pytest.raises(ValueError, match="4"):
        failed[1].unwrap()
    assert outcomes[1].unwrap() == 1
    assert queue.metrics["errors"] == 3


async def test_raise_policy_raises_the_first_failure_and_cancels_the_rest() -> None:
    gate = anyio.Event()

    async def work(item: int) -> int:
        if item == 3:
            raise KeyError(item)
        if item > 3:
            await gate.wait()  # never set: these are cancelled
        return item

    source = Source(100)
    queue: WorkQueue[int] = WorkQueue(maxsize=5)
    got: list[int] = []
    with anyio.fail_after(GUARD), pytest.raises(KeyError, match="3"):
        async with queue.map(work, source, errors="raise", num_workers=3) as results:
            async for outcome in results:
                got.append(outcome.item)
    assert sorted(got) == [0, 1, 2]
    m = queue.metrics
    assert m["errors"] == 1
    assert m["processed"] + m["unprocessed"] == source.drawn  # nothing lost
    assert source.drawn < 100  # the rest was never read
    assert_books(queue.queue)


async def test_leaving_early_cancels_the_rest_and_accounts_for_every_item() -> None:
    closed = False

    async def numbers() -> AsyncIterator[int]:
        nonlocal closed
        try:
            for i in range(1_000):
                yield i
        finally:
            closed = True

    async def slow(item: int) -> int:
        await anyio.sleep(10)
        return item

    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue.map(double, numbers(), num_workers=2) as results:
            async for outcome in results:
                if outcome.item >= 5:
                    break
    assert closed
    m = queue.metrics
    assert m["enqueued"] == m["processed"] + m["unprocessed"]
    assert m["enqueued"] < 1_000
    assert_books(queue.queue)


async def test_outcomes_carry_attempts_and_duration() -> None:
    clock = FakeClock()
    calls: dict[int, int] = {}

    async def flaky(item: int) -> int:
        calls[item] = calls.get(item, 0) + 1
        await clock.sleep_until(clock.current_time() + 1)
        if calls[item] < 2:
            raise ConnectionError
        return item

    policy = RetryPolicy(backoff=3, jitter=False)
    queue: WorkQueue[int] = WorkQueue(clock=clock, retry=policy)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with queue.map(flaky, [7]) as results:
                [outcome] = [o async for o in results]
            tg.cancel_scope.cancel()
    assert (outcome.value, outcome.attempts, outcome.duration) == (7, 2, 5.0)
    assert "attempts=2" in repr(outcome)


async def test_map_inside_an_open_queue_leaves_it_open() -> None:
    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        async with queue:
            async with queue.map(double, range(5)) as results:
                values = sorted([o.value async for o in results if o.value is not None])
            assert queue.status.value == "processing"
            assert queue.worker_count == 0
    assert values == [0, 2, 4, 6, 8]


async def test_map_refuses_a_queue_with_workers() -> None:
    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.process(double)
            with pytest.raises(QueueStateError, match="a batch or a map"):
                async with queue.map(double, range(3)):
                    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"errors": "ignore"}, ValueError, 'errors must be "collect" or "raise"'),
        ({"window": 0}, ValueError, "window must be at least 1"),
        ({"ordered": "yes"}, TypeError, "ordered must be a bool"),
        ({"num_workers": 0}, ValueError, "num_workers must be at least 1"),
        ({"item_timeout": -1}, ValueError, "item_timeout"),
        ({"retry": 2}, TypeError, "retry must be"),
    ],
)
def test_map_validates_its_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        WorkQueue[int]().map(double, range(3), **kwargs)


def test_map_refuses_a_non_iterable() -> None:
    with pytest.raises(TypeError, match="items must be an iterable"):
        WorkQueue[int]().map(double, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("ordered", [False, True])
async def test_map_refuses_a_queue_that_holds_items(ordered: bool) -> None:
    """Its workers would take the items already there and report them as the
    map's (found in review: ordered, that failed deep inside)."""
    queue: WorkQueue[int] = WorkQueue(maxsize=4)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.put(100)
            with pytest.raises(QueueStateError, match="holds 1 item"):
                async with queue.map(double, range(3), ordered=ordered):
                    pass
            assert queue.size == 1  # untouched
            await queue.process(double)
    assert queue.metrics["processed"] == 1
