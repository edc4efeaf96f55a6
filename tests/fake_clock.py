"""An injected clock: virtual time for rate tests on every backend."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import anyio
import sniffio


async def all_blocked() -> None:
    """Return once every other task is blocked, like anyio.wait_all_tasks_blocked.

    AnyIO's asyncio version sleeps 0.1 s whenever it finds a runnable task, which
    makes virtual-time tests with many tasks crawl; this one yields instead. On
    asyncio AnyIO delivers a cancel scope's cancellation from a ``call_soon``
    callback, so a task may look blocked while a callback that will cancel it is
    ready: wait until the ready queue is empty too (uvloop does not show it;
    there, look again after a few more loop turns).
    """
    if sniffio.current_async_library() != "asyncio":
        await anyio.wait_all_tasks_blocked()
        return
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    for _ in range(100):
        await _tasks_blocked()
        if ready is None:  # uvloop
            for _ in range(3):
                await asyncio.sleep(0)
            await _tasks_blocked()
            return
        if not ready:
            return
    raise AssertionError("callbacks keep the event loop busy")


async def _tasks_blocked() -> None:
    this_task = asyncio.current_task()
    assert this_task is not None
    _polling.add(this_task)
    try:
        while True:
            await asyncio.sleep(0)
            for task in asyncio.all_tasks():
                if task in _polling:
                    continue  # another poller: runnable, but only to look
                waiter = task._fut_waiter  # type: ignore[attr-defined]
                if waiter is None or waiter.done():
                    break
            else:
                return
    finally:
        _polling.discard(this_task)


_polling: set[asyncio.Task[object]] = set()


class FakeClock:
    """Virtual time: `sleep_until` parks until the clock reaches the deadline.

    Run `autojump` in a task and, whenever every other task is blocked, time jumps
    to the earliest deadline, as trio's MockClock does with autojump_threshold=0.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()
        self._sleeper_added: anyio.Event | None = None

    def current_time(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many deadlines tasks sleep until (a cancelled sleep's stays
        counted until the clock reaches it)."""
        return len(self._sleepers)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (deadline, next(self._order), event))
        if self._sleeper_added is not None:
            self._sleeper_added.set()
        await event.wait()

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()

    async def autojump(self) -> None:
        while True:
            await all_blocked()
            if self._sleepers:
                self.advance(max(0.0, self._sleepers[0][0] - self._now))
            else:
                self._sleeper_added = anyio.Event()
                await self._sleeper_added.wait()
                self._sleeper_added = None


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps in any closed window of ``window`` seconds."""
    times = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while t - times[start] > window + 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best
