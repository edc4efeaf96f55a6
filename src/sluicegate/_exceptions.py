"""The exceptions sluicegate raises."""

from __future__ import annotations

__all__ = ["QueueError", "QueueStateError"]


class QueueError(Exception):
    """Base class of every error sluicegate raises on purpose."""


class QueueStateError(QueueError, RuntimeError):
    """An operation was called on a queue or executor in a state that forbids it.

    The message says what state the object is in and what to do instead.
    """
