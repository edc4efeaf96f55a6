"""The `redis` extra: sluicegate.redis needs coredis; sluicegate alone never imports it.

Each check runs in a fresh interpreter, where nothing is imported yet.
"""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_sluicegate_leaves_coredis_alone() -> None:
    code = (
        "import sys, sluicegate\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'coredis'))"
    )
    assert run(code) == "[]\n"


def test_without_coredis_the_error_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['coredis'] = None  # as if it were not installed\n"
        "try:\n"
        "    import sluicegate.redis\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert 'pip install "sluicegate[redis]"' in run(code)


def test_the_lua_script_is_a_package_resource() -> None:
    code = (
        "from importlib import resources\n"
        "print(resources.files('sluicegate.redis').joinpath('limiter.lua').is_file())"
    )
    assert run(code) == "True\n"
