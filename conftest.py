"""Runs the code blocks of README.md and of the docs (docs/**.rst) with Sybil.

An example that drifts from the API fails the test suite:

- A ``python`` block runs as written, in one namespace per file: a block may use
  what an earlier block of the same file defined.
- A block with top-level ``await``, ``async with`` or ``async for`` is the body
  of an async function: it runs once on each backend of the test suite (asyncio,
  asyncio with uvloop, and trio on a MockClock that jumps to the next deadline
  whenever every task is blocked).
- Setup a reader need not see goes in an invisible block:
  ``<!-- invisible-code-block: python`` in Markdown, ``.. invisible-code-block:
  python`` in reStructuredText.
- A block that names ``sluicegate.redis`` (in a comment, for a check that
  follows such an example) runs against the redis-server at
  ``SLUICEGATE_REDIS_URL``, with trio on its real clock (a MockClock would jump
  past every wait for the server).
- A ``console`` (or ``text``) block is shown and not run. A block in any other
  language fails, and so does a reST ``::`` literal block, so that nothing that
  looks like code goes unrun.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import pytest
import uvloop
from sybil import Document, Example, Region, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser as MarkdownCodeBlockParser
from sybil.parsers.markdown import SkipParser as MarkdownSkipParser
from sybil.parsers.rest import CodeBlockParser as RestCodeBlockParser
from sybil.parsers.rest import SkipParser as RestSkipParser
from trio.testing import MockClock

#: Languages that are shown and not run.
SHOWN_ONLY = frozenset({"console", "text"})


def _backends(*, real_clock: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The backends of the test suite (tests/conftest.py), for one block's run."""
    return [
        ("asyncio", {}),
        ("asyncio", {"loop_factory": uvloop.new_event_loop}),
        ("trio", {} if real_clock else {"clock": MockClock(autojump_threshold=0)}),
    ]


# -- a redis-server for the session -----------------------------------------------

HOW_TO_START_REDIS = (
    "no redis-server: install one (apt-get install redis-server) so that the "
    "tests start it, or start one, e.g. `redis-server --port 6390 --save '' "
    "--appendonly no`, and set SLUICEGATE_REDIS_URL=redis://127.0.0.1:6390/0"
)
_redis: list[subprocess.Popen[bytes]] = []
_redis_dir: list[tempfile.TemporaryDirectory[str]] = []


def pytest_configure(config: pytest.Config) -> None:
    """Start a redis-server from the PATH for the session, unless
    ``SLUICEGATE_REDIS_URL`` names one (``.ci/run`` starts its own)."""
    binary = shutil.which("redis-server")
    if os.environ.get("SLUICEGATE_REDIS_URL") or binary is None:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = tempfile.TemporaryDirectory()
    _redis_dir.append(directory)
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", directory.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _redis.append(proc)
    _wait_for_ping(port, proc)
    os.environ["SLUICEGATE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"


def pytest_unconfigure(config: pytest.Config) -> None:
    while _redis:
        proc = _redis.pop()
        proc.terminate()
        proc.wait(10)
        del os.environ["SLUICEGATE_REDIS_URL"]
    while _redis_dir:
        _redis_dir.pop().cleanup()


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
def redis_url() -> str:
    """The URL of the session's redis-server; skips (fails in CI) without one."""
    return session_redis_url()


def session_redis_url() -> str:
    """The session's redis-server; skips (fails in CI) without one."""
    url = os.environ.get("SLUICEGATE_REDIS_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(HOW_TO_START_REDIS)
        pytest.skip(HOW_TO_START_REDIS)
    return url


def evaluate(example: Example) -> None:
    """Run one ``python`` block: as written, or on every backend if it awaits."""
    __tracebackhide__ = True
    source = pad(example.parsed, example.line + example.parsed.line_offset)
    code = compile(
        source,
        example.path,
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    namespace = example.namespace
    uses_redis = "sluicegate.redis" in example.parsed
    if uses_redis:
        session_redis_url()  # skips without a server
    if code.co_flags & inspect.CO_COROUTINE:
        for backend, options in _backends(real_clock=uses_redis):
            make: Callable[[], Awaitable[None]] = lambda: eval(code, namespace)  # noqa: E731
            anyio.run(make, backend=backend, backend_options=options)
    else:
        exec(code, namespace)
    namespace.pop("__builtins__", None)


def _unrun(reason: str) -> Callable[[Example], str]:
    def fail(example: Example) -> str:
        return reason

    return fail


class UnrunBlocks:
    """Yield a failing example for each block that would be shown but not run."""

    def __init__(self, code_blocks: Any, *, rest: bool) -> None:
        self.lexers = code_blocks.lexers
        self.rest = rest

    def __call__(self, document: Document) -> Iterable[Region]:
        seen: set[int] = set()
        for region in self.lexers(document):
            # reST's comment lexer also reads ".. code-block:: x" (as ": x").
            language = region.lexemes.get("arguments", "").strip(": \t")
            if region.start in seen:
                continue
            seen.add(region.start)
            if language != "python" and language not in SHOWN_ONLY:
                region.parsed = None
                region.evaluator = _unrun(
                    f"a {language or 'plain'} code block is never run: make it "
                    "python (it runs) or console (shown only)"
                )
                yield region
        if self.rest:
            for match in _LITERAL.finditer(document.text):
                yield Region(
                    match.start(),
                    match.end(),
                    None,
                    _unrun(
                        "a reST `::` literal block is never run: use "
                        "`.. code-block:: python` or `.. code-block:: console`"
                    ),
                )


# A paragraph ending in "::" (a literal block follows), but not a directive.
_LITERAL = re.compile(r"^(?!\s*\.\.\s)[^\n]*\S::[ \t]*$|^::[ \t]*$", re.MULTILINE)

_markdown_blocks = MarkdownCodeBlockParser(language="python", evaluator=evaluate)
_rest_blocks = RestCodeBlockParser(language="python", evaluator=evaluate)

pytest_collect_file = (
    Sybil(
        parsers=[
            MarkdownSkipParser(),
            _markdown_blocks,
            UnrunBlocks(_markdown_blocks, rest=False),
        ],
        patterns=["README.md"],
        name="readme",
    )
    + Sybil(
        parsers=[
            RestSkipParser(),
            _rest_blocks,
            UnrunBlocks(_rest_blocks, rest=True),
        ],
        path="docs",
        patterns=["*.rst"],
        excludes=["_build/*"],
        name="docs",
    )
).pytest()
