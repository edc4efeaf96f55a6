"""One producer and several worker processes sharing a RedisWorkQueue.

The program starts three worker processes (two on asyncio, one on trio) and
then produces 300 jobs into one queue in Redis. Each job takes a few
milliseconds; the workers write each job they finish into a Redis set, so the
producer can check at the end that every job was done. One worker process is
killed (SIGKILL) while it holds jobs: the others take them over once they have
been idle for ``claim_idle`` (0.5 s), so nothing is lost (a job it was running
may run twice: worker functions should be idempotent).

It then prints what each process did and the global books, and exits with 1
if any job was lost.

Redis: the server at SLUICEGATE_REDIS_URL, or else a redis-server from the
PATH that the program starts (and stops) on a free port.

    uv run python examples/distributed.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import coredis

from sluicegate.redis import RedisWorkQueue

JOBS = 300
CLAIM_IDLE = 0.5


# -- a worker process ------------------------------------------------------


async def worker_main(url: str, name: str, slow: bool) -> None:
    """Process jobs until SIGTERM, then print this process's metrics."""
    async with coredis.Redis.from_url(url) as client:

        async def work(job: dict[str, int]) -> None:
            if slow:  # the process that gets killed holds its jobs a while
                await client.rpush(f"{name}:slow", [str(job["n"])])
                await anyio.sleep(30)
            await anyio.sleep(0.002 + job["n"] % 5 / 1000)
            await client.sadd(f"{name}:done", [str(job["n"])])

        queue: RedisWorkQueue[dict[str, int]] = RedisWorkQueue(
            client, name, claim_idle=CLAIM_IDLE
        )
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with queue:
                await queue.process(work, num_workers=4)
                await client.rpush(f"{name}:ready", [str(os.getpid())])
                async for _ in signals:
                    break
        print(json.dumps(queue.metrics), flush=True)


# -- the producer ------------------------------------------------------------


def spawn_worker(
    url: str, name: str, backend: str, slow: bool
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "worker",
            url,
            name,
            backend,
            "slow" if slow else "",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


async def produce(url: str) -> bool:
    name = f"distributed-example-{uuid.uuid4().hex[:8]}"
    backends = [("asyncio", True), ("asyncio", False), ("trio", False)]
    procs = [spawn_worker(url, name, backend, slow) for backend, slow in backends]
    try:
        async with coredis.Redis.from_url(url) as client:
            with anyio.fail_after(60):
                while await client.llen(f"{name}:ready") < len(procs):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                queue: RedisWorkQueue[dict[str, int]] = RedisWorkQueue(
                    client, name, maxsize=50, claim_idle=CLAIM_IDLE
                )
                started = time.monotonic()
                async with queue:
                    for n in range(JOBS):
                        await queue.put({"n": n})  # waits while 50 are outstanding
                        if n == JOBS // 3:
                            victim = procs[0]
                            while not await client.llen(f"{name}:slow"):  # noqa: ASYNC110
                                await anyio.sleep(0.01)
                            victim.kill()
                            print(f"killed worker process {victim.pid} (SIGKILL)")
                    await queue.join()  # every job, by any process, acknowledged
                    books = await queue.books()
                elapsed = time.monotonic() - started
            done = {int(n) for n in await client.smembers(f"{name}:done")}
            held = await client.lrange(f"{name}:slow", 0, -1)
            for proc in procs[1:]:
                proc.send_signal(signal.SIGTERM)
            outputs = [
                await anyio.to_thread.run_sync(proc.communicate, None, 30)
                for proc in procs
            ]
            await client.delete(
                [
                    *queue.keys.values(),
                    *(f"{name}:{k}" for k in ("done", "slow", "ready")),
                ]
            )
        for proc, (out, _), (backend, _) in zip(procs, outputs, backends, strict=True):
            if proc.returncode == -signal.SIGKILL:
                print(f"  {proc.pid} ({backend}): killed holding {len(held)} jobs")
                continue
            m = json.loads(out)
            print(
                f"  {proc.pid} ({backend}): processed {m['processed']}, "
                f"reclaimed {m['reclaimed']} (redelivered {m['redelivered']}), "
                f"released {m['released']}, errors {m['errors']}"
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    print(
        f"books: enqueued {books.enqueued} = acknowledged {books.acknowledged} "
        f"+ outstanding {books.outstanding} + dead-lettered {books.dead_lettered}"
    )
    lost = set(range(JOBS)) - done
    print(f"{len(done)} of {JOBS} jobs done in {elapsed:.2f} s; lost: {len(lost)}")
    return not lost and books.outstanding == 0 and books.enqueued == JOBS


# -- a local redis-server if need be ----------------------------------------


@contextmanager
def redis_url() -> Iterator[str]:
    url = os.environ.get("SLUICEGATE_REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(
            "no Redis: set SLUICEGATE_REDIS_URL, or install redis-server "
            "(apt-get install redis-server) so that this program can start one"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        server = subprocess.Popen(
            [binary, *args, "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        url, name, backend, slow = sys.argv[2:6]
        anyio.run(worker_main, url, name, slow == "slow", backend=backend)
        return
    with redis_url() as url:
        ok = anyio.run(produce, url)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
