# pyright: reportUnnecessaryTypeIgnoreComment=true
"""What a user's type checker sees: mypy (strict, over tests/) and pyright (strict,
this file) check the ``assert_type`` calls here, and the tests run them too.

A line ending in ``# type: ignore[...]`` is a mistake a checker must catch: mypy's
``warn_unused_ignores`` and pyright's ``reportUnnecessaryTypeIgnoreComment`` (set
above) fail the run if the checker stops reporting it.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from sluicegate import (
    USE_QUEUE_TIMEOUT,
    BoundedQueue,
    Event,
    Execution,
    Executor,
    Outcome,
    QueueConfig,
    QueueProtocol,
    UseQueueTimeout,
    WorkQueue,
)

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type


class Fetch(Event[bytes]):
    """An event that says what its invoke returns."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    async def invoke(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        return self.url.encode()


class Untyped(Event):  # written before Event took a type argument: still fine
    async def invoke(self) -> dict[str, int]:
        return {"n": 1}


class WrongResponse(Event[int]):
    async def invoke(self) -> str:  # type: ignore[override]
        return "not an int"


def log_any_event(event: Event) -> str:  # a plain Event annotation takes them all
    return repr(event)


async def test_event_response_type() -> None:
    executor = Executor(Fetch)
    assert_type(executor, Executor[Fetch])
    async with executor:
        await executor.put(Fetch("a"))
    [event] = executor.completed_events
    assert_type(event, Fetch)
    assert_type(event.execution, Execution[bytes])
    assert_type(event.execution.response, bytes | None)
    assert event.execution.response == b"a"
    assert_type(await event.invoke(), bytes)
    log_any_event(event)


async def test_untyped_event_response_is_any() -> None:
    executor = Executor(Untyped)
    async with executor:
        await executor.put(Untyped())
    [event] = executor.completed_events
    assert_type(event.execution, Execution[Any])
    assert event.execution.response == {"n": 1}
    log_any_event(event)


async def test_completed_yields_the_event_type() -> None:
    executor = Executor(Fetch)
    async with executor, executor.completed([Fetch("x"), Fetch("y")]) as finished:
        responses = [event.execution.response async for event in finished]
    assert_type(responses, list[bytes | None])
    assert sorted(r for r in responses if r is not None) == [b"x", b"y"]


async def misuse(executor: Executor[Fetch], queue: WorkQueue[int]) -> None:
    """Mistakes a checker must report (never called: at run time they raise)."""
    await executor.put(Untyped())  # type: ignore[arg-type]
    await queue.put(2, timeout="soon")  # type: ignore[arg-type]
    await queue.put("two")  # type: ignore[arg-type]
    WorkQueue[int]().map(str.upper, [1])  # type: ignore[arg-type]


async def test_put_timeout_default_is_public() -> None:
    queue = WorkQueue[int](maxsize=1)
    default: UseQueueTimeout = USE_QUEUE_TIMEOUT
    assert default is USE_QUEUE_TIMEOUT
    assert repr(USE_QUEUE_TIMEOUT) == "USE_QUEUE_TIMEOUT"
    async with queue:
        assert await queue.put(1, timeout=USE_QUEUE_TIMEOUT)
        assert await queue.queue.get() == 1
        queue.queue.task_done()


async def test_from_config_keeps_the_item_type() -> None:
    queue = WorkQueue[int].from_config(QueueConfig(queue_capacity=4))
    assert_type(queue, WorkQueue[int])
    assert_type(queue.queue, BoundedQueue[int])
    assert queue.maxsize == 4

    class Jobs(WorkQueue[str]):
        pass

    jobs = Jobs.from_config(QueueConfig())
    assert_type(jobs, Jobs)
    assert isinstance(jobs, Jobs)


async def test_map_outcomes_carry_item_and_value_types() -> None:
    async def double(n: int) -> str:
        await anyio.lowlevel.checkpoint()
        return str(2 * n)

    queue = WorkQueue[int]()
    async with queue.map(double, [1, 2]) as results:
        outcomes = [outcome async for outcome in results]
    assert_type(outcomes, list[Outcome[int, str]])
    assert_type(outcomes[0].value, str | None)
    assert sorted(outcome.unwrap() for outcome in outcomes) == ["2", "4"]


def test_protocol_takes_either() -> None:
    queues: list[QueueProtocol[int]] = [WorkQueue[int]()]
    events: QueueProtocol[Fetch] = Executor(Fetch)
    assert queues
    assert events
