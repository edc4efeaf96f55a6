# pyright: standard
"""Parts: the objects one RedisWorkQueue is made of, wired together once.

Its Redis calls (retried through outages), its own counts and unprocessed
list, the processor (its workers), the lifespan (start, stop, join) and the
producer (put). The queue holds them and hands each public call to one.
"""

from __future__ import annotations

from typing import Final, Generic, TypeVar

import attrs

from ._books import Settled
from ._config import RedisQueueConfig
from ._lifespan import Lifespan
from ._processor import Processor
from ._producer import Producer
from ._retrying import QueueCalls

__all__ = ["OWN_COUNTS", "Parts"]

T = TypeVar("T")

#: The counts of this process's own, in `RedisWorkQueue.metrics`.
OWN_COUNTS: Final = (
    "put",
    "backpressure_events",
    "processed",
    "errors",
    "reclaimed",
    "redelivered",
    "released",
    "dead_lettered_here",
)


@attrs.frozen
class Parts(Generic[T]):
    """The parts of one RedisWorkQueue (see the module docstring)."""

    calls: QueueCalls
    counts: dict[str, int]
    unprocessed: list[T]
    processor: Processor[T]
    life: Lifespan
    producer: Producer[T]

    @classmethod
    def of(cls, config: RedisQueueConfig) -> Parts[T]:
        """The parts for a queue of ``config`` (validated), wired together."""
        calls = QueueCalls(
            config.client,
            name=config.name,
            logger=config.logger,
            call_timeout=config.call_timeout,
            reconnect_timeout=config.reconnect_timeout,
        )
        counts: dict[str, int] = dict.fromkeys(OWN_COUNTS, 0)
        unprocessed: list[T] = []
        settled = Settled()  # woken when this process settles an item
        processor: Processor[T] = Processor(
            calls, config, counts=counts, unprocessed=unprocessed, settled=settled
        )
        life = Lifespan(calls, config, processor, settled)
        producer: Producer[T] = Producer(
            calls,
            config,
            counts=counts,
            settled=settled,
            check_running=life.check_running,
        )
        return cls(calls, counts, unprocessed, processor, life, producer)
