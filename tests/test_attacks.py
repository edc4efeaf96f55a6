"""Attacks on the queue, the executor, the waiter lines and the rate limiter.

Each section attacks one area and checks that nothing is lost, repeated or left
stuck afterwards:

- cancellation at every await: put, get, stop, stop_workers, join and
  batch_process are cancelled at the k-th scheduling step, for every k up to the
  step at which the operation completes;
- storms: producers and get() callers whose deadlines expire at random while the
  queue is restarted and its concurrency limit changed;
- concurrent stops: stop and stop_workers called at once by workers, error
  handlers and outside tasks, some with timeouts, some cancelled;
- limits flipped under load: the concurrency limit changed all the time while
  workers run, and never exceeded;
- lost wake-ups: an item buffered while a consumer that could take it stays
  parked;
- FIFO places: a woken producer or get() caller beaten to its slot or item by a
  newcomer keeps its place in line;
- restarts: a stop from an earlier run, and the concurrency limit, across a
  restart;
- the executor: every event ends COMPLETED, FAILED or CANCELLED, also when its
  calls are cancelled or a worker stops it;
- waiter lines: random park, cancel and wake sequences, and compaction;
- the rate limiter's bound: weighted acquires with cancellation, a limiter
  shared by queues, and cancelled waiters.

Several tests are regression tests for bugs these attacks found; their
docstrings say so.
"""

from __future__ import annotations

import contextlib
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence

import anyio
import pytest
from anyio.abc import TaskGroup
from fake_clock import FakeClock, all_blocked, max_in_window
from support import (
    GUARD,
    SEEDS,
    assert_books,
    cancel_at,
    check_limiter_free,
    check_line_compact,
    check_line_idle,
    check_nothing_lost,
    claimed_by_an_executor,
    clock_step,
    in_virtual_time,
    limiter_line,
    lost_wake,
    put_all,
    run_cancelled,
    sweep,
)

from sluicegate import (
    BoundedQueue,
    Event,
    ExecutionStatus,
    Executor,
    QueueConfig,
    QueueStateError,
    QueueStatus,
    RateLimiter,
    WorkQueue,
)
from sluicegate._waiters import WaiterLine
from sluicegate._workers import WorkerPool

# The attacks make workers fail on purpose: keep the log quiet meanwhile.
pytestmark = pytest.mark.usefixtures("quiet_worker_errors")

# -- shared workers ------------------------------------------------------------


class Handled:
    """A worker function that counts the items it handled; every 7th one fails."""

    def __init__(self) -> None:
        self.counter: Counter[int] = Counter()

    async def work(self, item: int) -> None:
        for _ in range(item % 3):
            await anyio.lowlevel.checkpoint()
        self.counter[item] += 1
        if item % 7 == 3:
            raise KeyError(item)


# -- cancellation at every await -----------------------------------------------


QueueTarget = Callable[[BoundedQueue[int], set[int]], Awaitable[object]]


async def cancel_beside_workers(
    k: int, target: QueueTarget, *, maxsize: int, workers: int
) -> bool:
    """Run ``target(queue, accepted)`` beside running workers, cancelled at step
    ``k``. Then the queue must run on (started again if it stopped) and, once
    stopped, have lost nothing."""
    queue: BoundedQueue[int] = BoundedQueue(maxsize=maxsize)
    handled = Handled()
    accepted: set[int] = set()
    async with anyio.create_task_group() as tg:
        await queue.start()
        await queue.start_workers(handled.work, workers, task_group=tg)
        completed = await run_cancelled(k, lambda: target(queue, accepted))
        assert_books(queue)
        await all_blocked()
        # a cancelled stop does not leave the queue STOPPING
        assert queue.status in (QueueStatus.STOPPED, QueueStatus.PROCESSING)
        await queue.start()
        await queue.start_workers(handled.work, 2, task_group=tg)
        await put_all(queue, range(100, 108), accepted)
        await queue.join()
        await queue.stop()
    check_nothing_lost(queue, accepted, handled.counter)
    return completed


async def test_puts_cancelled_at_every_step_lose_and_repeat_nothing() -> None:
    async def puts(queue: BoundedQueue[int], accepted: set[int]) -> None:
        for i in range(12):
            if await queue.put(i, timeout=None if i % 2 else 0.001):
                accepted.add(i)
            assert_books(queue)

    await sweep(lambda k: cancel_beside_workers(k, puts, maxsize=2, workers=2))


