"""RedisWorkQueue against a real redis-server: delivery, books, failures."""

from __future__ import annotations

import collections
import gc
import json
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import coredis
import pytest
from on_redis.servers import RedisServer, redis_server

from sluicegate import QueueProtocol, QueueStateError, QueueStatus
from sluicegate.redis import RedisQueueBooks, RedisWorkQueue
from sluicegate.redis._calls import read_group
from sluicegate.redis._scripts import ACK, GROUP, PUT

HERE = Path(__file__).parent
IDLE = 0.3  # claim_idle: short, so that reclaims come quickly


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    async with coredis.Redis.from_url(redis_url) as client:
        yield client


async def until(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait until ``check()`` holds: what Redis holds cannot be waited on."""
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await anyio.sleep(0.01)


async def _llen_at_least(client: coredis.Redis[bytes], key: str, n: int) -> bool:
    return await client.llen(key) >= n


def free_slots(client: coredis.Redis[Any]) -> int:
    """Free slots of the client's connection pool (None or an idle connection)."""
    return len(client.connection_pool._available_connections)


def balanced(books: RedisQueueBooks) -> bool:
    return (
        books.enqueued == books.acknowledged + books.outstanding + books.dead_lettered
        and books.stream_length == books.outstanding
    )


async def test_puts_processes_and_acknowledges_every_item(
    client: coredis.Redis[bytes], key: str
) -> None:
    seen: list[object] = []

    async def work(item: object) -> None:
        await anyio.sleep(0.001)
        seen.append(item)

    items: list[object] = [*range(30), b"\x00\xffraw", {"a": [1, None]}, "text"]
    queue: RedisWorkQueue[object] = RedisWorkQueue(
        client, key, maxsize=8, claim_idle=IDLE
    )
    assert isinstance(queue, QueueProtocol)
    with anyio.fail_after(20):
        async with queue:
            await queue.process(work, 4)
            for item in items[:10]:
                assert await queue.put(item)
            assert await queue.put_many(items[10:]) == len(items) - 10
            await queue.join()
            assert queue.status is QueueStatus.PROCESSING
    assert sorted(map(repr, seen)) == sorted(map(repr, items))
    books = await queue.books()
    assert books.enqueued == books.acknowledged == len(items)
    assert balanced(books)
    metrics = queue.metrics
    assert metrics["processed"] == metrics["put"] == len(items)
    assert metrics["errors"] == metrics["reclaimed"] == metrics["released"] == 0
    assert queue.status.value == "stopped"  # (mypy narrowed it to PROCESSING)
    assert free_slots(client) == client.connection_pool.max_connections


async def test_failed_items_are_acknowledged_after_their_handler(
    client: coredis.Redis[bytes], key: str
) -> None:
    handled: list[tuple[str, object]] = []

    async def work(item: int) -> None:
        if item % 3 == 0:
            raise ValueError(item)

    async def on_error(exc: Exception, item: int) -> None:
        books = await queue.books()
        # Not yet acknowledged while its handler runs.
        assert books.outstanding >= 1
        handled.append((type(exc).__name__, item))

    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    with anyio.fail_after(20):
        async with queue:
            await queue.process(work, 2, on_error)
            await queue.put_many(range(9))
            await queue.join()
    assert sorted(handled) == [("ValueError", 0), ("ValueError", 3), ("ValueError", 6)]
    assert queue.metrics["errors"] == 3
    assert queue.metrics["processed"] == 9
    assert (await queue.books()).acknowledged == 9


async def test_backpressure_counts_outstanding_items_exactly(
    client: coredis.Redis[bytes], key: str
) -> None:
    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, maxsize=3, claim_idle=IDLE)
    with anyio.fail_after(20):
        async with queue:
            assert await queue.put_many([1, 2]) == 2
            # One fits: a prefix is accepted, then the timeout runs out.
            assert await queue.put_many([3, 4, 5], timeout=0.05) == 1
            assert not await queue.put(6, timeout=0)
            assert not await queue.put(6, timeout=0.05)
            assert queue.metrics["backpressure_events"] == 3
            books = await queue.books()
            assert (books.enqueued, books.outstanding) == (3, 3)

            # A put waiting for room gets in once an item is acknowledged.
            done = anyio.Event()

            async def work(item: int) -> None:
                await done.wait()

            async with anyio.create_task_group() as tg:
                await queue.process(work, 1, task_group=tg)
                with anyio.fail_after(5):
                    put_done = anyio.Event()

                    async def put_seven() -> None:
                        assert await queue.put(7, timeout=None)
                        put_done.set()

                    tg.start_soon(put_seven)
                    await anyio.sleep(0.1)
                    assert not put_done.is_set()
                    done.set()
                    await put_done.wait()
                    await queue.join()
                await queue.stop()
    books = await queue.books()
    assert (books.enqueued, books.acknowledged, books.outstanding) == (4, 4, 0)


