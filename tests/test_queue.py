# mypy: disable-error-code="comparison-overlap"
"""BoundedQueue: the plan's UT-1 to UT-15 and the core issue's behaviours."""

from __future__ import annotations

import logging
import math
import os
import sys

if sys.version_info < (3, 11):
    pass
from pathlib import Path
from types import FrameType
from typing import Any, cast

import anyio
import pytest
import trio
from support import GUARD, assert_books, noop

import sluicegate
from sluicegate import (
    BoundedQueue,
    QueueError,
    QueueStateError,
    QueueStatus,
)

# -- UT-1 to UT-3: construction, properties, metrics ---------------------------


def test_defaults() -> None:  # UT-1
    queue: BoundedQueue[int] = BoundedQueue()
    assert queue.maxsize == 100
    assert queue.timeout is None  # put waits for room unless told otherwise
    assert queue.status is QueueStatus.IDLE
    assert queue.size == 0
    assert queue.is_empty
    assert not queue.is_full
    assert queue.worker_count == 0
    assert queue.unprocessed == []
    assert queue.concurrency_limit is None


def test_custom_values() -> None:
    queue: BoundedQueue[int] = BoundedQueue(5, None, concurrency_limit=2)
    assert (queue.maxsize, queue.timeout, queue.concurrency_limit) == (5, None, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"maxsize": 0}, ValueError, "maxsize must be at least 1, got 0"),
        ({"maxsize": -3}, ValueError, "maxsize must be at least 1, got -3"),
        ({"maxsize": 2.0}, TypeError, "maxsize must be an int, got 2.0"),
        ({"maxsize": True}, TypeError, "maxsize must be an int, got True"),
        ({"maxsize": "10"}, TypeError, "maxsize must be an int"),
        ({"maxsize": None}, TypeError, "maxsize must be an int, got None"),
        ({"timeout": -0.5}, ValueError, "timeout must be >= 0 seconds, got -0.5"),
        ({"timeout": math.nan}, ValueError, "timeout must be >= 0 seconds, got nan"),
        ({"timeout": "1"}, TypeError, "timeout must be a number of seconds or None"),
        ({"timeout": True}, TypeError, "timeout must be a number of seconds"),
        ({"concurrency_limit": 0}, ValueError, "concurrency_limit must be at least 1"),
        ({"concurrency_limit": 1.5}, TypeError, "concurrency_limit must be an int"),
        ({"logger": "log"}, TypeError, "logger must be a logging.Logger"),
    ],
)
def test_constructor_validates(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:  # UT-2
    with pytest.raises(error, match=match):
        BoundedQueue(**kwargs)


def test_status_and_metrics_start_at_zero() -> None:  # UT-3
    queue: BoundedQueue[int] = BoundedQueue()
    assert queue.status is QueueStatus.IDLE
    metrics = queue.metrics
    for key in ("enqueued", "processed", "errors", "backpressure_events"):
        assert metrics[key] == 0
    metrics["enqueued"] = 99
    assert queue.metrics["enqueued"] == 0, "metrics must be a fresh dict per read"


def test_status_is_a_str_enum() -> None:
    assert [s.name for s in QueueStatus] == [
        "IDLE",
        "PROCESSING",
        "STOPPING",
        "STOPPED",
    ]
    assert isinstance(QueueStatus.IDLE, str)


def test_state_error_is_a_queue_error_and_runtime_error() -> None:
    assert issubclass(QueueStateError, QueueError)
    assert issubclass(QueueStateError, RuntimeError)


# -- UT-4 to UT-8: operations ----------------------------------------------------


async def test_put_adds_items() -> None:  # UT-4
    queue: BoundedQueue[str] = BoundedQueue(maxsize=3)
    await queue.start()
    assert await queue.put("a") is True
    assert await queue.put("b") is True
    assert queue.size == 2
    assert not queue.is_empty
    assert queue.metrics["enqueued"] == 2
    await queue.stop()
    assert queue.unprocessed == ["a", "b"]
    assert_books(queue)


async def test_put_on_full_queue_returns_false_after_timeout() -> None:  # UT-5
    queue: BoundedQueue[str] = BoundedQueue(maxsize=1, timeout=0.01)
    await queue.start()
    assert await queue.put("item1")
    assert queue.is_full
    assert await queue.put("item2") is False
    assert queue.metrics["backpressure_events"] == 1
    assert await queue.put("item3", timeout=0) is False
    assert queue.metrics["backpressure_events"] == 2
    assert queue.size == 1
    assert queue.metrics["enqueued"] == 1
    await queue.stop()
    assert queue.unprocessed == ["item1"]


async def test_put_with_no_timeout_waits_for_room() -> None:
    queue: BoundedQueue[str] = BoundedQueue(maxsize=1)
    await queue.start()
    await queue.put("a")
    results: list[bool] = []

    async def producer() -> None:
        results.append(await queue.put("b", timeout=None))

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
            assert results == []
            assert await queue.get() == "a"
        assert results == [True]
        assert await queue.get() == "b"
    assert queue.metrics["backpressure_events"] == 0
    await queue.stop()


async def test_put_timeout_argument_is_validated() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    with pytest.raises(ValueError, match="timeout must be >= 0 seconds, got -1"):
        await queue.put(1, timeout=-1)
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        await queue.put(1, timeout=cast(Any, "soon"))
    assert queue.metrics["enqueued"] == 0
    await queue.stop()


async def test_get_returns_items_in_order() -> None:  # UT-6
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    for i in range(5):
        await queue.put(i)
    assert [await queue.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert queue.in_flight == 5
    assert_books(queue)
    await queue.stop()


async def test_get_waits_for_an_item() -> None:
    queue: BoundedQueue[str] = BoundedQueue()
    await queue.start()
    got: list[str] = []

    async def consumer() -> None:
        got.append(await queue.get())

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            await queue.put("x")
    assert got == ["x"]
    await queue.stop()


async def test_task_done_counts_processed() -> None:  # UT-7
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    await queue.put(2)
    await queue.get()
    queue.task_done()
    assert queue.metrics["processed"] == 1
    with pytest.raises(ValueError, match="more times than items taken"):
        queue.task_done()
    assert queue.metrics["processed"] == 1
    assert_books(queue)
    await queue.stop()


async def test_join_waits_until_all_items_are_processed() -> None:  # UT-8
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    await queue.put(2)
    joined = anyio.Event()

    async def joiner() -> None:
        await queue.join()
        joined.set()

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(joiner)
            for _ in range(2):
                await anyio.wait_all_tasks_blocked()
                assert not joined.is_set()
                await queue.get()
                queue.task_done()
    assert joined.is_set()
    await queue.stop()


async def test_join_on_empty_queue_returns_at_once() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        await queue.join()
        await queue.start()
        await queue.join()
    await queue.stop()


# -- UT-9 to UT-11: lifecycle ----------------------------------------------------


async def test_start_moves_to_processing_and_is_idempotent() -> None:  # UT-9
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    assert queue.status is QueueStatus.PROCESSING
    await queue.put(1)
    await queue.start()
    assert queue.status is QueueStatus.PROCESSING
    assert queue.size == 1
    await queue.stop()


async def test_stop_moves_to_stopped() -> None:  # UT-10
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.stop()
    assert queue.status is QueueStatus.STOPPED
    await queue.stop()  # idempotent
    assert queue.status is QueueStatus.STOPPED


async def test_stopped_queue_can_start_again_and_keeps_its_books() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    await queue.stop()
    await queue.start()
    await queue.put(2)
    assert await queue.get() == 2
    queue.task_done()
    await queue.stop()
    assert queue.unprocessed == [1]
    assert queue.metrics["enqueued"] == 2
    assert queue.metrics["processed"] == 1
    assert_books(queue)


@pytest.mark.parametrize("state", ["idle", "stopped"])
async def test_operations_need_processing(state: str) -> None:  # UT-11
    queue: BoundedQueue[int] = BoundedQueue()
    if state == "stopped":
        await queue.start()
        await queue.stop()
    with pytest.raises(
        QueueStateError, match=f"cannot put\\(\\): the queue is {state}"
    ):
        await queue.put(1)
    with pytest.raises(RuntimeError, match=rf"cannot get\(\): the queue is {state}"):
        await queue.get()
    with pytest.raises(QueueStateError, match="start_workers"):
        await queue.start_workers(noop, 1)
    fix = "queue.start()"
    with pytest.raises(QueueStateError) as info:
        await queue.put(1)
    assert fix in str(info.value)
    assert queue.metrics["enqueued"] == 0


# -- UT-12 to UT-15: workers -----------------------------------------------------


async def test_start_workers_creates_workers() -> None:  # UT-12
    async with BoundedQueue[int]() as queue:
        await queue.start_workers(noop, 3)
        assert queue.worker_count == 3
        await queue.start_workers(noop, 2)
        assert queue.worker_count == 5
    assert queue.worker_count == 0


async def test_workers_process_all_items() -> None:  # UT-13
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


async def test_worker_errors_are_counted_and_handled() -> None:  # UT-14
    handled: list[tuple[str, int]] = []

    async def work(item: int) -> None:
        if item % 2:
            raise ValueError(f"odd {item}")

    async def on_error(exc: Exception, item: int) -> None:
        handled.append((str(exc), item))

    with anyio.fail_after(GUARD):
        async with BoundedQueue[int](timeout=None) as queue:
            await queue.start_workers(work, 2, on_error)
            for i in range(10):
                await queue.put(i)
    assert queue.metrics["errors"] == 5
    assert queue.metrics["processed"] == 10
    assert sorted(handled) == sorted((f"odd {i}", i) for i in range(1, 10, 2))
    assert_books(queue)


async def test_errors_without_handler_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work(item: int) -> None:
        raise KeyError(item)

    with caplog.at_level(logging.ERROR, logger="sluicegate"):
        async with BoundedQueue[int]() as queue:
            await queue.start_workers(work, 1)
            await queue.put(7)
    assert queue.metrics["errors"] == 1
    assert "worker_func failed on 7" in caplog.text


async def test_error_handler_that_raises_is_logged_and_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work(item: int) -> None:
        raise ValueError(item)

    async def bad_handler(exc: Exception, item: int) -> None:
        raise RuntimeError("handler broke")

    logger = logging.getLogger("sluicegate.test")
    with caplog.at_level(logging.ERROR, logger="sluicegate.test"):
        async with BoundedQueue[int](logger=logger, timeout=None) as queue:
            await queue.start_workers(work, 1, bad_handler)
            for i in range(3):
                await queue.put(i)
            await queue.join()
            assert queue.worker_count == 1
    assert queue.metrics["processed"] == 3
    assert queue.metrics["errors"] == 3
    assert caplog.text.count("error_handler failed") == 3
    assert "handler broke" in caplog.text


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


# -- task-group scoped processing without async with ----------------------------


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


async def test_join_after_stop_returns_at_once() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    await queue.stop()
    with anyio.fail_after(GUARD):
        await queue.join()
    assert queue.unprocessed == [1]


async def test_join_waiting_when_stop_comes_returns() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    await queue.put(1)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.join)
            await anyio.wait_all_tasks_blocked()
            await queue.stop()


# -- async with ---------------------------------------------------------------------


async def test_async_with_twice_at_once_is_refused() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    async with queue:
        with pytest.raises(QueueStateError, match="already inside"):
            await queue.__aenter__()


# -- parking, not polling ------------------------------------------------------------


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


# -- regressions found in review ---------------------------------------------------


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


async def test_repr_shows_state_size_workers_and_limit() -> None:
    gate = anyio.Event()

    async def work(item: int) -> None:
        await gate.wait()

    queue: BoundedQueue[int] = BoundedQueue(8, concurrency_limit=2)
    assert repr(queue) == (
        "<BoundedQueue idle, size=0/8, workers=0, in_flight=0, delayed=0, "
        "concurrency_limit=2>"
    )
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 3)
            for i in range(5):
                await queue.put(i)
            await anyio.wait_all_tasks_blocked()
            assert repr(queue) == (
                "<BoundedQueue processing, size=3/8, workers=3, in_flight=2, "
                "delayed=0, concurrency_limit=2>"
            )
            gate.set()
    assert repr(queue).startswith("<BoundedQueue stopped, size=0/8, workers=0,")


