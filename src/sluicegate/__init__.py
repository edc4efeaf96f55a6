"""sluicegate: bounded async work queues with backpressure, concurrency and rate limits.

Runs unchanged on asyncio (with or without uvloop) and on trio, through AnyIO.
"""

from __future__ import annotations

from ._config import QueueConfig
from ._exceptions import QueueError, QueueStateError
from ._queue import BoundedQueue, QueueStatus
from ._work_queue import WorkQueue

__all__ = [
    "BoundedQueue",
    "QueueConfig",
    "QueueError",
    "QueueStateError",
    "QueueStatus",
    "WorkQueue",
]
