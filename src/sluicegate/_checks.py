"""Argument checks shared by the public constructors and methods.

Each check raises at the call that got the bad value, naming the argument, the rule
and the value, so the traceback points at the caller's line and the message shows
the fix.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
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


def check_seconds(name: str, value: object, *, allow_none: bool) -> float | None:
    """Return a duration in seconds: a real number >= 0 (inf allowed), or None.

    None means "no limit" where ``allow_none`` is set; elsewhere it is a TypeError.
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds, got None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds{' or None' if allow_none else ''}, "
            f"got {value!r} ({type(value).__name__})"
        )
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


def check_iterable(name: str, value: object) -> None:
    """Raise TypeError unless ``value`` is an iterable or an async iterable."""
    if not isinstance(value, (Iterable, AsyncIterable)):
        raise TypeError(
            f"{name} must be an iterable or an async iterable, got "
            f"{value!r} ({type(value).__name__})"
        )


def is_async_callable(value: object) -> bool:
    """True for an async function, a partial of one, or an async __call__ object."""
    if inspect.iscoroutinefunction(value):
        return True
    call = getattr(value, "__call__", None)  # noqa: B004 - we want the method itself
    return call is not None and inspect.iscoroutinefunction(call)


def check_async_callable(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is an async callable (or None where allowed)."""
    if value is None and allow_none:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be an async function, got {value!r}")
    if not is_async_callable(value):
        raise TypeError(
            f"{name} must be an async function (defined with `async def`), got "
            f"the plain callable {_describe(value)}; wrap blocking code with "
            "`anyio.to_thread.run_sync` inside an async function"
        )
    return value


def _describe(value: Callable[..., object]) -> str:
    return getattr(value, "__qualname__", None) or repr(value)
