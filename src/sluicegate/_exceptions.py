"""The exceptions sluicegate raises."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import cast

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # installed with anyio there

from anyio import current_effective_deadline, current_time, get_cancelled_exc_class

__all__ = [
    "ItemTimeoutError",
    "QueueError",
    "QueueStateError",
    "StrayCancellationError",
    "unwrapped_group",
]


class QueueError(Exception):
    """Base class of every error sluicegate raises on purpose."""


class QueueStateError(QueueError, RuntimeError):
    """An operation was called on a queue or executor in a state that forbids it.

    The message says what state the object is in and what to do instead.
    """


class ItemTimeoutError(QueueError, TimeoutError):
    """A call ran longer than its ``item_timeout`` and was cancelled.

    A subclass of the builtin TimeoutError, so ``except TimeoutError`` catches
    it. A `RetryPolicy` retries it whatever its ``on`` says, unless the policy
    is built with ``retry_timeouts=False`` (then ``on`` decides, as for any
    error). A TimeoutError that the worker function raises itself is not an
    ItemTimeoutError: ``on`` decides for it.
    """


class StrayCancellationError(QueueError):
    """A worker function raised the event loop's cancellation exception although
    nothing had cancelled it.

    On asyncio, ``await`` on a task that someone else cancelled raises
    ``asyncio.CancelledError`` in the awaiting task too, and some libraries leak
    one. Let through, it would look like the cancellation of the task group
    that runs the workers, and end it silently. sluicegate counts it as that
    item's failure instead (the item is processed, with an error); the original
    exception is this one's ``__cause__``.
    """


def stray_cancellation(exc: BaseException) -> StrayCancellationError | None:
    """Wrap ``exc`` if it is a cancellation exception that no cancel scope sent.

    Returns None for anything else, including a real cancellation: one whose
    enclosing cancel scope has been cancelled or has passed its deadline. Call
    it in the task that caught ``exc``.
    """
    if not isinstance(exc, get_cancelled_exc_class()):
        return None
    if current_effective_deadline() <= current_time():
        return None  # a scope around us was cancelled (-inf) or has expired
    error = StrayCancellationError(
        f"{type(exc).__name__} was raised, but nothing had cancelled this task: "
        "counted as the item's failure (see the __cause__)"
    )
    error.__cause__ = exc
    return error


class unwrapped_group:  # noqa: N801 - used like a function: `with unwrapped_group():`
    """Let the one exception a task group wrapped out as it was raised.

    Put it around ``async with create_task_group()``: a group holding a single
    exception (the error from an iterable, the exception that ended the block)
    is replaced by that exception, with its own cause and context; a group of
    several goes on as it is.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, BaseExceptionGroup):
            return
        group = cast("BaseExceptionGroup[BaseException]", exc)
        if len(group.exceptions) != 1:
            return
        sole = group.exceptions[0]
        context = sole.__context__
        try:
            raise sole
        finally:
            sole.__context__ = context  # raising it here chained it to the group
            del sole
