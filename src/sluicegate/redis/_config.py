# pyright: standard
"""RedisQueueConfig: a RedisWorkQueue's arguments, checked once, and its keys."""

from __future__ import annotations

import logging
from typing import Any

import attrs

from sluicegate._checks import check_seconds
from sluicegate._config import at_least_one, none_or_at_least_one
from sluicegate._lifecycle import check_logger
from sluicegate._protocols import RateLimiterProtocol, check_rate_limiter

from ._client import CALL_TIMEOUT, RedisClient, check_client, check_timeout, tagged_key
from ._serializer import JsonSerializer, Serializer, check_serializer

__all__ = ["RedisQueueConfig"]

#: The schemes of a URL for which the queue opens a client of its own.
URL_SCHEMES = ("redis://", "rediss://", "unix://")


def _client_or_url(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if not isinstance(value, str):
        check_client(value, attribute.name)
    elif not value.startswith(URL_SCHEMES):
        raise ValueError(
            f"{attribute.name} must be a coredis client or a URL starting with "
            f"redis://, rediss:// or unix://, got {value!r}"
        )


def _key_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    tagged_key(value, "", attribute.name)


def _seconds_or_none(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    check_seconds(attribute.name, value, allow_none=True)


def _positive_seconds(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    check_timeout(value, attribute.name)


def _rate_limiter(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    check_rate_limiter(value)


def _serializer(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    check_serializer(value)


def _logger(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_logger(value)


def _json_for_none(serializer: Serializer | None) -> Serializer:
    return JsonSerializer() if serializer is None else serializer


def _sluicegate_for_none(logger: logging.Logger | None) -> logging.Logger:
    # Only None is replaced here: the validator names a bad logger, in its turn
    # (a converter runs before every validator, and would name it first).
    return check_logger(None) if logger is None else logger


@attrs.frozen
class RedisQueueConfig:
    """What a RedisWorkQueue was given, validated at construction, in order.

    The fields are `RedisWorkQueue`'s arguments (see there), as given: the
    numbers are not converted, ``serializer`` None is a `JsonSerializer` and
    ``logger`` None the ``sluicegate`` logger. The first bad argument, in the
    order of the signature, raises TypeError or ValueError naming it.
    """

    redis: RedisClient | str = attrs.field(validator=_client_or_url)
    name: str = attrs.field(validator=_key_name)
    maxsize: int = attrs.field(default=1000, validator=at_least_one)
    timeout: float | None = attrs.field(default=None, validator=_seconds_or_none)
    concurrency_limit: int | None = attrs.field(
        default=None, validator=none_or_at_least_one
    )
    rate_limiter: RateLimiterProtocol | None = attrs.field(
        default=None, validator=_rate_limiter
    )
    serializer: Serializer = attrs.field(
        default=None, converter=_json_for_none, validator=_serializer
    )
    claim_idle: float = attrs.field(default=30.0, validator=_positive_seconds)
    max_deliveries: int = attrs.field(default=5, validator=at_least_one)
    logger: logging.Logger = attrs.field(
        default=None, converter=_sluicegate_for_none, validator=_logger
    )
    call_timeout: float = attrs.field(default=CALL_TIMEOUT, validator=_positive_seconds)
    reconnect_timeout: float = attrs.field(default=30.0, validator=_positive_seconds)

    @property
    def url(self) -> str | None:
        """The URL to open a client from, or None for a client given."""
        return self.redis if isinstance(self.redis, str) else None

    @property
    def client(self) -> RedisClient | None:
        """The client given, or None for a URL."""
        return None if isinstance(self.redis, str) else self.redis

    @property
    def stream(self) -> str:
        """The key of the stream of outstanding items."""
        return tagged_key(self.name, "stream")

    @property
    def dead(self) -> str:
        """The key of the dead stream."""
        return tagged_key(self.name, "dead")

    @property
    def books(self) -> str:
        """The key of the hash of the global counts."""
        return tagged_key(self.name, "books")

    @property
    def token_prefix(self) -> str:
        """Where a put call's token key starts: ``{name}:put:``."""
        return tagged_key(self.name, "put:")
