"""The API reference documents every public name (the site itself is built,
warnings as errors, by .ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

import sluicegate
import sluicegate.redis

DOCS = Path(__file__).parent.parent / "docs"


def documented(page: str) -> set[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return set(re.findall(r"^\.\. auto\w+:: ([\w.]+)", text, flags=re.MULTILINE))


def test_every_public_name_is_in_the_api_reference() -> None:
    missing = set(sluicegate.__all__) - documented("api.rst") - {"__version__"}
    assert not missing, f"add these to docs/api.rst: {sorted(missing)}"


def test_every_name_of_the_redis_backend_is_on_its_page() -> None:
    missing = set(sluicegate.redis.__all__) - documented("redis.rst")
    assert not missing, f"add these to docs/redis.rst: {sorted(missing)}"
