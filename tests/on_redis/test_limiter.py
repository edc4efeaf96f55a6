"""RedisRateLimiter against a real redis-server.

The bound is checked on the times the server granted tokens (its TIME, as the
script returns it): in every window of t seconds at most
``burst + rate * t / period`` grants. The server's clock is real, so runs are
short: rates of a few hundred tokens a second for about a second.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import json
import math
import os
import random
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.abc
import coredis
import pytest
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import InvalidResponse
from on_redis.limiter_proc import server_time
from on_redis.servers import RedisServer, redis_server

from sluicegate import QueueStateError, WorkQueue
from sluicegate.redis import RedisRateLimiter
from sluicegate.redis import _limiter as limiter_module

HERE = os.path.dirname(os.path.abspath(__file__))

#: coredis 6.9 leaves memory object streams unclosed: six for each connection
#: it could not open, two for each RedisCluster client; they warn when
#: collected. Tests that meet these collect them before they end.
coredis_leaves_streams_unclosed = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


def collect_unclosed() -> None:
    """Collect what coredis left unclosed, without its warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


#: Grant times are whole microseconds read as float seconds (about 0.2 µs
#: apart at today's epoch): allow a few microseconds' worth of tokens.
SLACK = 1e-3


def worst_excess(times: list[float], rate: float, burst: float) -> float:
    """The most grants in any window beyond ``burst + rate * t`` (period 1 s).

    <= 0 (up to rounding) means the bound holds for every window.
    """
    ordered = sorted(times)
    worst = -math.inf
    for i, start in enumerate(ordered):
        for j in range(i, len(ordered)):
            worst = max(worst, (j - i + 1) - burst - rate * (ordered[j] - start))
    return worst


def free_slots(client: object) -> int:
    """Connections the pool can still hand out: idle ones and unused slots.

    coredis keeps them in one stack of ``max_connections`` entries (None for
    a slot with no connection yet); a slot lost to a cancelled call is gone
    from it for good.
    """
    assert isinstance(client, coredis.Redis)
    return len(client.connection_pool._available_connections)


