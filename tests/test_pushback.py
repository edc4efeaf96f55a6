"""RetryAfter pauses the queue it was raised in, with or without a rate limiter.

A call that raises `RetryAfter(seconds)` holds its queue: no new call of that
queue starts before the delay ends, calls already running finish, and the items
stay in the buffer meanwhile (a stop lists them as unprocessed). The rate
limiter, if the queue has one, is held too, and with it every queue sharing it.
`BoundedQueue.hold` sets such a pause by hand, and `held_until` reads it.

Time is virtual: a FakeClock injected into the queue (and its rate limiter), on
every backend. Times are multiples of 0.25 s, exact in binary floats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from books import assert_books
from fake_clock import FakeClock, all_blocked

from sluicegate import (
    BoundedQueue,
    Event,
    ExecutionStatus,
    Executor,
    QueueConfig,
    RateLimiter,
    RetryAfter,
    RetryPolicy,
    WorkQueue,
)

GUARD = 10
PAUSE = 0.5  # what the service asks for
WORK = 0.25  # how long every other call takes
ITEMS = 40
WORKERS = 8
PUSHED = 10  # the item whose first call is pushed back (it starts at 0.25)


@asynccontextmanager
async def virtual_time() -> AsyncIterator[FakeClock]:
    clock = FakeClock()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            yield clock
            tg.cancel_scope.cancel()


class Log:
    """What the calls did, in the order they did it: starts and the pushback."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[tuple[str, int, float]] = []

    def started(self, item: int) -> None:
        self.events.append(("start", item, self.clock.current_time()))

    def pushed_back(self, item: int) -> None:
        self.events.append(("pushback", item, self.clock.current_time()))

    @property
    def pushed(self) -> bool:
        return any(kind == "pushback" for kind, _, _ in self.events)

    def pushback_time(self) -> float:
        (time,) = [t for kind, _, t in self.events if kind == "pushback"]
        return time

    def starts_after_pushback(self) -> list[float]:
        kinds = [kind for kind, _, _ in self.events]
        after = self.events[kinds.index("pushback") + 1 :]
        return [t for kind, _, t in after if kind == "start"]

    def work(self, pushed: int = PUSHED) -> Callable[[int], Awaitable[None]]:
        """A worker function: item ``pushed`` raises RetryAfter(PAUSE) on its
        first call; every other call takes WORK seconds."""

        async def work(item: int) -> None:
            self.started(item)
            if item == pushed and not self.pushed:
                self.pushed_back(item)
                raise RetryAfter(PAUSE)
            await self.clock.sleep_until(self.clock.current_time() + WORK)

        return work


def assert_paused(log: Log) -> None:
    """No call started within PAUSE of the pushback, and calls resumed at its end."""
    pushed_at = log.pushback_time()
    after = log.starts_after_pushback()
    assert after, "no call started after the pushback"
    assert min(after) == pushed_at + PAUSE, (pushed_at, sorted(after))


async def _ignore(exc: Exception, item: object) -> None:
    pass


# -- no call starts during the pause: every path --------------------------------


@pytest.mark.parametrize(
    "job",
    [
        pytest.param({}, id="plain (inline, no retry)"),
        pytest.param({"retry": RetryPolicy(attempts=2)}, id="retry policy"),
        pytest.param({"item_timeout": 60.0}, id="item timeout, no retry"),
    ],
)
async def test_retry_after_pauses_a_queue_without_a_rate_limiter(
    job: dict[str, Any],
) -> None:
    async with virtual_time() as clock:
        log = Log(clock)
        queue: BoundedQueue[int] = BoundedQueue(maxsize=ITEMS, clock=clock)
        async with queue:
            await queue.start_workers(log.work(), WORKERS, _ignore, **job)
            for i in range(ITEMS):
                await queue.put(i)
    assert log.pushback_time() == WORK
    assert_paused(log)
    retried = "retry" in job
    assert queue.metrics["processed"] == ITEMS
    assert queue.metrics["errors"] == (0 if retried else 1)
    assert queue.metrics["retries"] == (1 if retried else 0)
    assert len([e for e in log.events if e[0] == "start"]) == ITEMS + retried
    assert_books(queue)


