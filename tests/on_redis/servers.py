"""redis-server processes a test starts and stops itself (a restart, a cluster).

Each listens on a free loopback port, persistence off, in its own directory.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = random.randrange(20000, 50000)
        try:
            for taken in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", taken))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports for a cluster node")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not on the PATH")
    return path


def ask(port: int, *command: str) -> str:
    """Send one inline command with redis-cli and return its output."""
    done = subprocess.run(
        [_binary("redis-cli"), "-p", str(port), *command],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout


class RedisServer:
    """One redis-server on ``port``; `start` and `stop` it as often as needed."""

    def __init__(self, directory: str, port: int, *extra: str) -> None:
        self.directory = directory
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                _binary("redis-server"),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self, graceful: bool = False) -> None:
        """Kill the server, or with ``graceful`` shut it down cleanly (SIGTERM)."""
        if self.proc is not None:
            if graceful:
                self.proc.terminate()
            else:
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@contextmanager
def redis_server(*extra: str) -> Iterator[RedisServer]:
    """A started `RedisServer`, stopped when the block ends."""
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(directory, free_port(), *extra)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[RedisServer]]:
    """``nodes`` primaries, no replicas, the slots shared out; stopped after."""
    with tempfile.TemporaryDirectory() as directory:
        servers: list[RedisServer] = []
        try:
            for i in range(nodes):
                node_dir = f"{directory}/{i}"
                os.mkdir(node_dir)
                server = RedisServer(
                    node_dir,
                    free_cluster_port(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                )
                server.start()
                servers.append(server)
            subprocess.run(
                [
                    _binary("redis-cli"),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{s.port}" for s in servers),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                timeout=30,
                check=True,
            )
            deadline = time.monotonic() + 10
            while not all(
                "cluster_state:ok" in ask(s.port, "CLUSTER", "INFO") for s in servers
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not become ok within 10 s")
                time.sleep(0.05)
            yield servers
        finally:
            for server in servers:
                server.stop()