async def test_gets_cancelled_at_every_step_lose_and_repeat_nothing() -> None:
    async def attack(k: int) -> bool:
        queue: BoundedQueue[int] = BoundedQueue(maxsize=3)
        handled = Handled()
        accepted: set[int] = set()

        async def producer() -> None:
            for i in range(10):
                await anyio.lowlevel.checkpoint()
                try:
                    if await queue.put(i):
                        accepted.add(i)
                except QueueStateError:
                    return

        async def target() -> None:
            for _ in range(10):
                item = await queue.get()
                handled.counter[item] += 1
                try:
                    for _ in range(item % 3):
                        await anyio.lowlevel.checkpoint()
                finally:
                    queue.task_done()
                assert_books(queue)

        async with anyio.create_task_group() as tg:
            await queue.start()
            tg.start_soon(producer)
            completed = await run_cancelled(k, target)
            assert_books(queue)
            await all_blocked()
            await queue.stop()
        check_nothing_lost(queue, accepted, handled.counter)
        return completed

    await sweep(attack)


LIFECYCLE_CALLS: dict[str, Callable[[BoundedQueue[int]], Awaitable[None]]] = {
    "stop": lambda queue: queue.stop(),
    "stop(timeout=0)": lambda queue: queue.stop(timeout=0),
    "stop(timeout=1ms)": lambda queue: queue.stop(timeout=0.001),
    "stop_workers": lambda queue: queue.stop_workers(),
    "stop_workers(timeout=0.5ms)": lambda queue: queue.stop_workers(timeout=0.0005),
    "join": lambda queue: queue.join(),
}


@pytest.mark.parametrize("call", list(LIFECYCLE_CALLS))
async def test_lifecycle_call_cancelled_at_every_step_loses_nothing(call: str) -> None:
    """Puts, then stop, stop_workers or join, cancelled anywhere: the queue
    runs on (a stopped one starts again), and a stop still ends it with every
    item accounted for."""

    async def puts_then_call(queue: BoundedQueue[int], accepted: set[int]) -> None:
        await put_all(queue, range(8), accepted)
        await LIFECYCLE_CALLS[call](queue)

    await sweep(
        lambda k: cancel_beside_workers(k, puts_then_call, maxsize=4, workers=3)
    )


@pytest.mark.parametrize("inside", [False, True], ids=["plain", "inside-async-with"])
async def test_batch_process_cancelled_at_every_step_loses_nothing(
    inside: bool,
) -> None:
    async def attack(k: int) -> bool:
        wq: WorkQueue[int] = WorkQueue(maxsize=2)
        handled = Handled()
        drawn: list[int] = []

        def items() -> Iterator[int]:
            for i in range(15):
                drawn.append(i)
                yield i

        async def target() -> None:
            await wq.batch_process(items(), handled.work, 2)

        if inside:
            async with wq:
                completed = await run_cancelled(k, target)
                assert_books(wq.queue)
        else:
            completed = await run_cancelled(k, target)
            await wq.stop()
        check_nothing_lost(wq.queue, set(drawn), handled.counter)
        return completed

    await sweep(attack)


async def test_fast_puts_cancelled_at_every_fairness_checkpoint_lose_nothing() -> None:
    """Puts into a queue with room never wait, except for the checkpoint they
    take every so often so as not to starve other tasks: cancel at each."""

    async def attack(k: int) -> bool:
        queue: BoundedQueue[int] = BoundedQueue(maxsize=1000)
        accepted: set[int] = set()
        handled = Handled()
        async with anyio.create_task_group() as tg:
            await queue.start()
            completed = await run_cancelled(
                k, lambda: put_all(queue, range(500), accepted)
            )
            assert_books(queue)
            assert queue.metrics["enqueued"] == len(accepted)
            await queue.start_workers(handled.work, 2, task_group=tg)
            await queue.join()
            await queue.stop()
        check_nothing_lost(queue, accepted, handled.counter)
        return completed

    await sweep(attack)


# -- storms --------------------------------------------------------------------

DEADLINES: list[float | None] = [0, 1e-6, 1e-4, 5e-4, 1e-3, None]


