"""QueueConfig: the sizes and limits of a WorkQueue or Executor, checked once."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._checks import check_int, check_optional_int, is_number, not_seconds

__all__ = ["QueueConfig", "at_least_one", "none_or_at_least_one"]


def at_least_one(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    """An attrs validator: the field is an int >= 1 (`check_int`)."""
    check_int(attribute.name, value, minimum=1)


def none_or_at_least_one(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    """An attrs validator: the field is None or an int >= 1."""
    check_optional_int(attribute.name, value, minimum=1)


def _positive_finite_seconds(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is None:
        return  # no start-rate limit
    if not is_number(value):
        raise not_seconds(attribute.name, value, or_none=True)
    # `not (0 < value < inf)` also catches nan, which fails every comparison.
    if not 0 < value < math.inf:
        raise ValueError(
            f"{attribute.name} must be a finite number of seconds > 0, got {value!r}"
        )


@attrs.frozen
class QueueConfig:
    """The sizes and limits of a WorkQueue or Executor, validated at construction.

    ``queue_capacity``: how many items the queue buffers before `put` waits. For an
    Executor it is also how many events it may start per ``capacity_refresh_time``
    window: a token bucket holding ``queue_capacity`` tokens, refilled continuously
    over ``capacity_refresh_time`` seconds.

    ``capacity_refresh_time``: the seconds that bucket takes to refill from empty;
    finite and greater than 0, or None for no start-rate limit.

    ``concurrency_limit``: how many items are handled at once; None means no limit
    beyond the number of workers.

    Raises TypeError for a value of the wrong type and ValueError for one out of
    range, naming the field; `attrs.evolve` checks the new values the same way.
    """

    queue_capacity: int = attrs.field(default=100, validator=at_least_one)
    capacity_refresh_time: float | None = attrs.field(
        default=1.0, validator=_positive_finite_seconds
    )
    concurrency_limit: int | None = attrs.field(
        default=None, validator=none_or_at_least_one
    )
