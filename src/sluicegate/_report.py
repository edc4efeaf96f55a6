"""What a queue reports of itself: its counters, a snapshot, a line for a repr.

Read from its core's parts (the books, the dispatch, the calls) at the moment
of the call; nothing here is kept up to date as items move.
"""

from __future__ import annotations

import math
from typing import Any

from ._core import Core
from ._statistics import QueueStatistics

__all__ = ["describe", "limit_of", "metrics", "statistics"]


def limit_of(core: Core[Any]) -> int | None:
    """The queue's concurrency limit as a number (None: none): a shared
    CapacityLimiter's total tokens, if it has one."""
    capacity = core.capacity
    if capacity is None:
        return core.dispatch.limit
    total = capacity.total_tokens
    return None if math.isinf(total) else int(total)


def metrics(core: Core[Any]) -> dict[str, int]:
    """The counters of `BoundedQueue.metrics`, fresh."""
    books = core.books
    calls = core.calls
    return {
        "enqueued": books.enqueued,
        "processed": books.processed,
        "errors": calls.errors,
        "backpressure_events": books.backpressure_events,
        "retries": calls.retries,
        "in_flight": books.in_flight(),
        "delayed": books.delayed,
        "unprocessed": len(books.unprocessed),
    }


def statistics(core: Core[Any]) -> QueueStatistics:
    """The snapshot of `BoundedQueue.statistics`."""
    dispatch = core.dispatch
    return QueueStatistics(
        **metrics(core),
        size=len(core.books.buffer),
        maxsize=core.maxsize,
        workers=len(dispatch.pool),
        idle_workers=dispatch.idle_workers.parked + dispatch.pool.reserved,
        tasks_waiting_put=dispatch.producers.parked,
        tasks_waiting_get=dispatch.getters.parked,
        concurrency_limit=limit_of(core),
        slots_in_use=dispatch.active,
    )


def describe(core: Core[Any]) -> str:
    """The queue's state in a line, for a repr."""
    books = core.books
    return (
        f"{core.status.value}, size={len(books.buffer)}/{core.maxsize}, "
        f"workers={len(core.dispatch.pool)}, in_flight={books.in_flight()}, "
        f"delayed={books.delayed}, concurrency_limit={limit_of(core)}"
    )
