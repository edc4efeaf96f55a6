"""RetryPolicy and RetryAfter: when a failed item is tried again, and after how long."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeAlias, cast

import attrs

from ._exceptions import ItemTimeoutError

__all__ = ["RetryAfter", "RetryPolicy", "parse_retry_after"]

ExceptionTypes: TypeAlias = type[Exception] | tuple[type[Exception], ...]
RetryOn: TypeAlias = ExceptionTypes | Callable[[Exception], bool]


class RetryAfter(Exception):  # noqa: N818 - reads as the HTTP header it mirrors
    """Raise it from a worker function to have the item tried again later.

    Use it for server pushback (HTTP 429 or 503 with a ``Retry-After`` header):
    the item is retried after ``seconds``; the queue it was raised in starts no
    new call until then (see `BoundedQueue.hold`), and the queue's rate
    limiter, if it has one, grants nothing to anyone until then, so every queue
    sharing that limiter backs off together. `RetryAfter.from_header` reads the
    header.

    It counts as one of the item's attempts under its `RetryPolicy` (whatever
    the policy's ``on`` says); once they are spent, the item fails with it.
    """

    def __init__(self, seconds: float, message: str | None = None) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, got {seconds!r}")
        if not 0 <= seconds < math.inf:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        self.seconds: float = float(seconds)
        super().__init__(message or f"retry after {self.seconds:g} s")

    @classmethod
    def from_header(
        cls,
        value: str | None,
        default: float = 1.0,
        *,
        now: datetime | None = None,
    ) -> RetryAfter:
        """A RetryAfter for a ``Retry-After`` header's value.

        The value is seconds (``"120"``) or an HTTP date; a missing or
        unreadable value gives ``default`` seconds.
        """
        seconds = None if value is None else parse_retry_after(value, now=now)
        return cls(default if seconds is None else seconds)


def parse_retry_after(value: str, *, now: datetime | None = None) -> float | None:
    """Seconds to wait, from a ``Retry-After`` header: delay-seconds or HTTP-date.

    A date in the past gives 0. Returns None for a value that is neither.
    ``now`` (aware) defaults to the current UTC time.
    """
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
        when = when.replace(tzinfo=timezone.utc)
    now = now if now is not None else datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def _check_on(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # A tuple is checked item by item, whatever the tuple's item type.
    types = cast("tuple[object, ...]", value) if isinstance(value, tuple) else (value,)
    if all(isinstance(t, type) and issubclass(t, Exception) for t in types) and types:
        return
    if not isinstance(value, (tuple, type)) and callable(value):
        return  # a predicate
    raise TypeError(
        "on must be an Exception subclass, a tuple of them, or a predicate "
        f"taking the exception, got {value!r}"
    )


def _number(minimum: float, *, inclusive: bool = True) -> Callable[..., None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        name = attribute.name
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        ok = value >= minimum if inclusive else value > minimum
        if not (ok and value < math.inf):
            rule = ">=" if inclusive else ">"
            raise ValueError(
                f"{name} must be finite and {rule} {minimum:g}, got {value!r}"
            )

    return check


def _optional_seconds(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        _number(0, inclusive=False)(instance, attribute, value)


def _flag(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be a bool, got {value!r}")


def _attempts(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"attempts must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"attempts must be at least 1, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How a failed item is tried again: which errors, how often, how long apart.

    An item whose call raises an exception that ``on`` accepts is tried again,
    up to ``attempts`` calls in all, unless ``timeout`` seconds have passed since
    its first call started. Between calls it waits, without holding a worker
    or a concurrency slot, a delay drawn at random between 0 and
    ``min(max_backoff, backoff * multiplier ** (n - 1))`` after its n-th failed
    call ("full jitter", which spreads retries out), or exactly that bound
    with ``jitter=False``. Every call takes its token from the rate limiter.

    Two failures are retried whatever ``on`` says: `RetryAfter` (after the
    seconds it asks for), and a call cut by the queue's ``item_timeout``
    (`ItemTimeoutError`), unless ``retry_timeouts=False``. A TimeoutError the
    worker function raises itself is left to ``on``.

    Args:
        attempts: Calls in all, the first included (1: never retry).
        on: Which exceptions are retried: an Exception subclass, a tuple of
            them, or a predicate ``on(exc) -> bool``.
        backoff: The delay bound after the first failure, in seconds (> 0).
        multiplier: How much the bound grows after each failure (>= 1).
        max_backoff: The largest delay bound, in seconds (>= backoff).
        timeout: No retry starts later than this many seconds after the item's
            first call started (None: no limit).
        jitter: Draw each delay at random below its bound (True) or wait the
            bound itself (False).
        retry_timeouts: Retry calls cut by ``item_timeout`` whatever ``on``
            says (True, the default), or leave them to ``on`` as any other
            error (False).

    Raises:
        TypeError, ValueError: a field breaks its rule; the message names it.
    """

    attempts: int = attrs.field(default=3, validator=_attempts)
    on: RetryOn = attrs.field(default=Exception, validator=_check_on)
    backoff: float = attrs.field(default=0.1, validator=_number(0, inclusive=False))
    multiplier: float = attrs.field(default=2.0, validator=_number(1))
    max_backoff: float = attrs.field(
        default=10.0, validator=_number(0, inclusive=False)
    )
    timeout: float | None = attrs.field(default=None, validator=_optional_seconds)
    jitter: bool = attrs.field(default=True, validator=_flag)
    retry_timeouts: bool = attrs.field(default=True, validator=_flag)

    def __attrs_post_init__(self) -> None:
        if self.max_backoff < self.backoff:
            raise ValueError(
                f"max_backoff ({self.max_backoff!r}) must be >= backoff "
                f"({self.backoff!r})"
            )

    def retries(self, exc: Exception) -> bool:
        """True if ``exc`` is one of the errors this policy retries."""
        if isinstance(exc, RetryAfter):
            return True
        if self.retry_timeouts and isinstance(exc, ItemTimeoutError):
            return True
        on = self.on
        if isinstance(on, (type, tuple)):
            return isinstance(exc, on)
        return bool(on(exc))

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after the ``failures``-th failed call (1 for the first)."""
        try:
            grown = self.backoff * self.multiplier ** (failures - 1)
        except OverflowError:
            grown = math.inf
        bound = min(self.max_backoff, grown)
        if not self.jitter:
            return bound
        draw = rng.random if rng is not None else random.random
        return draw() * bound
