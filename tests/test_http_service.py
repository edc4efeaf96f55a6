"""500 URLs through `WorkQueue.map` against a real HTTP server (issue 18).

The server (tests/http_service.py) runs under hypercorn on 127.0.0.1 in the
test's own task group: at most RATE requests in any 1 s window, 429 with
``Retry-After`` past that, 503 past 8 requests in progress, 5% answered 500, 2%
never answered. Once, other clients of the API use up its window
(`PretendApi.crowd`), so at least one 429 comes whatever the client does. The
client is what a reader of the how-to would write: httpx, a RateLimiter of the
server's rate with the default burst, a RetryPolicy, an item timeout for the
calls that hang.

It asserts that every URL ends as an outcome, fetched; that fewer than 1% of
the requests that arrive after the first pause began are answered 429; and
that no request is sent during a Retry-After pause (on the client's clock, and
on the server's: what arrives during one was on its way already).

Real network, real time: trio runs on its real clock here, not the suite's
MockClock (which would jump time forward while every task waits on a socket).
``fail_after`` is only a guard against hangs; the assertions are about what was
sent and answered, never about how long it took.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
import uvloop
from books import assert_books
from http_service import Arrival, Pause, PretendApi, serving

from sluicegate import Outcome, RateLimiter, RetryAfter, RetryPolicy, WorkQueue

pytestmark = pytest.mark.slow  # about 8 s per backend

RATE = 100  # requests per second, the server's and the client's
URLS = 500
CROWD_AT = 150  # outcomes: then other clients use up the server's window
# Per attempt, a URL fails with a 500 (5%), a hang (2%), or now and then a 503
# or a 429: well under 1 in 5 in all. The chance a URL fails all 10 attempts is
# below 0.2 ** 10 = 1e-7, below 1e-4 for some URL of the 500.
ATTEMPTS = 10
ITEM_TIMEOUT = 0.5  # seconds: answers take milliseconds; a hung call is cut
GUARD = 90  # seconds: a guard against hangs, never a timing assertion


@pytest.fixture(params=["asyncio", "asyncio+uvloop", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param == "asyncio":
        return "asyncio", {}
    if request.param == "asyncio+uvloop":
        return "asyncio", {"loop_factory": uvloop.new_event_loop}
    return "trio", {}


@dataclass(frozen=True)
class Raised:
    """A RetryAfter the client raised: at ``at``, for ``seconds``."""

    at: float
    seconds: float
    request_id: str


class Client:
    """fetch(url) as a user of the how-to writes it, with a log of what it did."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._ids = itertools.count()
        self.sent: dict[str, float] = {}  # request id -> time it was sent
        self.raised: list[Raised] = []

    async def fetch(self, url: str) -> str:
        request_id = str(next(self._ids))
        self.sent[request_id] = anyio.current_time()
        response = await self._http.get(url, headers={"x-request-id": request_id})
        retry_after = response.headers.get("retry-after")
        if response.status_code == 429 or (
            response.status_code == 503 and retry_after is not None
        ):
            pushback = RetryAfter.from_header(retry_after)
            self.raised.append(
                Raised(anyio.current_time(), pushback.seconds, request_id)
            )
            raise pushback
        response.raise_for_status()  # 500, 503: retried (HTTPStatusError)
        return response.text


async def test_500_urls_through_map_honour_the_servers_limits(
    anyio_backend_name: str,
) -> None:
    app = PretendApi(rate=RATE)
    queue = WorkQueue[str](
        maxsize=32,
        concurrency_limit=8,
        rate_limiter=RateLimiter(RATE),
        # No TimeoutError in `on`: a call cut by item_timeout is retried anyway.
        retry=RetryPolicy(
            attempts=ATTEMPTS,
            on=(httpx.TransportError, httpx.HTTPStatusError),
            max_backoff=1.0,
        ),
        item_timeout=ITEM_TIMEOUT,
    )
    outcomes: list[Outcome[str, str]] = []
    with anyio.fail_after(GUARD):
        async with (
            serving(app, anyio_backend_name) as base,
            httpx.AsyncClient(base_url=base) as http,
        ):
            client = Client(http)
            urls = [f"{base}/items/{n}" for n in range(URLS)]
            async with queue.map(client.fetch, urls) as results:
                async for outcome in results:
                    outcomes.append(outcome)
                    if len(outcomes) == CROWD_AT:
                        app.crowd(RATE)

    failed = [o for o in outcomes if not o.ok]
    first_pause = app.pauses[0].at if app.pauses else math.inf
    after = [a for a in app.arrivals if a.at > first_pause]
    throttled = [a for a in after if a.status == 429]
    inside = sends_during_pauses(client)
    ignored = arrivals_during_pauses(app, client)
    statuses = Counter(a.status for a in app.arrivals)
    figures = (
        f"{len(app.arrivals)} requests {dict(sorted(statuses.items()))}, "
        f"{len(app.pauses)} pauses; after the first: {len(throttled)} x 429 "
        f"of {len(after)}; {len({t for _, t in inside})} sent during a pause, "
        f"{len({a.request_id for _, a in ignored})} arrived during one not in "
        f"flight; {len(failed)} URLs failed"
    )
    print(figures)

    # Every URL is an outcome, fetched; none lost.
    assert len(outcomes) == URLS, figures
    assert not failed, (figures, failed[:3])
    assert sorted(o.item for o in outcomes) == sorted(urls)
    assert all(o.value == "item " + o.item.rsplit("/", 1)[1] for o in outcomes)
    assert_books(queue)
    assert queue.metrics["processed"] == URLS

    # Every 429 the server sent was raised as a RetryAfter (the crowd makes one).
    assert app.pauses
    paused = {p.request_id for p in app.pauses}
    assert paused == {r.request_id for r in client.raised}, figures

    assert len(throttled) < 0.01 * len(after), figures
    assert not inside, (figures, inside[:3])
    assert not ignored, (figures, ignored[:3])


def sends_during_pauses(client: Client) -> list[tuple[Raised, float]]:
    """The requests the client sent strictly inside a pause it raised: in
    (raised.at, raised.at + raised.seconds), on its clock.

    A request granted before the raise is not inside: fetch reads the time in
    the task step in which the limiter granted its token (nothing awaits
    between the grant and the read), and the raise holds the limiter in the
    step it is raised in (the queue's handling of the exception runs on from
    fetch's raise without a checkpoint), so a token granted before the hold
    was read before the raise: at the same time at most, on a coarse clock
    (uvloop's counts whole milliseconds), so not strictly inside. A grant
    after the hold comes at the hold's end at the earliest, which is on or
    after raised.at + seconds: the hold reads the same clock later.
    """
    sends = sorted(client.sent.values())
    return [
        (r, t)
        for r in client.raised
        for t in sends[
            bisect.bisect_right(sends, r.at) : bisect.bisect_left(
                sends, r.at + r.seconds
            )
        ]
    ]


def arrivals_during_pauses(
    app: PretendApi, client: Client
) -> list[tuple[Pause, Arrival]]:
    """The requests that arrived during a pause the server announced and were
    not on their way already: sent after the client read that 429."""
    raised_at = {r.request_id: r.at for r in client.raised}
    return [
        (p, a)
        for p in app.pauses
        for a in app.arrivals
        if p.at < a.at < p.end
        and client.sent[a.request_id] > raised_at.get(p.request_id, math.inf)
    ]
