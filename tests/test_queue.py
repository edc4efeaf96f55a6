# mypy: disable-error-code="comparison-overlap"
"""BoundedQueue: the plan's UT-1 to UT-15 and the core issue's behaviours."""

from __future__ import annotations

import logging
import sys

if sys.version_info < (3, 11):
    pass

import anyio
import pytest
from support import GUARD, assert_books

from sluicegate import (
    BoundedQueue,
)

# -- UT-12 to UT-15: workers -----------------------------------------------------


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
