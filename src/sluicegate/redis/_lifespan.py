# pyright: standard
"""Lifespan: where one RedisWorkQueue object is in its life, and the moves
between: start, stop, join, and the body of ``async with queue:``.

The states and their rules are the local queue's (`sluicegate._lifecycle`):
IDLE, PROCESSING, STOPPING, STOPPED, the same checks and the same messages.
What is Redis's own: starting makes the consumer group, stopping hands back
what this process holds, and join reads the global books until none is
outstanding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any, Final

from anyio import CancelScope, create_task_group
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from sluicegate._checks import check_seconds
from sluicegate._exceptions import QueueStateError, unwrapped_group
from sluicegate._lifecycle import check_not_stopping, check_running
from sluicegate._status import QueueStatus

from ._books import RedisQueueBooks, Settled, read_books
from ._calls import TRANSIENT
from ._client import check_open, open_client, shielded
from ._config import RedisQueueConfig
from ._processor import Processor
from ._retrying import QueueCalls
from ._scripts import ensure_group

__all__ = ["Lifespan"]

#: The first and the longest pause of a join between two reads of the books.
FIRST_LOOK: Final = 0.01
LONGEST_LOOK: Final = 0.2


class Lifespan:
    """The status of one RedisWorkQueue object, its task group, its last books.

    Args:
        calls: The queue's Redis calls (their client is set here for a URL).
        config: The queue's validated arguments.
        processor: The queue's workers, ended by `stop`.
        settled: Woken by a stop, so that joins and puts look again.
    """

    def __init__(
        self,
        calls: QueueCalls,
        config: RedisQueueConfig,
        processor: Processor[Any],
        settled: Settled,
    ) -> None:
        self._calls: Final = calls
        self._config: Final = config
        self._processor: Final = processor
        self._settled: Final = settled
        self.status = QueueStatus.IDLE
        #: The task group of ``async with queue:``, while it runs.
        self.task_group: TaskGroup | None = None
        #: The global books as last read.
        self.books = RedisQueueBooks(0, 0, 0, 0, 0, 0, 0)

    def check_running(self, operation: str) -> None:
        """Raise QueueStateError unless the queue is PROCESSING."""
        check_running(self.status, operation)

    async def start(self) -> None:
        """`RedisWorkQueue.start`."""
        if self.status is QueueStatus.PROCESSING:
            return
        check_not_stopping(self.status)
        client = self._calls.client
        if client is None:
            raise QueueStateError(
                "cannot start(): this queue was given a URL, and the client it "
                "opens lives in `async with queue:`; use that, or pass a "
                "coredis client you opened yourself"
            )
        check_open(client)
        stream = self._config.stream
        await shielded(lambda: ensure_group(client, stream), self._config.call_timeout)
        self.status = QueueStatus.PROCESSING

    async def stop(self, timeout: float | None) -> None:
        """`RedisWorkQueue.stop`."""
        timeout = check_seconds("timeout", timeout, allow_none=True)
        if self.status in (QueueStatus.IDLE, QueueStatus.STOPPED):
            self.status = QueueStatus.STOPPED
            return
        self.status = QueueStatus.STOPPING
        self._settled.wake()  # a join or a put waiting for room looks again
        try:
            await self._processor.end(timeout)
            with suppress(*TRANSIENT):
                await self.read_books()
        finally:
            self.status = QueueStatus.STOPPED
            self._settled.wake()

    async def join(self) -> None:
        """`RedisWorkQueue.join`."""
        delay = FIRST_LOOK
        while True:
            if self.status is QueueStatus.STOPPED:
                await checkpoint()
                return
            books = await self.read_books()
            if books.outstanding <= 0:
                return
            await self._settled.wait(delay)
            delay = min(delay * 2, LONGEST_LOOK)

    async def read_books(self) -> RedisQueueBooks:
        """`RedisWorkQueue.books`."""
        config = self._config
        self.books = await read_books(
            self._calls, stream=config.stream, books=config.books, dead=config.dead
        )
        return self.books

    @asynccontextmanager
    async def block(self) -> AsyncIterator[None]:
        """Open the client (for a URL), own a task group for the workers, and
        stop this process's part on the way out."""
        async with AsyncExitStack() as stack:
            url = self._config.url
            if url is not None:
                client = await stack.enter_async_context(open_client(url))
                self._calls.client = client
                stack.callback(setattr, self._calls, "client", None)
            await self.start()
            # The one exception that ended the block, as it was raised.
            with unwrapped_group():
                async with create_task_group() as tg:
                    self.task_group = tg
                    try:
                        yield
                        await self.stop(None)
                    except BaseException:
                        with CancelScope(shield=True):
                            await self._abort()
                        raise
                    finally:
                        self.task_group = None

    async def _abort(self) -> None:
        """Leave at once: cancel the workers, hand back what this process holds."""
        self.status = QueueStatus.STOPPING
        try:
            await self._processor.abort()
        finally:
            self.status = QueueStatus.STOPPED
            self._settled.wake()