class ScriptSpy:
    """The limiter's script, with a hook that runs after each call returns."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sha = real.sha
        self.after_call: Callable[[], object] = lambda: None

    async def run(self, *args: Any) -> object:
        reply = await self.real.run(*args)
        self.after_call()
        return reply


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> ScriptSpy:
    spy = ScriptSpy(limiter_module._SCRIPT)
    monkeypatch.setattr(limiter_module, "_SCRIPT", spy)
    return spy


@asynccontextmanager
async def connect(url: str, **settings: Any) -> AsyncIterator[coredis.Redis[Any]]:
    client: coredis.Redis[Any] = coredis.Redis.from_url(url, **settings)
    async with client:
        yield client


async def kill_clients(url: str) -> None:
    """CLIENT KILL every normal connection but the one that sends it."""
    await anyio.run_process(
        ["redis-cli", "-u", url, "CLIENT", "KILL", "TYPE", "normal"], check=False
    )


async def take_until(limiter: RedisRateLimiter, end: float, times: list[float]) -> None:
    """Take tokens one by one, recording grant times, until a grant after ``end``."""
    while (granted := await limiter._acquire()) <= end:
        times.append(granted)


# Arguments


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "words"),
    [
        ((None, "k", 1), {}, TypeError, "client must be a coredis"),
        (("redis://x", "k", 1), {}, TypeError, "from_url"),
        (("C", 3, 1), {}, TypeError, "key must be a str"),
        (("C", "", 1), {}, ValueError, "key must be a non-empty"),
        (("C", "}x", 1), {}, ValueError, "key must be"),
        (("C", "k", "1"), {}, TypeError, "rate must be a number"),
        (("C", "k", 0), {}, ValueError, "rate must be a finite number > 0"),
        (("C", "k", 1, math.inf), {}, ValueError, "period must be"),
        (("C", "k", 1), {"burst": 0.5}, ValueError, "burst must be at least 1"),
        (("C", "k", 1), {"timeout": 0}, ValueError, "timeout must be"),
        (("C", "k", 1), {"timeout": None}, TypeError, "timeout must be"),
    ],
)
def test_bad_arguments_say_which_and_why(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    client = coredis.Redis()  # never connects: nothing is sent
    args = tuple(client if arg == "C" else arg for arg in args)
    with pytest.raises(error, match=words):
        RedisRateLimiter(*args, **kwargs)


def test_settings_are_readable_and_shown() -> None:
    client = coredis.Redis()
    limiter = RedisRateLimiter(client, "api", 10, 2)
    assert (limiter.key, limiter.rate, limiter.period, limiter.burst) == (
        "api",
        10,
        2,
        1,
    )
    assert limiter.client is client
    assert repr(limiter) == "RedisRateLimiter(key='api', rate=10, period=2, burst=1)"
    assert RedisRateLimiter(client, "api", 0.5).burst == 1
    assert RedisRateLimiter(client, "api", 10, burst=4).burst == 4


async def test_bad_tokens_and_holds(redis_url: str, key: str) -> None:
    async with connect(redis_url) as client:
        limiter = RedisRateLimiter(client, key, 10, burst=3)
        with pytest.raises(TypeError, match="tokens must be a number"):
            await limiter.acquire("1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"at most burst \(3\)"):
            await limiter.acquire(4)
        with pytest.raises(ValueError, match="tokens must be > 0"):
            await limiter.acquire(0)
        with pytest.raises(TypeError, match="seconds must be a number"):
            limiter.hold(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="seconds must be a finite number"):
            limiter.hold(-1)
        assert limiter._calls == 0  # nothing was sent


async def test_a_closed_client_is_a_state_error(redis_url: str, key: str) -> None:
    async with RedisRateLimiter.from_url(redis_url, key, 100) as limiter:
        await limiter.acquire()
    with pytest.raises(QueueStateError, match="not open"):
        await limiter.acquire()


async def test_from_url_checks_arguments_before_connecting() -> None:
    with pytest.raises(ValueError, match="rate must be"):
        async with RedisRateLimiter.from_url("redis://127.0.0.1:1", "k", -1):
            pass  # pragma: no cover


# The bound, and how much of it is used


async def test_bound_and_throughput_in_one_process(redis_url: str, key: str) -> None:
    rate, burst, duration = 200.0, 10.0, 0.6
    times: list[float] = []
    async with RedisRateLimiter.from_url(redis_url, key, rate, burst=burst) as limiter:
        end = await server_time(limiter.client) + duration
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(take_until, limiter, end, times)
        # One call to Redis per grant while tokens are there, two (one to
        # learn the wait) when not: nobody polls.
        assert limiter._calls <= 2 * len(times) + 16
    assert worst_excess(times, rate, burst) <= SLACK
    assert len(times) >= 0.9 * (burst + rate * duration)


def test_bound_across_four_processes(redis_url: str, key: str) -> None:
    """Two asyncio and two trio processes share one bucket."""
    rate, burst, duration = 200.0, 10.0, 0.6

    async def now() -> float:
        async with connect(redis_url) as client:
            return await server_time(client)

    script = os.path.join(HERE, "limiter_proc.py")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                script,
                redis_url,
                key,
                str(rate),
                str(burst),
                backend,
                "4",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for backend in ("asyncio", "trio", "asyncio", "trio")
    ]
    try:
        for proc in procs:  # connected, so all start together
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        start = anyio.run(now) + 0.1
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start!r} {start + duration!r}\n")
            proc.stdin.flush()
        per_process = [json.loads(proc.communicate(timeout=30)[0]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert [proc.returncode for proc in procs] == [0] * 4
    times = [t for granted in per_process for t in granted]
    assert worst_excess(times, rate, burst) <= SLACK
    assert len(times) >= 0.9 * (burst + rate * duration)
    assert all(granted for granted in per_process)  # nobody starved


async def test_cancelled_acquires_waste_little_budget(redis_url: str, key: str) -> None:
    """30% of acquires cancelled at random: >= 90% of the allowed tokens granted."""
    rate, burst, duration = 200.0, 10.0, 0.8
    rng = random.Random(20240611)
    times: list[float] = []
    attempts = cancelled = 0
    async with RedisRateLimiter.from_url(redis_url, key, rate, burst=burst) as limiter:
        start = await server_time(limiter.client)
        end = start + duration

        async def take() -> None:
            nonlocal attempts, cancelled
            while True:
                attempts += 1
                if rng.random() < 0.4:
                    with anyio.move_on_after(rng.uniform(0, 0.005)) as scope:
                        granted = await limiter._acquire()
                    if scope.cancelled_caught:
                        cancelled += 1
                        continue
                else:
                    granted = await limiter._acquire()
                if granted > end:
                    return
                times.append(granted)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(take)
    allowed = burst + rate * duration
    print(
        f"cancelled {cancelled}/{attempts} acquires ({cancelled / attempts:.0%}); "
        f"granted {len(times)} of {allowed:g} allowed ({len(times) / allowed:.1%})"
    )
    assert cancelled >= 0.3 * attempts
    assert worst_excess(times, rate, burst) <= SLACK
    assert len(times) >= 0.9 * allowed


async def test_tokens_granted_to_a_cancelled_call_are_given_back(
    redis_url: str, key: str, spy: ScriptSpy
) -> None:
    async with connect(redis_url) as client:
        limiter = RedisRateLimiter(client, key, 1, burst=1)  # then 1 s a token
        with anyio.fail_after(5), anyio.CancelScope() as scope:
            # Cancelled while the call that takes the token is under way.
            spy.after_call = scope.cancel
            await limiter.acquire()
        spy.after_call = lambda: None
        assert scope.cancelled_caught
        assert limiter._calls == 2  # take, then give back
        other = RedisRateLimiter(client, key, 1, burst=1)
        granted, _, _ = await other._call("take", 1)
        assert granted  # the token is still there


async def test_a_repeated_call_is_not_counted_twice(redis_url: str, key: str) -> None:
    """coredis sends a call again when the reply was lost: that changes nothing."""
    async with connect(redis_url) as client:
        limiter = RedisRateLimiter(client, key, 10, burst=2)
        state_key = f"{{{key}}}:state"
        first = await limiter._call("take", 1)
        state = await client.hgetall(state_key)
        limiter._calls -= 1  # the same call once more
        assert await limiter._call("take", 1) == first
        assert await client.hgetall(state_key) == state
        await limiter._call("give", 1)
        given_back = await client.hgetall(state_key)
        limiter._calls -= 1
        await limiter._call("give", 1)
        assert await client.hgetall(state_key) == given_back


# Holds


async def test_a_hold_stops_every_user_of_the_key(redis_url: str, key: str) -> None:
    async with connect(redis_url) as client:
        here = RedisRateLimiter(client, key, 1000)
        elsewhere = RedisRateLimiter(client, key, 1000)  # another process, say
        before = await server_time(client)
        here.hold(0.2)
        granted, wait, _ = await here._call("take", 1)  # sends the hold
        assert not granted
        # The hold, then a token's time (1 ms): the bucket is empty at its end.
        assert 0.191e6 < wait <= 0.201e6
        with anyio.fail_after(5):
            assert await elsewhere._acquire() >= before + 0.201


async def test_a_hold_wakes_the_head_to_send_it(
    redis_url: str, key: str, spy: ScriptSpy
) -> None:
    async with connect(redis_url) as client:
        limiter = RedisRateLimiter(client, key, 2, burst=1)
        other = RedisRateLimiter(client, key, 2, burst=1)
        await limiter.acquire()  # the bucket is empty for 0.5 s
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                called = anyio.Event()
                spy.after_call = called.set
                tg.start_soon(limiter.acquire)
                await called.wait()  # told to wait 0.5 s: the head sleeps
                sent = anyio.Event()
                spy.after_call = sent.set
                limiter.hold(1.0)
                await sent.wait()  # woken at once, it sent the hold
                # Another user of the key is held too, beyond the 0.5 s.
                granted, wait, _ = await other._call("take", 1)
                assert not granted
                assert wait > 0.9e6
                tg.cancel_scope.cancel()


# "n per second" means n in any second; a hold ends at the rate


def micros(times: list[float]) -> list[int]:
    """Grant times as the server's whole microseconds (what the script returns)."""
    return sorted(round(t * 1_000_000) for t in times)


