"""The API that WorkQueue and Executor share, as a typing.Protocol."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from ._queue import QueueStatus

__all__ = ["QueueProtocol"]

T_contra = TypeVar("T_contra", contravariant=True)


@runtime_checkable
class QueueProtocol(Protocol[T_contra]):
    """What code can rely on from a `WorkQueue[T]` or an `Executor[T]`.

    The lifecycle (``async with``, `start`, `stop`, `join`, `status`, `metrics`),
    `put` with backpressure, and `batch_process` over an iterable or async
    iterable of items (a WorkQueue also takes the worker function there).
    """

    @property
    def status(self) -> QueueStatus:
        """Where the queue is in its life."""
        ...

    @property
    def metrics(self) -> dict[str, int]:
        """A fresh snapshot of the counters."""
        ...

    async def start(self) -> None:
        """Start accepting items."""
        ...

    async def stop(self, timeout: float | None = None) -> None:
        """Stop; what never ran is accounted for."""
        ...

    async def join(self) -> None:
        """Wait until every accepted item is processed."""
        ...

    async def put(self, item: T_contra, /) -> bool:
        """Queue one item: True once accepted, False on backpressure."""
        ...

    async def batch_process(
        self,
        items: Iterable[T_contra] | AsyncIterable[T_contra],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Process every item and return when all are processed."""
        ...

    async def __aenter__(self) -> Any:
        """Start, and own the workers until the block ends."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Wait for the work (or cancel it on an exception), then stop."""
        ...
