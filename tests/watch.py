"""The books checked at every suspension, and a cancellation at the n-th one.

``async with watching() as watch:`` checks the books (`books.assert_books`) of
every queue given to `Watch.watch` between the steps of the event loop's tasks:

- on trio after every task step, from an Instrument (``after_task_step``);
- on asyncio each time a watcher task runs: it yields with
  ``anyio.lowlevel.checkpoint()`` in a loop, so it runs between the other
  tasks' steps, once per turn of the loop. It ends with the block.

Each check also bounds ``in_flight``: no more items are in flight than there are
workers (each holds one at most) and items taken by ``get()``. A check that fails
is recorded (an Instrument that raised would be disabled) and fails the block.

The same count of suspensions drives `sweep`: run a scenario once to count the
suspensions inside its `Watch.cancelled_at` scope, then once for each of them,
with the scope cancelled there.

Time: on trio the loop's MockClock jumps by itself, and `Watch.clock` is None
(a queue then uses the loop's clock). On asyncio `Watch.clock` is a `FakeClock`
that the watcher moves on by `TICK` each time it runs, so that virtual time
passes with the scenario, in the same steps on every run; a task that waits on
it is woken as the watcher goes round. Use `Watch.settle` instead of
``all_blocked()`` inside the block: on asyncio the watcher is always runnable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import sniffio
import trio
from books import assert_books
from fake_clock import FakeClock, all_blocked
from support import taken_by_get

from sluicegate import BoundedQueue, QueueStatus
from sluicegate._exceptions import unwrapped_group

#: Virtual seconds the asyncio watcher moves its clock on per turn of the loop.
TICK = 0.05
#: A sweep fails if its scenario takes more suspensions than this.
SWEEP_LIMIT = 3_000
#: fail_after's limit per run: only a guard against hangs.
GUARD = 30


def _bounded(queue: Any) -> BoundedQueue[Any]:
    """The BoundedQueue under a WorkQueue (or the queue itself)."""
    inner = getattr(queue, "queue", queue)
    return inner if isinstance(inner, BoundedQueue) else queue


class Watch:
    """The queues watched, the suspensions counted, and what failed."""

    def __init__(self, clock: FakeClock | None) -> None:
        self.clock = clock
        self.steps = 0
        self.failures: list[str] = []
        self._queues: list[Any] = []
        self._target: tuple[int, Callable[[], object]] | None = None
        self._paused: anyio.Event | None = None
        #: Suspensions inside the last `cancelled_at` scope.
        self.counted = 0

    def watch(self, *queues: Any) -> None:
        """Check the books of ``queues`` from now on."""
        self._queues.extend(queues)

    def check(self) -> None:
        """Check the books of every watched queue now; record what fails."""
        for queue in self._queues:
            try:
                assert_books(queue)
                inner = _bounded(queue)
                held = inner.worker_count + taken_by_get(inner)
                assert inner.in_flight <= held, (inner.metrics, held)
            except AssertionError as exc:
                if len(self.failures) < 5:
                    self.failures.append(f"step {self.steps}: {exc}")

    def step(self) -> None:
        """One suspension: check, move the clock on, cancel if it is time."""
        self.steps += 1
        self.check()
        if self.clock is not None:
            self.clock.advance(TICK)
        target = self._target
        if target is not None and self.steps >= target[0]:
            self._target = None
            target[1]()

    @contextmanager
    def at(self, n: int | None, action: Callable[[], object]) -> Iterator[None]:
        """Call ``action()`` at the ``n``-th suspension after this block is
        entered (0: at once; None: never); count the block's suspensions."""
        start = self.steps
        if n == 0:
            action()
        elif n is not None:
            self._target = (start + n, action)
        try:
            yield
        finally:
            self._target = None
            self.counted = self.steps - start

    @contextmanager
    def cancelled_at(self, n: int | None) -> Iterator[anyio.CancelScope]:
        """A cancel scope cancelled at the ``n``-th suspension after it is
        entered (0: at once; None: never); counts its suspensions."""
        with anyio.CancelScope() as scope, self.at(n, scope.cancel):
            yield scope

    async def settle(self) -> None:
        """Return once every other task is blocked (the watcher set aside)."""
        if self.clock is None:
            await anyio.wait_all_tasks_blocked()
            return
        self._paused = anyio.Event()
        try:
            await all_blocked()
        finally:
            paused, self._paused = self._paused, None
            paused.set()

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of the scenario's virtual time pass."""
        if self.clock is None:
            await anyio.sleep(seconds)
        else:
            await self.clock.sleep_until(self.clock.current_time() + seconds)

    # -- the two ways of watching ------------------------------------------------

    async def _watcher(self) -> None:
        while True:
            paused = self._paused
            if paused is not None:
                await paused.wait()
            self.step()
            await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def watching(*queues: Any) -> AsyncIterator[Watch]:
    """Watch the books of ``queues`` (and those added later) in this block."""
    if sniffio.current_async_library() == "trio":
        watch = Watch(None)
        watch.watch(*queues)
        instrument = _Instrument(watch)
        trio.lowlevel.add_instrument(instrument)
        try:
            yield watch
        finally:
            trio.lowlevel.remove_instrument(instrument)
    else:
        watch = Watch(FakeClock())
        watch.watch(*queues)
        with unwrapped_group():
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch._watcher)
                try:
                    yield watch
                finally:
                    tg.cancel_scope.cancel()
    watch.check()
    assert watch.failures == [], watch.failures


class _Instrument(trio.abc.Instrument):
    def __init__(self, watch: Watch) -> None:
        self._watch = watch

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self._watch.step()


Scenario = Callable[[Watch, "int | None"], Awaitable[None]]


async def sweep(scenario: Scenario, *, limit: int = SWEEP_LIMIT) -> int:
    """Cancel ``scenario`` at every suspension it takes.

    ``scenario(watch, n)`` runs in a fresh `watching` block and puts the part to
    attack in ``with watch.cancelled_at(n):`` (or ``with watch.at(n, action):``
    to do something else there). It runs once with ``n=None`` to
    count the suspensions of that part, then once for each ``n`` below the
    count; it checks its own outcome each time. Returns the count.
    """
    with anyio.fail_after(GUARD):
        async with watching() as watch:
            await scenario(watch, None)
    count = watch.counted
    assert 0 < count <= limit, count
    for n in range(count):
        with anyio.fail_after(GUARD):
            async with watching() as watch:
                await scenario(watch, n)
    return count


def assert_accounted(
    queue: Any, accepted: Iterable[object], done: Counter[Any]
) -> None:
    """``queue`` has stopped, and each accepted item ended once: processed
    (counted in ``done`` by the test's worker and error handler) or listed
    unprocessed, never both, never twice; nothing else was processed."""
    inner = _bounded(queue)
    assert inner.status is QueueStatus.STOPPED, inner
    assert inner.worker_count == 0, inner
    assert_books(inner)
    assert inner.in_flight == 0, inner.metrics
    assert [item for item, n in done.items() if n > 1] == []
    unprocessed = inner.unprocessed
    assert len(unprocessed) == len(set(unprocessed)), unprocessed
    assert set(done).isdisjoint(unprocessed), (done, unprocessed)
    assert set(done) | set(unprocessed) == set(accepted), (accepted, done, unprocessed)
    assert inner.metrics["processed"] == len(done), (inner.metrics, done)


def tasks() -> int:
    """How many tasks the event loop runs now."""
    return len(anyio.get_running_tasks())
