"""QueueStatistics: a frozen snapshot of a queue, as AnyIO's streams give one."""

from __future__ import annotations

import attrs

__all__ = ["QueueStatistics"]


@attrs.frozen
class QueueStatistics:
    """What `BoundedQueue.statistics` (or `WorkQueue.statistics`) saw, at once.

    The counters are those of ``metrics``; the rest says who waits and how much
    of the concurrency limit is in use.

    Attributes:
        enqueued: Items accepted so far.
        processed: Items finished (failures included).
        errors: Items whose final outcome was a failure.
        backpressure_events: Puts that gave up on a full queue.
        retries: Calls scheduled again after a failure.
        in_flight: Items taken (by workers or `get`) and not finished.
        delayed: Items waiting out a retry's backoff.
        unprocessed: Items listed in ``unprocessed``.
        size: Items in the buffer.
        maxsize: Items the buffer holds.
        workers: Running workers.
        idle_workers: Workers parked, waiting for an item.
        tasks_waiting_put: Producers blocked on a full queue.
        tasks_waiting_get: ``get()`` callers parked on an empty queue.
        concurrency_limit: Items that may be handled at once (None: no limit).
        slots_in_use: Workers holding a slot of that limit now.
    """

    enqueued: int
    processed: int
    errors: int
    backpressure_events: int
    retries: int
    in_flight: int
    delayed: int
    unprocessed: int
    size: int
    maxsize: int
    workers: int
    idle_workers: int
    tasks_waiting_put: int
    tasks_waiting_get: int
    concurrency_limit: int | None
    slots_in_use: int
