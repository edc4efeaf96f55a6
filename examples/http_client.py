"""Fetch 1,000 URLs from a rate-limited, flaky HTTP service, on asyncio and on trio.

The program starts its own small service on 127.0.0.1 (a hand-written ASGI app
served by hypercorn, in the program's own task group). Like many real APIs it
allows 200 requests per second and answers ``429 Too Many Requests`` with
``Retry-After: 1`` past that; it also fails about 3% of calls with ``503`` and
now and then never answers at all.

The client fetches 1,000 URLs with httpx through `WorkQueue.map`: 32 workers, a
RateLimiter that starts above the service's limit (as when the real limit is
not known), a RetryPolicy for 503s and dropped connections, and a per-call
timeout for the calls that hang. A 429 raises `RetryAfter`: the item is tried
again after the header's delay, and the shared limiter grants no request to
anyone until then; the client also lowers the limiter's rate by a fifth, so the
429s soon stop. The service checks the pushback is honoured: it counts any
request that arrives while a Retry-After it sent is still running.

A live progress line goes to stderr (when it is a terminal), then a summary.
The program exits with 1 if any URL was not fetched, or lost, on either backend.

    uv run python examples/http_client.py
"""

from __future__ import annotations

import random
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import httpx
from hypercorn.asyncio import serve as serve_asyncio
from hypercorn.config import Config
from hypercorn.trio import serve as serve_trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from sluicegate import RateLimiter, RetryAfter, RetryPolicy, WorkQueue

URLS = 1_000
WORKERS = 32

# The service
SERVER_RATE = 200  # requests per second, with a burst of SERVER_BURST
SERVER_BURST = 50
FAIL_RATE = 0.03  # answered 503
HANG_RATE = 0.003  # never answered (until the client gives up)

# The client
CLIENT_RATE = 250  # to start with: above the service's limit, so 429s come
SLOW_DOWN = 0.8  # the rate is multiplied by this on a 429
CLIENT_BURST = 10
ITEM_TIMEOUT = 2.0  # seconds per call, the limiter's wait not included
ATTEMPTS = 5


# -- the service ----------------------------------------------------------------


@dataclass
class ServerBooks:
    ok: int = 0
    throttled: int = 0  # answered 429
    failed: int = 0  # answered 503
    hung: int = 0  # never answered
    ignored_pushback: int = 0  # arrived while a Retry-After was running


class PretendApi:
    """An ASGI app: GET /items/{n} answers ``item n`` after a few milliseconds.

    A token bucket (``rate`` per second, ``burst`` at most) guards it; a request
    that finds it empty gets 429 with ``Retry-After: 1``. Of the rest, a few get
    503 and a few hang until the client hangs up.
    """

    def __init__(self, rate: float, burst: float, seed: int) -> None:
        self.rate = rate
        self.burst = burst
        self.books = ServerBooks()
        self._rng = random.Random(seed)
        self._tokens = burst
        self._updated: float | None = None
        # While a Retry-After we sent runs, a client that honours it sends
        # nothing: from a moment after the first 429 (requests already on the
        # way may still come) until the last one's Retry-After is over.
        self._quiet = (0.0, 0.0)

    def _admit(self, now: float) -> bool:
        if self._updated is not None:
            elapsed = now - self._updated
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        now = anyio.current_time()
        if self._quiet[0] < now < self._quiet[1]:
            self.books.ignored_pushback += 1
        if not self._admit(now):
            self.books.throttled += 1
            start, end = self._quiet
            if now >= end:
                start = now + 0.2
            self._quiet = (start, now + 1.0)
            await respond(send, 429, b"slow down", [(b"retry-after", b"1")])
            return
        latency, draw = self._rng.uniform(0.002, 0.02), self._rng.random()
        await anyio.sleep(latency)  # the work
        if draw < HANG_RATE:
            self.books.hung += 1
            with anyio.move_on_after(30):  # until the client hangs up
                while (await receive())["type"] != "http.disconnect":
                    pass
            return
        if draw < HANG_RATE + FAIL_RATE:
            self.books.failed += 1
            await respond(send, 503, b"try again")
            return
        self.books.ok += 1
        item = scope["path"].rsplit("/", 1)[-1]
        await respond(send, 200, f"item {item}".encode())


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


