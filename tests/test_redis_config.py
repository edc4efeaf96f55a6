"""RedisWorkQueue's arguments, checked at the constructor: every bad value in one
table with its whole message, the first bad argument is the one named, and the
good values come out of the properties as they did. No Redis server is needed:
nothing here connects."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import coredis
import pytest

from sluicegate import RateLimiter
from sluicegate.redis import JsonSerializer, RedisWorkQueue

URL = "redis://localhost:1/0"  # never connected to
T, V = TypeError, ValueError
SECONDS_OR_NONE = "must be a number of seconds or None, got"
RATE_LIMITER = (
    "rate_limiter must be a RateLimiter, or an object with `async acquire(tokens=1)` "
    "and `hold(seconds)` (RateLimiterProtocol), or None; got 3"
)
SERIALIZER = (
    "serializer must have dumps(item) -> bytes | str and loads(bytes) (the json "
    "module, say, or a JsonSerializer()); got <class 'object'>"
)
CASES: list[tuple[dict[str, Any], type[Exception], str]] = [
    (
        {"redis": 42},
        T,
        "redis must be a coredis.Redis or coredis.RedisCluster client, got 42 (int)",
    ),
    (
        {"redis": "http://x"},
        V,
        "redis must be a coredis client or a URL starting with redis://, "
        "rediss:// or unix://, got 'http://x'",
    ),
    ({"name": 3}, T, "name must be a str, got 3 (int)"),
    ({"name": ""}, V, "name must be a non-empty str that does not start with '}', "),
    ({"name": "}x"}, V, "name must be a non-empty str that does not start with '}'"),
    ({"maxsize": 0}, V, "maxsize must be at least 1, got 0"),
    ({"maxsize": True}, T, "maxsize must be an int, got True (bool)"),
    ({"maxsize": 2.0}, T, "maxsize must be an int, got 2.0 (float)"),
    ({"timeout": -1}, V, "timeout must be >= 0 seconds, got -1"),
    ({"timeout": math.nan}, V, "timeout must be >= 0 seconds, got nan"),
    ({"timeout": True}, T, f"timeout {SECONDS_OR_NONE} True (bool)"),
    ({"timeout": "1"}, T, f"timeout {SECONDS_OR_NONE} '1' (str)"),
    ({"concurrency_limit": 0}, V, "concurrency_limit must be at least 1, got 0"),
    ({"concurrency_limit": True}, T, "concurrency_limit must be an int, got True"),
    ({"rate_limiter": 3}, T, RATE_LIMITER),
    ({"serializer": object}, T, SERIALIZER),
    ({"claim_idle": 0}, V, "claim_idle must be a finite number > 0, got 0"),
    ({"claim_idle": math.inf}, V, "claim_idle must be a finite number > 0, got inf"),
    ({"claim_idle": math.nan}, V, "claim_idle must be a finite number > 0, got nan"),
    ({"claim_idle": None}, T, "claim_idle must be a number of seconds, got None"),
    ({"claim_idle": True}, T, "claim_idle must be a number of seconds, got True"),
    ({"max_deliveries": 0}, V, "max_deliveries must be at least 1, got 0"),
    ({"max_deliveries": 1.5}, T, "max_deliveries must be an int, got 1.5 (float)"),
    ({"logger": "log"}, T, "logger must be a logging.Logger or None, got 'log'"),
    ({"call_timeout": 0}, V, "call_timeout must be a finite number > 0, got 0"),
    ({"call_timeout": "x"}, T, "call_timeout must be a number of seconds, got 'x'"),
    ({"reconnect_timeout": -1}, V, "reconnect_timeout must be a finite number > 0"),
    ({"reconnect_timeout": None}, T, "reconnect_timeout must be a number of seconds"),
    # Several bad arguments: the first of the signature is the one named.
    ({"redis": 1, "name": 2}, T, "redis must be a coredis"),
    ({"name": 2, "maxsize": 0}, T, "name must be a str"),
    ({"maxsize": 0, "claim_idle": 0}, V, "maxsize must be at least 1"),
    ({"claim_idle": 0, "logger": 1}, V, "claim_idle must be a finite number"),
    ({"logger": 1, "call_timeout": 0}, T, "logger must be a logging.Logger"),
]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [pytest.param(*case, id=f"{i:02d} {case[2]}") for i, case in enumerate(CASES)],
)
def test_a_bad_argument_is_refused_with_its_message(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments = {"redis": URL, "name": "q", **arguments}
    with pytest.raises(error, match=re.escape(message)) as info:
        RedisWorkQueue(**arguments)
    # Raised by sluicegate's own check, not from inside attrs or coredis.
    innermost = Path(info.traceback[-1].path)
    assert "sluicegate" in innermost.parts, innermost


def test_the_good_values_come_out_of_the_properties() -> None:
    limiter = RateLimiter(5)
    queue: RedisWorkQueue[int] = RedisWorkQueue(
        URL,
        "jobs",
        maxsize=7,
        timeout=2,
        concurrency_limit=3,
        rate_limiter=limiter,
        claim_idle=4,
        max_deliveries=2,
    )
    assert queue.name == "jobs"
    assert queue.maxsize == 7
    assert (queue.timeout, type(queue.timeout)) == (2.0, float)
    assert (queue.claim_idle, type(queue.claim_idle)) == (4.0, float)
    assert queue.concurrency_limit == 3
    assert queue.rate_limiter is limiter
    assert queue.max_deliveries == 2
    assert queue.keys == {
        "stream": "{jobs}:stream",
        "dead": "{jobs}:dead",
        "books": "{jobs}:books",
    }
    assert queue.client is None  # a URL's client is opened by `async with`


def test_the_defaults() -> None:
    client: coredis.Redis[bytes] = coredis.Redis()
    queue: RedisWorkQueue[int] = RedisWorkQueue(client, "q", serializer=None)
    assert queue.client is client
    assert (queue.maxsize, queue.timeout, queue.concurrency_limit) == (1000, None, None)
    assert (queue.claim_idle, queue.max_deliveries) == (30.0, 5)
    assert queue.rate_limiter is None
    assert (queue.worker_count, queue.in_flight) == (0, 0)
    assert queue.metrics["put"] == 0


def test_a_module_with_dumps_and_loads_is_a_serializer() -> None:
    RedisWorkQueue(URL, "q", serializer=json)  # the json module, as documented
    RedisWorkQueue(URL, "q", serializer=JsonSerializer())
    RedisWorkQueue(URL, "q", logger=logging.getLogger("mine"))
