"""QueueStatus, where a queue is in its life, and put's USE_QUEUE_TIMEOUT default.

Small public names that the queues, the Executor and the protocols all speak, kept
apart so that each of them can import these without importing a queue.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["USE_QUEUE_TIMEOUT", "QueueStatus", "UseQueueTimeout"]


class QueueStatus(str, enum.Enum):
    """Where a queue is in its life: IDLE, then PROCESSING, STOPPING, STOPPED."""

    IDLE = "idle"
    PROCESSING = "processing"
    STOPPING = "stopping"
    STOPPED = "stopped"


class UseQueueTimeout(enum.Enum):
    """`USE_QUEUE_TIMEOUT` is the default of ``put``'s ``timeout``: wait as long
    as the queue's own ``timeout`` says. `UseQueueTimeout`, its type, is an enum
    of that one member, for annotations."""

    USE_QUEUE_TIMEOUT = "USE_QUEUE_TIMEOUT"

    def __repr__(self) -> str:
        return self.value


#: ``put(item, timeout=USE_QUEUE_TIMEOUT)``, the default: wait as long as the
#: queue's own ``timeout`` says (None, as long as it takes, unless it was set).
USE_QUEUE_TIMEOUT: Final = UseQueueTimeout.USE_QUEUE_TIMEOUT
