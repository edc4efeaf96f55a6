"""An Executor of API-call events under a rate limit, on asyncio and on trio.

Thirty calls to a pretend service that allows 10 requests per second (with a
burst of 5). The executor runs 8 calls at once but starts no more than the
limiter allows; each event records its own status, response, error and duration.

    uv run python examples/rate_limited_api.py
"""

from __future__ import annotations

import logging
import random

import anyio

from sluicegate import Event, Executor, QueueConfig, RateLimiter

CALLS = 30
RATE = 10  # requests per second the service allows
BURST = 5


class ApiCall(Event[str]):
    """One request: waits for the simulated service, sometimes fails."""

    def __init__(self, endpoint: str, latency: float, fails: bool) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.latency = latency
        self.fails = fails

    async def invoke(self) -> str:  # what it returns becomes execution.response
        await anyio.sleep(self.latency)
        if self.fails:
            raise ConnectionError(f"{self.endpoint}: 503 Service Unavailable")
        return "200 OK"


async def main() -> None:
    rng = random.Random(3)
    calls = [
        ApiCall(
            f"/users/{i}", latency=rng.uniform(0.01, 0.05), fails=rng.random() < 0.1
        )
        for i in range(CALLS)
    ]
    limiter = RateLimiter(RATE, period=1.0, burst=BURST)
    # queue_capacity / capacity_refresh_time is the executor's own start-rate cap
    # (here 100 per second, so the shared limiter is what binds).
    config = QueueConfig(
        queue_capacity=100, capacity_refresh_time=1.0, concurrency_limit=8
    )
    executor = Executor(ApiCall, config, rate_limiter=limiter)

    started = anyio.current_time()
    await executor.batch_process(calls)
    elapsed = anyio.current_time() - started

    for call in calls:
        run = call.execution
        outcome = run.response if run.error is None else repr(run.error)
        print(
            f"  {call.endpoint:<10} {run.status.value:<9} {run.duration:.3f}s {outcome}"
        )
    m = executor.metrics
    print(f"  {m['completed']} completed, {m['failed']} failed, ", end="")
    print(
        f"{m['cancelled']} cancelled in {elapsed:.2f}s: {CALLS / elapsed:.1f} calls/s"
    )
    print(f"  (the limit: {RATE} calls/s after a burst of {BURST})")


if __name__ == "__main__":
    # Each failure is recorded on its event and printed above; without this, the
    # first of each kind would also be logged with its traceback.
    logging.getLogger("sluicegate").setLevel(logging.CRITICAL)
    for backend in ("asyncio", "trio"):
        print(f"{backend}:")
        anyio.run(main, backend=backend)
