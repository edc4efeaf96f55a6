"""sluicegate: bounded async work queues with backpressure, concurrency and rate limits.

Runs unchanged on asyncio (with or without uvloop) and on trio, through AnyIO.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ._clock import Clock
from ._config import QueueConfig
from ._events import Event, Execution, ExecutionStatus
from ._exceptions import (
    ItemTimeoutError,
    QueueError,
    QueueStateError,
    StrayCancellationError,
)
from ._executor import Executor
from ._protocols import QueueProtocol, RateLimiterProtocol
from ._queue import BoundedQueue
from ._rate_limit import RateLimiter
from ._results import MapResults, Outcome
from ._retry import RetryAfter, RetryPolicy, parse_retry_after
from ._statistics import QueueStatistics
from ._status import USE_QUEUE_TIMEOUT, QueueStatus, UseQueueTimeout
from ._work_queue import WorkQueue

try:
    #: This distribution's version, as installed (pip or uv wrote it down).
    __version__: str = _metadata.version("sluicegate")
except _metadata.PackageNotFoundError:  # pragma: no cover - imported uninstalled
    __version__ = "0+unknown"

__all__ = [
    "USE_QUEUE_TIMEOUT",
    "BoundedQueue",
    "Clock",
    "Event",
    "Execution",
    "ExecutionStatus",
    "Executor",
    "ItemTimeoutError",
    "MapResults",
    "Outcome",
    "QueueConfig",
    "QueueError",
    "QueueProtocol",
    "QueueStateError",
    "QueueStatistics",
    "QueueStatus",
    "RateLimiter",
    "RateLimiterProtocol",
    "RetryAfter",
    "RetryPolicy",
    "StrayCancellationError",
    "UseQueueTimeout",
    "WorkQueue",
    "parse_retry_after",
]
