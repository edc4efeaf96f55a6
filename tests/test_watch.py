"""tests/watch.py itself: it sees books that fail between two steps, and its
sweep cancels a scenario at each of its suspensions."""

from __future__ import annotations

import anyio
import pytest
from support import books_of
from watch import Watch, sweep, watching

from sluicegate import BoundedQueue


async def test_books_that_fail_between_two_steps_fail_the_block() -> None:
    queue: BoundedQueue[int] = BoundedQueue()
    await queue.start()
    with pytest.raises(AssertionError, match="in_flight"):
        async with watching(queue):
            books_of(queue).processed += 1  # one item more than was put: in_flight -1
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            books_of(queue).processed -= 1  # balanced again by the end
    await queue.stop()


async def test_a_sweep_cancels_at_each_suspension() -> None:
    reached: list[tuple[int | None, int]] = []

    async def scenario(watch: Watch, n: int | None) -> None:
        done = 0
        with watch.cancelled_at(n):
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
                done += 1
        reached.append((n, done))

    count = await sweep(scenario)
    assert count == 10
    assert reached[0] == (None, 10)
    # cancelled at once, then one checkpoint later each time
    assert [done for _, done in reached[1:]] == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
