"""Write the small intersphinx inventories in this folder.

The docs link to Python's, AnyIO's and Trio's documentation. intersphinx would
fetch each project's ``objects.inv`` from the web at every build, and the build
machines here have no network, so the inventories are kept in the repository:
only the names these docs refer to, each with its real address on the project's
site. Run this again after referring to a new name:

    uv run python docs/inventories/make.py \
        --python /usr/share/doc/python3.11/html/objects.inv

- Python's entries are copied from a full Python inventory: Debian's
  python3.11-doc package installs one at that path (``apt-get install
  python3.11-doc``), or download https://docs.python.org/3/objects.inv. Without
  ``--python``, python.inv is left as it is.
- AnyIO's and Trio's entries are written from the tables below. Each address is
  where the project's own docs place the name (the ``.. autofunction::`` or
  ``.. autoclass::`` in AnyIO's ``docs/api.rst``, Trio's
  ``docs/source/reference-*.rst``), checked against their sources.

To check the links against the projects' full, current inventories instead, build
with ``SLUICEGATE_DOCS_INTERSPHINX=online`` (see docs/conf.py).
"""

from __future__ import annotations

import argparse
import re
import zlib
from pathlib import Path

HERE = Path(__file__).parent

#: Python names the docs and docstrings refer to, by role.
PYTHON = {
    "py:class": [
        "asyncio.LifoQueue",
        "asyncio.PriorityQueue",
        "asyncio.Queue",
        "bool",
        "collections.abc.AsyncIterable",
        "collections.abc.AsyncIterator",
        "collections.abc.Awaitable",
        "collections.abc.Callable",
        "collections.abc.Iterable",
        "contextlib.AbstractAsyncContextManager",
        "datetime.datetime",
        "dict",
        "enum.Enum",
        "float",
        "int",
        "list",
        "logging.Logger",
        "object",
        "random.Random",
        "str",
        "type",
        "types.TracebackType",
        "typing.Generic",
        "typing.Protocol",
        "uuid.UUID",
    ],
    "py:data": ["None", "typing.Any", "typing.Literal"],
    "py:exception": [
        "BaseException",
        "Exception",
        "KeyboardInterrupt",
        "RuntimeError",
        "SystemExit",
        "TimeoutError",
        "TypeError",
        "ValueError",
        "asyncio.CancelledError",
        "asyncio.QueueEmpty",
        "asyncio.QueueFull",
    ],
    "py:function": ["time.monotonic"],
}

#: Python names newer than the inventory above may be: (role, address).
PYTHON_EXTRA = {
    # New in Python 3.13: ".. exception:: QueueShutDown" in asyncio-queue.rst.
    "asyncio.QueueShutDown": ("py:exception", "library/asyncio-queue.html#$"),
}

#: AnyIO (https://anyio.readthedocs.io/en/stable/): every name is on api.html.
ANYIO = {
    "anyio.CancelScope": "py:class",
    "anyio.CapacityLimiter": "py:class",
    "anyio.Event": "py:class",
    "anyio.WouldBlock": "py:exception",
    "anyio.abc.TaskGroup": "py:class",
    "anyio.create_memory_object_stream": "py:function",
    "anyio.create_task_group": "py:function",
    "anyio.current_time": "py:function",
    "anyio.fail_after": "py:function",
    "anyio.from_thread.BlockingPortal": "py:class",
    "anyio.from_thread.run": "py:function",
    "anyio.move_on_after": "py:function",
    "anyio.run": "py:function",
    "anyio.sleep": "py:function",
    "anyio.to_thread.run_sync": "py:function",
    "anyio.wait_all_tasks_blocked": "py:function",
}

#: Trio (https://trio.readthedocs.io/en/stable/): (role, page).
TRIO = {
    "trio.CapacityLimiter": ("py:class", "reference-core.html"),
    "trio.Nursery": ("py:class", "reference-core.html"),
    "trio.open_nursery": ("py:function", "reference-core.html"),
    "trio.run": ("py:function", "reference-core.html"),
    "trio.sleep": ("py:function", "reference-core.html"),
    "trio.testing.MockClock": ("py:class", "reference-testing.html"),
}

Entry = tuple[str, str, str]  # name, role, address ("$" stands for the name)


def read(path: Path) -> dict[tuple[str, str], str]:
    """The entries of a Sphinx v2 inventory: (name, role) -> address."""
    data = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    if not data.startswith(b"# Sphinx inventory version 2"):
        raise SystemExit(f"{path}: not a Sphinx inventory of version 2")
    entries = {}
    line_re = re.compile(r"(.+?)\s+(\S+:\S+)\s+(-?\d+)\s+(\S*)\s+(.*)")
    for line in zlib.decompress(data[header_end:]).decode().splitlines():
        match = line_re.fullmatch(line)
        if match:
            name, role, _, address, _ = match.groups()
            entries[name, role] = address
    return entries


def write(path: Path, project: str, version: str, entries: list[Entry]) -> None:
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(
        f"{name} {role} 1 {address} -\n" for name, role, address in sorted(entries)
    )
    path.write_bytes(header.encode() + zlib.compress(body.encode(), 9))


def python_entries(full: Path) -> list[Entry]:
    found = read(full)
    entries = []
    for role, names in PYTHON.items():
        for name in names:
            address = found.get((name, role))
            if address is None:
                raise SystemExit(f"{full}: no {role} {name}")
            entries.append((name, role, address))
    for name, (role, address) in PYTHON_EXTRA.items():
        entries.append((name, role, found.get((name, role), address)))
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", type=Path, help="a full Python objects.inv")
    args = parser.parse_args()
    if args.python is not None:
        write(HERE / "python.inv", "Python", "3", python_entries(args.python))
    write(
        HERE / "anyio.inv",
        "AnyIO",
        "4",
        [(name, role, "api.html#$") for name, role in ANYIO.items()],
    )
    write(
        HERE / "trio.inv",
        "Trio",
        "0",
        [(name, role, f"{page}#$") for name, (role, page) in TRIO.items()],
    )


if __name__ == "__main__":
    main()
