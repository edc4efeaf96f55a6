"""One process of test_limiter's multi-process test: take tokens, print their times.

    python limiter_proc.py URL KEY RATE BURST BACKEND TASKS

Connects, prints ``ready``, reads ``START END`` (times on the server's clock,
seconds since the epoch) from stdin, waits until the server's clock reads
START, then TASKS tasks take tokens one at a time from a RedisRateLimiter on
KEY until the server's clock passes END; prints the server's time of every
grant as a JSON list. BACKEND is ``asyncio`` or ``trio``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from sluicegate.redis import RedisRateLimiter


async def server_time(client: Any) -> float:
    """The server's clock, in seconds since the epoch.

    (coredis 6.9's ``time()`` adds the microseconds as thousandths of them.)
    """
    seconds, micros = await client.eval("return redis.call('TIME')")
    return int(seconds) + int(micros) / 1_000_000


async def main(
    url: str, key: str, rate: float, burst: float, tasks: int
) -> list[float]:
    times: list[float] = []
    async with RedisRateLimiter.from_url(url, key, rate, burst=burst) as limiter:
        await server_time(limiter.client)  # connected
        print("ready", flush=True)
        start, end = map(
            float, (await anyio.to_thread.run_sync(sys.stdin.readline)).split()
        )
        server_now = await server_time(limiter.client)
        await anyio.sleep(max(0.0, start - server_now))

        async def take() -> None:
            while True:
                granted = await limiter._acquire()
                if granted > end:
                    return
                times.append(granted)

        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(take)
    return times


if __name__ == "__main__":
    url, key, rate, burst, backend, tasks = sys.argv[1:]
    result = anyio.run(
        main, url, key, float(rate), float(burst), int(tasks), backend=backend
    )
    json.dump(result, sys.stdout)
