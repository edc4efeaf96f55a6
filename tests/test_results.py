"""Outcome: how one item's handling ended, its repr and unwrap.

The order and window in which WorkQueue.map yields outcomes are in test_map.py.
"""

from __future__ import annotations

import pytest

from sluicegate import Outcome


def test_outcome_repr_and_unwrap() -> None:
    good: Outcome[int, str] = Outcome(1, "x", None, 1, 0.5)
    bad: Outcome[int, str] = Outcome(2, None, KeyError("k"), 3, 1.0)
    assert good.unwrap() == "x"
    assert "value='x'" in repr(good)
    assert "error=KeyError('k')" in repr(bad)
    with pytest.raises(KeyError):
        bad.unwrap()
