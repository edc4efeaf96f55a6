"""Outcome: how one item's handling ended, as `WorkQueue.map` yields it."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Outcome"]

T = TypeVar("T")
R = TypeVar("R")


class Outcome(Generic[T, R]):
    """One item and how its handling ended: the value its call returned, or the
    exception of its last attempt.

    Attributes:
        item: The input item.
        value: What the worker function returned (None if it failed).
        error: The exception of the last attempt, or None if it succeeded.
        attempts: How many calls were made, retries included.
        duration: Seconds from the first call's start to the end of the last,
            backoff delays included.
    """

    __slots__ = ("attempts", "duration", "error", "item", "value")

    def __init__(
        self,
        item: T,
        value: R | None,
        error: Exception | None,
        attempts: int,
        duration: float,
    ) -> None:
        self.item: T = item
        self.value: R | None = value
        self.error: Exception | None = error
        self.attempts: int = attempts
        self.duration: float = duration

    @property
    def ok(self) -> bool:
        """True if the item succeeded."""
        return self.error is None

    def unwrap(self) -> R:
        """The value, or raise the error the item failed with."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]

    def __repr__(self) -> str:
        how = f"value={self.value!r}" if self.error is None else f"error={self.error!r}"
        return (
            f"Outcome(item={self.item!r}, {how}, attempts={self.attempts}, "
            f"duration={self.duration:.3g})"
        )
