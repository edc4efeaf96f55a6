# pyright: standard
"""RedisWorkQueue: a work queue shared by processes, on a Redis stream."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from inspect import isawaitable
from typing import Any, Final, Generic, TypeVar

from anyio import (
    CancelScope,
    Event,
    create_task_group,
    current_time,
    move_on_after,
)
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from sluicegate._checks import (
    check_callable,
    check_int,
    check_optional_int,
    check_seconds,
    not_awaitable,
)
from sluicegate._exceptions import QueueStateError, unwrapped_group
from sluicegate._feed import feed
from sluicegate._protocols import RateLimiterProtocol, check_rate_limiter
from sluicegate._queue import (
    USE_QUEUE_TIMEOUT,
    BoundedQueue,
    ErrorHandler,
    QueueStatus,
    UseQueueTimeout,
    WorkerFunc,
)
from sluicegate._scoped import Scoped

from ._books import RedisQueueBooks, read_books
from ._calls import TRANSIENT
from ._client import (
    CALL_TIMEOUT,
    RedisClient,
    check_client,
    check_open,
    check_timeout,
    ints,
    open_client,
    shielded,
    tagged_key,
)
from ._fetcher import Entry, Fetcher, Processing
from ._retrying import QueueCalls
from ._scripts import (
    ACK,
    GROUP,
    PUT,
    ensure_group,
)
from ._serializer import (
    JsonSerializer,
    Serializer,
    check_serializer,
    dump_item,
)

__all__ = ["RedisQueueBooks", "RedisWorkQueue"]

T = TypeVar("T")

#: How long a put token lives: a retried put script within it is not run twice.
TOKEN_TTL: Final = 300
#: Items per put script call.
PUT_CHUNK: Final = 256


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
        if isinstance(redis, str):
            if not redis.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    "redis must be a coredis client or a URL starting with "
                    f"redis://, rediss:// or unix://, got {redis!r}"
                )
            self._url: str | None = redis
            client: Any = None
        else:
            self._url = None
            client = check_client(redis, "redis")
        self._stream: Final = tagged_key(name, "stream", "name")
        self._dead: Final = tagged_key(name, "dead", "name")
        self._books_key: Final = tagged_key(name, "books", "name")
        self._token_prefix: Final = tagged_key(name, "put:", "name")
        self._name: Final = name
        self._maxsize: Final = check_int("maxsize", maxsize, minimum=1)
        self._timeout: Final = check_seconds("timeout", timeout, allow_none=True)
        self._concurrency_limit: Final = check_optional_int(
            "concurrency_limit", concurrency_limit, minimum=1
        )
        self._rate_limiter = check_rate_limiter(rate_limiter)
        self._serializer: Serializer = (
            JsonSerializer() if serializer is None else check_serializer(serializer)
        )
        self._claim_idle: Final = check_timeout(claim_idle, "claim_idle")
        self._max_deliveries: Final = check_int(
            "max_deliveries", max_deliveries, minimum=1
        )
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")
        self._logger = logger if logger is not None else logging.getLogger("sluicegate")
        self._call_timeout: Final = check_timeout(call_timeout, "call_timeout")
        self._calls: Final = QueueCalls(
            client,
            name=name,
            logger=self._logger,
            call_timeout=self._call_timeout,
            reconnect_timeout=check_timeout(reconnect_timeout, "reconnect_timeout"),
        )
        self._consumer: Final = (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._status = QueueStatus.IDLE
        self._task_group: TaskGroup | None = None
        self._processing: Processing[T] | None = None
        self._settled: Event | None = None  # set when this process settles one
        self._unprocessed: list[T] = []
        self._books = RedisQueueBooks(0, 0, 0, 0, 0, 0, 0)
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "put",
                "backpressure_events",
                "processed",
                "errors",
                "reclaimed",
                "redelivered",
                "released",
                "dead_lettered_here",
            ),
            0,
        )
        self._fetcher: Final[Fetcher[T]] = Fetcher(
            self._calls,
            stream=self._stream,
            books=self._books_key,
            dead=self._dead,
            consumer=self._consumer,
            claim_idle=self._claim_idle,
            max_deliveries=self._max_deliveries,
            serializer=self._serializer,
            counts=self._counts,
            unprocessed=self._unprocessed,
            on_settled=self._wake_settled,
        )

    # -- properties ----------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name, shared by every process using it."""
        return self._name

    @property
    def consumer(self) -> str:
        """This queue object's consumer name in the group (host:pid:random)."""
        return self._consumer

    @property
    def client(self) -> Any:
        """The coredis client (None before ``async with`` opens one for a URL)."""
        return self._calls.client

    @property
    def status(self) -> QueueStatus:
        """Where this queue object is in its life (`QueueStatus`)."""
        return self._status

    @property
    def maxsize(self) -> int:
        """How many items may be outstanding across all processes."""
        return self._maxsize

    @property
    def timeout(self) -> float | None:
        """How long `put` waits for room by default."""
        return self._timeout

    @property
    def concurrency_limit(self) -> int | None:
        """How many items this process handles at once (None: one per worker)."""
        return self._concurrency_limit

    @property
    def claim_idle(self) -> float:
        """Seconds before another process takes over an item left without a
        heartbeat."""
        return self._claim_idle

    @property
    def max_deliveries(self) -> int:
        """Deliveries after which an item goes to the dead stream."""
        return self._max_deliveries

    @property
    def rate_limiter(self) -> RateLimiterProtocol | None:
        """The rate limiter each call takes a token from, if any."""
        return self._rate_limiter

    @property
    def keys(self) -> dict[str, str]:
        """The queue's Redis keys: ``stream``, ``dead``, ``books``."""
        return {"stream": self._stream, "dead": self._dead, "books": self._books_key}

    @property
    def worker_count(self) -> int:
        """How many workers this process runs."""
        processing = self._processing
        return 0 if processing is None else processing.local.worker_count

    @property
    def in_flight(self) -> int:
        """Items this process fetched and has not settled (buffered or running)."""
        return len(self._fetcher.held)

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
        books = self._books
        return {
            "enqueued": books.enqueued,
            "acknowledged": books.acknowledged,
            "outstanding": books.outstanding,
            "dead_lettered": books.dead_lettered,
            "pending": books.pending,
            **self._counts,
            "in_flight": len(self._fetcher.held),
            "unprocessed": len(self._unprocessed),
        }

    def __repr__(self) -> str:
        return (
            f"<RedisWorkQueue {self._name!r} {self._status.value}, "
            f"maxsize={self._maxsize}, workers={self.worker_count}, "
            f"in_flight={len(self._fetcher.held)}, consumer={self._consumer!r}>"
        )

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open the queue (create its consumer group if need be): PROCESSING.

        Idempotent. With a URL instead of a client, use ``async with`` (the
        client it opens lives in that block).

        Raises:
            QueueStateError: the queue is stopping, or was given a URL.
        """
        if self._status is QueueStatus.PROCESSING:
            return
        if self._status is QueueStatus.STOPPING:
            raise QueueStateError(
                "cannot start: the queue is stopping; await queue.stop() first"
            )
        if self._calls.client is None:
            raise QueueStateError(
                "cannot start(): this queue was given a URL, and the client it "
                "opens lives in `async with queue:`; use that, or pass a "
                "coredis client you opened yourself"
            )
        check_open(self._calls.client)
        await shielded(self._ensure_group, self._call_timeout)
        self._status = QueueStatus.PROCESSING

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
        timeout = check_seconds("timeout", timeout, allow_none=True)
        if self._status in (QueueStatus.IDLE, QueueStatus.STOPPED):
            self._status = QueueStatus.STOPPED
            return
        self._status = QueueStatus.STOPPING
        self._wake_settled()  # a join or a put waiting for room looks again
        try:
            await self._end_processing(timeout)
            with suppress(*TRANSIENT):
                await self.books()
        finally:
            self._status = QueueStatus.STOPPED
            self._wake_settled()

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
        delay = 0.01
        while True:
            if self._status is QueueStatus.STOPPED:
                await checkpoint()
                return
            books = await self.books()
            if books.outstanding <= 0:
                return
            if self._settled is None:
                self._settled = Event()
            with move_on_after(delay):
                await self._settled.wait()
            delay = min(delay * 2, 0.2)

    async def books(self) -> RedisQueueBooks:
        """Read the global books in one atomic call (also kept for `metrics`).

        Raises:
            QueueStateError: the client is not open (for a queue given a URL:
                outside its ``async with``).
        """
        self._books = await read_books(
            self._calls, stream=self._stream, books=self._books_key, dead=self._dead
        )
        return self._books

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        """Open the client (for a URL), own a task group for the workers, and
        stop this process's part on the way out."""
        async with AsyncExitStack() as stack:
            if self._url is not None:
                client = await stack.enter_async_context(open_client(self._url))
                self._calls.client = client
                stack.callback(setattr, self._calls, "client", None)
            await self.start()
            # The one exception that ended the block, as it was raised.
            with unwrapped_group():
                async with create_task_group() as tg:
                    self._task_group = tg
                    try:
                        yield
                        await self.stop()
                    except BaseException:
                        with CancelScope(shield=True):
                            await self._abort()
                        raise
                    finally:
                        self._task_group = None

    async def _abort(self) -> None:
        """Leave at once: cancel the workers, hand back what this process holds."""
        self._status = QueueStatus.STOPPING
        try:
            await self._end_processing(0)
        except TRANSIENT as exc:
            self._could_not_hand_back(exc)
        finally:
            self._status = QueueStatus.STOPPED
            self._wake_settled()

    def _could_not_hand_back(self, exc: Exception) -> None:
        self._logger.warning(
            "RedisWorkQueue %r could not hand back its items (%s); the other "
            "processes take them over after claim_idle",
            self._name,
            exc,
        )

    # -- producers ----------------------------------------------------------

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
        if timeout is USE_QUEUE_TIMEOUT:
            timeout = self._timeout
        else:
            timeout = check_seconds("timeout", timeout, allow_none=True)
        if isinstance(items, (str, bytes)):
            kind = type(items).__name__
            raise TypeError(
                f"items must be an iterable of items, not {kind} (its characters "
                f"or bytes would be put one by one): to put one {kind} item, use "
                f"put(); got {items!r}"
            )
        if not isinstance(items, Iterable):
            raise TypeError(
                f"items must be an iterable of items, got {items!r} "
                f"({type(items).__name__})"
            )
        self._check_running("put")
        payloads = [dump_item(self._serializer, item) for item in items]
        deadline = None if timeout is None else current_time() + timeout
        accepted = 0
        delay = 0.005
        while accepted < len(payloads):
            # Before each chunk (none is half put): the call itself is
            # shielded, so a cancelled producer with room would never notice.
            await checkpoint_if_cancelled()
            chunk = payloads[accepted : accepted + PUT_CHUNK]
            took = await self._put_chunk(chunk)
            accepted += took
            self._counts["put"] += took
            if took == len(chunk):
                delay = 0.005
                continue
            if took:
                delay = 0.005
                continue  # room for some: try the rest at once
            # Full: wait for room, waking early when this process settles one.
            now = current_time()
            if deadline is not None and now >= deadline:
                self._counts["backpressure_events"] += 1
                if timeout == 0:
                    await checkpoint()
                return accepted
            wait = delay if deadline is None else min(delay, deadline - now)
            if self._settled is None:
                self._settled = Event()
            with move_on_after(wait):
                await self._settled.wait()
            delay = min(delay * 2, 0.1)
            self._check_running("put")
        return accepted

    async def _put_chunk(self, payloads: list[tuple[bytes, bytes]]) -> int:
        # One token for the call and all its resends: the script runs once.
        token = self._token_prefix + uuid.uuid4().hex
        args: list[str | bytes | int] = [self._maxsize, TOKEN_TTL]
        for field, payload in payloads:
            args += [field, payload]
        raw = await self._calls.call_retrying(
            PUT, [self._stream, self._books_key, token], args
        )
        took, _outstanding = ints(raw, 2, "the put script")
        if not 0 <= took <= len(payloads):
            raise RuntimeError(f"the put script accepted {took} of {len(payloads)}")
        return took

    # -- processing ----------------------------------------------------------

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
        workers = self._worker_count_for(num_workers)
        if task_group is not None and not isinstance(task_group, TaskGroup):
            raise TypeError(
                f"task_group must be an anyio TaskGroup or None, got {task_group!r}"
            )
        self._check_running("process")
        if self._processing is not None:
            raise QueueStateError(
                "this RedisWorkQueue already has workers from process() or a "
                "batch in this process: stop them first (stop()), or use "
                "another RedisWorkQueue object"
            )
        group = task_group if task_group is not None else self._task_group
        if group is None:
            raise QueueStateError(
                "process() needs a task group to run the workers in: use "
                "`async with queue:` (the queue owns them), or pass "
                "`task_group=tg` from `async with anyio.create_task_group() as tg:`"
            )
        limit = self._concurrency_limit
        capacity = workers if limit is None else min(workers, limit)
        local: BoundedQueue[Entry[T]] = BoundedQueue(
            capacity, concurrency_limit=limit, logger=self._logger
        )
        await local.start()
        processing = Processing(local, capacity)
        self._processing = processing
        await local.start_workers(
            self._worker_call(worker_func),
            workers,
            self._error_call(error_handler, local),
            task_group=group,
            rate_limiter=self._rate_limiter,
        )
        group.start_soon(self._fetcher.fetch, processing)
        group.start_soon(self._fetcher.heartbeat, processing)

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
        workers = self._worker_count_for(num_workers)
        if self._processing is not None:
            raise QueueStateError(
                "batch_process() runs its own workers, and this queue object "
                "already has some (from process()): stop them first"
            )
        if self._status is QueueStatus.PROCESSING:
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
                    await self._end_processing(None)
                except BaseException:
                    with CancelScope(shield=True):
                        await self._end_processing(0)
                    raise

    def _worker_call(self, worker_func: WorkerFunc[T]) -> WorkerFunc[Entry[T]]:
        async def call(entry: Entry[T]) -> None:
            result = worker_func(entry.item)
            if not isawaitable(result):  # the local queue sees only `call`
                raise not_awaitable("worker_func", worker_func, result)
            await result
            await self._settle(entry, error=False)

        return call

    def _error_call(
        self, error_handler: ErrorHandler[T] | None, local: BoundedQueue[Entry[T]]
    ) -> ErrorHandler[Entry[T]]:
        async def on_error(exc: Exception, entry: Entry[T]) -> None:
            try:
                if error_handler is None:
                    local._log_failure(exc, entry)
                else:
                    await error_handler(exc, entry.item)
            except Exception:
                await self._settle(entry, error=True)
                raise  # the local queue logs the handler's failure
            await self._settle(entry, error=True)

        return on_error

    async def _settle(self, entry: Entry[T], *, error: bool) -> None:
        """Acknowledge a finished item (never cancelled half way)."""
        try:
            with CancelScope(shield=True):
                await self._calls.call_retrying(
                    ACK, [self._stream, self._books_key], [GROUP, entry.id]
                )
        except TRANSIENT as exc:
            self._logger.error(
                "RedisWorkQueue %r could not acknowledge %r (%s): another process "
                "takes it over after claim_idle and runs it again",
                self._name,
                entry,
                exc,
            )
        finally:
            self._counts["processed"] += 1
            if error:
                self._counts["errors"] += 1
            self._fetcher.unhold(entry)

    def _wake_settled(self) -> None:
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    async def _end_processing(self, timeout: float | None) -> None:
        """End this process's workers: stop fetching, hand back what no worker
        started, let the workers finish (or cancel them after ``timeout``),
        hand back what they did not finish."""
        processing = self._processing
        if processing is None:
            return
        local = processing.local
        try:
            processing.fetch_scope.cancel()
            await processing.fetched_all.wait()
            await self._fetcher.release(local._give_up_buffered(), processing)
            await local.stop(timeout)
            await self._fetcher.release(local.unprocessed, processing)
        except BaseException:
            # Cancelled half way (the caller of stop, or the block's exit): the
            # local stop cancels the workers; hand back all they held now,
            # rather than leave it pending here until claim_idle.
            with CancelScope(shield=True):
                await processing.fetched_all.wait()
                await local.stop(0)
                try:
                    await self._fetcher.release(local.unprocessed, processing)
                except TRANSIENT as exc:
                    self._could_not_hand_back(exc)
            raise
        finally:
            processing.heartbeat_scope.cancel()
            if self._processing is processing:
                self._processing = None

    async def _ensure_group(self) -> None:
        await ensure_group(self._calls.client, self._stream)

    # -- checks --------------------------------------------------------------

    def _check_running(self, operation: str) -> None:
        if self._status is QueueStatus.PROCESSING:
            return
        if self._status is QueueStatus.IDLE:
            fix = "call `await queue.start()` or use `async with queue:` first"
        else:
            fix = "a stopped queue takes no new work; `await queue.start()` reopens it"
        raise QueueStateError(
            f"cannot {operation}(): the queue is {self._status.value}; {fix}"
        )

    def _worker_count_for(self, num_workers: int | None) -> int:
        count = check_optional_int("num_workers", num_workers, minimum=1)
        if count is not None:
            return count
        return self._concurrency_limit or 1
