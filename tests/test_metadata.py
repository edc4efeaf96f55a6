"""The package's metadata: its version, the Pythons it says it supports, and the
shape of its CHANGELOG."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

import sluicegate

#: The Pythons CI runs the suite on (.ci/run); the classifiers must list them.
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


def test_version_is_the_installed_distributions() -> None:
    assert sluicegate.__version__ == metadata.version("sluicegate")
    # PEP 440, public part (release, pre, post, dev).
    pattern = r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?"
    assert re.fullmatch(pattern, sluicegate.__version__)


def test_classifiers_list_the_supported_pythons() -> None:
    classifiers = metadata.metadata("sluicegate").get_all("Classifier") or []
    prefix = "Programming Language :: Python :: 3."
    listed = sorted(
        (
            c.removeprefix("Programming Language :: Python :: ")
            for c in classifiers
            if c.startswith(prefix)
        ),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    assert listed == SUPPORTED
    requires = metadata.metadata("sluicegate")["Requires-Python"]
    assert requires == f">={SUPPORTED[0]}"


CHANGELOG = Path(__file__).parent.parent / "CHANGELOG.md"
#: Keep a Changelog 1.1.0's kinds of change, the only subsections it has.
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_changelog_keeps_to_keep_a_changelog() -> None:
    releases = kinds = 0
    for line in CHANGELOG.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            releases += 1
            heading = line[3:]
            assert heading == "[Unreleased]" or re.fullmatch(
                r"\[\d+\.\d+\.\d+[^\]]*\] - \d{4}-\d{2}-\d{2}", heading
            ), f"a release heading is [Unreleased] or [x.y.z] - YYYY-MM-DD: {line!r}"
        elif line.startswith("### "):
            kinds += 1
            assert line[4:] in KINDS, f"{line!r}: use one of {sorted(KINDS)}"
        elif line.startswith("#### "):
            pytest.fail(f"{line!r}: Keep a Changelog has no fourth level")
    assert releases
    assert kinds
