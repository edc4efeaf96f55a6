"""The package's metadata: its version, and the Pythons it says it supports."""

from __future__ import annotations

import re
from importlib import metadata

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
