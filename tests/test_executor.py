# mypy: disable-error-code="comparison-overlap"
"""Executor and events: the plan's IT-1 to IT-3 and the Executor issue's behaviours."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import pytest
from fake_clock import FakeClock, max_in_window
from support import GUARD

from sluicegate import (
    Event,
    Execution,
    ExecutionStatus,
    Executor,
    QueueConfig,
    QueueProtocol,
    QueueStateError,
    QueueStatus,
    RateLimiter,
    RetryAfter,
    RetryPolicy,
    WorkQueue,
)

FAST = QueueConfig(queue_capacity=10, capacity_refresh_time=1e-6)  # rate won't bind


class Job(Event):
    """A concrete base, so that one executor can run several kinds of events."""

    async def invoke(self) -> object:
        return None


class Echo(Job):
    """Returns its value after an optional sleep; fails if asked to."""

    def __init__(self, value: str, *, delay: float = 0, fail: bool = False) -> None:
        super().__init__()
        self.value = value
        self.delay = delay
        self.fail = fail
        self.seen_status: ExecutionStatus | None = None

    async def invoke(self) -> str:
        self.seen_status = self.execution.status
        if self.delay:
            await anyio.sleep(self.delay)
        else:
            await anyio.lowlevel.checkpoint()
        if self.fail:
            raise ValueError(f"{self.value} failed")
        return self.value.upper()


class Hang(Job):
    def __init__(self, started: anyio.Event) -> None:
        super().__init__()
        self.started = started

    async def invoke(self) -> None:
        self.started.set()
        await anyio.sleep_forever()


class Other(Event):
    async def invoke(self) -> None:
        pass


# -- events -------------------------------------------------------------------------


def test_new_event_is_pending_with_a_unique_id() -> None:
    events = [Echo(str(i)) for i in range(100)]
    assert len({e.id for e in events}) == 100
    assert all(isinstance(e.id, uuid.UUID) for e in events)
    event = events[0]
    assert event.execution == Execution()
    assert event.execution.status is ExecutionStatus.PENDING
    assert (event.execution.response, event.execution.error) == (None, None)
    assert event.execution.duration is None


def test_execution_status_is_a_str_enum() -> None:
    names = [s.name for s in ExecutionStatus]
    assert names == ["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
    assert ExecutionStatus.FAILED == "failed"


def test_event_needs_invoke() -> None:
    class NoInvoke(Event):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoInvoke()  # type: ignore[abstract]


# -- construction and bad input ----------------------------------------------------


def test_executor_defaults() -> None:
    executor = Executor(Echo)
    assert executor.event_type is Echo
    assert executor.queue_config == QueueConfig()
    assert isinstance(executor.queue, WorkQueue)
    assert executor.queue.maxsize == 100
    assert executor.status is QueueStatus.IDLE
    assert executor.is_all_processed
    assert executor.pending_events == []


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((int,), {}, "event_type must be a subclass of sluicegate.Event"),
        ((Echo("x"),), {}, "event_type must be a subclass"),
        ((Echo, {"queue_capacity": 3}), {}, "queue_config must be a QueueConfig"),
        ((Echo,), {"rate_limiter": 10}, "rate_limiter must be a RateLimiter"),
    ],
)
def test_executor_validates(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        Executor(*args, **kwargs)


def test_append_checks_the_event_type() -> None:
    executor = Executor(Echo)
    with pytest.raises(TypeError, match="event must be an instance of Echo, got Other"):
        executor.append(cast(Any, Other()))
    with pytest.raises(TypeError, match="event must be an instance of Echo, got str"):
        executor.append(cast(Any, "not an event"))
    assert executor.pending_events == []


async def test_put_and_batch_process_check_the_event_type() -> None:
    async with Executor(Echo, FAST) as executor:
        with pytest.raises(TypeError, match="event must be an instance of Echo"):
            await executor.put(cast(Any, Other()))
        with pytest.raises(TypeError, match="events must be an iterable"):
            await executor.batch_process(cast(Any, 3))
        with pytest.raises(TypeError, match="got Other"):
            await executor.batch_process([Echo("a"), cast(Any, Other())])
    assert executor.metrics["enqueued"] == 1


# -- IT-1 to IT-3 ------------------------------------------------------------------


async def test_executor_processes_events_through_its_queue() -> None:  # IT-1
    config = QueueConfig(
        queue_capacity=5, concurrency_limit=2, capacity_refresh_time=1e-6
    )
    executor = Executor(event_type=Echo, queue_config=config)
    events = [Echo(f"value{i}") for i in range(10)]
    with anyio.fail_after(GUARD):
        async with executor:
            assert executor.queue.worker_count == 2
            assert executor.queue.maxsize == 5
            for event in events:
                executor.append(event)
            assert len(executor.pending_events) == 10
            await executor.forward()
            assert executor.pending_events == []
            await executor.join()
            assert executor.is_all_processed
    for event in events:
        assert event.execution.status is ExecutionStatus.COMPLETED
        assert event.execution.response == event.value.upper()
        assert event.seen_status is ExecutionStatus.PROCESSING
        assert event.execution.duration is not None
        assert event.execution.duration >= 0
    assert {e.id for e in executor.completed_events} == {e.id for e in events}
    assert executor.metrics["processed"] == 10
    assert executor.metrics["completed"] == 10


async def test_executor_handles_backpressure() -> None:  # IT-2
    config = QueueConfig(
        queue_capacity=2, concurrency_limit=1, capacity_refresh_time=1e-6
    )
    peak = 0

    class Probe(Echo):
        async def invoke(self) -> str:
            nonlocal peak
            peak = max(peak, executor.queue.size)
            return await super().invoke()

    executor = Executor(Probe, config)
    events = [Probe(str(i)) for i in range(20)]
    with anyio.fail_after(GUARD):
        async with executor:
            for event in events:
                executor.append(event)
            await executor.forward()  # waits while the queue is full, drops nothing
            assert executor.queue.size <= 2
            blocker = anyio.Event()

            class Block(Probe):
                async def invoke(self) -> str:
                    await blocker.wait()
                    return "done"

            await executor.join()
            # Fill the queue behind a blocked worker: put then says no.
            assert await executor.put(Block("b"))
            await anyio.wait_all_tasks_blocked()
            assert await executor.put(Probe("x"), timeout=0)
            assert await executor.put(Probe("y"), timeout=0)
            assert await executor.put(Probe("z"), timeout=0) is False
            assert executor.metrics["backpressure_events"] == 1
            blocker.set()
    assert peak <= 2
    assert all(e.execution.status is ExecutionStatus.COMPLETED for e in events)
    assert executor.metrics["completed"] == 23


async def test_executor_cleans_up_its_queue() -> None:  # IT-3
    before = len(anyio.get_running_tasks())
    executor = Executor(Echo, QueueConfig(queue_capacity=4, concurrency_limit=3))
    async with executor:
        executor.append(Echo("a"))
        # three workers, and the queue's task that releases retries when due
        assert len(anyio.get_running_tasks()) == before + 3 + 1
    assert len(anyio.get_running_tasks()) == before
    assert executor.status is QueueStatus.STOPPED
    assert executor.queue.worker_count == 0
    assert executor.queue.unprocessed == []
    assert executor.is_all_processed


# -- outcomes -----------------------------------------------------------------------


async def test_failed_event_records_the_error() -> None:
    event = Echo("bad", fail=True)
    with anyio.fail_after(GUARD):
        async with Executor(Echo, FAST) as executor:
            executor.append(event)
    assert event.execution.status is ExecutionStatus.FAILED
    assert isinstance(event.execution.error, ValueError)
    assert str(event.execution.error) == "bad failed"
    assert event.execution.response is None
    assert event.execution.duration is not None
    assert executor.failed_events == [event]
    assert executor.metrics["errors"] == 1
    assert executor.metrics["processed"] == 1


async def test_duration_is_the_time_invoke_took() -> None:
    event = Echo("slow", delay=0.01)
    async with Executor(Echo, FAST) as executor:
        executor.append(event)
    assert event.execution.duration is not None
    # Timed on the real clock: uvloop's timers count whole milliseconds of its
    # own clock, which runs up to one behind, so a sleep may end that much early.
    assert event.execution.duration >= 0.01 - 0.001


async def test_duration_is_the_last_calls_not_the_backoff_nor_the_gate() -> None:
    """A retried event's duration is its last call's, not the backoff's nor
    the first attempt's; one that waited at the start rate is timed from its
    start, not from when a worker took it."""
    clock = FakeClock()

    class Slow(Event):
        def __init__(self, fail_first: bool) -> None:
            super().__init__()
            self.fail_first = fail_first

        async def invoke(self) -> None:
            delay = 1.0 if self.execution.attempts == 1 else 2.0
            await clock.sleep_until(clock.current_time() + delay)
            if self.fail_first and self.execution.attempts == 1:
                raise KeyError("first attempt")

    config = QueueConfig(queue_capacity=1, capacity_refresh_time=10.0)
    policy = RetryPolicy(attempts=2, backoff=5.0, jitter=False)
    executor = Executor(Slow, config, retry=policy, clock=clock)
    retried, gated = Slow(fail_first=True), Slow(fail_first=False)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            await executor.batch_process([retried, gated])
            tg.cancel_scope.cancel()
    assert retried.execution.attempts == 2
    assert retried.execution.duration == pytest.approx(2.0)
    # `gated` was taken at 1 (after `retried`'s first call) and started at 10.
    assert gated.execution.attempts == 1
    assert gated.execution.duration == pytest.approx(1.0)


async def test_a_cancelled_running_event_is_timed_until_cancelled() -> None:
    clock = FakeClock()
    started = anyio.Event()

    class Hang(Event):
        async def invoke(self) -> None:
            started.set()
            await anyio.sleep_forever()

    executor = Executor(Hang, FAST, clock=clock)
    event = Hang()
    with anyio.fail_after(GUARD):
        async with executor:
            await executor.put(event)
            await started.wait()
            clock.advance(3.0)
            await executor.stop(timeout=0)
    assert event.execution.status is ExecutionStatus.CANCELLED
    assert event.execution.duration == pytest.approx(3.0)


async def test_leaving_with_an_exception_cancels_what_did_not_finish() -> None:
    started = anyio.Event()
    config = QueueConfig(
        queue_capacity=3, concurrency_limit=1, capacity_refresh_time=1e-6
    )
    executor = Executor(Job, config)
    running = Hang(started)
    buffered = [Echo("b1"), Echo("b2")]
    never_forwarded = Echo("p")
    with anyio.fail_after(GUARD), pytest.raises(KeyError):
        async with executor:
            await executor.put(running)
            for event in buffered:
                await executor.put(event)
            executor.append(never_forwarded)
            await started.wait()
            raise KeyError("boom")
    assert running.execution.status is ExecutionStatus.CANCELLED
    assert running.execution.duration is not None
    for event in [*buffered, never_forwarded]:
        assert event.execution.status is ExecutionStatus.CANCELLED
        assert event.execution.duration is None
    assert {e.id for e in executor.cancelled_events} == {
        e.id for e in [running, *buffered, never_forwarded]
    }
    assert executor.pending_events == []
    assert executor.metrics["processed"] == 0


async def test_cancelled_from_outside() -> None:
    started = anyio.Event()
    executor = Executor(Hang, FAST)
    event = Hang(started)
    with anyio.fail_after(GUARD):
        with anyio.CancelScope() as scope:
            async with executor:
                executor.append(event)
                await executor.forward()
                await started.wait()
                scope.cancel()
                await anyio.sleep_forever()
    assert event.execution.status is ExecutionStatus.CANCELLED
    assert executor.cancelled_events == [event]
    assert executor.status is QueueStatus.STOPPED


async def test_stop_with_timeout_cancels_a_hanging_event() -> None:
    started = anyio.Event()
    executor = Executor(Hang, FAST)
    event = Hang(started)
    with anyio.fail_after(GUARD):
        async with executor:
            await executor.put(event)
            await started.wait()
            await executor.stop(timeout=0.01)
            assert event.execution.status is ExecutionStatus.CANCELLED
    assert executor.cancelled_events == [event]


async def test_leaving_normally_forwards_and_waits() -> None:
    events = [Echo(str(i)) for i in range(30)]
    executor = Executor(Echo, QueueConfig(queue_capacity=4, capacity_refresh_time=1e-6))
    with anyio.fail_after(GUARD):
        async with executor:
            for event in events:
                executor.append(event)
    assert executor.is_all_processed
    assert all(e.execution.status is ExecutionStatus.COMPLETED for e in events)


async def test_is_all_processed_tracks_pending_buffered_and_running() -> None:
    release = anyio.Event()

    class Wait(Event):
        async def invoke(self) -> None:
            await release.wait()

    executor = Executor(Wait, FAST)
    with anyio.fail_after(GUARD):
        async with executor:
            assert executor.is_all_processed
            executor.append(Wait())
            assert not executor.is_all_processed  # pending
            await executor.forward()
            assert not executor.is_all_processed  # buffered
            await anyio.wait_all_tasks_blocked()
            assert executor.queue.size == 0
            assert not executor.is_all_processed  # running
            release.set()
            await executor.join()
            assert executor.is_all_processed


async def test_forward_cancelled_keeps_the_event_pending() -> None:
    config = QueueConfig(queue_capacity=1, capacity_refresh_time=1e-6)
    started = anyio.Event()
    executor = Executor(Job, config)
    with anyio.fail_after(GUARD):
        async with executor:
            await executor.put(Hang(started))
            await started.wait()
            await executor.put(Echo("buffered"))
            waiting = Echo("waiting")
            executor.append(waiting)
            with anyio.move_on_after(0.01):
                await executor.forward()
            assert executor.pending_events == [waiting]
            await executor.stop(timeout=0)
    assert waiting.execution.status is ExecutionStatus.CANCELLED
    assert executor.metrics["enqueued"] == 2


async def test_executor_not_running_refuses_put_and_forward() -> None:
    executor = Executor(Echo)
    with pytest.raises(QueueStateError, match="idle"):
        await executor.put(Echo("a"))
    executor.append(Echo("b"))
    with pytest.raises(QueueStateError):
        await executor.forward()
    assert len(executor.pending_events) == 1


async def test_start_needs_a_task_group_outside_async_with() -> None:
    executor = Executor(Echo, FAST)
    with pytest.raises(QueueStateError, match="task_group=tg"):
        await executor.start()
    event = Echo("x")
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            await executor.start(task_group=tg)
            await executor.start(task_group=tg)  # idempotent: no second pool
            assert executor.queue.worker_count == 1
            assert await executor.put(event)
            await executor.join()
            await executor.stop()
    assert event.execution.status is ExecutionStatus.COMPLETED


# -- batch_process and put ------------------------------------------------------------


async def test_batch_process_on_its_own_and_inside() -> None:
    async def events() -> AsyncIterator[Echo]:
        for i in range(5):
            yield Echo(f"a{i}")

    executor = Executor(Echo, FAST)
    with anyio.fail_after(GUARD):
        await executor.batch_process(events())
        assert executor.status is QueueStatus.STOPPED
        async with executor:
            await executor.batch_process([Echo(f"b{i}") for i in range(5)])
            assert executor.status is QueueStatus.PROCESSING
    assert executor.metrics["completed"] == 10


# -- nothing written on the events ----------------------------------------------------


class Named(Job):
    """Attributes of its own, named as the Executor's claims once were."""

    def __init__(self) -> None:
        super().__init__()
        self._executor = "the user's"
        self._sink = "the user's too"


