"""Scoped: ``async with`` driven by one async generator, `_lifespan`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from ._exceptions import QueueStateError

if TYPE_CHECKING:
    from typing_extensions import Self


class Scoped:
    """Base for objects whose ``async with`` block is one `_lifespan` generator.

    Writing the block's entry and exit as one ``@asynccontextmanager`` keeps the
    setup, the normal exit and the exceptional exit side by side, and lets the
    generator's own ``try``/``async with`` statements own the task group.
    """

    _lifespan_cm: AbstractAsyncContextManager[None] | None = None

    def _lifespan(self) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._lifespan_cm is not None:
            raise QueueStateError(
                f"this {type(self).__name__} is already inside an `async with` block"
            )
        cm = self._lifespan()
        await cm.__aenter__()
        self._lifespan_cm = cm
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        cm, self._lifespan_cm = self._lifespan_cm, None
        assert cm is not None, "__aexit__ without __aenter__"
        return await cm.__aexit__(exc_type, exc, tb)
