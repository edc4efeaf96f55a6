"""Peak memory of a million-item batch: sluicegate against a task per item.

``WorkQueue.batch_process`` reads a generator of ``--items`` items lazily into a
queue of 1,000 with 100 workers; the baseline starts one task per item in an AnyIO
task group, behind ``anyio.Semaphore(100)``. Each case runs in a fresh subprocess
(so the peaks do not mix) and reports its peak RSS (``ru_maxrss``) above the RSS of
the idle process, measured after the imports and before the run.

    uv run python bench/memory.py                   # both cases on asyncio
    uv run python bench/memory.py --backend trio
    uv run python bench/memory.py --case sluicegate # one case, in this process
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from time import perf_counter
from typing import Any

import anyio
import anyio.lowlevel
from _common import backend_named, format_table, verdict

from sluicegate import WorkQueue

DEFAULT_ITEMS = 1_000_000
QUICK_ITEMS = 100_000
QUEUE_SIZE = 1_000
WORKERS = 100
TARGET_MB = 20.0
KIB = 1024
MB = 1_000_000


async def work(item: int) -> None:
    await anyio.lowlevel.checkpoint()


def items(n: int) -> Iterator[int]:
    yield from range(n)


async def sluicegate_batch(n: int) -> int:
    queue = WorkQueue[int](maxsize=QUEUE_SIZE)
    await queue.batch_process(items(n), work, num_workers=WORKERS)
    return queue.metrics["processed"]


async def task_per_item(n: int) -> int:
    semaphore = anyio.Semaphore(WORKERS)
    done = 0

    async def one(item: int) -> None:
        nonlocal done
        async with semaphore:
            await work(item)
            done += 1

    async with anyio.create_task_group() as tg:
        for item in items(n):
            tg.start_soon(one, item)
    return done


CASES: dict[str, tuple[str, Callable[[int], Coroutine[Any, Any, int]]]] = {
    "sluicegate": (
        f"sluicegate WorkQueue.batch_process (queue {QUEUE_SIZE:,}, {WORKERS} workers)",
        sluicegate_batch,
    ),
    "tasks": (
        f"task group, one task per item, Semaphore({WORKERS})",
        task_per_item,
    ),
}


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB  # KiB on Linux


def run_case(case: str, backend_name: str, n: int) -> dict[str, Any]:
    """Run one case in this process; what it measured, as a dict."""
    func = CASES[case][1]
    idle = max_rss_bytes()
    start = perf_counter()
    processed = backend_named(backend_name).run(func, n)
    seconds = perf_counter() - start
    if processed != n:
        raise RuntimeError(f"{case}: processed {processed} items, expected {n}")
    return {
        "case": case,
        "idle": idle,
        "peak": max_rss_bytes(),
        "seconds": seconds,
    }


def run_in_subprocess(case: str, backend_name: str, n: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--case",
        case,
        "--backend",
        backend_name,
        "--items",
        str(n),
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def report(results: list[dict[str, Any]], backend_name: str, n: int) -> str:
    rows = [
        [
            CASES[r["case"]][0],
            r["idle"] / MB,
            r["peak"] / MB,
            (r["peak"] - r["idle"]) / MB,
            r["seconds"],
        ]
        for r in results
    ]
    table = format_table(
        ["case", "idle MB", "peak MB", "above idle MB", "seconds"], rows
    )
    lines = [f"{n:,} items on {backend_name}; 1 MB = 10^6 bytes\n", table]
    for r in results:
        if r["case"] == "sluicegate":
            above = (r["peak"] - r["idle"]) / MB
            lines.append(
                f"\nsluicegate peak above idle {above:.1f} MB < {TARGET_MB:g} MB: "
                f"{verdict(above < TARGET_MB)}"
            )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), help="run one case here")
    parser.add_argument(
        "--backend", default="asyncio", help="asyncio, asyncio+uvloop or trio"
    )
    parser.add_argument("--items", type=int, help=f"items ({DEFAULT_ITEMS:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ITEMS:,} items")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    n = args.items or (QUICK_ITEMS if args.quick else DEFAULT_ITEMS)
    backend_named(args.backend)  # fail early on a bad name
    if args.case is not None:
        results = [run_case(args.case, args.backend, n)]
    else:
        results = [run_in_subprocess(case, args.backend, n) for case in CASES]
    if args.json:
        print(json.dumps(results[0]))
    else:
        print(report(results, args.backend, n))


if __name__ == "__main__":
    main()