async def test_put_script_runs_once_per_token(
    client: coredis.Redis[bytes], key: str
) -> None:
    """coredis may send a put again after a lost reply: the token makes the
    second run answer what the first did."""
    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, maxsize=10)
    async with queue:
        keys = [queue.keys["stream"], queue.keys["books"], "{" + key + "}:put:t1"]
        args: list[str | int] = [10, 60, "v", "1", "v", "2"]
        assert await PUT.run(client, keys, args) == [2, 2]
        assert await PUT.run(client, keys, args) == [2, -1]
        books = await queue.books()
        assert (books.enqueued, books.stream_length) == (2, 2)


async def test_a_second_acknowledgement_counts_nothing(
    client: coredis.Redis[bytes], key: str
) -> None:
    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key)
    async with queue:
        await queue.put(1)
        entries = await read_group(
            client,
            group=GROUP,
            consumer="c",
            stream=queue.keys["stream"],
            count=10,
            block_ms=10,
        )
        ids = [entry[0] for entry in entries]
        keys = [queue.keys["stream"], queue.keys["books"]]
        assert await ACK.run(client, keys, [GROUP, *ids]) == 1
        assert await ACK.run(client, keys, [GROUP, *ids]) == 0
        books = await queue.books()
        assert (books.acknowledged, books.outstanding) == (1, 0)


async def test_stop_hands_fetched_items_back_to_the_group(
    client: coredis.Redis[bytes], key: str
) -> None:
    """Items fetched but not started (their workers wait for a rate limiter
    that never grants) go back at once: another consumer takes them without
    waiting for claim_idle, and they count as first deliveries there."""

    class Closed:
        async def acquire(self, tokens: float = 1) -> None:
            await anyio.sleep_forever()

        def hold(self, seconds: float) -> None:
            pass

    ran: list[int] = []

    async def work(item: int) -> None:
        ran.append(item)

    first: RedisWorkQueue[int] = RedisWorkQueue(
        client, key, rate_limiter=Closed(), claim_idle=30
    )
    second: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=30)
    with anyio.fail_after(20):
        async with first:
            await first.put_many(range(5))
            await first.process(work, 3)
            await until(lambda: first.in_flight >= 3)
            await first.stop(timeout=0.05)
        assert ran == []
        assert len(first.unprocessed) == 3
        assert first.metrics["released"] == 3
        async with second:
            await second.process(work, 5)
            await second.join()
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert second.metrics["reclaimed"] == 3  # handed back, not waited for
    assert second.metrics["redelivered"] == 0  # they never ran
    assert balanced(await second.books())


