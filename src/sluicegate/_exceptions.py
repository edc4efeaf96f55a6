"""The exceptions sluicegate raises."""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # installed with anyio there

__all__ = ["QueueError", "QueueStateError"]


class QueueError(Exception):
    """Base class of every error sluicegate raises on purpose."""


class QueueStateError(QueueError, RuntimeError):
    """An operation was called on a queue or executor in a state that forbids it.

    The message says what state the object is in and what to do instead.
    """


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a task group wrapped, or the group if it holds several.

    Raise the result outside the ``except`` clause that caught the group, so the
    exception keeps its own cause and context.
    """
    return group.exceptions[0] if len(group.exceptions) == 1 else group
