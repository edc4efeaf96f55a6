"""Executor events that hang, fail or are cancelled: each ends in one list.

The executor's queue ends STOPPED with every item processed or listed as
unprocessed. The faults of worker functions and error handlers are in
test_calls.py, test_guarantee_cancellation.py and test_guarantee_stop.py; these
move beside the Executor's other tests when they are sorted.
"""

from __future__ import annotations

import anyio
from support import GUARD, assert_settled

from sluicegate import Event, ExecutionStatus, Executor, QueueConfig

FAST = QueueConfig(queue_capacity=8, capacity_refresh_time=1e-6, concurrency_limit=2)


# -- executor events that hang, fail or are cancelled -------------------------------


class Job(Event):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def invoke(self) -> str:
        if self.kind == "hang":
            await anyio.sleep_forever()
        if self.kind == "fail":
            raise ConnectionError("refused")
        await anyio.lowlevel.checkpoint()
        return "ok"


async def test_executor_events_hang_fail_and_complete() -> None:
    jobs = [Job(kind) for kind in ["ok", "fail", "hang", "ok", "fail", "hang", "ok"]]
    config = QueueConfig(
        queue_capacity=8, capacity_refresh_time=1e-6, concurrency_limit=3
    )
    executor = Executor(Job, config)
    with anyio.fail_after(GUARD):
        async with executor:
            for job in jobs:
                executor.append(job)
            await executor.forward()
            await anyio.wait_all_tasks_blocked()  # two workers hang, one idles
            assert len(executor.completed_events) + len(executor.failed_events) == 5
            await executor.stop(timeout=0.01)
            await executor.join()
    statuses = [job.execution.status for job in jobs]
    assert statuses.count(ExecutionStatus.COMPLETED) == 3
    assert statuses.count(ExecutionStatus.FAILED) == 2
    assert statuses.count(ExecutionStatus.CANCELLED) == 2
    for job in jobs:
        if job.kind == "hang":
            assert job.execution.status is ExecutionStatus.CANCELLED
    assert_settled(executor.queue.queue, accepted=7)


async def test_executor_cancelled_from_outside_mid_run() -> None:
    """Done events keep their outcome; running, buffered and pending ones are
    CANCELLED; the executor stops cleanly."""
    jobs = [Job(kind) for kind in ["ok", "fail", "hang", "hang", "ok", "ok"]]
    late = Job("ok")
    config = QueueConfig(
        queue_capacity=2, capacity_refresh_time=1e-6, concurrency_limit=2
    )
    executor = Executor(Job, config)
    with anyio.fail_after(GUARD):
        with anyio.CancelScope() as scope:
            async with executor:
                for job in jobs:
                    executor.append(job)
                await executor.forward()
                executor.append(late)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
    statuses = [job.execution.status for job in jobs]
    assert statuses == [
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,  # running
        ExecutionStatus.CANCELLED,  # running
        ExecutionStatus.CANCELLED,  # buffered
        ExecutionStatus.CANCELLED,  # buffered
    ]
    assert late.execution.status is ExecutionStatus.CANCELLED  # never forwarded
    assert len(executor.cancelled_events) == 5
    assert executor.pending_events == []
    assert_settled(executor.queue.queue, accepted=6)
