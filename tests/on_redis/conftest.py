"""Tests of sluicegate.redis against a real redis-server.

The server is the one at ``SLUICEGATE_REDIS_URL``: ``.ci/run`` starts one and
sets it; without it, the root conftest.py starts a ``redis-server`` from the
PATH for the session, on a free loopback port, persistence off. Its
``redis_url`` fixture gives the URL; without a server, these tests skip
locally and fail in CI (``CI=true``).

Trio runs on its real clock here: a MockClock with autojump would jump virtual
time forward whenever every task waits on the server.
"""

from __future__ import annotations

import gc
import os
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from on_redis.servers import RedisServer, redis_cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.redis)


@pytest.fixture(params=["asyncio", "asyncio+uvloop", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param == "asyncio":
        return "asyncio", {}
    if request.param == "asyncio+uvloop":
        return "asyncio", {"loop_factory": uvloop.new_event_loop}
    return "trio", {}


@pytest.fixture
def key() -> str:
    """A key (and hash tag) no other test uses."""
    return f"sluicegate-test:{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def _cluster_nodes() -> Iterator[list[RedisServer]]:
    with redis_cluster(3) as nodes:
        yield nodes


@pytest.fixture
def cluster(_cluster_nodes: list[RedisServer]) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of three primaries, started once (about 1.5 s).

    coredis leaves two memory streams unclosed for each RedisCluster client;
    they are collected, without their ResourceWarnings, as each test ends, not
    in whichever later test the garbage collector happens to run.
    """
    yield _cluster_nodes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
