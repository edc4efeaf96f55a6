"""FailureLog: failures no handler took are logged, one traceback per type.

After the first traceback of a type, failures are counted, so that a storm of
them cannot flood the log.
"""

from __future__ import annotations

import logging

import anyio
import pytest
from support import GUARD

from sluicegate import BoundedQueue, WorkQueue


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


async def test_a_failure_storm_logs_one_traceback_per_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work(item: int) -> None:
        raise ConnectionError(item) if item % 2 else ValueError(item)

    queue: WorkQueue[int] = WorkQueue()
    with anyio.fail_after(GUARD), caplog.at_level(logging.ERROR, "sluicegate"):
        await queue.batch_process(range(200), work, num_workers=4)
    records = [r for r in caplog.records if r.name == "sluicegate"]
    tracebacks = [r for r in records if r.exc_info]
    assert sorted(type(r.exc_info[1]).__name__ for r in tracebacks if r.exc_info) == [
        "ConnectionError",
        "ValueError",
    ]
    counts = [r.getMessage() for r in records if "has failed" in r.getMessage()]
    # 100 of each: counted at 2, 4, ..., 64 each, then one summary at stop
    assert len(counts) == 2 * 6
    assert "has failed 64 times with ValueError" in " ".join(counts)
    assert "ConnectionError: 100" in records[-1].getMessage()
    assert "ValueError: 100" in records[-1].getMessage()
    assert len(records) == 2 + 12 + 1
    assert queue.errors_by_type == {"ValueError": 100, "ConnectionError": 100}