async def test_items_of_a_dead_consumer_are_reclaimed(
    client: coredis.Redis[bytes], key: str
) -> None:
    """A consumer whose tasks all end without a stop (as if its process died)
    leaves its items pending; another takes them over after claim_idle."""
    ran: list[int] = []

    async def hang(item: int) -> None:
        await anyio.sleep_forever()

    async def work(item: int) -> None:
        ran.append(item)

    dead: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    alive: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    with anyio.fail_after(20):
        await dead.start()
        await dead.put_many(range(4))
        async with anyio.create_task_group() as tg:
            await dead.process(hang, 2, task_group=tg)
            await until(lambda: dead.in_flight >= 2)
            tg.cancel_scope.cancel()  # no stop: nothing is handed back
        async with alive:
            await alive.process(work, 2)
            await alive.join()
    assert sorted(ran) == [0, 1, 2, 3]
    assert alive.metrics["reclaimed"] == 2
    assert alive.metrics["redelivered"] == 2


async def test_a_live_worker_keeps_its_long_item(
    client: coredis.Redis[bytes], key: str
) -> None:
    runs: list[str] = []

    async def slow(item: int) -> None:
        runs.append("slow")
        await anyio.sleep(1.2)  # four times claim_idle

    async def fast(item: int) -> None:
        runs.append("fast")

    one: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    other: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    with anyio.fail_after(20):
        async with one, other:
            await one.process(slow, 1)
            await one.put(1)
            await until(lambda: bool(runs))
            await other.process(fast, 1)
            await one.join()
    assert runs == ["slow"]
    assert other.metrics["reclaimed"] == 0


async def test_an_item_delivered_too_often_is_dead_lettered(
    client: coredis.Redis[bytes], key: str
) -> None:
    async def hang(item: int) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(20):
        for _ in range(2):  # two deliveries, each to a consumer that dies
            queue: RedisWorkQueue[int] = RedisWorkQueue(
                client, key, max_deliveries=2, claim_idle=IDLE
            )
            await queue.start()
            if not (await queue.books()).enqueued:
                await queue.put(42)
            async with anyio.create_task_group() as tg:
                await queue.process(hang, 1, task_group=tg)
                await until(lambda q=queue: q.in_flight > 0)  # type: ignore[misc]
                tg.cancel_scope.cancel()
        last: RedisWorkQueue[int] = RedisWorkQueue(
            client, key, max_deliveries=2, claim_idle=IDLE
        )
        async with last:
            await last.process(hang, 1)
            await last.join()  # the third delivery is not made: dead-lettered
    assert last.metrics["dead_lettered_here"] == 1
    books = await last.books()
    assert (books.dead_lettered, books.dead_length, books.outstanding) == (1, 1, 0)
    assert balanced(books)
    [entry] = await client.xrange(last.keys["dead"])
    fields = entry.field_values
    assert fields[b"deliveries"] == b"3"
    assert fields[b"v"] == b"42"


async def test_an_unreadable_entry_is_dead_lettered(
    client: coredis.Redis[bytes], key: str
) -> None:
    async def work(item: object) -> None:
        pass

    queue: RedisWorkQueue[object] = RedisWorkQueue(client, key, claim_idle=IDLE)
    with anyio.fail_after(20):
        async with queue:
            await queue.put(b"not json")  # stored raw
            await queue.put(1)
            await client.xadd(queue.keys["stream"], {"v": b"{oops"})
            await client.hincrby(queue.keys["books"], "enqueued", 1)
            await queue.process(work, 1)
            await queue.join()
    books = await queue.books()
    assert (books.acknowledged, books.dead_lettered) == (2, 1)
    assert queue.metrics["dead_lettered_here"] == 1


async def test_scripts_are_loaded_again_after_script_flush(
    client: coredis.Redis[bytes], key: str
) -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        seen.append(item)

    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    with anyio.fail_after(20):
        async with queue:
            await queue.process(work, 2)
            for item in range(20):
                if item % 5 == 0:
                    await client.script_flush()
                await queue.put(item)
            await queue.join()
    assert sorted(seen) == list(range(20))