def most_in_half_open(times: list[int], period: int) -> int:
    """The most timestamps in any half-open window [s, s + period)."""
    return max(
        (bisect.bisect_left(times, t + period) - i for i, t in enumerate(times)),
        default=0,
    )


async def test_by_default_n_per_period_means_n_in_every_window_of_period(
    redis_url: str, key: str
) -> None:
    """``RedisRateLimiter(client, key, 20, 0.1)``: at most 20 grants in every
    window of 0.1 s, from the first call on, through rushes of waiters in two
    limiters on the key, idle gaps and a trickle."""
    rng = random.Random(4)
    times: list[float] = []
    async with connect(redis_url) as client:
        here = RedisRateLimiter(client, key, 20, 0.1)
        elsewhere = RedisRateLimiter(client, key, 20, 0.1)  # another process, say
        assert here.burst == 1

        async def trickle(limiter: RedisRateLimiter, end: float) -> None:
            while (granted := await limiter._acquire()) <= end:
                times.append(granted)
                await anyio.sleep(rng.uniform(0, 0.02))

        with anyio.fail_after(10):
            for phase in ("rush", "idle", "trickle", "rush"):
                end = await server_time(client) + 0.15
                if phase == "idle":
                    await anyio.sleep(0.15)
                    continue
                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        limiter = (here, elsewhere)[i % 2]
                        if phase == "rush":
                            tg.start_soon(take_until, limiter, end, times)
                        else:
                            tg.start_soon(trickle, limiter, end)
    assert len(times) > 20
    assert most_in_half_open(micros(times), 100_000) <= 20