async def test_put_nowait_and_get_nowait_complete_at_once_or_raise_would_block() -> (
    None
):
    queue: BoundedQueue[int] = BoundedQueue(maxsize=2)
    with pytest.raises(QueueStateError, match="idle"):
        queue.put_nowait(0)
    with pytest.raises(QueueStateError, match="idle"):
        queue.get_nowait()
    await queue.start()
    with pytest.raises(anyio.WouldBlock):
        queue.get_nowait()
    queue.put_nowait(1)
    queue.put_nowait(2)
    with pytest.raises(anyio.WouldBlock):
        queue.put_nowait(3)  # full: refused, and counted as backpressure
    assert queue.metrics["backpressure_events"] == 1
    assert (queue.get_nowait(), queue.get_nowait()) == (1, 2)
    assert queue.in_flight == 2
    queue.task_done()
    queue.task_done()
    assert queue.metrics["processed"] == 2
    await queue.stop()
    assert queue.unprocessed == []
    with pytest.raises(QueueStateError, match="stopped"):
        queue.put_nowait(4)


async def test_put_nowait_wakes_a_parked_get() -> None:
    got: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, queue:

            async def getter() -> None:
                got.append(await queue.get())
                queue.task_done()

            tg.start_soon(getter)
            await anyio.wait_all_tasks_blocked()
            queue.put_nowait(7)
    assert got == [7]