async def test_retry_after_pauses_a_work_queue_map() -> None:
    async with virtual_time() as clock:
        log = Log(clock)
        queue: WorkQueue[int] = WorkQueue(clock=clock)
        policy = RetryPolicy(attempts=2)
        work = log.work()
        async with queue.map(
            work, range(ITEMS), num_workers=WORKERS, retry=policy
        ) as results:
            outcomes = [outcome async for outcome in results]
    assert_paused(log)
    assert sorted(o.item for o in outcomes) == list(range(ITEMS))
    assert all(o.error is None for o in outcomes)
    assert_books(queue.queue)


class Call(Event):
    def __init__(self, number: int, log: Log, pushed: int) -> None:
        super().__init__()
        self.number = number
        self.log = log
        self.pushed = pushed

    async def invoke(self) -> int:
        await self.log.work(self.pushed)(self.number)
        return self.number


@pytest.mark.parametrize(
    "retry",
    [pytest.param(None, id="no retry"), pytest.param(RetryPolicy(attempts=2))],
)
async def test_retry_after_pauses_an_executor(retry: RetryPolicy | None) -> None:
    async with virtual_time() as clock:
        log = Log(clock)
        config = QueueConfig(capacity_refresh_time=None, concurrency_limit=WORKERS)
        executor = Executor(Call, config, retry=retry, clock=clock)
        events = [Call(i, log, PUSHED) for i in range(ITEMS)]
        await executor.batch_process(events)
    assert_paused(log)
    failed = [e.number for e in events if e.execution.status is ExecutionStatus.FAILED]
    assert failed == ([] if retry else [PUSHED])
    assert executor.metrics["completed"] == ITEMS - len(failed)
    assert_books(executor.queue)


# -- with a rate limiter ----------------------------------------------------------


async def test_retry_after_holds_the_limiter_and_its_own_queue() -> None:
    """The limiter holds every queue sharing it, as before; the queue that was
    pushed back also stops taking items, which stay in its buffer."""
    clock = FakeClock()  # time stands still until autojump starts below
    limiter = RateLimiter(1_000, clock=clock)
    starts: list[tuple[str, int, float]] = []

    async def pushed_back(item: int) -> None:
        starts.append(("a", item, clock.current_time()))
        if item == 0 and clock.current_time() == 0:
            raise RetryAfter(PAUSE)

    async def other(item: int) -> None:
        starts.append(("b", item, clock.current_time()))

    first: WorkQueue[int] = WorkQueue(
        retry=RetryPolicy(attempts=2), rate_limiter=limiter, clock=clock
    )
    second: WorkQueue[int] = WorkQueue(rate_limiter=limiter, clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            async with first, second:
                await first.process(pushed_back, 4)
                await second.process(other, 4)
                await first.put(0)
                await all_blocked()
                for i in range(1, 6):
                    await first.put(i)
                await second.put(100)
                await all_blocked()
                assert limiter.held_until == PAUSE
                assert first.queue.held_until == PAUSE
                assert second.queue.held_until is None  # held through the limiter
                assert starts == [("a", 0, 0.0)]
                # The pushed-back queue's workers leave its items in the buffer
                # (none waits in the limiter, holding one).
                assert (first.size, first.queue.in_flight, first.delayed) == (5, 0, 1)
                assert_books(first.queue)
                tg.start_soon(clock.autojump)
            tg.cancel_scope.cancel()
    # Then the limiter resumes at its rate, not in a burst: its bucket is empty
    # at the end of the hold, and refills one token per millisecond.
    assert sorted(t for _, _, t in starts[1:]) == pytest.approx(
        [PAUSE + k / 1_000 for k in range(1, 8)]
    )


# -- what a pause holds, and what it does not -------------------------------------


async def test_a_paused_queue_keeps_its_limit_and_frees_its_slots() -> None:
    """While paused, workers wait holding no slot: `slots_in_use` counts the
    calls still running, and `concurrency_limit` stays what was set (a new
    one set meanwhile applies once the pause ends)."""
    clock = FakeClock()  # moved by hand
    gate = anyio.Event()
    running = 0
    most = 0

    async def work(item: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            if item == 0:
                raise RetryAfter(1)
            if item == 1:
                await gate.wait()  # running when the pause begins
            else:
                await clock.sleep_until(clock.current_time() + WORK)
        finally:
            running -= 1

    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=20, concurrency_limit=2, clock=clock
    )
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 6, _ignore)
            await queue.put(1)
            await all_blocked()
            await queue.put(0)
            for i in range(2, 12):
                await queue.put(i)
            await all_blocked()
            assert queue.held_until == 1.0
            stats = queue.statistics()
            assert (stats.slots_in_use, stats.concurrency_limit) == (1, 2)
            assert (stats.size, stats.in_flight, running) == (10, 1, 1)
            gate.set()
            await all_blocked()
            stats = queue.statistics()
            assert (stats.slots_in_use, stats.in_flight, stats.size) == (0, 0, 10)
            assert stats.idle_workers == 6
            queue.concurrency_limit = 3
            await all_blocked()
            assert (queue.size, queue.concurrency_limit) == (10, 3)
            assert clock.sleepers == 1  # one sleeper for the pause: no polling
            clock.advance(1)
            await all_blocked()
            assert queue.held_until is None
            assert (queue.statistics().slots_in_use, running) == (3, 3)
            async with anyio.create_task_group() as tg:
                tg.start_soon(clock.autojump)
                await queue.join()
                tg.cancel_scope.cancel()
    assert most == 3
    assert queue.metrics["processed"] == 12
    assert_books(queue)


