"""Argument checks shared by the public constructors and methods.

Each check raises at the call that got the bad value, naming the argument, the rule
and the value, so the traceback points at the caller's line and the message shows
the fix.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, Iterable
from typing import Any, TypeGuard

from anyio import CapacityLimiter


def is_int(value: object) -> TypeGuard[int]:
    """True for an int, False for a bool: Python counts True as 1, a caller never."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    """True for an int or a float, False for a bool (see `is_int`)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def not_seconds(name: str, value: object, *, or_none: bool = False) -> TypeError:
    """The error for a duration ``value`` that is no number (`is_number`)."""
    return TypeError(
        f"{name} must be a number of seconds{' or None' if or_none else ''}, "
        f"got {value!r} ({type(value).__name__})"
    )


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``."""
    if not is_int(value):
        raise TypeError(
            f"{name} must be an int, got {value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return value


def check_optional_int(name: str, value: object, *, minimum: int) -> int | None:
    """Like `check_int`, but None is allowed and returned as is."""
    if value is None:
        return None
    return check_int(name, value, minimum=minimum)


def check_concurrency_limit(value: object) -> int | CapacityLimiter | None:
    """Return a queue's ``concurrency_limit``: an int >= 1, None, or an
    `anyio.CapacityLimiter` (shared with whatever else borrows from it)."""
    if isinstance(value, CapacityLimiter):
        return value
    if value is not None and not is_int(value):
        raise TypeError(
            "concurrency_limit must be an int, None or an anyio.CapacityLimiter, "
            f"got {value!r} ({type(value).__name__})"
        )
    return check_optional_int("concurrency_limit", value, minimum=1)


def check_seconds(name: str, value: object, *, allow_none: bool) -> float | None:
    """Return a duration in seconds: a real number >= 0 (inf allowed), or None.

    None means "no limit" where ``allow_none`` is set; elsewhere it is a TypeError.
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds, got None")
    if not is_number(value):
        raise not_seconds(name, value, or_none=allow_none)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


def check_hold(seconds: object) -> bool:
    """Check the ``seconds`` of a `hold`; True unless it is 0 (no hold)."""
    if not is_number(seconds):
        raise TypeError(
            f"seconds must be a number, got {seconds!r} ({type(seconds).__name__})"
        )
    if not 0 <= seconds < math.inf:
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
    return bool(seconds)


def check_iterable(name: str, value: object) -> None:
    """Raise TypeError unless ``value`` is an iterable or an async iterable."""
    if not isinstance(value, (Iterable, AsyncIterable)):
        raise TypeError(
            f"{name} must be an iterable or an async iterable, got "
            f"{value!r} ({type(value).__name__})"
        )


class NotAwaitableError(TypeError):
    """A worker function or error handler returned something not awaitable."""


def check_callable(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is callable (or None where allowed).

    Any callable is taken, as AnyIO's ``start_soon`` takes one: whether a call
    returns an awaitable is only known once it is made (a lambda or a plain
    decorator around an async function returns one).
    """
    if value is None and allow_none:
        return None
    if not callable(value):
        raise TypeError(
            f"{name} must be callable (an async function, say), got {value!r} "
            f"({type(value).__name__})"
        )
    return value


def not_awaitable(name: str, func: object, result: object) -> NotAwaitableError:
    """The error for a call of ``func`` that returned the non-awaitable ``result``."""
    return NotAwaitableError(
        f"{name} {_describe(func)} returned {type(result).__name__} {result!r}, "
        "which is not awaitable: it must return an awaitable (define it with "
        "`async def`; run blocking code with `anyio.to_thread.run_sync`)"
    )


def _describe(value: object) -> str:
    return getattr(value, "__qualname__", None) or repr(value)