async def test_an_executor_writes_nothing_on_its_events_but_their_execution() -> None:
    appended, put, batched, read_back = Echo("a"), Echo("p"), Echo("b"), Echo("r")
    executor = Executor(Echo, FAST)
    with anyio.fail_after(GUARD):
        async with executor:
            executor.append(appended)
            assert await executor.put(put)
            await executor.batch_process([batched])
            async with executor.completed([read_back]) as finished:
                assert [event async for event in finished] == [read_back]
    own = {"value", "delay", "fail", "seen_status"}
    for event in (appended, put, batched, read_back):
        assert event.execution.status is ExecutionStatus.COMPLETED
        assert set(vars(event)) - own <= {"_id", "execution"}


async def test_an_event_with_attributes_named_like_the_old_claims_runs() -> None:
    appended, read_back = Named(), Named()
    executor = Executor(Job, FAST)
    with anyio.fail_after(GUARD):
        async with executor:
            executor.append(appended)
            async with executor.completed([read_back]) as finished:
                assert [event async for event in finished] == [read_back]
    for event in (appended, read_back):
        assert event.execution.status is ExecutionStatus.COMPLETED
        assert (event._executor, event._sink) == ("the user's", "the user's too")


# -- rates ---------------------------------------------------------------------------


async def test_capacity_refresh_time_limits_the_start_rate() -> None:
    clock = FakeClock()
    starts: list[float] = []

    class Stamp(Event):
        async def invoke(self) -> None:
            starts.append(clock.current_time())

    config = QueueConfig(
        queue_capacity=4, capacity_refresh_time=2.0, concurrency_limit=8
    )
    executor = Executor(Stamp, config, clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            await executor.batch_process(Stamp() for _ in range(20))
            tg.cancel_scope.cancel()
    assert len(starts) == 20
    for window in (0, 0.5, 1, 2, 4, 7):
        assert max_in_window(starts, window) <= 4 + 4 * window / 2 + 1e-9
    assert max(starts) == pytest.approx((20 - 4) * 2 / 4)


async def test_after_a_retry_after_the_start_rate_resumes_at_its_rate() -> None:
    """A RetryAfter holds the start rate, and its bucket is empty when the hold
    ends: starts resume at queue_capacity per capacity_refresh_time, not in a
    burst of queue_capacity."""
    clock = FakeClock()
    starts: list[float] = []

    class Stamp(Event):
        def __init__(self, pushback: float | None = None) -> None:
            super().__init__()
            self.pushback = pushback

        async def invoke(self) -> None:
            starts.append(clock.current_time())
            if self.pushback is not None:
                pushback, self.pushback = self.pushback, None
                raise RetryAfter(pushback)

    config = QueueConfig(
        queue_capacity=4, capacity_refresh_time=2.0, concurrency_limit=8
    )
    executor = Executor(Stamp, config, retry=RetryPolicy(attempts=2), clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            await executor.batch_process([Stamp(3.0)] + [Stamp() for _ in range(9)])
            tg.cancel_scope.cancel()
    assert executor.metrics["completed"] == 10
    assert starts[0] == 0  # the first raised at once: held until 3
    after = sorted(starts[1:])
    assert len(after) == 10
    assert after[0] == pytest.approx(3.5)
    for count, t in enumerate(after, 1):  # 2 per second from the hold's end
        assert count <= 2 * (t - 3.0) + 1e-9, (count, t)


async def test_executor_takes_a_token_from_a_shared_rate_limiter() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 1, burst=1, clock=clock)
    starts: list[float] = []

    class Stamp(Event):
        async def invoke(self) -> None:
            starts.append(clock.current_time())

    first = Executor(Stamp, FAST, rate_limiter=limiter)
    second = Executor(Stamp, FAST, rate_limiter=limiter)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            async with anyio.create_task_group() as runs:
                runs.start_soon(first.batch_process, [Stamp() for _ in range(3)])
                runs.start_soon(second.batch_process, [Stamp() for _ in range(3)])
            tg.cancel_scope.cancel()
    assert sorted(starts) == [0, 1, 2, 3, 4, 5]


async def test_a_binding_rate_limiter_sets_the_pace_under_a_start_rate() -> None:
    """The start rate and the limiter are asked together (`Gate`): when the
    limiter binds and the start rate does not, events start at the limiter's
    2 per second, each as soon as it grants."""
    clock = FakeClock()
    limiter = RateLimiter(2, 1, clock=clock)
    starts: list[float] = []

    class Stamp(Event):
        async def invoke(self) -> None:
            starts.append(clock.current_time())

    config = QueueConfig(queue_capacity=3, capacity_refresh_time=1, concurrency_limit=4)
    executor = Executor(Stamp, config, rate_limiter=limiter, clock=clock)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            await executor.batch_process([Stamp() for _ in range(12)])
            tg.cancel_scope.cancel()
    assert sorted(starts) == [i / 2 for i in range(12)]


# -- one API ---------------------------------------------------------------------------


def test_work_queue_and_executor_satisfy_the_protocol() -> None:
    # At runtime...
    assert isinstance(WorkQueue[int](), QueueProtocol)
    assert isinstance(Executor(Echo), QueueProtocol)
    assert not isinstance(object(), QueueProtocol)
    # ...and for mypy, which checks these assignments when it checks the tests.
    queue: QueueProtocol[int] = WorkQueue[int]()
    executor: QueueProtocol[Echo] = Executor(Echo)
    assert queue is not None
    assert executor is not None


async def use_any_queue(queue: QueueProtocol[Echo], items: list[Echo]) -> int:
    """Code written against the Protocol alone."""
    async with queue:
        for item in items[:1]:
            assert await queue.put(item)
        await queue.join()
    return queue.metrics["processed"]


async def test_code_written_against_the_protocol_runs_on_both() -> None:
    seen: list[str] = []

    async def work(event: Echo) -> None:
        seen.append(event.value)

    work_queue: WorkQueue[Echo] = WorkQueue()
    async with work_queue:
        await work_queue.process(work)
        assert await use_any_queue_inside(work_queue, [Echo("q")]) == 1
    assert await use_any_queue(Executor(Echo, FAST), [Echo("e")]) == 1
    assert seen == ["q"]


async def use_any_queue_inside(queue: QueueProtocol[Echo], items: list[Echo]) -> int:
    for item in items:
        assert await queue.put(item)
    await queue.join()
    return queue.metrics["processed"]


# -- found in review ------------------------------------------------------------------


async def test_batch_process_cancelled_closes_the_source_and_cancels_drawn_events() -> (
    None
):
    started = anyio.Event()
    drawn: list[Job] = []
    closed = False

    async def events() -> AsyncIterator[Job]:
        nonlocal closed
        try:
            for i in range(100):
                event: Job = Hang(started) if i == 0 else Echo(str(i))
                drawn.append(event)
                yield event
        finally:
            closed = True

    config = QueueConfig(queue_capacity=2, capacity_refresh_time=1e-6)
    executor = Executor(Job, config)
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(executor.batch_process, events())
            await started.wait()
            await anyio.wait_all_tasks_blocked()  # the feeder waits for room
            tg.cancel_scope.cancel()
    assert closed, "the async generator must be closed"
    assert len(drawn) == 4  # one running, two buffered, one being put
    statuses = {e.execution.status for e in drawn}
    assert statuses == {ExecutionStatus.CANCELLED}
    assert len(executor.cancelled_events) == 4
    assert executor.metrics["enqueued"] == 3


async def test_join_on_an_executor_that_never_started_refuses_pending_events() -> None:
    executor = Executor(Echo)
    executor.append(Echo("a"))
    with pytest.raises(QueueStateError, match="idle"):
        await executor.join()
    assert len(executor.pending_events) == 1
