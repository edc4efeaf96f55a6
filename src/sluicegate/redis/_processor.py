# pyright: standard
"""Processor: the workers one process runs for a RedisWorkQueue, and how each
item they finish is settled in Redis.

The workers run on a local `BoundedQueue` (its slots, rate limiter, error
handling and logging), which the `Fetcher` fills with no more entries than
there are workers free. An item is acknowledged once its worker function
returned, or its error was handled; what no worker finishes is handed back
to the group for the other processes.
"""

from __future__ import annotations

import os
import socket
import uuid
from inspect import isawaitable
from typing import Final, Generic, TypeVar

from anyio import CancelScope
from anyio.abc import TaskGroup

from sluicegate._calls import ErrorHandler, WorkerFunc
from sluicegate._checks import not_awaitable
from sluicegate._queue import BoundedQueue, core_of

from ._books import Settled
from ._calls import TRANSIENT
from ._config import RedisQueueConfig
from ._fetcher import Entry, Fetcher, Processing
from ._retrying import QueueCalls
from ._scripts import ACK, GROUP

__all__ = ["Processor"]

T = TypeVar("T")


class Processor(Generic[T]):
    """The workers of one RedisWorkQueue object, one `process` call at a time.

    Args:
        calls: The queue's Redis calls.
        config: The queue's validated arguments.
        counts: The queue's own counts, which this (and its fetcher) adds to.
        unprocessed: The queue's list of items handed back unprocessed.
        settled: Woken each time an item is settled or handed back.
    """

    def __init__(
        self,
        calls: QueueCalls,
        config: RedisQueueConfig,
        *,
        counts: dict[str, int],
        unprocessed: list[T],
        settled: Settled,
    ) -> None:
        #: This queue object's consumer name in the group (host:pid:random).
        self.consumer: Final = (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._calls: Final = calls
        self._config: Final = config
        self._counts: Final = counts
        self._ack_keys: Final = [config.stream, config.books]
        self._fetcher: Final[Fetcher[T]] = Fetcher(
            calls,
            stream=config.stream,
            books=config.books,
            dead=config.dead,
            consumer=self.consumer,
            claim_idle=config.claim_idle,
            max_deliveries=config.max_deliveries,
            serializer=config.serializer,
            counts=counts,
            unprocessed=unprocessed,
            on_settled=settled.wake,
        )
        self._processing: Processing[T] | None = None

    @property
    def has_workers(self) -> bool:
        """True from `start` until `end` returns."""
        return self._processing is not None

    @property
    def worker_count(self) -> int:
        """How many workers run here now."""
        processing = self._processing
        return 0 if processing is None else processing.local.worker_count

    @property
    def in_flight(self) -> int:
        """Items fetched and not settled (buffered or running)."""
        return len(self._fetcher.held)

    async def start(
        self,
        worker_func: WorkerFunc[T],
        workers: int,
        error_handler: ErrorHandler[T] | None,
        group: TaskGroup,
    ) -> None:
        """Start ``workers`` workers and the fetcher and heartbeat in ``group``
        (the caller checked the arguments and that none run yet)."""
        config = self._config
        limit = config.concurrency_limit
        capacity = workers if limit is None else min(workers, limit)
        local: BoundedQueue[Entry[T]] = BoundedQueue(
            capacity, concurrency_limit=limit, logger=config.logger
        )
        await local.start()
        processing = Processing(local, capacity)
        self._processing = processing
        await local.start_workers(
            self._worker_call(worker_func),
            workers,
            self._error_call(error_handler, local),
            task_group=group,
            rate_limiter=config.rate_limiter,
        )
        group.start_soon(self._fetcher.fetch, processing)
        group.start_soon(self._fetcher.heartbeat, processing)

    async def end(self, timeout: float | None) -> None:
        """End the workers: stop fetching, hand back what no worker started,
        let the workers finish (or cancel them after ``timeout``), hand back
        what they did not finish."""
        processing = self._processing
        if processing is None:
            return
        local = processing.local
        try:
            processing.fetch_scope.cancel()
            await processing.fetched_all.wait()
            await self._fetcher.release(core_of(local).give_up_buffered(), processing)
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

    async def abort(self) -> None:
        """`end` at once: cancel the workers, hand back what they held."""
        try:
            await self.end(0)
        except TRANSIENT as exc:
            self._could_not_hand_back(exc)

    def _could_not_hand_back(self, exc: Exception) -> None:
        self._config.logger.warning(
            "RedisWorkQueue %r could not hand back its items (%s); the other "
            "processes take them over after claim_idle",
            self._config.name,
            exc,
        )

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
                    core_of(local).log_failure(exc, entry)
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
                await self._calls.call_retrying(ACK, self._ack_keys, [GROUP, entry.id])
        except TRANSIENT as exc:
            self._config.logger.error(
                "RedisWorkQueue %r could not acknowledge %r (%s): another process "
                "takes it over after claim_idle and runs it again",
                self._config.name,
                entry,
                exc,
            )
        finally:
            self._counts["processed"] += 1
            if error:
                self._counts["errors"] += 1
            self._fetcher.unhold(entry)
