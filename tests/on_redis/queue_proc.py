"""A worker process for the RedisWorkQueue tests (run with sys.executable).

    python queue_proc.py URL NAME BACKEND ITEM_SECONDS

It processes the queue NAME with two workers (claim_idle 0.5 s). Each item is
recorded in the Redis list ``NAME:started:<pid>`` when its call starts and in
``NAME:done`` when it ends (before its acknowledgement). On SIGTERM it stops
gracefully and prints its metrics as JSON; a SIGKILL ends it mid-item.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import anyio
import coredis

from sluicegate.redis import RedisWorkQueue


async def main(url: str, name: str, item_seconds: float) -> None:
    pid = os.getpid()
    async with coredis.Redis.from_url(url) as client:

        async def work(item: int) -> None:
            await client.rpush(f"{name}:started:{pid}", [str(item)])
            await anyio.sleep(item_seconds)
            await client.rpush(f"{name}:done", [str(item)])

        queue: RedisWorkQueue[int] = RedisWorkQueue(client, name, claim_idle=0.5)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with queue:
                await queue.process(work, 2)
                await client.rpush(f"{name}:ready", [str(pid)])
                async for _ in signals:
                    break
        print(json.dumps(queue.metrics), flush=True)


if __name__ == "__main__":
    url, name, backend, seconds = sys.argv[1:5]
    anyio.run(main, url, name, float(seconds), backend=backend)
