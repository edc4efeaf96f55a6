"""The worker pool: spawning workers, and ending them without deadlock.

A queue's worker loop lives with the queue (it is the buffer's consumer and its
hot path); this module keeps the handles: how to ask a worker to end, how to see
that it has, and how several stop calls, some made by workers themselves, end the
pool together.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from anyio import Event, TaskHandle, get_current_task, move_on_after
from anyio.abc import TaskGroup

__all__ = ["Worker", "WorkerPool"]


class Worker:
    """One worker task's handle."""

    __slots__ = (
        "_cancelled",
        "_handle",
        "_signal",
        "ended",
        "ending_others",
        "parked",
        "spawn",
        "stopping",
        "task_id",
    )

    def __init__(self) -> None:
        # The task's own handle, which cancels it (no cancel scope of ours:
        # thousands of workers may be parked, and each scope costs objects).
        self._handle: TaskHandle[object] | None = None
        self._cancelled = False  # cancelled before its handle was known
        self.stopping = False  # asked to take no new item
        # Parked in the idle line (holding no item): ending it cancels it there.
        self.parked = False
        self.ended = False
        self.ending_others = 0  # stop calls running in this worker's own task
        self.spawn: _Spawn | None = None  # the spawn call that asked for it
        self.task_id: int | None = None
        # Set when the worker ends or starts ending others, for those waiting
        # on it; made only when someone waits (most workers are never waited
        # for one by one, and thousands may be parked).
        self._signal: Event | None = None

    def cancel(self) -> None:
        """Cancel the worker's task wherever it is (nothing if it has ended)."""
        if self._handle is None:
            self._cancelled = True
        else:
            self._handle.cancel()

    def _started(self, handle: TaskHandle[object]) -> None:
        self._handle = handle
        if self._cancelled:
            handle.cancel()

    def _notify(self) -> None:
        if self._signal is not None:
            self._signal.set()
            self._signal = None

    async def _wait_for_signal(self) -> None:
        if self._signal is None:
            self._signal = Event()
        await self._signal.wait()


class _Spawn:
    """One `WorkerPool.spawn` call: its crew, and how many of its workers are
    held in reserve (started one at a time, on demand) or running."""

    __slots__ = ("args", "count", "crew", "group", "run", "running")

    def __init__(
        self,
        crew: list[Worker],
        count: int,
        group: TaskGroup,
        run: Callable[..., Coroutine[Any, Any, object]],
        args: tuple[object, ...],
    ) -> None:
        self.crew = crew
        self.group = group
        self.run = run
        self.args = args
        self.running = 0  # workers of the crew started and not yet ended
        self.count = count  # workers in reserve


