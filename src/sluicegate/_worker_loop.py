"""The worker loop: one coroutine per worker, taking items and calling them.

A worker takes a concurrency slot, handles buffered items while there are any,
gives the slot back, looks once more after the other tasks have run, and parks
idle until woken for an item (see `_dispatch`). Items with nothing around their
call but the job's gate (no retry, no item timeout, no shared CapacityLimiter)
are called inline, once the gate grants at the call's clock reading; the
others (and those the gate makes wait) go through `Calls.handle`. Failures, of
either, go to `Calls.failed`.

The per-item path is written out in one coroutine on purpose: every await
nested in the worker costs a frame on each resume, and this is the hot path.
What happens once per stretch of items, or on a rare path, is a function of
its own.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from anyio.lowlevel import checkpoint

from ._books import Books
from ._calls import Job, Retry
from ._core import YIELD_EVERY, Core
from ._exceptions import stray_cancellation
from ._status import QueueStatus
from ._workers import Worker

__all__ = ["run_worker"]

T = TypeVar("T")

_PROCESSING: Final = QueueStatus.PROCESSING


async def run_worker(worker: Worker, core: Core[T], job: Job[T]) -> None:  # noqa: PLR0915
    """One worker of ``core``'s queue: handle items until asked to stop."""
    dispatch, books = core.dispatch, core.books
    dispatch.entered(worker)
    producers, buffer, now, started = dispatch.producers, books.buffer, core.now, 0.0
    func, sink, gate, timed = job.func, job.sink, job.gate, job.timed
    plain = job.plain and core.capacity is None  # (a borrowed token: see Calls)
    handle, failed = core.calls.handle, core.calls.failed
    try:
        while not worker.stopping:
            # When the last item ended, while this worker has gone straight on
            # since (then the next one starts: one clock reading per item).
            mark: float | None = None
            if dispatch.active >= dispatch.slots:
                await _wait_for_slot(core, worker)
                continue
            # Hold the slot while there is work; give it back to go idle, or as
            # soon as the limit has been lowered below those held.
            dispatch.active += 1
            try:
                handled = 0
                stretch = books.processed  # finished when this stretch began
                while buffer and not worker.stopping:
                    if dispatch.active > dispatch.slots:
                        break
                    # `Core.take`, written out: the hot path, once per item.
                    entry = buffer.popleft()
                    if producers.parked:
                        dispatch.wake_producer()
                    if timed:  # (the gate is asked at the call's start)
                        started = now() if mark is None else mark
                    if (
                        plain
                        and type(entry) is not Retry
                        and (gate is None or gate.admit(started))
                    ):
                        item: T = entry  # type: ignore[assignment]
                        call: Awaitable[object] | None = None
                        try:
                            call = func(item)
                            value = await call
                        except Exception as exc:
                            mark = None  # the failure's handling may wait
                            await failed(exc, item, job, call, first=started)
                        except BaseException as exc:
                            mark = None
                            await _cancelled(core, exc, item, job, call, first=started)
                        else:
                            if sink is not None:
                                mark = now()
                                sink(item, value, None, 1, mark - started)
                            # `Books.finished`, written out.
                            books.processed += 1
                            if books.join_event is not None:
                                books.release_joiners_if_done()
                    else:  # (a retry, or no token free now: it waits in there)
                        mark = None
                        await handle(entry, job, worker)
                    handled += 1
                    if handled == YIELD_EVERY:
                        handled = 0
                        mark, stretch = await _pause(books, stretch, mark)
            finally:
                dispatch.active -= 1
            await _idle(core, worker, look_again=handled > 0)
    finally:
        dispatch.left(worker)


async def _wait_for_slot(core: Core[Any], worker: Worker) -> None:
    """No slot free (the limit was lowered, or the queue is held): wait for one.

    This worker may have been counted as on its way to an item (woken, or
    looking): pass that on, to a get() perhaps.
    """
    if core.books.buffer:
        core.dispatch.wake_consumer()
    await core.dispatch.park_idle(worker)


async def _cancelled(
    core: Core[T],
    exc: BaseException,
    item: T,
    job: Job[T],
    call: object,
    *,
    first: float,
) -> None:
    """A call raised a BaseException: a stray cancellation is a failure; a
    real cancellation (or KeyboardInterrupt...) leaves the item unprocessed."""
    stray = stray_cancellation(exc)
    if stray is None:
        core.abandoned(item, job, first)
        raise exc
    await core.calls.failed(stray, item, job, call, first=first)


async def _pause(
    books: Books[Any], stretch: int, mark: float | None
) -> tuple[float | None, int]:
    """After `YIELD_EVERY` items in a row: yield unless other workers have
    finished items since the stretch began (more than this one's own): they
    can only have run if its calls yielded. (Puts are not counted: a worker
    function may put without yielding.)

    Returns ``mark``, the end of the last item (None once it has yielded:
    time has moved on since), and where the next stretch begins.
    """
    if books.processed - stretch <= YIELD_EVERY:
        await checkpoint()
        mark = None
    return mark, books.processed


async def _idle(core: Core[Any], worker: Worker, *, look_again: bool) -> None:
    """Out of items (or of slots): park, unless there is work after all.

    With ``look_again`` (busy until now), look once more first, after the
    other tasks have run: the producer may be refilling.
    """
    if worker.stopping or core.books.buffer:
        return
    if look_again and await _look_again(core, worker):
        return
    await core.dispatch.park_idle(worker)


async def _look_again(core: Core[Any], worker: Worker) -> bool:
    """Busy until now: look once more after the other tasks have run (the
    producer may be refilling) before parking; True if there is work.

    Counted as a consumer on its way meanwhile, so that no idle worker is
    woken for what this one will take.
    """
    dispatch = core.dispatch
    dispatch.looking += 1
    try:
        await checkpoint()
    finally:
        dispatch.looking -= 1
    return worker.stopping or bool(core.books.buffer)
