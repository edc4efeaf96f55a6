"""A pretend HTTP API for tests over a real network, and a way to serve it.

`PretendApi` is a hand-written ASGI app that behaves like a strict public API:
a sliding-window rate limit answered with 429 and ``Retry-After``, 503 when too
many requests are in progress at once, a few 500s and a few calls that never
answer. `serving` runs it under hypercorn on 127.0.0.1, on a port the system
picks, in the caller's own task group, on asyncio or trio (as
examples/http_client.py does; the example keeps its own copy so that it runs
on its own).

The app keeps honest books of its own, on the event loop's clock (the client
shares it: they run in one process and one loop): every arrival with its
status, and every pause it announced.
"""

from __future__ import annotations

import math
import random
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import anyio
from hypercorn.asyncio import serve as serve_asyncio
from hypercorn.config import Config
from hypercorn.trio import serve as serve_trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["HUNG", "Arrival", "Pause", "PretendApi", "serving"]

HUNG = 0  # the status of a call that was never answered
WINDOW = 1.0  # seconds: the rate limit counts arrivals in any window this long


@dataclass(frozen=True)
class Arrival:
    """A request as the app received it: when, which, and what it was answered."""

    at: float  # anyio.current_time() as the app took the request
    request_id: str  # the x-request-id header ("" without one)
    status: int  # 200, 429, 500, 503, or HUNG


@dataclass(frozen=True)
class Pause:
    """A ``Retry-After`` the app sent: no request should come in (at, end)."""

    at: float
    seconds: int
    request_id: str  # the request that was answered 429

    @property
    def end(self) -> float:
        return self.at + self.seconds


@dataclass
class PretendApi:
    """An ASGI app: GET /items/{n} answers ``item n`` after a few milliseconds.

    At most ``rate`` requests are served that arrive in any window of one
    second (counted on arrival; a request answered 429 is not counted). Past
    that a request gets 429 with ``Retry-After``: the whole seconds until the
    window has room again, at least 1. Past ``max_in_progress`` requests in
    progress at once, a request gets 503 without ``Retry-After``. Of the
    others, ``error_rate`` are answered 500 and ``hang_rate`` never answered
    (the app waits until the client hangs up); the draws come from a
    ``random.Random(seed)``, in arrival order.
    """

    rate: int
    max_in_progress: int = 8
    error_rate: float = 0.05
    hang_rate: float = 0.02
    seed: int = 18
    arrivals: list[Arrival] = field(default_factory=list)
    pauses: list[Pause] = field(default_factory=list)
    _window: deque[float] = field(default_factory=deque)  # served arrivals' times
    _in_progress: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def crowd(self, count: int) -> None:
        """Count ``count`` requests from other clients of the API in the window,
        now: a pushback the client cannot see coming (they are not `arrivals`)."""
        now = anyio.current_time()
        self._window.extend(now for _ in range(count))

    def _retry_after(self, now: float) -> int | None:
        """Count a request arriving at ``now`` in the window, or the seconds to
        wait if the window is full."""
        window = self._window
        while window and window[0] <= now - WINDOW:
            window.popleft()
        if len(window) < self.rate:
            window.append(now)
            return None
        # The window has room again once its oldest arrival leaves it.
        return max(1, math.ceil(window[0] + WINDOW - now))

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        now = anyio.current_time()
        request_id = dict(scope["headers"]).get(b"x-request-id", b"").decode()
        wait = self._retry_after(now)
        if wait is not None:
            self.arrivals.append(Arrival(now, request_id, 429))
            self.pauses.append(Pause(now, wait, request_id))
            await respond(send, 429, b"slow down", [(b"retry-after", b"%d" % wait)])
            return
        if self._in_progress >= self.max_in_progress:
            self.arrivals.append(Arrival(now, request_id, 503))
            await respond(send, 503, b"busy")
            return
        self._in_progress += 1
        try:
            await self._answer(scope["path"], receive, send, now, request_id)
        finally:
            self._in_progress -= 1

    async def _answer(
        self,
        path: str,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        now: float,
        request_id: str,
    ) -> None:
        draw, latency = self._rng.random(), self._rng.uniform(0.002, 0.01)
        if draw < self.hang_rate:
            self.arrivals.append(Arrival(now, request_id, HUNG))
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        status = 500 if draw < self.hang_rate + self.error_rate else 200
        self.arrivals.append(Arrival(now, request_id, status))
        await anyio.sleep(latency)  # the work
        item = path.rsplit("/", 1)[-1]
        await respond(
            send, status, b"oops" if status == 500 else b"item " + item.encode()
        )


async def lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Answer hypercorn's startup and shutdown messages."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(
    send: ASGISendCallable,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *(headers or [])],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


@asynccontextmanager
async def serving(app: PretendApi, backend: str) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 for the block; yields its base URL.

    ``backend`` is the running one ("asyncio" or "trio"). The socket listens
    before the block starts, so requests may be sent at once. When the block
    ends the server shuts down and the block's exit waits for it: close the
    clients first, or hypercorn waits ``graceful_timeout`` for them.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    host, port = sock.getsockname()
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket now
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    serve = serve_trio if backend == "trio" else serve_asyncio
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            partial(serve, app, config, shutdown_trigger=stop.wait, mode="asgi")
        )
        try:
            yield f"http://{host}:{port}"
        finally:
            stop.set()