class WorkerPool:
    """The workers of one queue: those running, and those held in reserve.

    Of the workers one `spawn` call asks for, only the first `EAGER` start at
    once; the rest are started one at a time by `start_reserved`, when the
    queue has an item for a worker and no idle one to wake. Thousands of
    workers then cost what the busy ones cost, in tasks, memory and the time
    to start them; a reserved worker counts as an idle one.

    ``on_empty()`` is called each time the last worker leaves with none in
    reserve.
    """

    __slots__ = ("_on_empty", "_reserves", "_tasks", "reserved", "workers")

    #: Workers started at once per `spawn` call: as many as most programs ask
    #: for, so that they see every worker running from the start.
    EAGER = 64

    def __init__(self, on_empty: Callable[[], object]) -> None:
        self.workers: set[Worker] = set()
        self._tasks: dict[int, Worker] = {}  # task id -> the worker it runs
        self._on_empty = on_empty
        self._reserves: list[_Spawn] = []
        self.reserved = 0  # workers in reserve, of every spawn call

    def __len__(self) -> int:
        return len(self.workers) + self.reserved

    def spawn(
        self,
        group: TaskGroup,
        count: int,
        run: Callable[..., Coroutine[Any, Any, object]],
        *args: object,
    ) -> list[Worker]:
        """Ask for ``count`` workers in ``group``, each running ``run(worker, *args)``.

        ``run`` must call `entered` first and `left` on its way out. Returns
        the call's crew: the list of its workers, which grows as reserved
        ones start (`withdraw` it to start no more of them).
        """
        spawn = _Spawn([], max(0, count - self.EAGER), group, run, args)
        self._start(spawn, min(count, self.EAGER))  # may raise: nothing reserved
        if spawn.count:
            self._reserves.append(spawn)
            self.reserved += spawn.count
        return spawn.crew

    def start_reserved(self) -> Worker | None:
        """Start one reserved worker; None if there is none in reserve."""
        while self._reserves:
            reserve = self._reserves[-1]
            if reserve.group.cancel_scope.cancel_called:
                # Its task group is being cancelled: a worker started there
                # would take an item and die with it at its first await.
                self.withdraw(reserve.crew)
                continue
            reserve.count -= 1
            self.reserved -= 1
            if not reserve.count:
                self._reserves.pop()
            try:
                return self._start(reserve, 1)[0]
            except RuntimeError:
                # Its task group has closed: none of that reserve can start.
                self.withdraw(reserve.crew)
        return None

    def withdraw(self, crew: list[Worker] | None = None) -> None:
        """Start no more reserved workers of ``crew`` (None: of any crew)."""
        if not self.reserved:
            return
        kept = [
            reserve
            for reserve in self._reserves
            if crew is not None and reserve.crew is not crew
        ]
        self._reserves = kept
        self.reserved = sum(reserve.count for reserve in kept)
        if not self.workers and not self.reserved:
            self._on_empty()  # the last worker had left; its reserve is gone now

    def _start(self, spawn: _Spawn, count: int) -> list[Worker]:
        started = [Worker() for _ in range(count)]
        for worker in started:
            # Registered first: an eager task factory may run it inside start_soon.
            self.workers.add(worker)
            worker.spawn = spawn
            spawn.running += 1
            try:
                worker._started(spawn.group.start_soon(spawn.run, worker, *spawn.args))
            except BaseException:
                self.workers.discard(worker)
                spawn.running -= 1
                raise
            spawn.crew.append(worker)
        return started

    def entered(self, worker: Worker) -> None:
        """Record that ``worker`` runs in the current task (its loop calls this)."""
        worker.task_id = get_current_task().id
        self._tasks[worker.task_id] = worker

    def left(self, worker: Worker) -> None:
        """Record that ``worker`` has ended (its loop calls this on the way out)."""
        self.workers.discard(worker)
        self._tasks.pop(worker.task_id, None)  # type: ignore[arg-type]
        worker.ended = True
        worker._notify()
        spawn = worker.spawn
        if spawn is not None:
            spawn.running -= 1
            if not spawn.running and spawn.count:
                # No worker of its spawn call runs: its task group may be
                # closing, and a worker started there would never run.
                self.withdraw(spawn.crew)
                return  # (withdraw called on_empty if that was the last)
        if not self.workers and not self.reserved:
            self._on_empty()

    def current(self) -> Worker | None:
        """The worker whose task is calling, if a worker is."""
        return self._tasks.get(get_current_task().id)

    async def end(self, workers: list[Worker], timeout: float | None) -> None:
        """Ask ``workers`` to end; wait, and cancel what runs after ``timeout``.

        Idle workers are cancelled at once; busy ones finish their item. Called
        from a worker (its function or error handler), the caller is neither
        waited for nor cancelled, and neither is any other worker that is itself
        inside an `end` call: two workers stopping their queue at once would
        otherwise wait for each other forever. Called from outside, it waits
        for all of them.
        """
        me = self.current()
        if me is not None:
            me.ending_others += 1
            me._notify()  # other stopping workers stop waiting for me
        try:
            for worker in workers:
                worker.stopping = True
            others = [worker for worker in workers if worker is not me]
            for worker in others:
                if worker.parked:
                    worker.cancel()
            with move_on_after(timeout):
                await self._wait(others, me)
            for worker in others:
                if me is None or not worker.ending_others:
                    worker.cancel()
            await self._wait(others, me)
        finally:
            if me is not None:
                me.ending_others -= 1

    async def _wait(self, workers: list[Worker], me: Worker | None) -> None:
        for worker in workers:
            while not worker.ended and not (me is not None and worker.ending_others):
                await worker._wait_for_signal()

    async def wait(self, workers: list[Worker]) -> None:
        """Wait until every one of ``workers`` has ended."""
        await self._wait(workers, None)

    def cancel(self, workers: list[Worker] | None = None) -> None:
        """Cancel ``workers`` (all, and the reserve, by default) wherever they are."""
        if workers is None:
            self.withdraw()
        for worker in list(self.workers) if workers is None else workers:
            worker.stopping = True
            worker.cancel()