async def test_get_is_not_paused() -> None:
    clock = FakeClock()
    called: list[int] = []

    async def work(item: int) -> None:
        called.append(item)

    got: list[int] = []

    async def consume() -> None:
        got.append(await queue.get())  # the caller's own consumer, parked first
        queue.task_done()

    queue: BoundedQueue[int] = BoundedQueue(clock=clock)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 2)
            queue.hold(5)
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await all_blocked()
                await queue.put(1)
                await queue.put(2)
            assert got == [1]
            await all_blocked()
            assert (called, queue.size) == ([], 1)
            await queue.stop()
    assert queue.unprocessed == [2]
    assert_books(queue)


def test_hold_extends_and_never_shortens() -> None:
    clock = FakeClock(start=10.0)
    queue: BoundedQueue[int] = BoundedQueue(clock=clock)
    assert queue.held_until is None
    queue.hold(0)  # no hold
    assert queue.held_until is None
    queue.hold(2)
    assert queue.held_until == 12.0
    queue.hold(1)  # earlier: changes nothing
    assert queue.held_until == 12.0
    queue.hold(3)
    assert queue.held_until == 13.0
    clock.advance(3)
    assert queue.held_until is None  # over (read on the clock)


def test_work_queue_forwards_hold() -> None:
    clock = FakeClock()
    queue: WorkQueue[int] = WorkQueue(clock=clock)
    queue.hold(4)
    assert queue.held_until == queue.queue.held_until == 4.0


@pytest.mark.parametrize(
    ("seconds", "error", "match"),
    [
        (-1, ValueError, "seconds must be a finite number >= 0, got -1"),
        (float("nan"), ValueError, "seconds must be a finite number >= 0"),
        (float("inf"), ValueError, "seconds must be a finite number >= 0"),
        ("1", TypeError, "seconds must be a number, got '1'"),
        (True, TypeError, "seconds must be a number, got True"),
    ],
)
def test_hold_checks_its_seconds(
    seconds: object, error: type[Exception], match: str
) -> None:
    queue: BoundedQueue[int] = BoundedQueue(clock=FakeClock())
    with pytest.raises(error, match=match):
        queue.hold(seconds)  # type: ignore[arg-type]
    assert queue.held_until is None


# -- stop, cancellation and restart during a pause ------------------------------


def _pushing_work(clock: FakeClock) -> Callable[[int], Awaitable[None]]:
    async def work(item: int) -> None:
        if item == 0:
            raise RetryAfter(60)
        await clock.sleep_until(clock.current_time() + WORK)

    return work


@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_stop_during_a_pause_ends_the_waiting_workers_at_once(
    timeout: float | None,
) -> None:
    clock = FakeClock()  # time stands still: the pause never ends by itself
    queue: BoundedQueue[int] = BoundedQueue(maxsize=20, clock=clock)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(_pushing_work(clock), 4, _ignore)
            for i in range(10):
                await queue.put(i)
            await all_blocked()
            assert queue.held_until == 60.0
            assert (queue.size, queue.in_flight) == (9, 0)
            assert clock.sleepers == 1  # one sleeper for the pause: no polling
            assert_books(queue)
            await queue.stop(timeout)
            assert queue.worker_count == 0
    assert clock.current_time() == 0
    assert queue.unprocessed == list(range(1, 10))
    assert (queue.metrics["processed"], queue.metrics["errors"]) == (1, 1)
    assert_books(queue)


