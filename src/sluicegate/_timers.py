"""Timers: a queue's delay line, the task that runs it, and the queue's hold.

Three kinds of entries fall due in one `DelayLine`: items waiting out a retry's
backoff (they go back to the front of the buffer), the cancel scopes of calls
with a deadline on an injected clock (they are cancelled), and the end of a
hold (`hold_until`: the slots come back).

The line runs in one task. Inside ``async with queue:`` that is the block's own
task, for as long as the block runs; otherwise it lives beside the workers, in
their task group, and ends with the last of them (what falls due meanwhile is
released when workers start again, or listed when the queue stops). A task
group cancelled under it does not strand the workers of other groups: the task
starts again beside one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from anyio import CancelScope, get_cancelled_exc_class
from anyio.abc import TaskGroup

from ._calls import HoldEnd, Retry, Timed
from ._delay import DelayLine, Entry

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["Timers"]

_HOLD_END: Final = HoldEnd()


class Timers:
    """The delay line of one queue (``core``), and the hold it keeps."""

    __slots__ = (
        "_beside_workers",
        "_core",
        "_hold_end",
        "_scope",
        "held_until",
        "line",
    )

    def __init__(self, core: Core[Any]) -> None:
        self._core = core
        self.line: DelayLine[Timed] = DelayLine(core.clock, self._due)
        self._scope: CancelScope | None = None
        self._beside_workers = False
        #: While held (`hold_until`), no slot is free: the deadline, and its
        #: entry in the line, which gives the slots back.
        self.held_until: float | None = None
        self._hold_end: Entry[Timed] | None = None

    @property
    def running(self) -> bool:
        """True while a task runs the line."""
        return self._scope is not None

    def start(self, group: TaskGroup, *, beside_workers: bool) -> None:
        """Start the task that runs the line, in ``group``."""
        self._scope = CancelScope()
        self._beside_workers = beside_workers
        group.start_soon(self._run, self._scope, group)

    def stop(self) -> None:
        """End the line's task (what is in the line stays)."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    def stop_beside_workers(self) -> None:
        """The last worker left: a task beside the workers ends with them."""
        if self._beside_workers:
            self.stop()

    async def _run(self, scope: CancelScope, group: TaskGroup) -> None:
        try:
            with scope:
                await self.line.run()
        except get_cancelled_exc_class():
            if self._scope is scope:
                # Cancelled with its task group, not by the queue: workers of
                # other groups still need their retries released (and, on an
                # injected clock, their deadlines kept).
                self._scope = None
                self._restart(group)
            raise

    def _restart(self, dead: TaskGroup) -> None:
        """Start the task beside a worker whose task group is not ``dead`` nor
        cancelled; none is left running if there is no such worker (the next
        `start_workers` starts it)."""
        for worker in self._core.dispatch.pool.workers:
            group = worker.spawn.group if worker.spawn is not None else dead
            if group is dead or group.cancel_scope.cancel_called:
                continue
            try:
                self.start(group, beside_workers=True)
            except RuntimeError:  # that group has closed
                self._scope = None
                continue
            return

    def retry_later(self, retry: Retry, due: float) -> None:
        """Put an item back for another call at ``due``; it counts as delayed."""
        self._core.books.delayed += 1
        self.line.add(retry, due)

    def drain(self) -> list[Any]:
        """Empty the line (the queue stops); return the items that waited."""
        items = [value.item for value in self.line.drain() if type(value) is Retry]
        self._core.books.delayed = 0
        return items

    def hold_until(self, deadline: float) -> None:
        """Start no new call before ``deadline``; a later one extends it."""
        if self.held_until is not None and deadline <= self.held_until:
            return
        self.held_until = deadline
        self._core.dispatch.close()
        if self._hold_end is not None:
            self.line.withdraw(self._hold_end)
        self._hold_end = self.line.add(_HOLD_END, deadline)

    def keep_hold(self) -> None:
        """Started again: a hold that outlasted the stop (which emptied the
        line) still ends at its time."""
        hold_end = self._hold_end
        if hold_end is not None and not hold_end.live:
            self._hold_end = self.line.add(_HOLD_END, hold_end.due)

    def _due(self, values: list[Timed]) -> None:
        """Retries whose backoff is over go back to the front of the buffer, in
        the order they fell due; calls whose deadline has come are cancelled;
        a hold that is over ends."""
        retries = [value for value in values if type(value) is Retry]
        hold_ends = False
        for value in values:
            if isinstance(value, CancelScope):
                value.cancel()
            elif value is _HOLD_END:
                hold_ends = True
        dispatch = self._core.dispatch
        if hold_ends:
            # First: waking workers for the retries needs slots.
            self.held_until = None
            self._hold_end = None
            dispatch.reopen()
        if retries:
            books = self._core.books
            books.delayed -= len(retries)
            books.buffer.extendleft(reversed(retries))
            for _ in retries:
                if dispatch.consumers_parked:
                    dispatch.wake_consumer()
