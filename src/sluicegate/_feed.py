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
    *,
    check: Callable[[T], None] | None = None,
    refused: Callable[[T], None] | None = None,
    window: Window | None = None,
    put_now: Callable[[T], bool] | None = None,
) -> None:
    """Put every item with ``put(item, None)``, reading one item at a time.

    ``check(item)`` runs before each put and may raise. If a put raises (it is
    atomic: the item was not accepted), ``refused(item)`` is called first. With
    a ``window``, each put first waits while it is full. ``put_now(item)``, if
    given, is tried first: it puts the item without awaiting and returns True,
    or returns False and leaves it to ``put``. When feeding stops early, an
    async iterator being read is closed, so an async generator's ``finally``
    runs now rather than at garbage collection.
    """

    def at_once(item: T) -> bool:
        """Check and put ``item`` without awaiting if it can be; True if done."""
        if check is not None:
            check(item)
        return put_now is not None and put_now(item)

    # The common case needs no coroutine per item: room in the window and in
    # the queue.
    if not isinstance(items, AsyncIterable):
        for item in items:
            if window is not None and window._full():
                await _put_one(item, put, check, refused, window)
            elif not at_once(item):
                await _put(item, put, refused)
        return
    iterator = aiter(items)
    try:
        async for item in iterator:
            if window is not None and window._full():
                await _put_one(item, put, check, refused, window)
            elif not at_once(item):
                await _put(item, put, refused)
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
    await _put(item, put, refused)


async def _put(item: T, put: Put[T], refused: Callable[[T], None] | None) -> None:
    try:
        await put(item, None)
    except BaseException:
        if refused is not None:
            refused(item)
        raise