@pytest.mark.parametrize("burst", [None, 20])
async def test_after_a_hold_grants_resume_at_the_rate(
    redis_url: str, key: str, burst: float | None
) -> None:
    """A hold sent while callers of two limiters on the key wait: from its end
    h on the server's clock, at most ``rate * t`` grants in [h, h + t], for
    every t, whatever the burst."""
    rate = 200.0
    times: list[float] = []
    async with connect(redis_url) as client:
        here = RedisRateLimiter(client, key, rate, burst=burst)
        elsewhere = RedisRateLimiter(client, key, rate, burst=burst)
        end = await server_time(client) + 0.5
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(take_until, here, end, times)
                    tg.start_soon(take_until, elsewhere, end, times)
                await anyio.sleep(0.1)
                here.hold(0.1)
        held = await client.hget(f"{{{key}}}:state", "held")
    assert held is not None
    h = int(float(held))
    granted = micros(times)
    after = [t for t in granted if t >= h]
    assert len(after) > 20
    assert not [t for t in granted if h - 50_000 < t < h]
    for count, t in enumerate(after, 1):
        assert count <= rate * (t - h) / 1e6 + 1e-6, (count, t - h)


async def test_a_token_given_back_during_a_hold_leaves_its_end_empty(
    redis_url: str, key: str, spy: ScriptSpy
) -> None:
    """A grant cancelled on its way back is given back in the call that also
    sends a hold: the bucket is still empty at the end of the hold."""
    async with connect(redis_url) as client:
        limiter = RedisRateLimiter(client, key, 2)  # a token every 0.5 s
        other = RedisRateLimiter(client, key, 2)

        def cancel_and_hold() -> None:
            spy.after_call = lambda: None
            scope.cancel()
            limiter.hold(0.3)  # sent with the call that gives the token back

        with anyio.fail_after(5), anyio.CancelScope() as scope:
            spy.after_call = cancel_and_hold
            await limiter.acquire()
        assert limiter._calls == 2  # take, then give back (and hold)
        granted, wait, _ = await other._call("take", 1)
        assert not granted
        assert wait > 0.75e6  # 0.3 s of hold, then a token's 0.5 s


