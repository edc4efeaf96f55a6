"""The lifecycle rules every queue shares, written once: BoundedQueue, WorkQueue,
the Executor and RedisWorkQueue say the same thing about their state, their task
group, their logger and their number of workers."""

from __future__ import annotations

import logging

from anyio.abc import TaskGroup

from ._checks import check_optional_int
from ._exceptions import QueueStateError
from ._status import QueueStatus

__all__ = [
    "check_logger",
    "check_not_stopping",
    "check_running",
    "check_task_group",
    "worker_count_for",
    "worker_group",
]

_PROCESSING = QueueStatus.PROCESSING


def check_running(status: QueueStatus, operation: str) -> None:
    """Raise QueueStateError unless ``status`` is PROCESSING, saying what to do."""
    if status is _PROCESSING:
        return
    if status is QueueStatus.IDLE:
        fix = "call `await queue.start()` or use `async with queue:` first"
    else:
        fix = "a stopped queue takes no new work; `await queue.start()` reopens it"
    raise QueueStateError(f"cannot {operation}(): the queue is {status.value}; {fix}")


def check_not_stopping(status: QueueStatus) -> None:
    """Raise QueueStateError if ``status`` is STOPPING: start() must wait for stop()."""
    if status is QueueStatus.STOPPING:
        raise QueueStateError(
            "cannot start: the queue is stopping; await queue.stop() first"
        )


def check_task_group(task_group: object) -> TaskGroup | None:
    """Return ``task_group`` if it is an AnyIO TaskGroup or None; else TypeError."""
    if task_group is not None and not isinstance(task_group, TaskGroup):
        raise TypeError(
            f"task_group must be an anyio TaskGroup or None, got {task_group!r}"
        )
    return task_group


def worker_group(
    operation: str, given: TaskGroup | None, own: TaskGroup | None
) -> TaskGroup:
    """The task group ``operation`` starts workers in: ``given``, else ``own``."""
    group = given if given is not None else own
    if group is None:
        raise QueueStateError(
            f"{operation}() needs a task group to run the workers in: use "
            "`async with queue:` (the queue owns them), or pass "
            "`task_group=tg` from `async with anyio.create_task_group() as tg:`"
        )
    return group


def check_logger(logger: object) -> logging.Logger:
    """Return ``logger``, or the "sluicegate" logger for None; TypeError otherwise."""
    if logger is None:
        return logging.getLogger("sluicegate")
    if not isinstance(logger, logging.Logger):
        raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")
    return logger


def worker_count_for(num_workers: object, concurrency_limit: int | None) -> int:
    """``num_workers`` checked (an int >= 1), else the concurrency limit, else 1."""
    count = check_optional_int("num_workers", num_workers, minimum=1)
    if count is not None:
        return count
    return concurrency_limit or 1