async def test_cancellation_storm_leaves_the_pool_whole(
    client: coredis.Redis[bytes], key: str
) -> None:
    """Random cancellations around put, process and stop: afterwards the
    pool's free slots are what they were, and the books balance."""
    rng = random.Random(7)
    before = free_slots(client)
    accepted: list[int] = []
    done: list[int] = []

    async def work(item: int) -> None:
        await anyio.sleep(rng.random() * 0.01)
        done.append(item)

    async def one_round(n: int) -> None:
        queue: RedisWorkQueue[int] = RedisWorkQueue(
            client, key, maxsize=20, claim_idle=IDLE
        )
        with anyio.move_on_after(rng.random() * 0.05):
            async with queue:
                await queue.process(work, 3)
                for item in range(n * 100, n * 100 + 30):
                    if await queue.put(item, timeout=0.01):
                        accepted.append(item)
                with anyio.move_on_after(rng.random() * 0.02):
                    await queue.stop(timeout=rng.random() * 0.01)

    with anyio.fail_after(40):
        for n in range(25):
            await one_round(n)
        # Whatever the rounds left behind is processed by a last consumer.
        queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
        async with queue:
            await queue.process(work, 4)
            await queue.join()
    assert free_slots(client) == before
    assert set(accepted) <= set(done)
    books = await queue.books()
    assert balanced(books)
    assert books.outstanding == 0


async def test_killed_connections_neither_hang_nor_lose_items(
    client: coredis.Redis[bytes], redis_url: str, key: str
) -> None:
    done: list[int] = []

    async def work(item: int) -> None:
        await anyio.sleep(0.002)
        done.append(item)

    name = f"victim-{uuid.uuid4().hex[:8]}"
    async with coredis.Redis.from_url(redis_url, client_name=name) as victim:
        queue: RedisWorkQueue[int] = RedisWorkQueue(
            victim, key, maxsize=10, claim_idle=IDLE
        )
        before = free_slots(victim)
        with anyio.fail_after(30):
            async with queue:
                await queue.process(work, 3)
                for item in range(60):
                    assert await queue.put(item)
                    if item % 15 == 7:
                        for info in await client.client_list():
                            if info.get("name") == name:
                                await client.client_kill(identifier=info["id"])
                await queue.join()
        assert free_slots(victim) == before
        assert balanced(await queue.books())
    assert set(done) == set(range(60))