def listening_socket() -> socket.socket:
    """A socket listening on 127.0.0.1, on a port the system picks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def serve(
    app: PretendApi, sock: socket.socket, backend: str, stop: anyio.Event
) -> None:
    """Serve ``app`` on ``sock`` (hypercorn takes it over) until ``stop`` is set."""
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    serve_on = serve_trio if backend == "trio" else serve_asyncio
    await serve_on(app, config, shutdown_trigger=stop.wait, mode="asgi")


# -- the client -----------------------------------------------------------------


@dataclass
class ClientBooks:
    outcomes: int = 0
    fetched: int = 0  # answered 200 with the right body
    pushbacks: int = 0  # 429s, raised as RetryAfter
    unavailable: int = 0  # 503s
    timeouts: int = 0  # calls cut off by the item timeout
    rate: float = CLIENT_RATE  # the limiter's rate at the end


def retryable(exc: Exception) -> bool:
    """Retry dropped connections and 5xx answers; not other 4xx. (Calls cut by
    the item timeout are retried by the policy anyway, as RetryAfters are.)"""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def urls(base: str) -> Iterator[str]:
    """The URLs to fetch, made one at a time as the queue asks for them."""
    for n in range(URLS):
        yield f"{base}/items/{n}"


async def show_progress(
    backend: str, wq: WorkQueue[str], limiter: RateLimiter, books: ClientBooks
) -> None:
    """Redraw one line on stderr ten times a second until cancelled."""
    while True:
        m = wq.metrics
        held = limiter.held_until
        hold = f"  held {held - anyio.current_time():.1f} s" if held else ""
        sys.stderr.write(
            f"\r  {backend:<8} {m['processed']:>5}/{URLS} fetched  "
            f"{m['retries']:>3} retries  {books.pushbacks:>2} x 429  "
            f"{limiter.rate:>3.0f}/s{hold:<12}"
        )
        sys.stderr.flush()
        await anyio.sleep(0.1)


async def fetch_all(backend: str, base: str) -> tuple[WorkQueue[str], ClientBooks]:
    """Fetch every URL from ``base``; the queue (for its metrics) and the tally."""
    books = ClientBooks()
    limiter = RateLimiter(CLIENT_RATE, burst=CLIENT_BURST)
    # The item timeout counts from the moment the call starts, once the
    # limiter's token is taken: the wait for a token (a Retry-After hold too)
    # does not use it up, so it need only cover a slow answer, not a pushback.
    wq = WorkQueue[str](
        concurrency_limit=WORKERS,
        rate_limiter=limiter,
        retry=RetryPolicy(attempts=ATTEMPTS, on=retryable, backoff=0.05),
        item_timeout=ITEM_TIMEOUT,
    )
    async with httpx.AsyncClient(base_url=base) as client:

        async def fetch(url: str) -> str:
            try:
                response = await client.get(url)
            except anyio.get_cancelled_exc_class():
                books.timeouts += 1  # nothing else cancels a call here
                raise
            if response.status_code == 429:
                books.pushbacks += 1
                if limiter.held_until is None:  # the first 429 of a burst
                    limiter.rate *= SLOW_DOWN
                raise RetryAfter.from_header(response.headers.get("retry-after"))
            if response.status_code >= 500:
                books.unavailable += 1
            response.raise_for_status()
            return response.text

        async with anyio.create_task_group() as tg:
            if sys.stderr.isatty():
                tg.start_soon(show_progress, backend, wq, limiter, books)
            async with wq.map(fetch, urls(base)) as results:
                async for outcome in results:
                    books.outcomes += 1
                    n = outcome.item.rsplit("/", 1)[1]
                    if outcome.ok and outcome.value == f"item {n}":
                        books.fetched += 1
            tg.cancel_scope.cancel()
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 79 + "\r")
    books.rate = limiter.rate
    return wq, books


async def run(backend: str) -> bool:
    """Serve the pretend API, fetch every URL from it, print a summary.

    Returns True if every URL was fetched, nothing was lost, and no request
    was sent while a Retry-After was running.
    """
    app = PretendApi(SERVER_RATE, SERVER_BURST, seed=28)
    sock = listening_socket()
    host, port = sock.getsockname()
    stop = anyio.Event()
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, app, sock, backend, stop)
        try:
            wq, client = await fetch_all(backend, f"http://{host}:{port}")
        finally:
            stop.set()  # the server shuts down; the task group waits for it
    elapsed = time.perf_counter() - started

    m, server = wq.metrics, app.books
    lost = URLS - client.outcomes  # URLs that never came out of the map
    sent = server.ok + server.throttled + server.failed + server.hung
    print(
        f"{backend}: {client.fetched}/{URLS} fetched in {elapsed:.1f} s "
        f"({URLS / elapsed:.0f} URLs/s), {m['errors']} failed, {lost} lost"
    )
    print(
        f"  requests   {sent} sent: {server.ok} answered 200, "
        f"{server.throttled} x 429, {server.failed} x 503, {server.hung} hung"
    )
    print(
        f"  retries    {m['retries']}: {client.pushbacks} after a 429, "
        f"{client.unavailable} after a 503, {client.timeouts} after a timeout"
    )
    honoured = "honoured" if server.ignored_pushback == 0 else "NOT honoured"
    print(
        f"  pushbacks  {server.throttled} x Retry-After: 1, {honoured} "
        f"({server.ignored_pushback} requests inside one); "
        f"rate {CLIENT_RATE} -> {client.rate:.0f}/s"
    )
    print(
        f"  the books  enqueued {m['enqueued']}, processed {m['processed']}, "
        f"unprocessed {m['unprocessed']}"
    )
    return (
        client.fetched == URLS
        and lost == 0
        and m["enqueued"] == m["processed"] == URLS
        and m["errors"] == m["unprocessed"] == 0
        and server.ignored_pushback == 0
    )


def main() -> None:
    ok = [anyio.run(run, backend, backend=backend) for backend in ("asyncio", "trio")]
    if not all(ok):
        sys.exit("not every URL was fetched, or a pushback was ignored: see above")


if __name__ == "__main__":
    main()
