# pyright: standard
"""RedisWorkQueue: a work queue shared by processes, on a Redis stream.

This module is the queue's public face: its arguments, properties, metrics and
calls, each checked here and handed to the part whose job it is. Its arguments
are a `RedisQueueConfig`; its put side is a `Producer`; its workers and how
their items are settled, a `Processor`; its states and the moves between them,
a `Lifespan`. Imports go one way: this module imports those parts, and they
never import it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Generic, TypeVar

from anyio import CancelScope, create_task_group
from anyio.abc import TaskGroup

from sluicegate._calls import ErrorHandler, WorkerFunc
from sluicegate._checks import check_callable
from sluicegate._exceptions import QueueStateError, unwrapped_group
from sluicegate._feed import feed
from sluicegate._lifecycle import check_task_group, worker_count_for, worker_group
from sluicegate._protocols import RateLimiterProtocol
from sluicegate._scoped import Scoped
from sluicegate._status import USE_QUEUE_TIMEOUT, QueueStatus, UseQueueTimeout

from ._books import RedisQueueBooks
from ._client import CALL_TIMEOUT, RedisClient
from ._config import RedisQueueConfig
from ._parts import Parts
from ._serializer import Serializer

__all__ = ["RedisQueueBooks", "RedisWorkQueue"]

T = TypeVar("T")


class RedisWorkQueue(Scoped, Generic[T]):
    """A bounded work queue that processes on many machines share, in Redis.

    Items go into a Redis stream; every process that calls `process` runs
    workers that take them through one consumer group, so each item goes to
    one worker at a time. Delivery is at least once: an item is acknowledged
    only after its worker function returned (or its error was recorded), and
    the items of a process that died are taken over by the others after
    ``claim_idle`` seconds, so worker functions should be idempotent.

    Args:
        redis: A ``coredis.Redis`` client (opened with ``async with`` by you)
            or a URL (``redis://host:6379/0``), for which the queue opens and
            closes a client of its own in its ``async with``.
        name: The queue's name, shared by every process using the queue. Its
            keys are ``{name}:stream``, ``{name}:dead`` (dead letters),
            ``{name}:books`` and, for 5 minutes after each put call, a token
            ``{name}:put:<id>``, all in one hash slot (Redis Cluster).
        maxsize: How many items may be outstanding (accepted, not yet
            acknowledged) across all processes; a put waits for room.
        timeout: How long `put` waits for room by default, in seconds (None:
            as long as it takes; 0: not at all).
        concurrency_limit: How many items this process handles at once (None:
            one per worker); also the default number of workers.
        rate_limiter: Any `RateLimiterProtocol` (a ``RedisRateLimiter`` to
            share one rate across processes); each call takes a token first.
        serializer: How items are stored (``dumps``/``loads``; JSON by
            default). ``bytes`` items are stored as they are.
        claim_idle: Seconds an item may sit in a process's hands without a
            heartbeat before another process takes it over. A live worker's
            process renews its items every ``claim_idle / 3`` seconds, however
            long the worker function runs.
        max_deliveries: An item delivered more times than this (its workers
            died, say) goes to the dead stream instead of running again.
        logger: Where worker errors and Redis trouble are logged.
        call_timeout: The longest one Redis call may take, in seconds.
        reconnect_timeout: How long a put or an acknowledgement keeps trying
            through a lost connection (the server restarting, say) before it
            gives up: a put raises, an item left unacknowledged is taken over
            after ``claim_idle``.

    Raises:
        TypeError, ValueError: a bad argument; the message names it.
    """

    def __init__(
        self,
        redis: RedisClient | str,
        name: str,
        *,
        maxsize: int = 1000,
        timeout: float | None = None,
        concurrency_limit: int | None = None,
        rate_limiter: RateLimiterProtocol | None = None,
        serializer: Serializer | None = None,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
        logger: logging.Logger | None = None,
        call_timeout: float = CALL_TIMEOUT,
        reconnect_timeout: float = 30.0,
    ) -> None:
        config = RedisQueueConfig(
            redis,
            name,
            maxsize=maxsize,
            timeout=timeout,
            concurrency_limit=concurrency_limit,
            rate_limiter=rate_limiter,
            serializer=serializer,
            claim_idle=claim_idle,
            max_deliveries=max_deliveries,
            logger=logger,
            call_timeout=call_timeout,
            reconnect_timeout=reconnect_timeout,
        )
        self._config: Final = config
        parts: Parts[T] = Parts.of(config)
        self._calls: Final = parts.calls
        self._counts: Final = parts.counts
        self._unprocessed: Final = parts.unprocessed
        self._processor: Final = parts.processor
        self._life: Final = parts.life
        self._producer: Final = parts.producer

    # -- properties ----------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name, shared by every process using it."""
        return self._config.name

    @property
    def consumer(self) -> str:
        """This queue object's consumer name in the group (host:pid:random)."""
        return self._processor.consumer

    @property
    def client(self) -> Any:
        """The coredis client (None before ``async with`` opens one for a URL)."""
        return self._calls.client

    @property
    def status(self) -> QueueStatus:
        """Where this queue object is in its life (`QueueStatus`)."""
        return self._life.status

    @property
    def maxsize(self) -> int:
        """How many items may be outstanding across all processes."""
        return self._config.maxsize

    @property
    def timeout(self) -> float | None:
        """How long `put` waits for room by default."""
        timeout = self._config.timeout  # kept as given; a float here, as ever
        return None if timeout is None else float(timeout)

    @property
    def concurrency_limit(self) -> int | None:
        """How many items this process handles at once (None: one per worker)."""
        return self._config.concurrency_limit

    @property
    def claim_idle(self) -> float:
        """Seconds before another process takes over an item left without a
        heartbeat."""
        return float(self._config.claim_idle)

    @property
    def max_deliveries(self) -> int:
        """Deliveries after which an item goes to the dead stream."""
        return self._config.max_deliveries

    @property
    def rate_limiter(self) -> RateLimiterProtocol | None:
        """The rate limiter each call takes a token from, if any."""
        return self._config.rate_limiter

    @property
    def keys(self) -> dict[str, str]:
        """The queue's Redis keys: ``stream``, ``dead``, ``books``."""
        config = self._config
        return {"stream": config.stream, "dead": config.dead, "books": config.books}

    @property
    def worker_count(self) -> int:
        """How many workers this process runs."""
        return self._processor.worker_count

    @property
    def in_flight(self) -> int:
        """Items this process fetched and has not settled (buffered or running)."""
        return self._processor.in_flight

    @property
    def unprocessed(self) -> list[T]:
        """A copy of the items this process handed back to the group unprocessed
        (fetched but not started when it stopped, or cancelled while running),
        and items a `batch_process` read but never put."""
        return list(self._unprocessed)

    @property
    def metrics(self) -> dict[str, int]:
        """A fresh snapshot of this process's counts, and the global books as
        last read (by `books`, `join` or `stop`).

        Global, from one atomic read: ``enqueued``, ``acknowledged``,
        ``outstanding``, ``dead_lettered`` (``enqueued == acknowledged +
        outstanding + dead_lettered``), ``pending``. This process's own: ``put``
        (items it put), ``backpressure_events``, ``processed`` (errors
        included), ``errors``, ``reclaimed`` (entries it took over from idle
        consumers), ``redelivered`` (entries it received that had been
        delivered before), ``released`` (entries it handed back),
        ``dead_lettered_here``, ``in_flight`` and ``unprocessed``.
        """
        books = self._life.books
        return {
            "enqueued": books.enqueued,
            "acknowledged": books.acknowledged,
            "outstanding": books.outstanding,
            "dead_lettered": books.dead_lettered,
            "pending": books.pending,
            **self._counts,
            "in_flight": self._processor.in_flight,
            "unprocessed": len(self._unprocessed),
        }

    def __repr__(self) -> str:
        return (
            f"<RedisWorkQueue {self._config.name!r} {self._life.status.value}, "
            f"maxsize={self._config.maxsize}, workers={self.worker_count}, "
            f"in_flight={self._processor.in_flight}, consumer={self.consumer!r}>"
        )

    # -- lifecycle: `Lifespan` -----------------------------------------------

    async def start(self) -> None:
        """Open the queue (create its consumer group if need be): PROCESSING.

        Idempotent. With a URL instead of a client, use ``async with`` (the
        client it opens lives in that block).

        Raises:
            QueueStateError: the queue is stopping, or was given a URL.
        """
        await self._life.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop this process's part: no more puts or fetches; STOPPED.

        The fetcher stops at once; items it fetched that no worker has started
        are handed back to the group at once (and listed in `unprocessed`):
        the other processes take them over. Each worker finishes the item it
        holds; after ``timeout`` seconds (None: no limit) items still running
        are cancelled and handed back too. Items other processes hold are not
        touched. If stop itself is cancelled, the workers are cancelled at once
        and what they held is handed back the same way.
        """
        await self._life.stop(timeout)

    async def join(self) -> None:
        """Wait until the whole queue has nothing outstanding (every item put by
        any process acknowledged or dead-lettered).

        Once this queue object is stopped (a worker called `stop`, say), join
        returns, as a WorkQueue's does: its workers take no more. A join on a
        queue object that is stopping returns when it is stopped; on a stopped
        one, at once. (On one not started yet, it waits for the global count.)

        Redis cannot say when a count reaches zero, so this reads the books
        again after each item this process settles, and otherwise every 10 ms
        at first, backing off to every 200 ms.
        """
        await self._life.join()

    async def books(self) -> RedisQueueBooks:
        """Read the global books in one atomic call (also kept for `metrics`).

        Raises:
            QueueStateError: the client is not open (for a queue given a URL:
                outside its ``async with``).
        """
        return await self._life.read_books()

    def _lifespan(self) -> AbstractAsyncContextManager[None]:
        return self._life.block()

    # -- producers: `Producer` ----------------------------------------------

    async def put(
        self,
        item: T,
        timeout: float | UseQueueTimeout | None = USE_QUEUE_TIMEOUT,
    ) -> bool:
        """Add ``item``; True once accepted, False on backpressure.

        While ``maxsize`` items are outstanding (across all processes), wait up
        to ``timeout`` seconds (default, `USE_QUEUE_TIMEOUT`: the queue's
        ``timeout``) for room, then return False and count a backpressure
        event. Redis cannot wake
        a waiting producer, so it tries again after each item this process
        settles, and otherwise after 5 ms, backing off to every 100 ms.

        The put is idempotent in Redis (a call coredis sends again after a lost
        reply adds nothing twice), and keeps trying through a lost connection
        for up to ``reconnect_timeout`` seconds. A put already cancelled when
        it is called puts nothing; once the item is accepted, put returns True
        even if it was cancelled meanwhile (the cancellation comes at the
        caller's next checkpoint).

        Raises:
            QueueStateError: the queue is not PROCESSING.
            TypeError: the serializer cannot store the item (what its
                ``dumps`` raised is the cause).
            coredis.exceptions.RedisError: Redis refused, or stayed unreachable
                for ``reconnect_timeout``.
        """
        return await self.put_many([item], timeout) == 1

    async def put_many(
        self,
        items: Iterable[T],
        timeout: float | UseQueueTimeout | None = USE_QUEUE_TIMEOUT,
    ) -> int:
        """Add ``items`` in order, as room allows; return how many were accepted.

        Like `put` for each item, but up to 256 items go in one call. Returns
        ``len(items)`` once all are accepted, or fewer when ``timeout`` ran
        out first (the first ones are in the queue, the rest not). If the call
        is cancelled while it waits for room, the items accepted before that
        are in the queue.

        Raises:
            TypeError: ``items`` is not an iterable, or is one str or bytes
                (use `put` for one item); the serializer cannot store an item
                (then none is put).
        """
        return await self._producer.put_many(items, timeout)

    # -- processing: `Processor` --------------------------------------------

    async def process(
        self,
        worker_func: WorkerFunc[T],
        num_workers: int | None = None,
        error_handler: ErrorHandler[T] | None = None,
        *,
        task_group: TaskGroup | None = None,
    ) -> None:
        """Start ``num_workers`` workers here that await ``worker_func(item)``
        for the queue's items, and one fetcher that reads them from Redis.

        ``num_workers`` defaults to the concurrency limit, or 1. The fetcher
        reads no more items than there are free workers, so what this process
        holds is at most what it can run at once; at most ``concurrency_limit``
        items run at once, each after a token from the rate limiter (if any).

        An item is acknowledged once ``worker_func`` returns, or, if it
        raises, once ``error_handler(exc, item)`` returns (without a handler
        the error is logged); either way it is not run again. The workers run
        in ``task_group`` if given, else in the task group of ``async with
        queue:``. One `process` per queue object at a time.

        Raises:
            TypeError, ValueError: a bad argument.
            QueueStateError: the queue is not PROCESSING, already has workers,
                or has no task group to run them in.
        """
        check_callable("worker_func", worker_func)
        check_callable("error_handler", error_handler, allow_none=True)
        workers = worker_count_for(num_workers, self._config.concurrency_limit)
        check_task_group(task_group)
        self._life.check_running("process")
        if self._processor.has_workers:
            raise QueueStateError(
                "this RedisWorkQueue already has workers from process() or a "
                "batch in this process: stop them first (stop()), or use "
                "another RedisWorkQueue object"
            )
        group = worker_group("process", task_group, self._life.task_group)
        await self._processor.start(worker_func, workers, error_handler, group)

    async def batch_process(
        self,
        items: Iterable[T] | AsyncIterable[T],
        worker_func: WorkerFunc[T],
        num_workers: int | None = None,
        error_handler: ErrorHandler[T] | None = None,
    ) -> None:
        """Put every item of ``items``, process the queue here, and return once
        the whole queue has nothing outstanding (see `join`).

        Items are read lazily and put with backpressure (waiting as long as it
        takes). Other processes may process some of them, and this one may
        process items others put. The workers live only for this call; inside
        ``async with queue:`` it runs in the open queue, else it opens the
        queue (a client given, not a URL: use ``async with`` for that) and
        stops it at the end.

        Cancelled, it stops its workers as `stop` does; an item read from
        ``items`` but not accepted is listed in `unprocessed`.

        Raises:
            TypeError, ValueError: a bad argument.
            QueueStateError: this queue object already has workers.
        """
        if not isinstance(items, (Iterable, AsyncIterable)):
            raise TypeError(
                f"items must be an iterable or an async iterable, got {items!r}"
            )
        check_callable("worker_func", worker_func)
        check_callable("error_handler", error_handler, allow_none=True)
        workers = worker_count_for(num_workers, self._config.concurrency_limit)
        if self._processor.has_workers:
            raise QueueStateError(
                "batch_process() runs its own workers, and this queue object "
                "already has some (from process()): stop them first"
            )
        if self._life.status is QueueStatus.PROCESSING:
            await self._run_batch(items, worker_func, workers, error_handler)
        else:
            async with self:
                await self._run_batch(items, worker_func, workers, error_handler)

    async def _run_batch(
        self,
        items: Iterable[T] | AsyncIterable[T],
        worker_func: WorkerFunc[T],
        workers: int,
        error_handler: ErrorHandler[T] | None,
    ) -> None:
        with unwrapped_group():  # the one error (from `items`, say), as raised
            async with create_task_group() as tg:
                await self.process(worker_func, workers, error_handler, task_group=tg)
                try:
                    await feed(items, self.put, refused=self._unprocessed.append)
                    await self.join()
                    await self._processor.end(None)
                except BaseException:
                    with CancelScope(shield=True):
                        await self._processor.end(0)
                    raise