# coredis 6.9 leaves the memory streams of a connection it could not open
# (the server was down) unclosed; collected here, they are this test's.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_server_restart_neither_hangs_nor_loses_items(key: str) -> None:
    done: list[int] = []

    async def work(item: int) -> None:
        await anyio.sleep(0.005)
        done.append(item)

    # A server of this test's own, persisting every write (AOF).
    with redis_server("--appendonly", "yes", "--appendfsync", "always") as server:
        try:
            queue: RedisWorkQueue[int] = RedisWorkQueue(
                server.url, key, maxsize=10, claim_idle=IDLE
            )
            with anyio.fail_after(40):
                async with queue:
                    await queue.process(work, 3)
                    for item in range(40):
                        assert await queue.put(item)
                        if item == 20:
                            # A clean shutdown: the AOF is kept.
                            await anyio.to_thread.run_sync(
                                partial(server.stop, graceful=True)
                            )
                            await anyio.to_thread.run_sync(server.start)
                    await queue.join()
                    books = await queue.books()
        finally:
            gc.collect()
    assert set(done) == set(range(40))
    assert balanced(books)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigkill_of_a_worker_process_loses_nothing(
    redis_url: str, key: str, backend: str
) -> None:
    """Three worker processes; one is killed while it holds items. Every item
    is processed; an item runs twice only if the killed process had it."""

    def spawn(item_seconds: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                *(sys.executable, str(HERE / "queue_proc.py")),
                *(redis_url, key, backend, str(item_seconds)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    async def main() -> None:
        async with coredis.Redis.from_url(redis_url) as client:
            procs = [spawn(30), spawn(0.01), spawn(0.01)]
            try:
                with anyio.fail_after(30):
                    await until(lambda: _llen_at_least(client, f"{key}:ready", 3))
                    queue: RedisWorkQueue[int] = RedisWorkQueue(
                        client, key, claim_idle=IDLE
                    )
                    async with queue:
                        victim = procs[0]
                        await queue.put_many(range(60))
                        started = f"{key}:started:{victim.pid}"
                        await until(lambda: _llen_at_least(client, started, 1))
                        victim.kill()
                        victim.wait()
                        await queue.join()
                        books = await queue.books()
                for proc in procs[1:]:
                    proc.send_signal(signal.SIGTERM)
                outputs = [proc.communicate(timeout=20)[0] for proc in procs[1:]]
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    if proc.stdout is not None:
                        proc.stdout.close()
            held = {int(item) for item in await client.lrange(started, 0, -1)}
            done = collections.Counter(
                int(item) for item in await client.lrange(f"{key}:done", 0, -1)
            )
        assert set(done) == set(range(60))
        assert {item for item, count in done.items() if count > 1} <= held
        assert held
        assert books.outstanding == 0
        assert balanced(books)
        metrics = [json.loads(output) for output in outputs]
        assert sum(m["reclaimed"] for m in metrics) >= len(held)
        assert sum(m["processed"] for m in metrics) == sum(done.values())

    anyio.run(main, backend="asyncio")


async def test_arguments_are_checked_at_the_call(
    client: coredis.Redis[bytes], key: str
) -> None:
    with pytest.raises(TypeError, match="redis must be"):
        RedisWorkQueue(42, key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="redis must be"):
        RedisWorkQueue("http://localhost", key)
    with pytest.raises(TypeError, match="name must be"):
        RedisWorkQueue(client, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must be"):
        RedisWorkQueue(client, "")
    with pytest.raises(ValueError, match="maxsize must be at least 1"):
        RedisWorkQueue(client, key, maxsize=0)
    with pytest.raises(ValueError, match="claim_idle"):
        RedisWorkQueue(client, key, claim_idle=0)
    with pytest.raises(ValueError, match="max_deliveries"):
        RedisWorkQueue(client, key, max_deliveries=0)
    with pytest.raises(TypeError, match="serializer"):
        RedisWorkQueue(client, key, serializer=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rate_limiter"):
        RedisWorkQueue(client, key, rate_limiter=3)  # type: ignore[arg-type]
    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key)
    assert "idle" in repr(queue)
    assert key in repr(queue)
    with pytest.raises(QueueStateError, match="idle"):
        await queue.put(1)
    with pytest.raises(QueueStateError, match="is idle"):
        await queue.process(lambda item: anyio.lowlevel.checkpoint(), 1)
    async with queue:
        with pytest.raises(ValueError, match="num_workers"):
            await queue.process(lambda item: anyio.lowlevel.checkpoint(), 0)
        with pytest.raises(TypeError, match="worker_func"):
            await queue.process(3, 1)  # type: ignore[arg-type]
        await queue.process(lambda item: anyio.lowlevel.checkpoint(), 1)
        with pytest.raises(QueueStateError, match="already has workers"):
            await queue.process(lambda item: anyio.lowlevel.checkpoint(), 1)
        with pytest.raises(TypeError, match="items must be an iterable"):
            await queue.put_many(5)  # type: ignore[arg-type]
        # One str or bytes item would be put character by character (or as
        # ints): put() is what was meant.
        with pytest.raises(TypeError, match=r"items must be .* not bytes.*put\(\)"):
            await queue.put_many(b"raw")
        with pytest.raises(TypeError, match=r"not str"):
            await queue.put_many("text")  # type: ignore[arg-type]
        assert (await queue.books()).enqueued == 0
    url_queue: RedisWorkQueue[int] = RedisWorkQueue("redis://localhost:1/0", key)
    with pytest.raises(QueueStateError, match="URL"):
        await url_queue.start()
    with pytest.raises(QueueStateError, match="URL"):
        await url_queue.books()  # its client lives only in `async with`


async def test_batch_process_puts_and_processes_everything(
    client: coredis.Redis[bytes], key: str
) -> None:
    seen: list[int] = []

    async def work(item: int) -> None:
        seen.append(item)

    async def items() -> AsyncIterator[int]:
        for item in range(25):
            yield item

    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, maxsize=5, claim_idle=IDLE)
    with anyio.fail_after(20):
        await queue.batch_process(items(), work, 3)
        await queue.batch_process(range(25, 30), work, 2)
    assert sorted(seen) == list(range(30))
    assert queue.status is QueueStatus.STOPPED
    assert (await queue.books()).acknowledged == 30


@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*MemoryObject:pytest.PytestUnraisableExceptionWarning"
)
async def test_on_a_redis_cluster(cluster: list[RedisServer], key: str) -> None:
    """Two queues on one name (two processes, as far as Redis can tell) share
    the work on a three-node cluster: every key has the queue's hash tag."""
    seen: list[int] = []

    async def work(item: int) -> None:
        await anyio.sleep(0.001)
        seen.append(item)

    client: coredis.RedisCluster[Any] = coredis.RedisCluster(
        "127.0.0.1", cluster[0].port
    )
    with anyio.fail_after(20):
        async with client:
            first: RedisWorkQueue[int] = RedisWorkQueue(client, key, maxsize=10)
            second: RedisWorkQueue[int] = RedisWorkQueue(client, key, maxsize=10)
            async with first, second:
                await first.process(work, 3)
                await second.process(work, 3)
                assert await first.put_many(range(5)) == 5
                for item in range(5, 40):
                    assert await second.put(item)
                await first.join()
                books = await first.books()
    assert sorted(seen) == list(range(40))
    assert books.enqueued == books.acknowledged == 40
    assert balanced(books)
    assert first.metrics["processed"] + second.metrics["processed"] == 40


class Fatal(BaseException):
    """A BaseException of the user's own (KeyboardInterrupt, SystemExit-like)."""


async def test_exceptions_come_out_as_raised(
    client: coredis.Redis[bytes], key: str
) -> None:
    """As from a WorkQueue: the one exception that ended the block, a worker's
    BaseException, an error from a batch's items, not an ExceptionGroup."""

    async def slow(item: int) -> None:
        await anyio.sleep(1)

    async def fatal(item: int) -> None:
        raise Fatal

    def items() -> Iterator[int]:
        yield 1
        raise LookupError("no more items")

    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    with anyio.fail_after(10):
        with pytest.raises(ValueError, match="in the block"):
            async with queue:
                await queue.put_many(range(3))
                await queue.process(slow, 2)
                await until(lambda: queue.in_flight == 2)
                raise ValueError("in the block")
        assert sorted(queue.unprocessed) == [0, 1]  # cancelled, handed back
        with pytest.raises(Fatal):
            async with queue:
                await queue.process(fatal, 1)
                await anyio.sleep_forever()
        with pytest.raises(LookupError, match="no more items"):
            await queue.batch_process(items(), slow, 1)
    assert balanced(await queue.books())


async def test_a_cancelled_stop_still_hands_back_what_this_process_held(
    client: coredis.Redis[bytes], key: str
) -> None:
    """stop() (or the block's exit) cancelled while workers finish: the workers
    are cancelled and every item this process held is handed back and listed,
    none left pending here until claim_idle."""

    async def slow(item: int) -> None:
        await anyio.sleep(5)

    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=30)
    with anyio.fail_after(10):
        async with queue:
            await queue.put_many(range(4))
            await queue.process(slow, 2)
            await until(lambda: queue.in_flight == 2)
            with anyio.move_on_after(0.05):
                await queue.stop()
            assert queue.status is QueueStatus.STOPPED
            assert queue.in_flight == 0
        with anyio.move_on_after(0.3):  # the block's exit, cancelled
            async with queue:
                await queue.process(slow, 3)
                await until(lambda: queue.in_flight == 3)
    assert queue.in_flight == 0
    assert queue.worker_count == 0
    assert sorted(queue.unprocessed) == [0, 0, 1, 1, 2]
    assert queue.metrics["released"] == 5
    # Handed back: pending still, but idle as if for ever, for any consumer's
    # next XAUTOCLAIM.
    handed_back = await client.xpending(
        queue.keys["stream"], GROUP, start="-", end="+", count=10, idle=10**9
    )
    assert len(handed_back) == 3
    assert (await queue.books()).pending == 3


