"""QueueConfig: defaults, validation, immutability, evolve."""

from __future__ import annotations

import math
import re
from typing import Any

import attrs
import pytest

from sluicegate._config import QueueConfig


def test_defaults() -> None:
    config = QueueConfig()
    assert config.queue_capacity == 100
    assert config.capacity_refresh_time == 1.0
    assert config.concurrency_limit is None


def test_accepts_valid_values() -> None:
    config = QueueConfig(
        queue_capacity=1, capacity_refresh_time=0.001, concurrency_limit=1
    )
    assert config == QueueConfig(1, 0.001, 1)


def test_int_refresh_time_is_accepted_and_stored_as_given() -> None:
    config = QueueConfig(capacity_refresh_time=2)
    assert config.capacity_refresh_time == 2
    assert type(config.capacity_refresh_time) is int


def test_is_frozen() -> None:
    config = QueueConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.queue_capacity = 5  # type: ignore[misc]


@pytest.mark.plan("UT-20", "UT-21", "UT-22")
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("queue_capacity", 0, "queue_capacity must be at least 1, got 0"),
        ("queue_capacity", -5, "queue_capacity must be at least 1, got -5"),
        ("capacity_refresh_time", 0, "capacity_refresh_time must be .*> 0, got 0"),
        ("capacity_refresh_time", 0.0, "capacity_refresh_time .*> 0, got 0.0"),
        ("capacity_refresh_time", -1.5, "capacity_refresh_time .*> 0, got -1.5"),
        ("capacity_refresh_time", math.inf, "capacity_refresh_time .*finite.*inf"),
        ("capacity_refresh_time", -math.inf, "capacity_refresh_time .*-inf"),
        ("capacity_refresh_time", math.nan, "capacity_refresh_time .*got nan"),
        ("concurrency_limit", 0, "concurrency_limit must be at least 1, got 0"),
        ("concurrency_limit", -1, "concurrency_limit must be at least 1, got -1"),
    ],
)
def test_out_of_range_raises_value_error(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QueueConfig(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("queue_capacity", True),
        ("queue_capacity", "10"),
        ("queue_capacity", 10.0),
        ("queue_capacity", None),
        ("capacity_refresh_time", True),
        ("capacity_refresh_time", "1.0"),
        ("concurrency_limit", False),
        ("concurrency_limit", "2"),
        ("concurrency_limit", 2.0),
    ],
)
def test_wrong_type_raises_type_error(field: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"^{field} .*got {re.escape(repr(value))}"):
        QueueConfig(**{field: value})


def test_refresh_time_none_means_no_start_rate_limit() -> None:
    assert QueueConfig(capacity_refresh_time=None).capacity_refresh_time is None


def test_evolve_keeps_other_fields() -> None:
    config = QueueConfig(queue_capacity=10, concurrency_limit=3)
    evolved = attrs.evolve(config, capacity_refresh_time=0.5)
    assert evolved == QueueConfig(10, 0.5, 3)
    assert config.capacity_refresh_time == 1.0


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"queue_capacity": 0}, ValueError),
        ({"capacity_refresh_time": math.inf}, ValueError),
        ({"concurrency_limit": 0}, ValueError),
        ({"queue_capacity": "5"}, TypeError),
    ],
)
def test_evolve_revalidates(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(changes))):
        attrs.evolve(QueueConfig(), **changes)