@pytest.mark.parametrize("timeout", [None, 0])
async def test_stop_during_a_pause_lets_running_calls_finish(
    timeout: float | None,
) -> None:
    """Waiting workers end at once; a call still running finishes (or, past
    the stop's timeout, is cancelled and listed first)."""
    clock = FakeClock()
    gate = anyio.Event()

    async def work(item: int) -> None:
        if item == 0:
            await gate.wait()
        elif item == 1:
            raise RetryAfter(60)

    queue: BoundedQueue[int] = BoundedQueue(maxsize=20, clock=clock)
    with anyio.fail_after(GUARD):
        async with queue:
            await queue.start_workers(work, 4, _ignore)
            await queue.put(0)
            await all_blocked()
            for i in range(1, 10):
                await queue.put(i)
            await all_blocked()
            assert (queue.held_until, queue.size, queue.in_flight) == (60.0, 8, 1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(queue.stop, timeout)
                await all_blocked()
                assert queue.worker_count == (1 if timeout is None else 0)
                gate.set()
    assert queue.worker_count == 0
    cancelled = [] if timeout is None else [0]
    assert queue.unprocessed == [*cancelled, *range(2, 10)]
    assert queue.metrics["processed"] == 2 - len(cancelled)
    assert_books(queue)


async def test_cancelling_the_group_of_waiting_workers() -> None:
    clock = FakeClock()
    queue: BoundedQueue[int] = BoundedQueue(maxsize=20, clock=clock)
    with anyio.fail_after(GUARD):
        await queue.start()
        async with anyio.create_task_group() as tg:
            await queue.start_workers(_pushing_work(clock), 4, _ignore, task_group=tg)
            for i in range(10):
                await queue.put(i)
            await all_blocked()
            assert queue.held_until == 60.0
            tg.cancel_scope.cancel()
        assert queue.worker_count == 0
        assert (queue.size, queue.in_flight, queue.unprocessed) == (9, 0, [])
        assert_books(queue)
        await queue.stop()
    assert queue.unprocessed == list(range(1, 10))
    assert_books(queue)


async def test_a_hold_outlasts_a_stop_and_a_restart() -> None:
    """The service asked for the pause, not the run: a queue started again
    before the hold ends starts no call until then."""
    clock = FakeClock()
    calls: list[tuple[int, float]] = []

    async def work(item: int) -> None:
        calls.append((item, clock.current_time()))

    queue: BoundedQueue[int] = BoundedQueue(clock=clock)
    with anyio.fail_after(GUARD):
        async with queue:
            queue.hold(2)
            await queue.stop()
        assert queue.held_until == 2.0
        async with queue:
            await queue.start_workers(work, 2)
            await queue.put(1)
            await all_blocked()
            assert (calls, queue.size) == ([], 1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(clock.autojump)
                await queue.join()
                tg.cancel_scope.cancel()
    assert calls == [(1, 2.0)]
    assert queue.held_until is None
    assert_books(queue)


async def test_a_hold_outlasts_stop_workers() -> None:
    clock = FakeClock()
    calls: list[tuple[int, float]] = []

    async def work(item: int) -> None:
        calls.append((item, clock.current_time()))

    queue: BoundedQueue[int] = BoundedQueue(clock=clock)
    with anyio.fail_after(GUARD):
        await queue.start()
        async with anyio.create_task_group() as tg:
            await queue.start_workers(work, 2, task_group=tg)
            queue.hold(1)
            await queue.put(1)
            await all_blocked()
            await queue.stop_workers()
            clock.advance(0.5)
            await queue.start_workers(work, 2, task_group=tg)
            await all_blocked()
            assert (calls, queue.size) == ([], 1)
            tg.start_soon(clock.autojump)
            await queue.join()
            await queue.stop()
            tg.cancel_scope.cancel()
    assert calls == [(1, 1.0)]
    assert_books(queue)
