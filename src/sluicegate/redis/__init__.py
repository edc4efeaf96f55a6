"""sluicegate.redis: work shared by processes through Redis (the [redis] extra).

Needs coredis (``pip install 'sluicegate[redis]'``).
"""

from __future__ import annotations

from ._queue import RedisQueueBooks, RedisWorkQueue
from ._serializer import JsonSerializer, Serializer

__all__ = [
    "JsonSerializer",
    "RedisQueueBooks",
    "RedisWorkQueue",
    "Serializer",
]
