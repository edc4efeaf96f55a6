"""sluicegate._lifecycle: the lifecycle rules every queue shares, each helper's rule
and its whole message (BoundedQueue, WorkQueue, the Executor and RedisWorkQueue
raise these words; their own tests match on them)."""

from __future__ import annotations

import logging
import re

import anyio
import pytest

from sluicegate import BoundedQueue, QueueStateError, QueueStatus
from sluicegate._lifecycle import (
    check_logger,
    check_not_stopping,
    check_running,
    check_task_group,
    worker_count_for,
    worker_group,
)

START_FIRST = "call `await queue.start()` or use `async with queue:` first"
REOPEN = "a stopped queue takes no new work; `await queue.start()` reopens it"


def test_check_running_passes_a_processing_queue() -> None:
    check_running(QueueStatus.PROCESSING, "put")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (QueueStatus.IDLE, f"cannot put(): the queue is idle; {START_FIRST}"),
        (QueueStatus.STOPPING, f"cannot put(): the queue is stopping; {REOPEN}"),
        (QueueStatus.STOPPED, f"cannot put(): the queue is stopped; {REOPEN}"),
    ],
)
def test_check_running_says_the_state_and_the_fix(
    status: QueueStatus, message: str
) -> None:
    with pytest.raises(QueueStateError, match=f"^{re.escape(message)}$"):
        check_running(status, "put")


@pytest.mark.parametrize("status", ["idle", "processing", "stopped"])
def test_only_a_stopping_queue_cannot_start(status: str) -> None:
    check_not_stopping(QueueStatus(status))


def test_a_stopping_queue_cannot_start() -> None:
    message = "cannot start: the queue is stopping; await queue.stop() first"
    with pytest.raises(QueueStateError, match=f"^{re.escape(message)}$"):
        check_not_stopping(QueueStatus.STOPPING)


async def test_check_task_group_takes_a_task_group_or_none() -> None:
    assert check_task_group(None) is None
    async with anyio.create_task_group() as tg:
        assert check_task_group(tg) is tg


@pytest.mark.parametrize("value", ["tg", 3, BoundedQueue])
def test_check_task_group_refuses_anything_else(value: object) -> None:
    message = f"task_group must be an anyio TaskGroup or None, got {value!r}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        check_task_group(value)


async def test_worker_group_is_the_given_one_else_the_queue_own() -> None:
    async with anyio.create_task_group() as given, anyio.create_task_group() as own:
        assert worker_group("process", given, own) is given
        assert worker_group("process", None, own) is own
        assert worker_group("process", given, None) is given


def test_worker_group_without_either_says_where_to_get_one() -> None:
    message = (
        "process() needs a task group to run the workers in: use `async with "
        "queue:` (the queue owns them), or pass `task_group=tg` from `async with "
        "anyio.create_task_group() as tg:`"
    )
    with pytest.raises(QueueStateError, match=f"^{re.escape(message)}$"):
        worker_group("process", None, None)


def test_check_logger_gives_the_sluicegate_logger_for_none() -> None:
    assert check_logger(None) is logging.getLogger("sluicegate")
    mine = logging.getLogger("mine")
    assert check_logger(mine) is mine


@pytest.mark.parametrize("value", ["log", print, logging])
def test_check_logger_refuses_anything_else(value: object) -> None:
    message = f"logger must be a logging.Logger or None, got {value!r}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        check_logger(value)


@pytest.mark.parametrize(
    ("num_workers", "limit", "count"),
    [(3, None, 3), (3, 8, 3), (None, 8, 8), (None, None, 1)],
)
def test_worker_count_is_the_number_else_the_limit_else_one(
    num_workers: int | None, limit: int | None, count: int
) -> None:
    assert worker_count_for(num_workers, limit) == count


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "num_workers must be at least 1, got 0"),
        (True, TypeError, "num_workers must be an int, got True (bool)"),
        (2.0, TypeError, "num_workers must be an int, got 2.0 (float)"),
    ],
)
def test_worker_count_refuses_a_bad_number(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        worker_count_for(value, 4)