# coredis: cancellation, lost connections, NOSCRIPT, replies


async def test_a_cancel_storm_leaves_every_pool_slot(redis_url: str, key: str) -> None:
    """Random cancellations around acquire, connections killed meanwhile."""
    rng = random.Random(5)
    errors = 0
    async with connect(redis_url, max_connections=4) as client:
        before = free_slots(client)
        limiters = [RedisRateLimiter(client, key, 2000, burst=5) for _ in range(6)]

        async def storm(limiter: RedisRateLimiter) -> None:
            nonlocal errors
            for _ in range(30):
                with anyio.move_on_after(rng.uniform(0, 0.004)):
                    try:
                        await limiter.acquire()
                    except RedisConnectionError:
                        errors += 1

        async def killer() -> None:
            for _ in range(4):
                await anyio.sleep(0.03)
                await kill_clients(redis_url)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for limiter in limiters:
                    tg.start_soon(storm, limiter)
                    tg.start_soon(storm, limiter)
                tg.start_soon(killer)
            assert free_slots(client) == before
            for limiter in limiters:
                await limiter.acquire()
        assert errors <= 12  # coredis mostly reconnects and retries on its own


async def test_client_kill_mid_run_does_not_hang(redis_url: str, key: str) -> None:
    rate, burst = 300.0, 5.0
    times: list[float] = []
    async with RedisRateLimiter.from_url(redis_url, key, rate, burst=burst) as limiter:
        before = free_slots(limiter.client)
        end = await server_time(limiter.client) + 0.5
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(take_until, limiter, end, times)
                for _ in range(3):
                    await anyio.sleep(0.1)
                    await kill_clients(redis_url)
        assert free_slots(limiter.client) == before
    assert worst_excess(times, rate, burst) <= SLACK
    assert len(times) >= 0.5 * (burst + rate * 0.5)


@coredis_leaves_streams_unclosed
async def test_a_server_restart_mid_run_does_not_hang(key: str) -> None:
    with redis_server() as server:
        async with RedisRateLimiter.from_url(server.url, key, 500, burst=5) as limiter:
            before = free_slots(limiter.client)
            outcomes = {"granted": 0, "failed": 0}
            restarted = anyio.Event()

            async def take() -> None:
                while not restarted.is_set() or outcomes["granted"] < 40:
                    try:
                        await limiter.acquire()
                    except (RedisConnectionError, TimeoutError):
                        outcomes["failed"] += 1
                        await anyio.sleep(0.01)
                    else:
                        outcomes["granted"] += 1

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for _ in range(3):
                        tg.start_soon(take)
                    await anyio.sleep(0.1)
                    server.stop()
                    await anyio.sleep(0.2)
                    await anyio.to_thread.run_sync(server.start)
                    outcomes["granted"] = 0
                    restarted.set()
            assert outcomes["failed"] > 0
            assert free_slots(limiter.client) == before
    collect_unclosed()


@coredis_leaves_streams_unclosed
async def test_a_silent_server_cannot_hang_a_caller(key: str) -> None:
    """A server that accepts connections and never answers: `timeout` bounds it."""

    async def silent(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, silent)
            url = f"redis://127.0.0.1:{port}/0"
            async with RedisRateLimiter.from_url(url, key, 10, timeout=0.2) as limiter:
                with anyio.fail_after(5):
                    with pytest.raises(TimeoutError, match=r"within 0\.2 s"):
                        await limiter.acquire()
                    # Cancelled meanwhile: the caller's own cancellation, not
                    # the TimeoutError, once the bound has passed.
                    with anyio.move_on_after(0.05) as scope:
                        await limiter.acquire()
                    assert scope.cancelled_caught
            tg.cancel_scope.cancel()
    collect_unclosed()


