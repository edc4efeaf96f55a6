"""Tests of sluicegate.redis against a real redis-server.

The server is the one at ``SLUICEGATE_REDIS_URL`` (``.ci/run`` starts one and
sets it). Without it, a ``redis-server`` on the PATH is started for the session
on a free loopback port, persistence off; without either, these tests skip
locally and fail in CI (``CI=true``).

Trio runs on its real clock here: a MockClock with autojump would jump virtual
time forward whenever every task waits on the server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

HOW_TO_START = (
    "no redis-server: install one (apt-get install redis-server) or start one, "
    "e.g. `redis-server --port 6390 --save '' --appendonly no`, and set "
    "SLUICEGATE_REDIS_URL=redis://127.0.0.1:6390/0"
)


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_ping(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("redis-server did not answer PING within 10 s")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a redis-server for this session (see the module docstring)."""
    url = os.environ.get("SLUICEGATE_REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(HOW_TO_START)
        pytest.skip(HOW_TO_START)
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_ping(port, proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def key() -> str:
    """A key (and hash tag) no other test uses."""
    return f"sluicegate-test:{uuid.uuid4().hex}"
