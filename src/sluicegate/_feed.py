"""feed: put the items of an iterable or async iterable, lazily, with backpressure."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

Put = Callable[[T, None], Awaitable[bool]]


async def feed(
    items: Iterable[T] | AsyncIterable[T],
    put: Put[T],
    check: Callable[[T], None] | None = None,
    refused: Callable[[T], None] | None = None,
) -> None:
    """Put every item with ``put(item, None)``, reading one item at a time.

    ``check(item)`` runs before each put and may raise. If a put raises (it is
    atomic: the item was not accepted), ``refused(item)`` is called first. When
    feeding stops early, an async iterator being read is closed, so an async
    generator's ``finally`` runs now rather than at garbage collection.
    """
    if not isinstance(items, AsyncIterable):
        for item in items:
            await _put_one(item, put, check, refused)
        return
    iterator = aiter(items)
    try:
        async for item in iterator:
            await _put_one(item, put, check, refused)
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
) -> None:
    if check is not None:
        check(item)
    try:
        await put(item, None)
    except BaseException:
        if refused is not None:
            refused(item)
        raise