async def test_script_flush_loads_the_script_again(redis_url: str, key: str) -> None:
    sha = limiter_module._SCRIPT.sha
    async with connect(redis_url) as client:
        limiter = RedisRateLimiter(client, key, 100)
        await limiter.acquire()
        await client.script_flush()
        assert await client.script_exists([sha]) == (False,)
        await limiter.acquire()
        assert await client.script_exists([sha]) == (True,)


async def test_a_reply_of_the_wrong_shape_is_an_error(
    redis_url: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies: list[object] = [b"OK", [1, 0], [1, 0, "x"], [2, 0, 1], [0, -1, 1]]

    async def run(*args: object) -> object:
        return replies.pop(0)

    async with connect(redis_url) as client:
        limiter = RedisRateLimiter(client, key, 100)
        monkeypatch.setattr(limiter_module, "_SCRIPT", SimpleNamespace(run=run))
        for _ in range(len(replies)):
            with pytest.raises(InvalidResponse, match="RedisRateLimiter's script"):
                await limiter.acquire()


# With the rest of sluicegate


async def test_async_with_takes_one_token(redis_url: str, key: str) -> None:
    async with connect(redis_url) as client:
        limiter = RedisRateLimiter(client, key, 1, burst=1)
        async with limiter as entered:
            assert entered is limiter
        granted, _, _ = await limiter._call("take", 1)
        assert not granted  # the one token is gone


async def test_a_work_queue_runs_a_batch_within_the_bound(
    redis_url: str, key: str
) -> None:
    rate, burst = 200.0, 5.0
    times: list[float] = []
    done: list[int] = []

    class Recording(RedisRateLimiter):
        async def _acquire(self, tokens: float = 1) -> float:
            granted = await super()._acquire(tokens)
            times.append(granted)
            return granted

    async def work(item: int) -> None:
        done.append(item)

    async with connect(redis_url) as client:
        limiter = Recording(client, key, rate, burst=burst)
        with anyio.fail_after(10):
            async with WorkQueue[int](rate_limiter=limiter) as queue:
                await queue.batch_process(range(60), work, num_workers=8)
    assert sorted(done) == list(range(60))
    assert len(times) == 60
    assert worst_excess(times, rate, burst) <= SLACK
    assert max(times) - min(times) >= (60 - burst) / rate - 0.001


# Redis Cluster


@coredis_leaves_streams_unclosed
async def test_on_a_redis_cluster(cluster: list[RedisServer], key: str) -> None:
    rate, burst = 300.0, 5.0
    client: coredis.RedisCluster[Any] = coredis.RedisCluster(
        "127.0.0.1", cluster[0].port
    )
    async with client:
        limiter = RedisRateLimiter(client, key, rate, burst=burst)
        with anyio.fail_after(10):
            times = [await limiter._acquire() for _ in range(40)]
            await client.script_flush()
            times += [await limiter._acquire() for _ in range(10)]
    assert worst_excess(times, rate, burst) <= SLACK
    assert max(times) - min(times) >= (50 - burst) / rate - 0.001


async def test_the_bucket_moves_by_whole_microseconds_rounded_up(
    redis_url: str, key: str
) -> None:
    """At 300 tokens/s a token costs 3333.33 µs. A double holds today's time in
    microseconds only to a quarter, so adding that to the bucket's time rounded
    the same way at every grant and let it fall behind (the bound was overstepped
    by a little more with each grant). The bucket's time stays whole
    microseconds, and a token moves it by 3334."""
    async with RedisRateLimiter.from_url(redis_url, key, 300, burst=1) as limiter:
        tats: list[float] = []
        with anyio.fail_after(10):
            for _ in range(6):
                await limiter.acquire()
                raw = await limiter.client.hget(f"{{{key}}}:state", "tat")
                assert raw is not None
                tats.append(float(raw))
    assert all(tat.is_integer() for tat in tats)
    assert all(b - a >= 3334 for a, b in itertools.pairwise(tats))