async def test_join_returns_when_the_queue_stops(
    client: coredis.Redis[bytes], key: str
) -> None:
    """A worker that stops the queue (a fatal condition, say) ends a join that
    waits, as for a WorkQueue: nothing here would process the rest."""
    ran: list[int] = []

    async def work(item: int) -> None:
        ran.append(item)
        if item == 2:
            await queue.stop()

    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    with anyio.fail_after(5):
        async with queue:
            await queue.put_many(range(10))
            await queue.process(work, 1)
            await queue.join()
            assert queue.status is QueueStatus.STOPPED
    assert ran == [0, 1, 2]
    books = await queue.books()
    assert (books.acknowledged, books.outstanding) == (3, 7)

    # A join that begins while stops are under way ends with them.
    async def slow(item: int) -> None:
        await anyio.sleep(5)

    with anyio.fail_after(5):
        async with queue:
            await queue.process(slow, 2)
            await until(lambda: queue.in_flight == 2)
            async with anyio.create_task_group() as tg:
                tg.start_soon(queue.stop, 0.3)  # STOPPING for 0.3 s
                await until(lambda: queue.status is QueueStatus.STOPPING)
                tg.start_soon(queue.stop, 0.3)
                tg.start_soon(queue.join)
            await queue.join()  # stopped: at once, as a WorkQueue's
    assert queue.in_flight == 0


