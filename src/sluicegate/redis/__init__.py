# pyright: standard
"""sluicegate.redis: limits and queues shared by every process that uses one Redis.

Needs the ``redis`` extra: ``pip install "sluicegate[redis]"`` (coredis).
Importing ``sluicegate`` alone never imports coredis.
"""

from __future__ import annotations

try:
    import coredis as _coredis  # noqa: F401 (only to fail early, with the fix)
except ImportError as _missing:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        "sluicegate.redis needs coredis, which sluicegate's `redis` extra "
        'installs: pip install "sluicegate[redis]"'
    ) from _missing

from ._limiter import RedisRateLimiter
from ._queue import RedisQueueBooks, RedisWorkQueue
from ._serializer import JsonSerializer, Serializer

__all__ = [
    "JsonSerializer",
    "RedisQueueBooks",
    "RedisRateLimiter",
    "RedisWorkQueue",
    "Serializer",
]