@pytest.mark.parametrize("seed", SEEDS)
async def test_storm_of_expiring_puts_and_gets_with_restarts_and_limit_changes(
    seed: int,
) -> None:
    """Producers and get() callers give up at random deadlines while the queue is
    restarted and its limit changed: no item is lost or repeated, the limit holds,
    and whenever everything is quiet no buffered item waits for a parked consumer.
    """
    rng = random.Random(seed)
    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=rng.choice([1, 2, 4]), concurrency_limit=rng.choice([None, 1, 2, 3])
    )
    accepted: set[int] = set()
    handled: Counter[int] = Counter()
    over_limit: list[tuple[int, int]] = []
    lost_wakes: list[str] = []
    running = 0
    next_item = 0
    gate = [anyio.Event()]  # closed to let the queue settle
    gate[0].set()

    async def work(item: int) -> None:
        nonlocal running
        limit = queue.concurrency_limit
        if limit is not None and running >= limit:
            over_limit.append((running, limit))
        running += 1
        try:
            for _ in range(rng.randrange(3)):
                await anyio.sleep(rng.choice([0, 1e-4]))
            handled[item] += 1
            assert_books(queue)
            if rng.random() < 0.1:
                raise KeyError(item)
        finally:
            running -= 1

    async def producer() -> None:
        nonlocal next_item
        while True:
            await gate[0].wait()
            item = next_item
            next_item += 1
            try:
                with anyio.move_on_after(rng.choice(DEADLINES)):
                    if await queue.put(item, timeout=rng.choice(DEADLINES)):
                        accepted.add(item)
            except QueueStateError:
                await anyio.sleep(1e-4)
            assert_books(queue)
            await anyio.sleep(1e-4)

    async def getter() -> None:
        while True:
            await gate[0].wait()
            try:
                with anyio.move_on_after(rng.choice(DEADLINES)):
                    item = await queue.get()
                    handled[item] += 1
                    await anyio.sleep(rng.choice([0, 1e-4]))
                    queue.task_done()
            except QueueStateError:
                await anyio.sleep(1e-4)
            assert_books(queue)
            await anyio.sleep(1e-4)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, rng.randint(1, 4), task_group=tg)
            for _ in range(rng.randint(1, 4)):
                tg.start_soon(producer)
            for _ in range(rng.randint(0, 3)):
                tg.start_soon(getter)
            for step in range(150):
                await anyio.sleep(rng.choice([1e-4, 5e-4]))
                assert_books(queue)
                r = rng.random()
                if r < 0.25:
                    queue.concurrency_limit = rng.choice([None, 1, 2, 3])
                elif r < 0.3:
                    await queue.stop(timeout=rng.choice([0, 1e-4, None]))
                    assert_books(queue)
                    assert queue.worker_count == 0
                    await queue.start()
                    await queue.start_workers(work, rng.randint(1, 4), task_group=tg)
                elif r < 0.35:
                    gate[0] = anyio.Event()
                    await anyio.sleep(0.002)  # past every deadline in DEADLINES
                    await all_blocked()
                    why = lost_wake(queue)
                    gate[0].set()
                    if why:
                        lost_wakes.append(f"step {step}: {why}")
            tg.cancel_scope.cancel()
        await queue.stop()
    assert lost_wakes == []
    assert over_limit == []
    check_nothing_lost(queue, accepted, handled)


