"""`_books.Books`: the counts of one queue's items, and the equation that ties them.

``enqueued == processed + len(buffer) + in_flight + delayed + len(unprocessed)``:
in-flight items are what the equation leaves; joiners are woken when what they
wait for may have changed.
"""

from __future__ import annotations

import anyio
from support import GUARD

from sluicegate._books import Books


def accepted(books: Books[int], *items: int) -> None:
    """Accept ``items`` into the buffer, as a put does."""
    books.buffer.extend(items)
    books.enqueued += len(items)


def test_in_flight_is_what_the_equation_leaves() -> None:
    books: Books[int] = Books()
    accepted(books, 1, 2, 3, 4, 5)
    assert books.in_flight() == 0
    books.buffer.popleft()  # taken by a worker
    books.buffer.popleft()
    assert books.in_flight() == 2
    books.finished()
    assert books.in_flight() == 1
    books.delayed += 1  # the other one waits out a backoff
    assert books.in_flight() == 0
    assert books.unfinished() == 4


def test_an_abandoned_item_is_listed_and_never_processed() -> None:
    books: Books[int] = Books()
    accepted(books, 7)
    books.buffer.popleft()
    books.abandoned(7)
    assert books.unprocessed == [7]
    assert (books.processed, books.in_flight(), books.unfinished()) == (0, 0, 0)


def test_a_refused_item_counts_as_accepted_and_listed() -> None:
    books: Books[int] = Books()
    books.refused(3)  # drawn by a batch, never put
    assert (books.enqueued, books.unprocessed, books.in_flight()) == (1, [3], 0)


async def test_joiners_wake_when_the_last_item_finishes() -> None:
    books: Books[int] = Books()
    accepted(books, 1, 2)
    books.buffer.clear()
    woken: list[int] = []

    async def join() -> None:
        while books.unfinished():
            await books.wait_for_change()
        woken.append(books.processed)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(join)
            await anyio.wait_all_tasks_blocked()
            assert books.join_event is not None  # someone waits
            books.finished()
            await anyio.wait_all_tasks_blocked()
            assert woken == []  # one is left: not woken
            books.finished()
    assert woken == [2]
    assert books.join_event is None


async def test_release_joiners_wakes_every_waiter_at_once() -> None:
    books: Books[int] = Books()
    done = 0

    async def wait() -> None:
        nonlocal done
        await books.wait_for_change()
        done += 1

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            books.release_joiners()
    assert done == 3


def test_finishing_with_nobody_joining_makes_no_event() -> None:
    books: Books[int] = Books()
    accepted(books, 1)
    books.buffer.clear()
    books.finished()
    assert books.join_event is None
