"""Sphinx configuration for sluicegate's documentation.

Build it with ``uv run sphinx-build -W --keep-going -b html docs docs/_build/html``
(warnings are errors; CI runs exactly that).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

project = "sluicegate"
author = "sluicegate developers"
copyright = "sluicegate developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]

exclude_patterns = ["_build", "inventories"]
html_theme = "furo"
html_title = "sluicegate"

# `name` in a docstring or page is a cross-reference to a Python object (what the
# docstrings in src/ mean by single backticks); a name it cannot find is shown as
# code, without a link.
default_role = "py:obj"
# Pages name the public API as `BoundedQueue`, not `sluicegate.BoundedQueue`.
rst_prolog = ".. currentmodule:: sluicegate\n"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Links into the docs of Python, AnyIO and Trio. This machine and CI build
# without network, so the inventories come from docs/inventories/: small
# objects.inv files holding only the names these docs refer to, with the real
# addresses (docs/inventories/make.py writes them and says where each list came
# from). Set SLUICEGATE_DOCS_INTERSPHINX=online to fetch the projects' full
# inventories instead.
_inventories = Path(__file__).parent / "inventories"
_online = os.environ.get("SLUICEGATE_DOCS_INTERSPHINX") == "online"


def _inventory(name: str) -> str | None:
    return None if _online else str(_inventories / f"{name}.inv")


intersphinx_mapping = {
    "python": ("https://docs.python.org/3", _inventory("python")),
    "anyio": ("https://anyio.readthedocs.io/en/stable", _inventory("anyio")),
    "trio": ("https://trio.readthedocs.io/en/stable", _inventory("trio")),
}


# Napoleon reads the first line of a property's docstring as "type: description"
# when it holds a colon ("How many items may be handled at once (None: one per
# worker)." would show "How many items ... (None" as the type). The docstrings
# here never start with a type, and napoleon does nothing else to a property's
# docstring: keep those as written.
_property_docstrings: dict[str, list[str]] = {}


def _keep_property_docstring(  # noqa: PLR0917 - Sphinx's signature
    app: object, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what == "property":
        _property_docstrings[name] = list(lines)


def _restore_property_docstring(  # noqa: PLR0917 - Sphinx's signature
    app: object, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what == "property" and name in _property_docstrings:
        lines[:] = _property_docstrings.pop(name)


def setup(app: Any) -> None:
    # Napoleon's own handler runs at the default priority, 500.
    app.connect("autodoc-process-docstring", _keep_property_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_property_docstring, priority=600)