@pytest.mark.parametrize("eager", [None, 2])
@pytest.mark.parametrize("seed", SEEDS)
async def test_bursts_to_many_workers_woken_a_few_at_a_time_leave_none_waiting(
    seed: int, eager: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bursts of items reach many idle workers while others are busy (for a turn
    or held for long), groups of workers are cancelled at random (some just
    woken), and the limit changes: whenever everything is quiet, no buffered item
    waits while an idle worker (parked, or in reserve) could take it; nothing is
    lost or repeated. With ``eager=2`` every worker after a group's second is
    held in reserve, so that workers are started for items all the while."""
    if eager is not None:
        monkeypatch.setattr(WorkerPool, "EAGER", eager)
    rng = random.Random(seed)
    queue: BoundedQueue[int] = BoundedQueue(
        maxsize=rng.choice([4, 16, 64]), concurrency_limit=rng.choice([None, 3, 8])
    )
    accepted: set[int] = set()
    handled: Counter[int] = Counter()
    lost_wakes: list[str] = []
    holds: list[anyio.Event] = []
    next_item = 0

    async def work(item: int) -> None:
        if rng.random() < 0.05:
            hold = anyio.Event()
            holds.append(hold)
            await hold.wait()  # busy for long, holding its slot
        for _ in range(rng.randrange(3)):
            await anyio.lowlevel.checkpoint()
        handled[item] += 1  # done (no await after it: cannot be cancelled now)

    async def burst() -> None:
        nonlocal next_item
        for _ in range(rng.randint(1, 40)):
            item = next_item
            next_item += 1
            try:
                if await queue.put(item):
                    accepted.add(item)
            except QueueStateError:
                return  # stopped at the end, while this burst waited for room

    async def group(scope: anyio.CancelScope) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                try:
                    await queue.start_workers(work, rng.randint(1, 30), task_group=tg)
                except QueueStateError:
                    return  # started after the final stop

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            scopes: list[anyio.CancelScope] = []
            for step in range(120):
                r = rng.random()
                if r < 0.2 or not scopes:
                    scopes.append(anyio.CancelScope())
                    tg.start_soon(group, scopes[-1])
                elif r < 0.3:
                    scopes.pop(rng.randrange(len(scopes))).cancel()
                elif r < 0.4:
                    queue.concurrency_limit = rng.choice([None, 1, 3, 8])
                elif r < 0.5 and holds:
                    holds.pop(rng.randrange(len(holds))).set()
                else:
                    tg.start_soon(burst)
                if rng.random() < 0.3:
                    await all_blocked()
                    why = lost_wake(queue)
                    if why:
                        lost_wakes.append(f"step {step}: {why}")
                else:
                    await anyio.lowlevel.checkpoint()
                assert_books(queue)
            for hold in holds:
                hold.set()
            await queue.stop()
            tg.cancel_scope.cancel()
    assert lost_wakes == []
    check_nothing_lost(queue, accepted, handled)


# -- concurrent stops ----------------------------------------------------------

STOP_TIMEOUTS: list[float | None] = [None, 0, 1e-4, 1e-3]


@pytest.mark.parametrize("seed", range(10))
async def test_concurrent_stops_from_workers_handlers_and_outside_lose_nothing(
    seed: int,
) -> None:
    """stop and stop_workers, with and without timeouts, some cancelled, called
    at once by workers, error handlers and outside tasks while producers put."""
    rng = random.Random(seed)
    queue: BoundedQueue[int] = BoundedQueue(maxsize=rng.choice([2, 8]))
    handled: Counter[int] = Counter()
    accepted: set[int] = set()
    ids = iter(range(10**6))

    async def call_stop() -> None:
        timeout = rng.choice(STOP_TIMEOUTS)
        stop = rng.choice([queue.stop, queue.stop, queue.stop_workers])
        with anyio.move_on_after(rng.choice([None, None, 0, 1e-4])):
            await stop(timeout)

    async def work(item: int) -> None:
        r = rng.random()
        for _ in range(rng.randrange(3)):
            await anyio.sleep(rng.choice([0, 1e-4]))
        if r < 0.1:
            await call_stop()
        elif r < 0.2:
            raise KeyError(item)
        handled[item] += 1

    async def on_error(exc: Exception, item: int) -> None:
        if rng.random() < 0.5:
            await call_stop()
        handled[item] += 1  # not reached if the stop cancels the handler

    async def producer() -> None:
        for _ in range(rng.randint(5, 30)):
            item = next(ids)
            try:
                if await queue.put(item, timeout=rng.choice([None, 0, 1e-4])):
                    accepted.add(item)
            except QueueStateError:
                return

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await queue.start()
            await queue.start_workers(work, rng.randint(1, 5), on_error, task_group=tg)
            for _ in range(rng.randint(1, 3)):
                tg.start_soon(producer)
            for _ in range(rng.randint(0, 3)):
                await anyio.sleep(rng.choice([0, 1e-4, 5e-4]))
                tg.start_soon(call_stop)
            await anyio.sleep(0.002)
            # stop_workers alone leaves producers waiting on a full queue: a real
            # stop ends them.
            await queue.stop()
    check_nothing_lost(queue, accepted, handled)


# -- the executor --------------------------------------------------------------


class Scripted(Event):
    """An event that awaits the action it was made with."""

    def __init__(self, action: Callable[[], Awaitable[object]]) -> None:
        super().__init__()
        self.action = action

    async def invoke(self) -> object:
        return await self.action()


def step_event(n: int) -> Scripted:
    """Takes n % 3 checkpoints; fails for every 5th n."""

    async def action() -> int:
        for _ in range(n % 3):
            await anyio.lowlevel.checkpoint()
        if n % 5 == 4:
            raise KeyError(n)
        return n

    return Scripted(action)


def gated_event(gate: anyio.Event) -> Scripted:
    return Scripted(gate.wait)


def check_events_accounted(
    ex: Executor[Scripted], events: Sequence[Scripted], *, stopped: bool
) -> None:
    """Each event ended is in the one list for how it ended; on a stopped
    executor, every event has ended."""
    lists = {
        ExecutionStatus.COMPLETED: ex.completed_events,
        ExecutionStatus.FAILED: ex.failed_events,
        ExecutionStatus.CANCELLED: ex.cancelled_events,
    }
    listed = [id(event) for events in lists.values() for event in events]
    assert len(listed) == len(set(listed)), "an event is in two lists"
    for event in events:
        status = event.execution.status
        if status in lists:
            assert event in lists[status]
        else:
            assert not stopped, (event, status, ex.pending_events)
    if stopped:
        assert ex.is_all_processed
        assert ex.status is QueueStatus.STOPPED


def given(events: Sequence[Scripted]) -> list[Scripted]:
    """The events an executor accepted (a cancelled put accepts nothing)."""
    return [event for event in events if claimed_by_an_executor(event)]


REFRESH = 1e-3
#: At most two events start per millisecond, two at a time.
CONFIG = QueueConfig(
    queue_capacity=2, concurrency_limit=2, capacity_refresh_time=REFRESH
)
ONE_AT_A_TIME = QueueConfig(
    queue_capacity=1, concurrency_limit=1, capacity_refresh_time=1e-6
)


async def put_events(ex: Executor[Scripted], events: list[Scripted]) -> None:
    for event in events:
        await ex.put(event, timeout=None)


async def forward_then_stop(ex: Executor[Scripted], timeout: float | None) -> None:
    await ex.forward()
    await ex.stop(timeout=timeout)


EXECUTOR_CALLS: dict[
    str, Callable[[Executor[Scripted], list[Scripted]], Awaitable[None]]
] = {
    "put": put_events,
    "forward": lambda ex, _: ex.forward(),
    "join": lambda ex, _: ex.join(),
    "forward+stop": lambda ex, _: forward_then_stop(ex, None),
    "forward+stop(timeout=0)": lambda ex, _: forward_then_stop(ex, 0),
}


@pytest.mark.parametrize("call", list(EXECUTOR_CALLS))
async def test_executor_call_cancelled_at_every_step_accounts_every_event(
    call: str,
) -> None:
    async def attack(k: int) -> bool:
        clock = FakeClock()
        ex = Executor(Scripted, CONFIG, clock=clock)
        events = [step_event(i) for i in range(10)]
        if call != "put":
            for event in events:
                ex.append(event)
        async with anyio.create_task_group() as tg:
            await ex.start(task_group=tg)
            completed = await run_cancelled(
                k,
                lambda: EXECUTOR_CALLS[call](ex, events),
                clock_step(clock, REFRESH / 4),
            )
            check_events_accounted(ex, given(events), stopped=False)
            # Busy workers may wait for the start rate: let time run on.
            await in_virtual_time(clock, ex.stop)
        check_events_accounted(ex, given(events), stopped=True)
        return completed

    await sweep(attack)


async def test_executor_batch_cancelled_at_every_step_accounts_every_event() -> None:
    async def attack(k: int) -> bool:
        clock = FakeClock()
        ex = Executor(Scripted, CONFIG, clock=clock)
        drawn: list[Scripted] = []

        def events() -> Iterator[Scripted]:
            for i in range(10):
                event = step_event(i)
                drawn.append(event)
                yield event

        completed = await run_cancelled(
            k, lambda: ex.batch_process(events()), clock_step(clock, REFRESH / 4)
        )
        check_events_accounted(ex, drawn, stopped=True)
        return completed

    await sweep(attack)


async def forward_then(
    ex: Executor[Scripted],
    events: list[Scripted],
    then: Callable[[], Awaitable[object]],
) -> list[QueueStateError]:
    """Start ``ex`` and forward ``events`` in the background until everything
    waits (one event running, one buffered, one being put), then await
    ``then()``. Return the QueueStateError that forward ended with."""
    errors: list[QueueStateError] = []

    async def forward() -> None:
        try:
            await ex.forward()
        except QueueStateError as exc:
            errors.append(exc)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await ex.start(task_group=tg)
            for event in events:
                ex.append(event)
            tg.start_soon(forward)
            await all_blocked()
            await then()
    return errors


async def test_executor_stop_cancels_the_event_forward_was_putting() -> None:
    gate = anyio.Event()
    ex = Executor(Scripted, ONE_AT_A_TIME)
    events = [gated_event(gate) for _ in range(3)]
    errors = await forward_then(ex, events, lambda: ex.stop(timeout=0))
    assert len(errors) == 1
    statuses = [event.execution.status for event in events]
    assert statuses == [ExecutionStatus.CANCELLED] * 3, (statuses, ex.pending_events)
    check_events_accounted(ex, events, stopped=True)


async def test_a_worker_stopping_the_executor_cancels_the_event_being_forwarded() -> (
    None
):
    """Regression: the running event stops its own executor while forward() is
    putting another: that one must end CANCELLED, not stay PENDING."""
    gate = anyio.Event()
    ex = Executor(Scripted, ONE_AT_A_TIME)

    async def stop_the_executor() -> str:
        await gate.wait()
        await ex.stop()
        return "stopped"

    async def open_gate() -> None:
        gate.set()

    first = Scripted(stop_the_executor)
    rest = [gated_event(anyio.Event()), gated_event(anyio.Event())]
    errors = await forward_then(ex, [first, *rest], open_gate)
    assert len(errors) == 1
    assert first.execution.status is ExecutionStatus.COMPLETED
    statuses = [event.execution.status for event in rest]
    assert statuses == [ExecutionStatus.CANCELLED] * 2, (statuses, ex.pending_events)
    check_events_accounted(ex, [first, *rest], stopped=True)


async def test_executors_sharing_a_rate_limiter_cancelled_together_account_all() -> (
    None
):
    clock = FakeClock()
    limiter = RateLimiter(5, 0.01, clock=clock)
    executors = [
        Executor(Scripted, CONFIG, rate_limiter=limiter, clock=clock) for _ in range(3)
    ]
    events = [[step_event(i) for i in range(20)] for _ in executors]

    async def run_batches() -> None:
        async with anyio.create_task_group() as tg:
            for ex, batch in zip(executors, events, strict=True):
                tg.start_soon(ex.batch_process, batch)
            # some events run, most wait their turn
            await cancel_at(clock, 0.02, tg.cancel_scope)

    with anyio.fail_after(GUARD):
        await in_virtual_time(clock, run_batches)
    ran = sum(len(ex.completed_events) + len(ex.failed_events) for ex in executors)
    assert 0 < ran < sum(map(len, events))  # cancelled part-way
    for ex, batch in zip(executors, events, strict=True):
        check_events_accounted(ex, given(batch), stopped=True)
    check_limiter_free(limiter)


# -- waiter lines --------------------------------------------------------------


class RandomLineAttack:
    """Parks, cancels and wakes at random, tracking who should be parked."""

    def __init__(self, rng: random.Random, *, lifo: bool) -> None:
        self.rng = rng
        self.lifo = lifo
        self.lost = 0
        self.line = WaiterLine(lifo=lifo, on_lost_wake=self.count_lost)
        self.parked: list[int] = []  # live parked ids, in arrival order
        self.resumed: list[int] = []
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.next_id = 0

    def count_lost(self) -> None:
        self.lost += 1

    async def parker(self, i: int) -> None:
        with self.scopes[i]:
            await self.line.park()
            self.resumed.append(i)

    def wake(self, times: int) -> list[int]:
        """wake_one ``times`` times; return whom the line should have woken."""
        woke: list[int] = []
        for _ in range(times):
            if self.line.wake_one():
                woke.append(self.parked.pop() if self.lifo else self.parked.pop(0))
            else:
                assert not self.parked
        return woke

    def some_parked(self) -> list[int]:
        return self.rng.sample(self.parked, self.rng.randint(1, len(self.parked)))

    async def settle(self) -> list[int]:
        """Let everything run; return who resumed meanwhile."""
        await all_blocked()
        resumed = list(self.resumed)
        self.resumed.clear()
        return resumed

    async def park_some(self, tg: TaskGroup) -> None:
        for _ in range(self.rng.randint(1, 20)):
            i = self.next_id
            self.next_id += 1
            self.scopes[i] = anyio.CancelScope()
            tg.start_soon(self.parker, i)
            self.parked.append(i)
            await all_blocked()

    async def cancel_some(self) -> None:
        for i in self.some_parked():
            self.scopes[i].cancel()
            self.parked.remove(i)
        assert await self.settle() == []

    async def cancel_then_wake(self) -> None:
        """Cancel some, then wake in the same tick: a leaver woken loses it."""
        cancelled = self.some_parked()
        for i in cancelled:
            self.scopes[i].cancel()
        lost_before = self.lost
        woke = self.wake(self.rng.randint(1, 4))
        self.parked = [i for i in self.parked if i not in cancelled]
        resumed = await self.settle()
        assert set(resumed) == set(woke) - set(cancelled), (resumed, woke, cancelled)
        assert self.lost - lost_before == len(set(woke) & set(cancelled))

    async def wake_then_cancel(self) -> None:
        """Wake some, and cancel some of those before they resume."""
        woke = self.wake(self.rng.randint(1, 4))
        cancelled = [i for i in woke if self.rng.random() < 0.3]
        for i in cancelled:
            self.scopes[i].cancel()
        resumed = await self.settle()
        # those not cancelled resumed (trio: a cancel after the wake-up is too late)
        assert set(resumed) <= set(woke)
        assert set(woke) - set(resumed) <= set(cancelled)

    async def wake_all(self) -> None:
        assert self.line.wake_all() == len(self.parked)
        self.parked.clear()
        await self.settle()


@pytest.mark.parametrize("lifo", [False, True], ids=["fifo", "lifo"])
@pytest.mark.parametrize("seed", range(4))
async def test_random_park_cancel_and_wake_keep_a_waiter_lines_count(
    seed: int, lifo: bool
) -> None:
    attack = RandomLineAttack(random.Random(seed), lifo=lifo)
    line = attack.line
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for _ in range(300):
                r = attack.rng.random()
                if r < 0.4:
                    await attack.park_some(tg)
                elif r < 0.65 and attack.parked:
                    await attack.cancel_some()
                elif r < 0.75 and attack.parked:
                    await attack.cancel_then_wake()
                elif r < 0.85:
                    await attack.wake_then_cancel()
                else:
                    await attack.wake_all()
                assert line.parked == len(attack.parked), (line, attack.parked)
                assert line.woken == 0, line
                check_line_compact(line)
            line.wake_all()
    check_line_idle(line)


async def test_compacting_a_waiter_line_keeps_its_order() -> None:
    """Two in three waiters leave, enough to compact the line: the rest are
    still woken in arrival order."""
    order: list[int] = []
    line = WaiterLine()
    scopes = [anyio.CancelScope() for _ in range(300)]

    async def parker(i: int) -> None:
        with scopes[i]:
            await line.park()
            order.append(i)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(parker, i)
                await all_blocked()
            for i in [*range(0, 300, 3), *range(1, 300, 3)]:
                scopes[i].cancel()
            await all_blocked()
            assert line.parked == 100
            check_line_compact(line)
            while line.wake_one():
                await all_blocked()
    assert order == list(range(2, 300, 3))


# -- the rate limiter's bound --------------------------------------------------


def max_tokens_in_window(grants: list[tuple[float, float]], window: float) -> float:
    """The most tokens granted in any closed window of ``window`` seconds."""
    grants = sorted(grants)
    times = [t for t, _ in grants]
    return max(
        (
            sum(n for _, n in grants[i : bisect_right(times, t + window + 1e-9)])
            for i, t in enumerate(times)
        ),
        default=0.0,
    )


@pytest.mark.parametrize("seed", SEEDS)
async def test_weighted_acquires_with_cancellation_keep_the_bound_and_fifo(
    seed: int,
) -> None:
    """Waiters of random weights and patience, and acquire_nowait calls: in every
    window at most burst + rate * window / period tokens, served in arrival
    order."""
    rng = random.Random(seed)
    clock = FakeClock()
    rate, period, burst = rng.choice([(10, 1, 3), (2, 0.5, 4.5), (1, 1, 1), (7, 2, 7)])
    limiter = RateLimiter(rate, period, burst=burst, clock=clock)
    grants: list[tuple[float, float]] = []
    arrivals: list[int] = []
    served: list[int] = []

    async def waiter(i: int, tokens: float, patience: float | None) -> None:
        async with anyio.create_task_group() as tg:
            if patience is not None:
                deadline = clock.current_time() + patience
                tg.start_soon(cancel_at, clock, deadline, tg.cancel_scope)
            arrivals.append(i)
            await limiter.acquire(tokens)
            grants.append((clock.current_time(), tokens))
            served.append(i)
            tg.cancel_scope.cancel()

    async def arrive_and_wait() -> None:
        async with anyio.create_task_group() as waiters:
            for i in range(120):
                tokens = rng.choice([1, 1, 0.5, min(burst, 2), burst, min(burst, 1.7)])
                if rng.random() < 0.15:
                    with contextlib.suppress(anyio.WouldBlock):
                        limiter.acquire_nowait(tokens)
                        grants.append((clock.current_time(), tokens))
                else:
                    patience = rng.choice([None, rng.uniform(0, 2), 0.0, 1e-9])
                    waiters.start_soon(waiter, i, tokens, patience)
                for _ in range(rng.choice([0, 1, 5])):
                    await anyio.lowlevel.checkpoint()
                pause = rng.choice([0, 0.01, 0.2])
                await clock.sleep_until(clock.current_time() + pause)

    with anyio.fail_after(GUARD):
        await in_virtual_time(clock, arrive_and_wait)
    for window in (0, 0.01, 0.1, 0.5, 1, 3, 10):
        bound = burst + rate * window / period
        assert max_tokens_in_window(grants, window) <= bound + 1e-6, window
    position = {i: n for n, i in enumerate(arrivals)}
    assert served == sorted(served, key=position.__getitem__)
    check_limiter_free(limiter)


async def test_a_limiter_shared_by_three_queues_keeps_its_bound_through_a_stop() -> (
    None
):
    clock = FakeClock()
    limiter = RateLimiter(20, 1, burst=5, clock=clock)
    starts: list[float] = []

    async def work(item: int) -> None:
        starts.append(clock.current_time())

    queues = [WorkQueue[int](maxsize=3, rate_limiter=limiter) for _ in range(3)]

    async def batch(wq: WorkQueue[int]) -> None:
        with contextlib.suppress(QueueStateError):  # queues[1] is stopped
            await wq.batch_process(range(40), work, 3)

    async def run_batches() -> None:
        async with anyio.create_task_group() as batches:
            for wq in queues:
                batches.start_soon(batch, wq)
            await clock.sleep_until(1.0)
            await queues[1].stop(timeout=0)

    with anyio.fail_after(GUARD):
        await in_virtual_time(clock, run_batches)
    for window in (0, 0.1, 0.5, 1, 2):
        assert max_in_window(starts, window) <= 5 + 20 * window + 1e-6, window
    for wq in queues:
        assert_books(wq.queue)
    check_limiter_free(limiter)


async def test_many_cancelled_limiter_waiters_keep_its_line_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 1000, burst=1, clock=clock)
    limiter.acquire_nowait()  # empty for a long while: every acquire waits
    with anyio.fail_after(GUARD):
        for _ in range(6):
            async with anyio.create_task_group() as waiters:
                for _ in range(150):
                    waiters.start_soon(limiter.acquire)
                await all_blocked()
                waiters.cancel_scope.cancel()
            check_line_compact(limiter_line(limiter))
    check_limiter_free(limiter)


async def test_acquires_cancelled_at_every_step_leave_the_limiter_free() -> None:
    """Six tasks wait for one token each while the clock advances half a token's
    time per step; all are cancelled at step k, for every k until they are
    served. The limiter must then have no head and no waiter left."""

    async def attack(k: int) -> bool:
        clock = FakeClock()
        limiter = RateLimiter(1000, 1, burst=2, clock=clock)
        limiter.acquire_nowait(2)

        async def acquirers() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(limiter.acquire)

        completed = await run_cancelled(k, acquirers, clock_step(clock, 0.0005))
        await all_blocked()
        check_limiter_free(limiter)
        clock.advance(1)
        await limiter.acquire()  # at once: the bucket is full again
        return completed

    await sweep(attack)
