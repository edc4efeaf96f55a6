"""Event, Execution, ExecutionStatus: units of work an Executor runs and records."""

from __future__ import annotations

import enum
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable

import attrs

__all__ = ["Event", "Execution", "ExecutionStatus"]


class ExecutionStatus(str, enum.Enum):
    """How an event's execution went: PENDING, PROCESSING, then one of the rest."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@attrs.define
class Execution:
    """The record of one event's run, filled in by the Executor.

    ``response`` is what ``invoke`` returned (COMPLETED); ``error`` the exception
    its last call raised (FAILED); ``duration`` the seconds the last call ran,
    once it has ended; ``attempts`` how many times invoke was called (more than
    once with a retry policy).
    """

    status: ExecutionStatus = ExecutionStatus.PENDING
    response: object = None
    error: BaseException | None = None
    duration: float | None = None
    attempts: int = 0


class Event(ABC):
    """A unit of work for an Executor: subclass it and implement `invoke`.

    A subclass may define its own ``__init__``; it must call ``super().__init__()``
    (with no arguments), which gives the event a unique `id` and a PENDING
    `execution`::

        class Fetch(Event):
            def __init__(self, url: str) -> None:
                super().__init__()
                self.url = url

            async def invoke(self) -> bytes:
                return await download(self.url)
    """

    def __init__(self) -> None:
        self._id: uuid.UUID | None = None
        self.execution: Execution = Execution()
        self._executor: object | None = None  # the Executor given this event
        self._sink: Callable[[Event], object] | None = None  # Executor.completed

    @property
    def id(self) -> uuid.UUID:
        """A unique id (a random UUID), made when first read."""
        # Made lazily: uuid4() reads the OS's random source, which costs more than
        # the rest of an event's bookkeeping, and many callers never look.
        if self._id is None:
            self._id = uuid.uuid4()
        return self._id

    @abstractmethod
    async def invoke(self) -> object:
        """Do the work; the return value becomes ``execution.response``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.execution.status.value}>"
