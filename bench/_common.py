"""Helpers shared by the benchmark scripts: backends, tables, machine description.

Not a benchmark itself; the scripts import it as ``_common`` (``bench/`` is on
``sys.path`` when a script in it runs).
"""

from __future__ import annotations

import datetime as dt
import gc
import importlib.metadata
import os
import platform
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


@dataclass(frozen=True)
class Backend:
    """An event loop to run a benchmark on, as ``anyio.run`` spells it."""

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)

    def run(self, func: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run ``func(*args)`` in a fresh event loop, after a garbage collection."""
        gc.collect()
        return anyio.run(
            func, *args, backend=self.backend, backend_options=self.options
        )

    @property
    def is_asyncio(self) -> bool:
        return self.backend == "asyncio"


def _uvloop_backend() -> Backend | None:
    try:
        import uvloop  # noqa: PLC0415 (optional: not on Windows)
    except ImportError:
        return None
    return Backend("asyncio+uvloop", "asyncio", {"loop_factory": uvloop.new_event_loop})


def all_backends() -> list[Backend]:
    """asyncio, asyncio+uvloop (when installed) and trio, in that order."""
    backends = [Backend("asyncio", "asyncio")]
    uvloop_backend = _uvloop_backend()
    if uvloop_backend is not None:
        backends.append(uvloop_backend)
    backends.append(Backend("trio", "trio"))
    return backends


def backend_named(name: str) -> Backend:
    """The backend called ``name`` ("asyncio", "asyncio+uvloop" or "trio")."""
    for backend in all_backends():
        if backend.name == name:
            return backend
    raise SystemExit(f"unknown or unavailable backend {name!r}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table, its columns padded so it also reads well in a terminal.

    Floats are shown with thousands separators (large) or two decimals (small).
    """
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max(len(header), *(len(row[i]) for row in cells))
        for i, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.ljust(width) if i == 0 else value.rjust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (width + 1) + (":" if i else "-") for i, width in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for entry in cpuinfo:
                if entry.startswith("model name"):
                    return entry.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_description() -> list[tuple[str, str]]:
    """What the numbers were measured on: CPU, cores, Python, library versions."""
    packages = ["anyio", "trio", "uvloop", "aiometer", "sluicegate"]
    return [
        ("date", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", _cpu_model()),
        ("cores", str(os.cpu_count())),
        ("platform", platform.platform()),
        ("Python", sys.version.split()[0] + f" ({platform.python_implementation()})"),
        *((package, _version(package)) for package in packages),
    ]


def progress(message: str) -> None:
    """A line of progress on stderr, so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)
