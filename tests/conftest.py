"""Every async test runs on asyncio, asyncio with uvloop, and trio.

Trio runs on a MockClock with autojump: when every task is blocked, virtual time
jumps to the next deadline, so timeouts elapse at once and a test that would hang
fails its ``fail_after`` guard at once instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from trio.testing import MockClock


@pytest.fixture(params=["asyncio", "asyncio+uvloop", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param == "asyncio":
        return "asyncio", {}
    if request.param == "asyncio+uvloop":
        return "asyncio", {"loop_factory": uvloop.new_event_loop}
    return "trio", {"clock": MockClock(autojump_threshold=0)}


@pytest.fixture
def quiet_worker_errors() -> Iterator[None]:
    """Keep the sluicegate log quiet meanwhile: for attacks that make workers fail
    on purpose (``pytest.mark.usefixtures("quiet_worker_errors")``)."""
    logger = logging.getLogger("sluicegate")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)
