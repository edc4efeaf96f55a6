# mypy: disable-error-code="comparison-overlap"
"""Stateful property test: random operations on BoundedQueue and WorkQueue.

Hypothesis drives a `RuleBasedStateMachine` whose rules put (with and without
timeouts), get, task_done, start workers (some of whose items fail, some of which
block on a gate so that they stay in flight), stop with and without a timeout,
stop_workers, join, and cancel blocked producers and consumers. After every step it
checks the books, a model of the buffer (FIFO, exact contents), that no item is
handled twice, and that nothing waits when it could go on.

Retries: workers may run under a `RetryPolicy` (no jitter, so every delay is
known), and a WorkQueue may have a default one. The model decides which calls
fail (an item's kind says which attempts fail, and whether with `RetryAfter`),
predicts which failures are retried and when each comes back, and keeps its own
delay line. Rules advance the queue's injected `FakeClock`. The checks add
``delayed`` to the books and match ``delayed``, ``retries``, `is_full`, where
retried items come back (at the front of the buffer) and that an item is
processed once, at its final outcome; nothing due stays delayed while the delay
line should run (beside workers, or through an ``async with`` block); items
delayed when the queue stops end in ``unprocessed`` after the buffered ones, and
a failure a stop cuts short is listed there, not retried. A `RetryAfter` holds the
queue (retried or not, through stops): no call starts until its time, `held_until`
says so, and meanwhile items wait in the buffer while workers idle.

Each example runs one AnyIO event loop in a blocking portal's thread. A rule is one
``portal.call``: it does its action, waits until every task in the loop is blocked
(`all_blocked`), then checks the invariants in the loop's thread, so the model and
the queue are read at a quiet moment. Long-lived tasks (workers, blocked producers
and consumers, joiners, the owner of ``async with queue``) live in a task group the
machine owns; producers and consumers each run in a CancelScope of their own so a
rule can cancel them.

Time: the clock is real on every backend (a MockClock with autojump would make
timeouts fire while the test thread is between two steps, so a run would depend on
thread timing). A wait that should time out uses `SHORT` and is awaited within its
step; background waits use no timeout or `LONG`, which never elapses in a test.
Retry delays run on the queue's own `FakeClock`, which moves only in the
`advance_clock` rule (and at teardown), so they never race the test thread.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, ClassVar, Literal

import anyio
import anyio.lowlevel
import pytest
import uvloop
from anyio.abc import TaskGroup, TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fake_clock import FakeClock, all_blocked
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)
from support import GUARD

from sluicegate import (
    BoundedQueue,
    QueueStateError,
    QueueStatus,
    RetryAfter,
    RetryPolicy,
    WorkQueue,
)

SHORT = 0.01  # a timeout that must elapse within its step
LONG = 3600.0  # a timeout that never elapses during a test

# What happens to an item in a worker, attempt by attempt ("blocks": waits on the
# gate while it is shut; all times are multiples of 0.25 s, exact in floats):
#   ok: succeeds; fail: fails every time; block: blocks, then succeeds;
#   flaky: fails at once, then blocks and succeeds on the next attempts;
#   flaky2: blocks every time; fails the first two times, then succeeds;
#   after: raises RetryAfter(AFTER_SECONDS[item % 3]) once, then succeeds;
#   stop: stops the queue from inside its worker; stopfail: stops it, then fails.
Kind = Literal["ok", "fail", "block", "flaky", "flaky2", "after", "stop", "stopfail"]
KINDS = st.sampled_from(["ok", "ok", "fail", "block", "flaky", "flaky2", "after"])
AFTER_SECONDS = (0.5, 1.5, 3.0)
MAX_ATTEMPTS = 3  # the most calls any policy below allows
Timeout = float | Literal["default"] | None

# Worker errors are logged by the queue; keep them out of the test output.
LOGGER = logging.getLogger("sluicegate.test_stateful")
LOGGER.addHandler(logging.NullHandler())
LOGGER.propagate = False


class ItemFailedError(Exception):
    """What a worker function raises for a "fail" item."""

    def __init__(self, item: int) -> None:
        super().__init__(f"item {item} fails")
        self.item = item


class ItemRetryAfter(RetryAfter):
    """What a worker function raises for an "after" item: retry after ``seconds``."""

    def __init__(self, seconds: float, item: int) -> None:
        super().__init__(seconds, f"item {item}: retry after {seconds:g} s")
        self.item = item


# Policies with known delays: attempts 2-3, no jitter; `on` sometimes leaves
# ItemFailedError out (RetryAfter is retried whatever `on` says).
POLICIES = st.builds(
    RetryPolicy,
    attempts=st.integers(2, MAX_ATTEMPTS),
    on=st.sampled_from([Exception, Exception, ItemFailedError, KeyError]),
    backoff=st.sampled_from([0.5, 1.0]),
    multiplier=st.sampled_from([1.0, 2.0, 3.0]),
    max_backoff=st.sampled_from([1.0, 10.0]),
    jitter=st.just(False),
)
RETRY = st.sampled_from([False, True, True]).flatmap(
    lambda retry: POLICIES if retry else st.none()
)


class Pending:
    """A background producer, consumer, joiner or queue owner, and how it ended."""

    def __init__(self, item: int | None = None) -> None:
        self.item = item
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.exit = anyio.Event()  # for the queue owner: leave `async with`
        self.outcome: str | None = None
        self.got: int | None = None


class QueueMachine(RuleBasedStateMachine):
    """The model; subclasses pick the backend."""

    backend: ClassVar[str] = "asyncio"
    backend_options: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._healthy = True
        # The model, touched only in the event loop's thread.
        self.kinds: dict[int, Kind] = {}
        self.next_item = 0
        self.accepted: set[int] = set()
        self.rejected: set[int] = set()
        self.buffer: deque[int] = deque()  # accepted, not yet taken, in order
        self.delivered: Counter[int] = Counter()  # items given to a worker or get
        self.in_worker: set[int] = set()
        # Worker items: ok, failed, cancelled, abandoned (final), or retrying,
        # or failing (in the error handler).
        self.outcome: dict[int, str] = {}
        self.held: list[int] = []  # taken by get, not yet task_done
        self.got_done: list[int] = []
        self.unprocessed: list[int] = []
        self.handler_expected: Counter[int] = Counter()
        self.handler_called: Counter[int] = Counter()
        self.backpressure = 0
        self.processed = 0
        self.errors = 0
        self.expected_workers = 0
        self.producers: list[Pending] = []
        self.consumers: list[Pending] = []
        self.joiners: list[Pending] = []
        self.owner: Pending | None = None
        self.live_tasks = 0
        self.violations: list[str] = []
        self.gate_open = False
        self.status = QueueStatus.IDLE
        # Retries. The model's delay line: item -> (due, order added), as the
        # queue's, whose ties go by the order items were added.
        self.clock = FakeClock()
        self.default_retry: RetryPolicy | None = None
        self.attempts: Counter[int] = Counter()  # calls of the worker function
        self.waiting_retry: dict[int, tuple[float, int]] = {}
        self.order = itertools.count()
        self.retries = 0
        self.error_types: Counter[str] = Counter()
        # The queue's timers task runs in `async with` while the queue runs
        # (from the entry, or a start inside the block, until it stops);
        # otherwise from the first workers' start until the last worker leaves
        # ("beside" them). release_pending: the due items it releases as it
        # starts, perhaps after new workers have taken buffered items.
        self.timers_running = False
        self.timers_beside_workers = False
        self.release_pending: list[tuple[tuple[float, int], int]] = []
        self.stopping = False  # a stop is under way: no more retries
        # A RetryAfter holds the queue: no call starts before this time (on
        # the clock), through stops too.
        self.held_until = -math.inf

    # -- plumbing ---------------------------------------------------------------

    def _run(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run one step in the loop: the action, a settle, then the checks."""
        assert self._portal is not None
        self._healthy = False
        self._portal.call(self._step, action)
        self._healthy = True

    async def _step(self, action: Callable[[], Awaitable[None]]) -> None:
        with anyio.fail_after(GUARD):
            await action()
            await all_blocked()
        self._check()

    async def _host(self, *, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            self.tg: TaskGroup = tg
            self.shutdown = anyio.Event()
            self.gate = anyio.Event()
            task_status.started()
            await self.shutdown.wait()

    def _violation(self, message: str) -> None:
        # Never assert inside a worker: the queue would count an AssertionError
        # as a failed item. Collect, and fail in the next check.
        self.violations.append(message)

    def _new_item(self, kind: Kind) -> int:
        item = self.next_item
        self.next_item += 1
        self.kinds[item] = kind
        return item

    def _accept(self, item: int) -> None:
        if item in self.accepted or item in self.rejected:
            self._violation(f"item {item} accepted after it was already decided")
        self.accepted.add(item)
        self.buffer.append(item)

    def _reject(self, item: int) -> None:
        if item in self.accepted:
            self._violation(f"item {item} rejected after it was accepted")
        self.rejected.add(item)

    def _deliver(self, item: int) -> None:
        if self.release_pending and (not self.buffer or self.buffer[0] != item):
            self._commit_release()  # the timers task released them before this
        self.delivered[item] += 1
        if self.delivered[item] > MAX_ATTEMPTS:
            self._violation(f"item {item} handled {self.delivered[item]} times")
        if self.outcome.get(item) in ("ok", "failed", "cancelled", "abandoned"):
            self._violation(f"item {item} handled after its final outcome")
        if item not in self.accepted:
            self._violation(f"item {item} handled but never accepted")
        if self.buffer and self.buffer[0] == item:
            self.buffer.popleft()
        else:
            self._violation(f"item {item} taken out of order; model {self.buffer}")

    def _release_gate(self) -> None:
        self.gate.set()
        self.gate = anyio.Event()

    # -- retries: the model's delay line ----------------------------------------

    def _retry_delay(
        self, policy: RetryPolicy | None, exc: Exception, attempt: int
    ) -> float | None:
        """After the ``attempt``-th call failed with ``exc``: the delay before the
        next, or None if this failure is final."""
        if policy is None or attempt >= policy.attempts:
            return None
        if isinstance(exc, RetryAfter):
            return exc.seconds  # whatever `on` says
        assert isinstance(policy.on, type)
        if not isinstance(exc, policy.on):
            return None
        bound: float = policy.backoff * policy.multiplier ** (attempt - 1)
        return min(policy.max_backoff, bound)

    def _due(self) -> list[tuple[tuple[float, int], int]]:
        """Take the delayed items that are due out of the model's delay line, in
        the order the queue releases them (due time, then order added)."""
        now = self.clock.current_time()
        due = sorted(
            (when, item) for item, when in self.waiting_retry.items() if when[0] <= now
        )
        for _, item in due:
            del self.waiting_retry[item]
        return due

    def _commit_release(self) -> None:
        # Items released together go to the front of the buffer in the order
        # they fell due: the one due first is taken first.
        self.buffer.extendleft(item for _, item in reversed(self.release_pending))
        self.release_pending.clear()

    def _timers_started(self, *, beside_workers: bool) -> None:
        """The queue starts its timers task; its first act is to release what
        fell due while none ran."""
        self.timers_running = True
        self.timers_beside_workers = beside_workers
        self.release_pending = self._due()

    def _workers_ended(self) -> None:
        """The last worker has left, and the timers task if it ran beside them."""
        self.expected_workers = 0
        if self.timers_beside_workers:
            self.timers_running = False

    async def _advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if self.timers_running:
            # The timers task wakes before any worker could take an item.
            self.release_pending = self._due()
            self._commit_release()
        await all_blocked()

    def _pending(self, tasks: list[Pending]) -> list[Pending]:
        return [task for task in tasks if task.outcome is None]

    # -- the queue's two faces --------------------------------------------------

    @property
    def q(self) -> BoundedQueue[int] | WorkQueue[int]:
        return self.wq if self.wq is not None else self.bq

    def _failure(
        self, item: int, kind: Kind, attempt: int, policy: RetryPolicy | None
    ) -> Exception | None:
        """What the ``attempt``-th call of ``item`` raises, if anything."""
        if kind == "after":
            return (
                ItemRetryAfter(AFTER_SECONDS[item % 3], item) if attempt == 1 else None
            )
        fails = {
            "fail": True,
            "flaky": attempt == 1,
            "flaky2": attempt <= 2,
            "stopfail": True,
        }
        return ItemFailedError(item) if fails.get(kind, False) else None

    def _worker_func(
        self, with_handler: bool, policy: RetryPolicy | None
    ) -> Callable[[int], Awaitable[None]]:
        async def work(item: int) -> None:
            if self.clock.current_time() < self.held_until:
                self._violation(f"item {item} started while the queue was held")
            self._deliver(item)
            self.attempts[item] += 1
            attempt = self.attempts[item]
            self.in_worker.add(item)
            limit = self.bq.concurrency_limit
            if limit is not None and len(self.in_worker) > limit:
                self._violation(f"{len(self.in_worker)} items handled, limit {limit}")
            try:
                kind = self.kinds[item]
                blocks = kind in ("block", "flaky2") or (
                    kind == "flaky" and attempt > 1
                )
                if kind in ("stop", "stopfail"):
                    self.stopping = True
                    await self.q.stop(0)
                    self._stopped()
                elif blocks and not self.gate_open:
                    await self.gate.wait()
                else:
                    await anyio.lowlevel.checkpoint()
                failure = self._failure(item, kind, attempt, policy)
                if failure is not None:
                    raise failure
            except (ItemFailedError, ItemRetryAfter) as exc:
                self.in_worker.discard(item)
                if isinstance(exc, ItemRetryAfter):  # retried or not
                    due = self.clock.current_time() + exc.seconds
                    self.held_until = max(self.held_until, due)
                delay = self._retry_delay(policy, exc, attempt)
                if delay is not None and (
                    self.stopping or self.status is not QueueStatus.PROCESSING
                ):
                    # Stopped while the call ran: no retry, listed at once.
                    self.outcome[item] = "abandoned"
                    self.unprocessed.append(item)
                    raise
                if delay is not None:  # back after `delay`; not processed yet
                    self.outcome[item] = "retrying"
                    self.retries += 1
                    due = self.clock.current_time() + delay
                    self.waiting_retry[item] = (due, next(self.order))
                    raise
                if with_handler:  # settled once the handler has run
                    self.outcome[item] = "failing"
                    self.handler_expected[item] += 1
                else:
                    self._failed_finally(item, exc)
                raise
            except BaseException:  # cancelled in flight: listed as unprocessed
                self.in_worker.discard(item)
                self.outcome[item] = "cancelled"
                self.unprocessed.append(item)
                raise
            self.in_worker.discard(item)
            self.outcome[item] = "ok"
            self.processed += 1

        return work

    def _failed_finally(self, item: int, exc: Exception) -> None:
        self.outcome[item] = "failed"
        self.processed += 1
        self.errors += 1
        self.error_types[type(exc).__qualname__] += 1

    def _error_handler(
        self, mode: str
    ) -> Callable[[Exception, int], Awaitable[None]] | None:
        if mode == "none":
            return None

        async def on_error(exc: Exception, item: int) -> None:
            self.handler_called[item] += 1
            ours = isinstance(exc, (ItemFailedError, ItemRetryAfter))
            if not (ours and getattr(exc, "item", None) == item):
                self._violation(f"error handler got {exc!r} for item {item}")
            try:
                await anyio.lowlevel.checkpoint()
            except BaseException:
                # Its worker was cancelled here (by a stop from another worker,
                # say): the failure never settled, the item is unprocessed.
                self.outcome[item] = "cancelled"
                self.unprocessed.append(item)
                raise
            self._failed_finally(item, exc)  # once the handler returns or raises
            if mode == "raise":
                raise RuntimeError("the error handler fails too")

        return on_error

    # -- the checks, after every step -------------------------------------------

    def _check(self) -> None:
        self._commit_release()  # not taken from the front: released all the same
        assert not self.violations, self.violations
        q, bq = self.q, self.bq
        m = q.metrics
        unprocessed = q.unprocessed
        # The books balance.
        assert m["enqueued"] == (
            m["processed"] + q.size + m["in_flight"] + m["delayed"] + len(unprocessed)
        ), m
        assert m["unprocessed"] == len(unprocessed)
        assert m["in_flight"] == bq.in_flight
        assert m["delayed"] == q.delayed == bq.delayed
        assert q.is_full == (q.size + q.delayed >= q.maxsize)
        # The model agrees.
        assert q.status is self.status
        assert m["enqueued"] == len(self.accepted)
        assert m["backpressure_events"] == self.backpressure
        assert m["processed"] == self.processed + len(self.got_done)
        assert m["errors"] == self.errors
        assert m["in_flight"] == len(self.in_worker) + len(self.held)
        assert q.size == len(self.buffer)
        assert unprocessed == self.unprocessed, (unprocessed, self.unprocessed)
        assert q.worker_count == self.expected_workers
        assert not self.accepted & self.rejected
        assert +self.handler_called == +self.handler_expected
        # Retries: one per failure the policy took, each item delayed until due.
        assert m["retries"] == self.retries
        assert m["delayed"] == len(self.waiting_retry), (m, self.waiting_retry)
        assert q.errors_by_type == dict(+self.error_types)
        if self.status is QueueStatus.STOPPED:
            assert m["delayed"] == 0, "items delayed in a stopped queue"
        in_block = self.owner is not None and self.status is QueueStatus.PROCESSING
        if q.worker_count or in_block:
            # Delays run while there are workers, and for the whole `async with`
            # block: nothing due is still delayed.
            now = self.clock.current_time()
            overdue = [i for i, (due, _) in self.waiting_retry.items() if due <= now]
            assert not overdue, f"due at {now} but still delayed: {overdue}"
        # Nobody waits who could go on.
        if self._pending(self.producers):
            assert self.status is QueueStatus.PROCESSING
            assert q.is_full, "a producer waits while there is room"
        if self._pending(self.consumers):
            assert self.status is QueueStatus.PROCESSING
            assert q.size == 0, "a consumer waits while there are items"
        if self._pending(self.joiners):
            assert self.status is not QueueStatus.STOPPED
            unfinished = q.size + m["in_flight"] + m["delayed"]
            assert unfinished > 0, "join waits with nothing unfinished"
        held = self._held()
        assert (q.held_until is not None) == held, (q.held_until, self.held_until)
        if held:
            # No call starts: items wait, and so do workers, without a slot.
            assert bq.statistics().slots_in_use <= len(self.in_worker)
        elif self.status is QueueStatus.PROCESSING and q.size > 0:
            limit = q.concurrency_limit
            busy = q.worker_count if limit is None else min(q.worker_count, limit)
            # (more when the limit was lowered while they were handled)
            assert len(self.in_worker) >= busy, "a worker idles while items wait"

    # -- setup and teardown -----------------------------------------------------

    @initialize(
        use_work_queue=st.booleans(),
        maxsize=st.integers(1, 4),
        limit=st.none() | st.integers(1, 3),
        timeout=st.sampled_from([0.0, SHORT]),
        context=st.booleans(),
        started=st.sampled_from([True, True, True, False]),
        workers=st.integers(0, 3),
        retry=RETRY,
    )
    def setup(
        self,
        *,
        use_work_queue: bool,
        maxsize: int,
        limit: int | None,
        timeout: float,
        context: bool,
        started: bool,
        workers: int,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``retry``: the WorkQueue's default policy, or the first workers'."""
        self.wq: WorkQueue[int] | None = None
        if use_work_queue:
            self.wq = WorkQueue(
                maxsize, timeout, limit, logger=LOGGER, retry=retry, clock=self.clock
            )
            self.bq: BoundedQueue[int] = self.wq.queue
            self.default_retry = retry
        else:
            self.bq = BoundedQueue(
                maxsize,
                timeout,
                concurrency_limit=limit,
                logger=LOGGER,
                clock=self.clock,
            )
        self.context = context
        self._portal_cm = start_blocking_portal(self.backend, self.backend_options)
        self._portal = self._portal_cm.__enter__()
        self._host_future: Future[None]
        self._host_future, _ = self._portal.start_task(self._host)
        self._run(lambda: self._setup(started, workers, retry))

    async def _setup(
        self, started: bool, workers: int, retry: RetryPolicy | None
    ) -> None:
        if self.context:
            self.owner = Pending()
            self.live_tasks += 1
            await self.tg.start(self._own, self.owner)
            self.status = QueueStatus.PROCESSING
            self._timers_started(beside_workers=False)  # for the whole block
        elif started:
            await self.q.start()
            self.status = QueueStatus.PROCESSING
        if workers and self.status is QueueStatus.PROCESSING:
            retry = None if self.wq is not None else retry  # (the default there)
            await self._start_workers(workers, "record", not self.context, retry=retry)

    async def _own(self, rec: Pending, *, task_status: TaskStatus[None]) -> None:
        """Hold the queue's ``async with`` block open until teardown."""
        try:
            async with self.q:
                task_status.started()
                await rec.exit.wait()
            rec.outcome = "exited"
        except Exception as exc:
            self._violation(f"async with queue raised {exc!r}")
        finally:
            rec.done.set()
            self.live_tasks -= 1

    def teardown(self) -> None:
        if self._portal is None:
            return
        try:
            if self._healthy:
                self._portal.call(self._final)
        finally:
            self._portal.call(self._shut_down)
            self._host_future.result(GUARD)
            assert self._portal_cm is not None
            self._portal_cm.__exit__(None, None, None)
            self._portal = None

    async def _final(self) -> None:
        with anyio.fail_after(GUARD):
            self.gate_open = True
            self._release_gate()
            while True:
                while self.held:  # let join in `async with`'s exit end
                    self.q.task_done()
                    self.got_done.append(self.held.pop(0))
                await all_blocked()
                # That exit waits for delayed items too while there are workers,
                # and for a hold to end: let time run on until the last retry
                # and the hold are over (a parked get() may take one).
                if not ((self.waiting_retry or self._held()) and self.timers_running):
                    break
                await self._advance_to_next()
            self.stopping = True
            if self.owner is not None:
                self.owner.exit.set()
                await all_blocked()
                # Everything else is blocked and the FakeClock stands still:
                # nothing would ever wake the exit.
                assert self.owner.done.is_set(), "the exit of `async with` hangs"
            else:
                await self.q.stop(SHORT)
            await all_blocked()
        self._stopped()
        self._check()
        # No task is left, and every accepted item met exactly one fate.
        assert self.live_tasks == 0
        assert not self._pending(self.producers + self.consumers + self.joiners)
        if self.owner is not None:
            assert self.owner.outcome == "exited"
        m = self.q.metrics
        assert (m["in_flight"], self.q.size, m["delayed"]) == (0, 0, 0)
        assert m["enqueued"] == m["processed"] + m["unprocessed"]
        unprocessed = Counter(self.q.unprocessed)
        got_done = Counter(self.got_done)
        for item in self.accepted:
            fates = (
                (self.outcome.get(item) in ("ok", "failed"))
                + got_done[item]
                + unprocessed[item]
            )
            assert fates == 1, f"item {item}: {fates} fates"
            # Taken once per call, or once by get (after calls, if retried).
            assert self.delivered[item] == self.attempts[item] + got_done[item]
            assert self.delivered[item] <= MAX_ATTEMPTS
        for item in self.rejected:
            assert self.delivered[item] == 0
            assert unprocessed[item] == 0

    async def _shut_down(self) -> None:
        if not self._healthy or self.live_tasks or self.bq.worker_count:
            self.tg.cancel_scope.cancel()
        self.shutdown.set()

    # -- producers --------------------------------------------------------------

    @rule(
        kinds=st.lists(KINDS, min_size=1, max_size=3),
        timeout=st.sampled_from([0.0, SHORT, "default", None, LONG]),
        cancel_now=st.booleans(),
    )
    def put(self, kinds: list[Kind], timeout: Timeout, cancel_now: bool) -> None:
        """A few puts, awaited in the step; one that would wait for ever is
        cancelled."""
        for kind in kinds:
            self._run(partial(self._put, kind, timeout, cancel_now))

    async def _put(self, kind: Kind, timeout: Timeout, cancel_now: bool) -> None:
        item = self._new_item(kind)
        full = self.q.is_full
        forever = timeout is None or timeout == LONG
        result: bool | None = None
        state_error = False
        with anyio.move_on_after(0 if cancel_now else SHORT if forever else math.inf):
            try:
                if timeout == "default":
                    result = await self.q.put(item)
                else:
                    result = await self.q.put(item, timeout)
            except QueueStateError:
                state_error = True
        if result:
            self._accept(item)
        else:
            self._reject(item)
            if result is False:
                self.backpressure += 1
        if self.status is not QueueStatus.PROCESSING:
            assert state_error
        elif not full:
            # A put with room does not wait; only every 64th yields once.
            assert result is True or (cancel_now and result is None)
        elif cancel_now or forever:
            assert result is None
            assert not state_error
        else:
            assert result is False

    @precondition(lambda self: len(self._pending(self.producers)) < 4)
    @rule(kind=KINDS, timeout=st.sampled_from([None, LONG]))
    def spawn_producer(self, kind: Kind, timeout: float | None) -> None:
        """A put in the background, which may block until a later step."""
        self._run(lambda: self._spawn_producer(kind, timeout))

    async def _spawn_producer(self, kind: Kind, timeout: float | None) -> None:
        rec = Pending(self._new_item(kind))
        self.producers.append(rec)
        self.live_tasks += 1
        full = self.q.is_full
        self.tg.start_soon(self._producer, rec, timeout)
        await all_blocked()
        if self.status is not QueueStatus.PROCESSING:
            assert rec.outcome == "state_error"
        elif not full:
            assert rec.outcome == "accepted"

    async def _producer(self, rec: Pending, timeout: float | None) -> None:
        assert rec.item is not None
        try:
            with rec.scope:
                try:
                    ok = await self.q.put(rec.item, timeout)
                except QueueStateError:
                    rec.outcome = "state_error"
                else:
                    rec.outcome = "accepted" if ok else "backpressure"
                    if ok:
                        self._accept(rec.item)
                    else:
                        self._violation(f"put with timeout {timeout} gave up")
            if rec.outcome is None:
                rec.outcome = "cancelled"
            if rec.outcome != "accepted":
                self._reject(rec.item)
        except Exception as exc:
            self._violation(f"producer raised {exc!r}")
        finally:
            rec.done.set()
            self.live_tasks -= 1

    @precondition(lambda self: self._pending(self.producers + self.consumers))
    @rule(index=st.integers(0, 99))
    def cancel(self, index: int) -> None:
        """Cancel a blocked producer or consumer."""
        self._run(lambda: self._cancel(self.producers + self.consumers, index))

    async def _cancel(self, tasks: list[Pending], index: int) -> None:
        pending = self._pending(tasks)
        rec = pending[index % len(pending)]
        rec.scope.cancel()
        await all_blocked()
        assert rec.done.is_set()
        # On trio a cancel that arrives after the wake-up may let the call finish.
        assert rec.outcome in ("cancelled", "accepted", "got")

    # -- consumers --------------------------------------------------------------

    @rule(cancel_now=st.booleans())
    def get(self, cancel_now: bool) -> None:
        """get, awaited in the step; one that would wait for ever is cancelled."""
        self._run(lambda: self._get(cancel_now))

    async def _get(self, cancel_now: bool) -> None:
        size = self.q.size
        item: int | None = None
        state_error = False
        with anyio.move_on_after(0 if cancel_now or size == 0 else math.inf):
            try:
                item = await self.q.get()
            except QueueStateError:
                state_error = True
        if item is not None:
            self._deliver(item)
            self.held.append(item)
        if self.status is not QueueStatus.PROCESSING:
            assert state_error
        elif size > 0:
            # A get with an item at hand does not wait.
            assert item is not None or cancel_now
        else:
            assert item is None
            assert not state_error

    @precondition(lambda self: len(self._pending(self.consumers)) < 4)
    @rule()
    def spawn_consumer(self) -> None:
        """A get in the background, which may block until a later step."""
        self._run(self._spawn_consumer)

    async def _spawn_consumer(self) -> None:
        rec = Pending()
        self.consumers.append(rec)
        self.live_tasks += 1
        size = self.q.size
        self.tg.start_soon(self._consumer, rec)
        await all_blocked()
        if self.status is not QueueStatus.PROCESSING:
            assert rec.outcome == "state_error"
        elif size > 0:
            assert rec.outcome == "got"

    async def _consumer(self, rec: Pending) -> None:
        try:
            with rec.scope:
                try:
                    item = await self.q.get()
                except QueueStateError:
                    rec.outcome = "state_error"
                else:
                    rec.outcome = "got"
                    rec.got = item
                    self._deliver(item)
                    self.held.append(item)
            if rec.outcome is None:
                rec.outcome = "cancelled"
        except Exception as exc:
            self._violation(f"consumer raised {exc!r}")
        finally:
            rec.done.set()
            self.live_tasks -= 1

    @rule()
    def task_done(self) -> None:
        self._run(self._task_done)

    async def _task_done(self) -> None:
        if self.held:
            self.q.task_done()
            self.got_done.append(self.held.pop(0))
        else:
            with pytest.raises(ValueError, match="more times than items taken"):
                self.q.task_done()

    @precondition(lambda self: len(self._pending(self.joiners)) < 2)
    @rule()
    def spawn_joiner(self) -> None:
        """join in the background; it must end once nothing is unfinished."""
        self._run(self._spawn_joiner)

    async def _spawn_joiner(self) -> None:
        rec = Pending()
        self.joiners.append(rec)
        self.live_tasks += 1
        self.tg.start_soon(self._joiner, rec)

    async def _joiner(self, rec: Pending) -> None:
        try:
            await self.q.join()
            rec.outcome = "joined"
        except Exception as exc:
            self._violation(f"join raised {exc!r}")
        finally:
            rec.done.set()
            self.live_tasks -= 1

    # -- workers ----------------------------------------------------------------

    @precondition(lambda self: self.expected_workers < 6)
    @rule(
        num_workers=st.none() | st.integers(1, 3),
        handler=st.sampled_from(["none", "record", "raise"]),
        own_group=st.booleans(),
        retry=RETRY,
    )
    def start_workers(
        self,
        num_workers: int | None,
        handler: str,
        own_group: bool,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Workers in our task group, or in the queue's (inside `async with`),
        with a retry policy or without (a WorkQueue's default, if it has one)."""
        self._run(
            lambda: self._start_workers(num_workers, handler, own_group, retry=retry)
        )

    async def _start_workers(
        self,
        num_workers: int | None,
        handler: str,
        own_group: bool,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        policy = retry if retry is not None else self.default_retry
        func = self._worker_func(handler != "none", policy)
        on_error = self._error_handler(handler)
        group = self.tg if own_group else None
        try:
            if self.wq is not None:
                await self.wq.process(
                    func, num_workers, on_error, task_group=group, retry=retry
                )
                count = num_workers or self.wq.concurrency_limit or 1
            else:
                count = num_workers or 1
                await self.bq.start_workers(
                    func, count, on_error, task_group=group, retry=retry
                )
        except QueueStateError:
            assert self.status is not QueueStatus.PROCESSING or (
                group is None and not self.context
            )
        else:
            assert self.status is QueueStatus.PROCESSING
            assert group is not None or self.context
            self.expected_workers += count
            if not self.timers_running:
                self._timers_started(beside_workers=True)

    @rule()
    def release_gate(self) -> None:
        """Let the items that wait on the gate finish."""
        self._run(self._release)

    async def _release(self) -> None:
        self._release_gate()

    @precondition(lambda self: self.waiting_retry or self._held())
    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]))
    def advance_clock(self, seconds: float) -> None:
        """Move the queue's clock on: retries that fall due come back, and a
        hold that is over ends (if the queue's timers run: in `async with`,
        or while it has workers)."""
        self._run(lambda: self._advance(seconds))

    @precondition(lambda self: self.waiting_retry or self._held())
    @rule()
    def advance_to_next_retry(self) -> None:
        """Move the clock exactly to the earliest retry's due time, or the
        hold's end."""
        self._run(self._advance_to_next)

    async def _advance_to_next(self) -> None:
        dues = [when for when, _ in self.waiting_retry.values()]
        if self._held():
            dues.append(self.held_until)
        await self._advance(min(dues) - self.clock.current_time())

    def _held(self) -> bool:
        return self.clock.current_time() < self.held_until

    # -- lifecycle --------------------------------------------------------------

    @precondition(lambda self: self.status is not QueueStatus.PROCESSING)
    @rule()
    def start(self) -> None:
        self._run(self._start)

    async def _start(self) -> None:
        await self.q.start()
        self.status = QueueStatus.PROCESSING
        if self.owner is not None and not self.timers_running:
            self._timers_started(beside_workers=False)  # the block's again

    @rule(
        workers_only=st.booleans(),
        timeout=st.sampled_from([0.0, SHORT, None]),
        cancelled=st.booleans(),
    )
    def stop(self, workers_only: bool, timeout: float | None, cancelled: bool) -> None:
        """stop or stop_workers, perhaps cancelled from outside while it waits.

        Without a timeout and not cancelled, the gate opens first, or stop would
        wait for ever.
        """
        self._run(lambda: self._stop(timeout, cancelled, workers_only=workers_only))

    async def _stop(
        self, timeout: float | None, cancelled: bool, *, workers_only: bool
    ) -> None:
        if timeout is None and not cancelled:
            self.gate_open = True
            self._release_gate()
        deadline = (0 if timeout is not None else SHORT) if cancelled else math.inf
        self.stopping = not workers_only
        with anyio.move_on_after(deadline):
            if workers_only:
                await self.bq.stop_workers(timeout)
            else:
                await self.q.stop(timeout)
        # A cancelled stop cancels the workers; the last one to end finishes it.
        await all_blocked()
        if not workers_only:
            # Items cancelled in flight were listed first, then the buffer.
            self._stopped()
        self.gate_open = False
        self._workers_ended()
        assert self.q.worker_count == 0
        if not workers_only:
            # Blocked producers and consumers were told the queue stopped.
            waiting = self._pending(self.producers + self.consumers)
            assert not waiting, [rec.outcome for rec in waiting]

    def _stopped(self) -> None:
        """The queue has stopped: it lists the buffer, then the delayed items
        (in due order; after items whose retry fell in the stop, listed as they
        failed); the model's delay line is empty."""
        delayed = sorted((when, item) for item, when in self.waiting_retry.items())
        listed = list(self.buffer) + [item for _, item in delayed]
        if self.release_pending:
            # Stopped by a worker started beside the timers task, which may not
            # have released the due items yet: they are listed as buffered, or
            # as delayed.
            released = [item for _, item in self.release_pending] + listed
            kept = list(self.buffer) + [
                item for _, item in sorted(delayed + self.release_pending)
            ]
            actual = self.q.unprocessed[len(self.unprocessed) :]
            if actual not in (released, kept):
                self._violation(f"listed {actual} at stop, not {released} or {kept}")
            listed = actual
            self.release_pending.clear()
        self.unprocessed.extend(listed)
        self.buffer.clear()
        self.waiting_retry.clear()
        self.status = QueueStatus.STOPPED
        self.stopping = False
        self.timers_running = False
        self._workers_ended()

    @rule(then_fail=st.booleans())
    def put_stopper(self, then_fail: bool = False) -> None:
        """An item whose worker stops the queue (stop(0): from inside a worker),
        and perhaps then fails."""
        self._run(lambda: self._put_stopper(then_fail))

    async def _put_stopper(self, then_fail: bool) -> None:
        await self._put("stopfail" if then_fail else "stop", 0, cancel_now=False)

    @rule(limit=st.none() | st.integers(1, 3))
    def set_concurrency_limit(self, limit: int | None) -> None:
        self._run(lambda: self._set_limit(limit))

    async def _set_limit(self, limit: int | None) -> None:
        self.q.concurrency_limit = limit


# Seeds: each run draws a fresh random seed (derandomize=False), so CI keeps
# exploring new sequences; a failure prints the seed to rerun it with
# `pytest --hypothesis-seed=N` and, with print_blob, a @reproduce_failure(...) line.
# database=None: no example database, so runs do not depend on local state.
SETTINGS = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    derandomize=False,
    database=None,
    print_blob=True,
)


def make_machine(name: str, options: dict[str, Any]) -> type[QueueMachine]:
    backend = name.partition("+")[0]
    machine = type(
        f"QueueMachine_{name.replace('+', '_')}",
        (QueueMachine,),
        {"backend": backend, "backend_options": options},
    )
    return SETTINGS(machine)


BACKENDS: dict[str, dict[str, Any]] = {
    "asyncio": {},
    "asyncio+uvloop": {"loop_factory": uvloop.new_event_loop},
    "trio": {},
}
MACHINES = {name: make_machine(name, options) for name, options in BACKENDS.items()}

TestQueueAsyncio = MACHINES["asyncio"].TestCase
TestQueueUvloop = MACHINES["asyncio+uvloop"].TestCase
TestQueueTrio = MACHINES["trio"].TestCase


Steps = list[tuple[str, dict[str, Any]]]
RETRY_ONCE = RetryPolicy(attempts=2, backoff=0.5, jitter=False)
FIRST: dict[str, Any] = {
    "use_work_queue": False,
    "limit": None,
    "timeout": 0.0,
    "started": True,
}
ONE_WORKER: dict[str, Any] = {"num_workers": 1, "handler": "none", "own_group": True}
DELAY_ONE: Steps = [  # item 0 fails and waits for its retry; no worker is left
    ("start_workers", {**ONE_WORKER, "retry": RETRY_ONCE}),
    ("put", {"kinds": ["fail"], "timeout": 0.0, "cancel_now": False}),
    ("stop", {"workers_only": True, "timeout": 0.0, "cancelled": False}),
]


def replay(machine: QueueMachine, steps: Steps) -> None:
    try:
        for step, arguments in steps:
            getattr(machine, step)(**arguments)
    finally:
        machine.teardown()


# Failing sequences the machine found, replayed on every run whatever the seed.
REGRESSIONS: dict[str, Steps] = {
    # A get() parked below two idle workers (limit 1): the wake-up for the second
    # item goes to a worker that then waits on the limiter, and get() sleeps on
    # while the item waits. (/tmp/stateful_bug_1.py)
    "lost_wakeup_to_limited_worker": [
        (
            "setup",
            {
                "use_work_queue": False,
                "maxsize": 1,
                "limit": 1,
                "timeout": 0.0,
                "context": False,
                "started": True,
                "workers": 0,
            },
        ),
        ("spawn_consumer", {}),
        ("start_workers", {"num_workers": 2, "handler": "none", "own_group": True}),
        ("put", {"kinds": ["block", "ok"], "timeout": 0.0, "cancel_now": False}),
    ],
    # Workers without a policy, started after stop_workers, never got the due
    # item back: the delay line ran only beside workers with a policy.
    "workers_without_policy_strand_delayed_items": [
        ("setup", {**FIRST, "maxsize": 1, "context": False, "workers": 0}),
        *DELAY_ONE,
        ("advance_clock", {"seconds": 1.0}),
        ("start_workers", {**ONE_WORKER, "retry": None}),
    ],
    # A worker stopped its own queue, then its item failed with attempts left:
    # it went into the delay line of the STOPPED queue and was never listed
    # (the books never closed); now it is listed as unprocessed.
    "retried_after_its_worker_stopped_the_queue": [
        ("setup", {**FIRST, "maxsize": 1, "context": False, "workers": 0}),
        ("start_workers", {**ONE_WORKER, "retry": RETRY_ONCE}),
        ("put_stopper", {"then_fail": True}),
    ],
    # In `async with`, after stop_workers, with an item delayed and a get()
    # parked, the exit waited for the delayed item, which never came back.
    "exit_waits_for_delayed_items_without_workers": [
        ("setup", {**FIRST, "maxsize": 1, "context": True, "workers": 0}),
        *DELAY_ONE,
        ("spawn_consumer", {}),
    ],
    # Started again inside its `async with`, the queue ran the delay line only
    # beside workers: an item delayed when they left stayed delayed though due
    # (and a get() parked then would have held up the exit for ever).
    "restart_in_block_strands_delayed_items": [
        ("setup", {**FIRST, "maxsize": 1, "context": True, "workers": 0}),
        ("stop", {"workers_only": False, "timeout": 0.0, "cancelled": False}),
        ("start", {}),
        *DELAY_ONE,
        ("advance_clock", {"seconds": 1.0}),
        ("spawn_consumer", {}),
    ],
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_regression(name: str, backend: str) -> None:
    replay(MACHINES[backend](), REGRESSIONS[name])


# Paths the random search reaches only now and then, replayed on every run.
SCENARIOS: dict[str, Steps] = {
    # A parked get() is served before idle workers: it takes the retried item,
    # which is then processed once, at task_done.
    "get_takes_a_retried_item": [
        ("setup", {**FIRST, "maxsize": 2, "context": False, "workers": 0}),
        ("start_workers", {**ONE_WORKER, "retry": RETRY_ONCE}),
        ("put", {"kinds": ["flaky"], "timeout": 0.0, "cancel_now": False}),
        ("spawn_consumer", {}),
        ("advance_to_next_retry", {}),
        ("task_done", {}),
    ],
    # Outside `async with`, items fall due while no worker runs; workers start
    # beside buffered items, and the timers task starting with them releases
    # the due item (to the front) before or after they take buffered ones.
    "overdue_items_released_as_workers_start": [
        ("setup", {**FIRST, "maxsize": 3, "context": False, "workers": 0}),
        *DELAY_ONE,
        ("advance_clock", {"seconds": 1.0}),
        ("put", {"kinds": ["ok", "block"], "timeout": 0.0, "cancel_now": False}),
        ("start_workers", {**ONE_WORKER, "num_workers": 2, "retry": RETRY_ONCE}),
    ],
    # The same, with a stopper first in the buffer: the queue stops before or
    # after the due item is released, and lists it either way.
    "stop_races_the_release_of_overdue_items": [
        ("setup", {**FIRST, "maxsize": 3, "context": False, "workers": 0}),
        *DELAY_ONE,
        ("advance_clock", {"seconds": 1.0}),
        ("put_stopper", {"then_fail": False}),
        ("put", {"kinds": ["flaky2"], "timeout": 0.0, "cancel_now": False}),
        ("start_workers", {**ONE_WORKER, "num_workers": 2, "retry": RETRY_ONCE}),
    ],
    # A worker stops the queue (stop(0)) while another is in its error handler
    # (on trio, about half the time): that item is listed as unprocessed, not
    # counted as failed. (A model error the machine found.)
    "error_handler_cancelled_by_a_stop": [
        (
            "setup",
            {
                **FIRST,
                "use_work_queue": True,
                "maxsize": 3,
                "limit": 3,
                "context": False,
                "workers": 0,
            },
        ),
        ("put_stopper", {"then_fail": False}),
        ("put", {"kinds": ["ok", "fail"], "timeout": 0.0, "cancel_now": False}),
        ("get", {"cancel_now": False}),
        ("put_stopper", {"then_fail": False}),
        ("start_workers", {**ONE_WORKER, "num_workers": None, "handler": "record"}),
    ],
    # Two retries fall due at one moment: they come back to the front of the
    # buffer in the order they failed, so the parked get() takes the one that
    # failed first, and the worker the other.
    "retries_released_together": [
        ("setup", {**FIRST, "maxsize": 4, "context": False, "workers": 0}),
        ("start_workers", {**ONE_WORKER, "retry": RETRY_ONCE}),
        ("put", {"kinds": ["flaky", "fail"], "timeout": 0.0, "cancel_now": False}),
        ("spawn_consumer", {}),
        ("advance_clock", {"seconds": 0.5}),
    ],
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str, backend: str) -> None:
    replay(MACHINES[backend](), SCENARIOS[name])
