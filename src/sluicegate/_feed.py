"""feed: put the items of an iterable or async iterable, lazily, with backpressure."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

T = TypeVar("T")

Put = Callable[[T, None], Awaitable[bool]]


class Window(Protocol):
    """Room for items read and not yet done with (`MapResults` is one)."""

    def _full(self) -> bool: ...

    async def _wait_for_room(self) -> None: ...


async def feed(
    items: Iterable[T] | AsyncIterable[T],
    put: Put[T],
    check: Callable[[T], None] | None = None,
    refused: Callable[[T], None] | None = None,
    window: Window | None = None,
) -> None:
    """Put every item with ``put(item, None)``, reading one item at a time.

    ``check(item)`` runs before each put and may raise. If a put raises (it is
    atomic: the item was not accepted), ``refused(item)`` is called first. With
    a ``window``, each put first waits while it is full. When feeding stops
    early, an async iterator being read is closed, so an async generator's
    ``finally`` runs now rather than at garbage collection.
    """
    if not isinstance(items, AsyncIterable):
        for item in items:
            await _put_one(item, put, check, refused, window)
        return
    iterator = aiter(items)
    try:
        async for item in iterator:
            await _put_one(item, put, check, refused, window)
    except BaseException:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
        raise


async def _put_one(
    item: T,
    put: Put[T],
    check: Callable[[T], None] | None,
    refused: Callable[[T], None] | None,
    window: Window | None,
) -> None:
    if window is not None and window._full():
        try:
            await window._wait_for_room()
        except BaseException:
            if refused is not None:
                refused(item)  # drawn, never put: not lost
            raise
    if check is not None:
        check(item)
    try:
        await put(item, None)
    except BaseException:
        if refused is not None:
            refused(item)
        raise
