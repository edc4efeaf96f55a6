"""Core: the state of one BoundedQueue, and the steps that change it.

`BoundedQueue` is the public face; its core is the handle its collaborators use
(WorkQueue, the Executor, the Redis queue, the worker loop), by public names.
The parts, each in a module of its own:

- `Books`: the buffer and the counts (where every item is);
- `Dispatch`: the waiter lines, the workers and the concurrency slots (who is
  woken);
- `Timers`: the delay line (retries, deadlines on an injected clock, the end of
  a hold);
- `Calls`: how an item's call is made and its outcome settled;
- `run_worker` (`_worker_loop`): the loop each worker runs.

The data path: ``put -> accept -> buffer -> (dispatch wakes a worker) ->
worker loop -> (gate, timeout) -> the function -> outcome -> books | retry
line | the job's sink``. An item is accepted in one place, `accept`; the stop
is in one place, `stop` (then `finalize`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, Generic, TypeVar

from anyio import CancelScope, CapacityLimiter, create_task_group, move_on_after
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from ._books import Books
from ._calls import Calls, Job, unwrap
from ._checks import check_hold
from ._clock import Clock, reader
from ._dispatch import Dispatch
from ._exceptions import QueueStateError, unwrapped_group
from ._failure_log import FailureLog
from ._lifecycle import check_not_stopping, check_running
from ._status import QueueStatus
from ._timers import Timers
from ._workers import Worker

__all__ = ["YIELD_EVERY", "Core"]

T = TypeVar("T")

#: A task that completes this many operations in a row without waiting yields once,
#: so that a producer or worker that never blocks cannot starve the other tasks.
YIELD_EVERY: Final = 64

_PROCESSING: Final = QueueStatus.PROCESSING
_FAST_PUTS: Final = YIELD_EVERY - 1  # puts in a row before put's yield


class Core(Generic[T]):
    """One queue's buffer, books, dispatch, timers and calls, and its status.

    ``run_worker`` is the worker loop (`_worker_loop.run_worker`), passed in
    so that this module and the loop's import one way.
    """

    __slots__ = (
        "books",
        "calls",
        "capacity",
        "clock",
        "dispatch",
        "failure_log",
        "fast_puts",
        "maxsize",
        "now",
        "run",
        "run_worker",
        "runs_by",
        "status",
        "stop_listeners",
        "task_group",
        "timers",
    )

    def __init__(
        self,
        maxsize: int,
        limit: int | CapacityLimiter | None,
        clock: Clock,
        failure_log: FailureLog,
        run_worker: Callable[..., Coroutine[Any, Any, object]],
    ) -> None:
        self.maxsize: Final = maxsize
        self.clock: Final = clock
        # How the clock is read on the hot path: bound to the backend at start.
        self.now: Callable[[], float] = clock.current_time
        self.failure_log: Final = failure_log
        self.run_worker: Final = run_worker
        self.status = QueueStatus.IDLE
        self.run = 0  # counts starts: a waiter from an earlier run is refused
        self.fast_puts = 0  # puts since the last yield (see `try_put`)
        self.books: Books[T] = Books()
        #: A concurrency limit shared with others: each call borrows a token
        #: from it (see `Calls.handle`), and the queue keeps no slots of its own.
        self.capacity = limit if isinstance(limit, CapacityLimiter) else None
        self.dispatch = Dispatch(
            self, None if isinstance(limit, CapacityLimiter) else limit
        )
        self.timers = Timers(self)
        self.calls: Calls[T] = Calls(self, clock, self.timers, failure_log)
        self.task_group: TaskGroup | None = None  # the `async with` block's
        # Told at each step of a stop (see `told_of_stop`). A list: a map has
        # two listeners (its reader, and the task feeding an async source), and
        # several `Executor.completed` readers may share one queue.
        self.stop_listeners: list[Callable[[], object]] = []
        self.runs_by: list[str] = []  # the maps and batches running here

    # -- accepting and taking items ---------------------------------------------

    def room(self) -> int:
        """How many items the queue has room for now (retries waiting count)."""
        return self.maxsize - len(self.books.buffer) - self.books.delayed

    def room_to_put(self) -> int:
        """How many items a put would accept now, without waiting.

        Raises:
            QueueStateError: the queue is not PROCESSING.
        """
        self.check_running("put")
        return self.room()

    def accept(self, item: T) -> None:
        """Take ``item`` into the buffer (the caller found room): every put
        path comes here, and wakes a consumer for it if one is needed."""
        books = self.books
        books.buffer.append(item)
        books.enqueued += 1
        dispatch = self.dispatch
        # `Dispatch.consumers_parked`, written out: once per put.
        if (
            dispatch.getters.parked
            or dispatch.idle_workers.parked
            or dispatch.pool.reserved
        ):
            dispatch.wake_consumer()

    def try_put(self, item: T) -> bool:
        """`put`'s path that does not wait: True once ``item`` is accepted;
        False (nothing done) when `put` must be awaited: no room, not
        PROCESSING, or time for put's periodic yield."""
        books = self.books
        if (
            self.status is _PROCESSING
            and self.fast_puts < _FAST_PUTS
            and len(books.buffer) + books.delayed < self.maxsize
        ):
            self.fast_puts += 1
            self.accept(item)
            return True
        return False

    async def put(self, item: T, timeout: float | None) -> bool:
        """`put` where `try_put` declined: yield if due, then wait up to
        ``timeout`` for room (None: no limit); False on backpressure."""
        if self.status is not _PROCESSING:
            self.check_running("put")
        self.fast_puts += 1
        if self.fast_puts >= YIELD_EVERY:
            self.fast_puts = 0
            run = self.run
            await checkpoint()
            self.check_run("put", run)
        if self.room() > 0:
            self.accept(item)
            return True
        if timeout is None:
            await self._put_when_room(item)
            return True
        if timeout != 0:
            with move_on_after(timeout):
                await self._put_when_room(item)
                return True
        else:
            await checkpoint()  # a caller retrying at once must not starve workers
        self.books.backpressure_events += 1
        return False

    async def _put_when_room(self, item: T) -> None:
        run = self.run
        again = False
        while True:
            # Woken but beaten to the slot: wait again without losing our place.
            await self.dispatch.producers.park(first=again)
            again = True
            self.fast_puts = 0  # it has just yielded
            self.check_run("put", run)
            if self.room() > 0:
                self.accept(item)
                return
            # Another producer took the slot first: wait for the next one.

    def put_nowait(self, item: T) -> bool:
        """Accept ``item`` if there is room now, without yielding; else False.

        Raises:
            QueueStateError: the queue is not PROCESSING.
        """
        self.check_running("put")
        if self.room() > 0:
            self.accept(item)
            return True
        return False

    def put_all(self, items: list[T]) -> None:
        """Accept every item of ``items`` at once, without yielding: the caller
        found room for them all with `room` (as a map's reader does, topping
        the queue up a chunk at a time).

        Raises:
            QueueStateError: the queue is not PROCESSING (nothing was put).
        """
        self.check_running("put")
        books = self.books
        books.buffer.extend(items)
        books.enqueued += len(items)
        dispatch = self.dispatch
        if dispatch.consumers_parked:
            # As many wake-ups as that many puts would try, until one finds
            # nobody more to wake.
            for _ in items:
                if not dispatch.wake_consumer():
                    break

    def take(self) -> T:
        """Take the first buffered item (the caller checked there is one)."""
        entry = self.books.buffer.popleft()
        if self.dispatch.producers.parked:
            self.dispatch.wake_producer()
        return unwrap(entry)

    def give_up_buffered(self) -> list[T]:
        """Take every buffered item out, oldest first, and list it in
        ``unprocessed`` (a RedisWorkQueue hands them back to its group at
        once, before its workers finish what they hold)."""
        books = self.books
        given_up = [unwrap(entry) for entry in books.buffer]
        books.buffer.clear()
        books.unprocessed.extend(given_up)
        if self.dispatch.producers.parked:
            self.dispatch.wake_producer()
        books.release_joiners_if_done()
        return given_up

    def abandoned(self, item: T, job: Job[T], started: float | None) -> None:
        """``item`` was given up in flight (its call, begun at ``started``,
        cancelled): list it, and tell ``job``'s hook."""
        self.books.abandoned(item)
        if job.on_abandoned is not None:
            job.on_abandoned(item, started)

    def hold(self, seconds: float) -> None:
        """Start no new call for the next ``seconds`` (see `BoundedQueue.hold`)."""
        if check_hold(seconds):
            self.timers.hold_until(self.now() + seconds)

    def log_failure(self, exc: Exception, item: T) -> None:
        """Log a failure no handler took, by the queue's one log policy (the
        Executor's and the RedisWorkQueue's error handlers use it too)."""
        self.failure_log.log(exc, item)

    # -- workers ----------------------------------------------------------------

    def spawn_workers(self, group: TaskGroup, job: Job[T], count: int) -> list[Worker]:
        """Start ``count`` workers in ``group`` (arguments already checked)."""
        dispatch = self.dispatch
        workers = dispatch.pool.spawn(group, count, self.run_worker, self, job)
        dispatch.starting += len(workers)
        if self.books.buffer and dispatch.pool.reserved:
            # Items wait already: start reserved workers for them now (each
            # started one starts more while items are left), as a put would.
            dispatch.wake_consumer()
        if not self.timers.running:
            # Without a task group of the queue's own, the timers' task lives
            # beside the workers and ends with the last of them.
            self.timers.start(group, beside_workers=True)
        return workers

    async def end_workers(self, workers: list[Worker], timeout: float | None) -> None:
        """End ``workers`` as a stop does (busy ones finish their item)."""
        # Idle workers are cancelled where they park, not woken: a wake-up would
        # count as one handed out for an item and hold back the next.
        pool = self.dispatch.pool
        pool.withdraw(workers)  # a crew's reserve: start no more of it
        try:
            await pool.end(workers, timeout)
        except BaseException:
            me = pool.current()  # a worker's own item goes on
            pool.cancel([worker for worker in workers if worker is not me])
            raise

    async def stop_workers(self, timeout: float | None) -> None:
        """End every worker, leaving the queue PROCESSING."""
        if self.runs_by:
            raise QueueStateError(
                f"cannot stop_workers(): a map() or batch_process() runs its "
                f"workers on this queue ({self.runs_by[-1]}), and without them would "
                "wait forever for its items; leave its block (break out of a "
                "map), or stop() the queue to end it with every finished outcome"
            )
        self.dispatch.pool.withdraw()
        await self.end_workers(list(self.dispatch.pool.workers), timeout)

    @contextmanager
    def run_by(self, call: str) -> Generator[None, None, None]:
        """While the block runs, a map or batch (``call``) runs its workers
        here: `stop_workers` refuses, instead of stranding its items."""
        self.runs_by.append(call)
        try:
            yield
        finally:
            self.runs_by.remove(call)

    def last_worker_left(self) -> None:
        """The pool is empty: a stopping queue is done; joiners look again."""
        # Beside workers, delays wait for workers: what falls due meanwhile is
        # released when workers start again (or listed when the queue stops).
        self.timers.stop_beside_workers()
        if self.status is QueueStatus.STOPPING:
            self.finalize()
            return
        # Wake the `async with` exit: no worker is left to wait for.
        self.books.release_joiners()
        if self.status is QueueStatus.STOPPED and self.stop_listeners:
            self.tell_stop_listeners()  # a worker that stopped its queue is done

    # -- the run ----------------------------------------------------------------

    def start(self) -> None:
        """PROCESSING, a new run (see `BoundedQueue.start`)."""
        if self.status is _PROCESSING:
            return
        check_not_stopping(self.status)
        self.now = self.calls.now = reader(self.clock)  # bound to this event loop
        self.dispatch.bind()
        self.run += 1
        self.dispatch.starting = 0  # (a worker started for the last run never ran)
        self.status = _PROCESSING
        self.timers.keep_hold()
        if self.task_group is not None and not self.timers.running:
            # Started again inside its `async with`: the block's task releases
            # retries again, as it did before the stop.
            self.timers.start(self.task_group, beside_workers=False)

    async def stop(self, timeout: float | None) -> None:
        """Refuse new items, end the workers, then STOPPED (`BoundedQueue.stop`)."""
        if self.status in (QueueStatus.IDLE, QueueStatus.STOPPED):
            self.finalize()
            return
        run = self.run
        self.status = QueueStatus.STOPPING
        self.dispatch.producers.wake_all()
        self.dispatch.getters.wake_all()
        self.tell_stop_listeners()
        self.dispatch.pool.withdraw()
        await self.end_workers(list(self.dispatch.pool.workers), timeout)
        if self.run == run:  # not started again meanwhile: a new run is not ours
            self.finalize()

    def abort(self) -> None:
        """Stop at once: refuse new work and cancel every worker."""
        if self.status is _PROCESSING:
            self.status = QueueStatus.STOPPING
        self.dispatch.wake_all()
        self.dispatch.pool.cancel()

    def finalize(self) -> None:
        """List what is left (buffered, then delayed) in unprocessed; STOPPED."""
        if self.status is QueueStatus.STOPPED:
            return
        books = self.books
        books.unprocessed.extend(unwrap(entry) for entry in books.buffer)
        books.buffer.clear()
        books.unprocessed.extend(self.timers.drain())
        self.timers.stop()
        self.status = QueueStatus.STOPPED
        self.dispatch.wake_all()
        books.release_joiners()
        self.failure_log.log_counts()
        self.tell_stop_listeners()

    @contextmanager
    def told_of_stop(
        self, listener: Callable[[], object]
    ) -> Generator[None, None, None]:
        """Call ``listener()`` at each step of a stop while the block runs.

        The steps: the stop begins (the queue is STOPPING, and takes no new
        item), the queue is STOPPED (what was buffered or delayed is listed in
        ``unprocessed``), and the last worker leaves a stopped queue (a worker
        that stopped its own queue finishes its item after that). A map's
        reader ends once none of its items can still come, and a batch's feed
        stops drawing from its source: both look again at each step. A
        listener must not wait, and may be told of one step more than once.
        """
        self.stop_listeners.append(listener)
        try:
            yield
        finally:
            self.stop_listeners.remove(listener)

    def listen_to_stop(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` at each step of every stop from now on, as
        `told_of_stop` does for a block (an Executor marks what can no longer
        run CANCELLED, however its queue stops)."""
        self.stop_listeners.append(listener)

    def tell_stop_listeners(self) -> None:
        """Tell every listener of `told_of_stop` that a stop took a step."""
        for listener in list(self.stop_listeners):  # (one may leave meanwhile)
            listener()

    async def join(self, *, while_consumers: bool) -> None:
        """Wait until every accepted item is processed or the queue has
        stopped; with ``while_consumers``, stop waiting too once nobody
        consumes (no buffered item will then be taken)."""
        books = self.books
        while (
            books.unfinished()
            and self.status is not QueueStatus.STOPPED
            and (not while_consumers or self.dispatch.consuming())
        ):
            await books.wait_for_change()

    @asynccontextmanager
    async def lifespan(self) -> AsyncGenerator[None, None]:
        """Own a task group for the workers, and stop the queue on the way out."""
        started = False  # (a queue that is stopping refuses the block)
        ended: int | None = None  # the run the block ends
        try:
            with unwrapped_group():  # the one exception that ended the block
                async with create_task_group() as tg:
                    self.start()
                    started = True
                    self.task_group = tg
                    # The block's own task releases retries for as long as it
                    # runs, for workers and get() callers alike.
                    self.timers.start(tg, beside_workers=False)
                    try:
                        yield
                        await self.join(while_consumers=True)
                        ended = self._leave_group()
                        await self.stop(None)
                    except BaseException:
                        if ended is None:
                            ended = self._leave_group()
                        if self.run == ended:
                            self.abort()
                            with CancelScope(shield=True):
                                pool = self.dispatch.pool
                                await pool.wait(list(pool.workers))
                        raise
        finally:
            if started and (ended is None or self.run == ended):
                self.task_group = None
                self.finalize()

    def _leave_group(self) -> int:
        """The ``async with`` block ends the current run: return it.

        From now on the block's task group only waits for its last tasks: a
        run that another task starts meanwhile is not the block's (the block
        neither stops it nor puts its tasks in that group).
        """
        self.task_group = None
        return self.run

    def check_run(self, operation: str, run: int) -> None:
        """Raise unless the queue is still in the run ``operation`` began in."""
        if self.run != run and self.status is _PROCESSING:
            raise QueueStateError(
                f"cannot {operation}(): the queue was stopped while this call "
                "waited (it has been started again since; call again to use the "
                "new run)"
            )
        self.check_running(operation)

    def check_running(self, operation: str) -> None:
        """Raise QueueStateError unless the queue is PROCESSING."""
        check_running(self.status, operation)
