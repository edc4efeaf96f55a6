"""`_dispatch.Dispatch`: who is woken, and the slots of the concurrency limit.

The serving order as users see it is specified in
test_guarantee_serving_order.py; these pin the rules on the object itself.
"""

from __future__ import annotations

import logging
import math

import anyio
from support import GUARD

from sluicegate._clock import AnyIOClock
from sluicegate._core import Core
from sluicegate._dispatch import tokens
from sluicegate._failure_log import FailureLog
from sluicegate._worker_loop import run_worker


def core(limit: int | None = None, maxsize: int = 10) -> Core[int]:
    return Core(
        maxsize, limit, AnyIOClock(), FailureLog(logging.getLogger("t")), run_worker
    )


def test_no_limit_gives_endless_slots() -> None:
    assert tokens(None) == math.inf
    assert tokens(4) == 4


def test_a_hold_takes_every_slot_and_a_limit_set_meanwhile_waits_for_reopen() -> None:
    dispatch = core(limit=3).dispatch
    dispatch.close()
    assert (dispatch.held, dispatch.slots) == (True, 0)
    dispatch.set_limit(5)
    assert (dispatch.limit, dispatch.slots) == (5, 0)  # still held
    dispatch.reopen()
    assert (dispatch.held, dispatch.slots) == (False, 5)


def test_nobody_is_woken_for_items_those_on_their_way_will_take() -> None:
    queue_core = core()
    dispatch = queue_core.dispatch
    assert not dispatch.wake_consumer()  # an empty buffer
    queue_core.books.buffer.append(1)
    dispatch.looking = 1  # a worker will look at the buffer before it parks
    assert not dispatch.wake_consumer()


def test_room_decides_whether_a_producer_is_woken() -> None:
    queue_core = core(maxsize=1)
    queue_core.books.buffer.append(1)
    assert queue_core.room() == 0
    queue_core.dispatch.wake_producer()  # no room: nothing happens
    assert queue_core.dispatch.producers.woken == 0


async def test_a_getter_is_woken_for_an_item_before_an_idle_worker() -> None:
    queue_core = core()
    got: list[int] = []

    async def get() -> None:
        while not queue_core.books.buffer:
            await queue_core.dispatch.getters.park()
        got.append(queue_core.take())

    with anyio.fail_after(GUARD):
        queue_core.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            await anyio.wait_all_tasks_blocked()
            assert queue_core.dispatch.consumers_parked
            queue_core.accept(9)  # wakes the getter
    assert got == [9]
