# pyright: standard
"""How a RedisWorkQueue turns items into bytes and back."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

__all__ = ["JsonSerializer", "Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """What a RedisWorkQueue needs to store its items: ``dumps`` and ``loads``.

    The `json` and `pickle` modules satisfy it as they are (pickle only
    between processes that trust each other). Items that are ``bytes`` are
    stored as they are and never reach the serializer.
    """

    def dumps(self, item: Any, /) -> bytes | str:
        """The item's stored form."""
        ...

    def loads(self, data: bytes, /) -> Any:
        """The item back from its stored form."""
        ...


class JsonSerializer:
    """JSON, compact and UTF-8 (the default): dicts, lists, strings, numbers,
    booleans and None come back as they went in (tuples come back as lists)."""

    def dumps(self, item: Any, /) -> bytes:
        return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes, /) -> Any:
        return json.loads(data)

    def __repr__(self) -> str:
        return "JsonSerializer()"


def check_serializer(serializer: object) -> Serializer:
    """Return ``serializer`` if it has ``dumps`` and ``loads``."""
    if isinstance(serializer, type) or not isinstance(serializer, Serializer):
        raise TypeError(
            "serializer must have dumps(item) -> bytes | str and loads(bytes) "
            f"(the json module, say, or a JsonSerializer()); got {serializer!r}"
        )
    return serializer
