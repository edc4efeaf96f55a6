"""feed: put the items of an iterable or async iterable, lazily, with backpressure."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from inspect import isgenerator
from typing import Protocol, TypeVar

from anyio import CancelScope

from ._exceptions import QueueStateError
from ._status import QueueStatus

T = TypeVar("T")

Put = Callable[[T, None], Awaitable[bool]]


class Window(Protocol):
    """Room for items read and not yet done with (a map's `Collector` is one).

    An item is counted in the window (by the feed's ``check``) as soon as it is
    drawn, so that an item drawn and then refused is one the window knows of.
    """

    def over(self) -> bool:
        """True while more items are counted than the window holds."""
        ...

    async def wait_for_room(self) -> None:
        """Wait until the items counted fit in the window."""
        ...


class Stops(Protocol):
    """A queue whose stop ends a feed (a queue's `Core` is one)."""

    @property
    def status(self) -> QueueStatus: ...

    def told_of_stop(
        self, listener: Callable[[], object]
    ) -> AbstractContextManager[None]: ...


_STOPPED = (QueueStatus.STOPPING, QueueStatus.STOPPED)


async def feed_until_stopped(
    queue: Stops,
    items: Iterable[T] | AsyncIterable[T],
    put: Put[T],
    *,
    check: Callable[[T], None] | None = None,
    refused: Callable[[T], None] | None = None,
    window: Window | None = None,
    put_now: Callable[[T], bool] | None = None,
) -> None:
    """`feed` into ``queue``, ending at its stop as at the end of ``items``.

    Once a stop of ``queue`` begins, nothing more is drawn: a draw under way
    is cancelled (an async iterator is closed), and an item drawn but not put
    goes to ``refused``, as on cancellation; then it returns. The other
    arguments are `feed`'s.
    """
    if queue.status in _STOPPED:
        return  # stopped before the feed began: draw nothing
    with CancelScope() as scope, queue.told_of_stop(scope.cancel):
        try:
            await feed(
                items,
                put,
                check=check,
                refused=refused,
                window=window,
                put_now=put_now,
            )
        except QueueStateError:
            # A put refused by the stop, reached before the cancellation was
            # (a source that does not yield to it): the item went to `refused`.
            if queue.status not in _STOPPED:
                raise


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

    ``check(item)`` runs on each item as it is drawn, and may raise. If a put
    raises (it is atomic: the item was not accepted), ``refused(item)`` is
    called first. With a ``window``, each put first waits while the window
    is over (``check`` counts the item in it). ``put_now(item)``, if given, is
    tried first: it puts the item without awaiting and returns True, or
    returns False and leaves it to ``put``. When feeding stops early, an async
    iterator being read is closed, so an async generator's ``finally`` runs
    now rather than at garbage collection.
    """

    def at_once(item: T) -> bool:
        """Check ``item``, and put it without awaiting if it can be; True if done."""
        if check is not None:
            check(item)
        if window is not None and window.over():
            return False
        return put_now is not None and put_now(item)

    # The common case needs no coroutine per item: room in the window and in
    # the queue.
    if not isinstance(items, AsyncIterable):
        try:
            for item in items:
                if not at_once(item):
                    await _put(item, put, refused, window)
        except BaseException:
            close_generator(items)
            raise
        return
    iterator = aiter(items)
    try:
        async for item in iterator:
            if not at_once(item):
                await _put(item, put, refused, window)
    except BaseException:
        await aclose_source(iterator)
        raise


def close_generator(items: object) -> None:
    """Close ``items`` if it is a generator left part way, so that its
    ``finally`` runs now (other iterables are the caller's to close)."""
    if isgenerator(items):
        items.close()


async def aclose_source(iterator: object) -> None:
    """Close an async iterator left part way, shielded: its cleanup (an
    async generator's ``finally``) runs to its end even when the feed is
    cancelled."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with CancelScope(shield=True):
            await aclose()


async def _put(
    item: T,
    put: Put[T],
    refused: Callable[[T], None] | None,
    window: Window | None,
) -> None:
    """Put ``item`` once the window has room for it."""
    try:
        if window is not None:
            await window.wait_for_room()
        await put(item, None)
    except BaseException:
        if refused is not None:
            refused(item)  # drawn, never put: not lost
        raise
