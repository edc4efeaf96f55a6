"""WaiterLine: tasks parked until woken, served FIFO or LIFO; leaving costs O(1).

Used for blocked producers, parked `get()` callers, idle workers and the rate
limiter's queue of waiters.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, Protocol

from anyio import Event
from anyio.lowlevel import current_token

__all__ = ["OneShot", "WaiterLine", "one_shot_factory"]

_WAITING: Final = 0
_WOKEN: Final = 1
_LEFT: Final = 2

#: Entries of waiters that left are dropped once there are more of them than this
#: and than live waiters: amortised O(1) per leave, memory O(live waiters).
_COMPACT_AFTER: Final = 64


class OneShot(Protocol):
    """Something one task awaits until another sets it: an anyio Event, or
    the lighter kind `one_shot_factory` makes on asyncio."""

    def wait(self) -> Awaitable[object]: ...

    def set(self) -> None: ...


class _FutureOneShot:
    """A one-shot event over a bare future of the running asyncio loop.

    `wait` returns the future itself, so awaiting it runs no coroutine: an
    anyio Event awaits asyncio's Event, which awaits such a future. Cancelling
    the waiting task cancels the future, as it would inside an Event.
    """

    __slots__ = ("_future",)

    def __init__(self, create_future: Callable[[], Any]) -> None:
        self._future = create_future()

    def wait(self) -> Awaitable[object]:
        return self._future  # type: ignore[no-any-return]

    def set(self) -> None:
        future = self._future
        # (A future cancelled with its task is done already: that task learns
        # it was woken when it resumes, as it would from a set Event.)
        if not future.done():
            future.set_result(None)


def one_shot_factory() -> Callable[[], OneShot]:
    """The cheapest `OneShot` of the running event loop, as a factory that is
    valid while that loop runs: on asyncio (uvloop included) one over a bare
    future of the loop; elsewhere the backend's own Event class (which
    ``anyio.Event()`` looks up on every call)."""
    create_future = getattr(current_token().native_token, "create_future", None)
    if callable(create_future):
        return partial(_FutureOneShot, create_future)
    return type(Event())


class _Waiter:
    __slots__ = ("event", "state")

    def __init__(self, event: OneShot) -> None:
        self.event = event
        self.state = _WAITING


class WaiterLine:
    """A line of parked tasks, woken one at a time or all at once.

    `park` waits until `wake_one` (or `wake_all`) picks this task. The line serves
    waiters in arrival order (FIFO), or most recent first with ``lifo=True``. A task
    cancelled while parked only marks its entry as gone: waking skips such entries,
    and they are dropped in bulk when they outnumber the live ones, so leaving
    costs O(1) however long the line is.

    `parked` counts tasks parked and not yet woken (a plain attribute, cheap to
    read on a hot path); `woken` counts tasks woken that have not resumed yet, so
    a waker can avoid waking more tasks than there is work for. A task cancelled
    after it was woken would lose that wake-up: the line then calls
    ``on_lost_wake()``, which should pass it on if it is still wanted.
    """

    __slots__ = (
        "_entries",
        "_left",
        "_lifo",
        "_new",
        "_on_lost_wake",
        "parked",
        "woken",
    )

    def __init__(
        self,
        *,
        lifo: bool = False,
        on_lost_wake: Callable[[], object] | None = None,
    ) -> None:
        self._entries: deque[_Waiter] = deque()
        self._lifo = lifo
        self._on_lost_wake = on_lost_wake
        #: How many tasks are parked and not yet woken (read it; never set it).
        self.parked = 0
        self._left = 0  # entries of waiters that left while parked
        self.woken = 0
        # What `park` waits on: an anyio Event (which looks the backend up each
        # time) until `bind` picks the running loop's own.
        self._new: Callable[[], OneShot] = Event

    def bind(self) -> None:
        """Park on the running event loop's cheapest `OneShot` from now on (a
        bare future on asyncio); call it while that loop runs, as an owner does
        when it starts."""
        self._new = one_shot_factory()

    def __len__(self) -> int:
        """How many tasks are parked and not yet woken."""
        return self.parked

    def __bool__(self) -> bool:
        return self.parked > 0

    async def park(self, *, first: bool = False) -> None:
        """Wait in the line until woken.

        ``first=True`` parks at the head of the line: for a task that was woken,
        found its chance taken by another, and must not lose its place.

        If cancelled, the task leaves the line and the cancellation propagates;
        a wake-up it had already received goes to ``on_lost_wake``.
        """
        waiter = _Waiter(self._new())
        if first and not self._lifo:  # (LIFO serves the newest first anyway)
            self._entries.appendleft(waiter)
        else:
            self._entries.append(waiter)
        self.parked += 1
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.state == _WAITING:
                self._leave(waiter)
            else:
                self.woken -= 1
                if self._on_lost_wake is not None:
                    self._on_lost_wake()
            raise
        self.woken -= 1

    def wake_one(self) -> bool:
        """Wake the next parked task; False if none is parked."""
        entries = self._entries
        while entries:
            waiter = entries.pop() if self._lifo else entries.popleft()
            if waiter.state == _WAITING:
                self._wake(waiter)
                return True
            self._left -= 1
        return False

    def wake_all(self) -> int:
        """Wake every parked task; return how many were woken."""
        count = 0
        entries = self._entries
        while entries:
            waiter = entries.popleft()
            if waiter.state == _WAITING:
                self._wake(waiter)
                count += 1
        self._left = 0
        return count

    def _wake(self, waiter: _Waiter) -> None:
        waiter.state = _WOKEN
        self.parked -= 1
        self.woken += 1
        waiter.event.set()

    def _leave(self, waiter: _Waiter) -> None:
        waiter.state = _LEFT
        self.parked -= 1
        self._left += 1
        if self._left > _COMPACT_AFTER and self._left > self.parked:
            self._entries = deque(w for w in self._entries if w.state == _WAITING)
            self._left = 0

    def __repr__(self) -> str:
        order = "LIFO" if self._lifo else "FIFO"
        return f"<WaiterLine {order} parked={self.parked} woken={self.woken}>"
