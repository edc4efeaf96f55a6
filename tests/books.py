"""The books check every test shares: one statement of the equation.

``enqueued == processed + size + in_flight + delayed + unprocessed``, with
``in_flight`` never negative and ``metrics["unprocessed"]`` the length of the
list. Works for a BoundedQueue, a WorkQueue or an Executor's queue.
"""

from __future__ import annotations

from typing import Any


def assert_books(queue: Any) -> None:
    """Fail unless ``queue``'s books balance now (delayed items included)."""
    m = queue.metrics
    assert m["in_flight"] >= 0, m
    assert m["delayed"] >= 0, m
    assert m["enqueued"] == (
        m["processed"] + queue.size + m["in_flight"] + m["delayed"] + m["unprocessed"]
    ), (m, queue.size)
    assert m["unprocessed"] == len(queue.unprocessed), m