async def test_a_cancelled_producer_stops_putting(
    client: coredis.Redis[bytes], key: str
) -> None:
    """Every Redis call is shielded, so put must look for a cancellation
    itself: a cancelled producer with room in the queue puts nothing more."""
    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    puts = 0
    with anyio.fail_after(5):
        async with queue:
            with anyio.CancelScope() as scope:
                scope.cancel()
                for item in range(20):
                    puts += 1
                    await queue.put(item)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await queue.put_many(range(5))
            assert (await queue.books()).enqueued == 0
    assert puts == 1


async def test_an_item_the_serializer_cannot_store_is_refused_at_the_put(
    client: coredis.Redis[bytes], key: str
) -> None:
    class Picky:
        def dumps(self, item: object) -> bytes:
            if item == "bad":
                raise ValueError("no bad items")
            return json.dumps(item).encode()

        def loads(self, data: bytes) -> object:
            return json.loads(data)

    queue: RedisWorkQueue[Any] = RedisWorkQueue(client, key)
    picky: RedisWorkQueue[Any] = RedisWorkQueue(client, key, serializer=Picky())
    async with queue, picky:
        with pytest.raises(TypeError, match=r"cannot store the item \{1, 2\}") as info:
            await queue.put_many([1, {1, 2}])
        assert "JSON serializable" in str(info.value)
        with pytest.raises(TypeError, match="cannot store the item 'bad'") as info:
            await picky.put("bad")
        assert isinstance(info.value.__cause__, ValueError)
        assert (await queue.books()).enqueued == 0  # none of the batch


async def test_a_worker_function_that_is_not_async_is_named(
    client: coredis.Redis[bytes], key: str
) -> None:
    """As in a WorkQueue: the item fails with a TypeError that names the
    function and says to use `async def`."""
    errors: list[Exception] = []

    def not_async(item: int) -> None:
        pass

    async def on_error(exc: Exception, item: int) -> None:
        errors.append(exc)

    queue: RedisWorkQueue[int] = RedisWorkQueue(client, key, claim_idle=IDLE)
    with anyio.fail_after(5):
        async with queue:
            await queue.put(1)
            await queue.process(not_async, 1, on_error)  # type: ignore[arg-type]
            await queue.join()
    [error] = errors
    assert isinstance(error, TypeError)
    assert "not_async" in str(error)
    assert "async def" in str(error)
