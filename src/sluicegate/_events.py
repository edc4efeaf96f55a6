"""Event, Execution, ExecutionStatus: units of work an Executor runs and records."""

from __future__ import annotations

import enum
import sys
import uuid
from abc import ABC, abstractmethod
from typing import Any, Generic

import attrs

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # pragma: no cover
    from typing_extensions import TypeVar

__all__ = ["Event", "Execution", "ExecutionStatus"]

#: What an event's `invoke` returns. Any by default, so that a plain
#: ``class Fetch(Event)`` (and ``Execution`` or ``Event`` in an annotation)
#: means what it meant before Event took a type argument.
R = TypeVar("R", default=Any)


class ExecutionStatus(str, enum.Enum):
    """How an event's execution went: PENDING, PROCESSING, then one of the rest."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@attrs.define
class Execution(Generic[R]):
    """The record of one event's run, filled in by the Executor.

    ``response`` is what ``invoke`` returned (COMPLETED; None until then, and
    an `Event[R]`'s is an ``R | None``); ``error`` the exception
    its last call raised (FAILED); ``duration`` the seconds the last call ran,
    once it has ended; ``attempts`` how many times invoke was called (more than
    once with a retry policy).
    """

    status: ExecutionStatus = ExecutionStatus.PENDING
    response: R | None = None
    error: BaseException | None = None
    duration: float | None = None
    attempts: int = 0


class Event(ABC, Generic[R]):
    """A unit of work for an Executor: subclass it and implement `invoke`.

    ``Event[R]`` is an event whose `invoke` returns an ``R``; its
    ``execution.response`` is then an ``R | None`` to a type checker. A plain
    ``Event`` base is ``Event[Any]``.

    A subclass may define its own ``__init__``; it must call ``super().__init__()``
    (with no arguments), which gives the event a unique `id` and a PENDING
    `execution`::

        class Fetch(Event[bytes]):
            def __init__(self, url: str) -> None:
                super().__init__()
                self.url = url

            async def invoke(self) -> bytes:
                return await download(self.url)
    """

    def __init__(self) -> None:
        self._id: uuid.UUID | None = None
        self.execution: Execution[R] = Execution()

    @property
    def id(self) -> uuid.UUID:
        """A unique id (a random UUID), made when first read."""
        # Made lazily: uuid4() reads the OS's random source, which costs more than
        # the rest of an event's bookkeeping, and many callers never look.
        if self._id is None:
            self._id = uuid.uuid4()
        return self._id

    @abstractmethod
    async def invoke(self) -> R:
        """Do the work; the return value becomes ``execution.response``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.execution.status.value}>"
