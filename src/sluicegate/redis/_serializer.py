# pyright: standard
"""How a RedisWorkQueue turns items into bytes and back.

An item is stored as one field of its stream entry: ``b`` for a ``bytes``
item as it is, ``v`` for what the serializer made of any other.
"""

from __future__ import annotations

import json
import reprlib
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


def dump_item(serializer: Serializer, item: object) -> tuple[bytes, bytes]:
    """The entry field (``b`` or ``v``) and stored form of ``item``.

    Raises:
        TypeError: the serializer cannot store it (what ``dumps`` raised is
            the cause), or returned neither bytes nor str.
    """
    if isinstance(item, bytes):
        return b"b", item
    try:
        data = serializer.dumps(item)
    except Exception as exc:
        raise TypeError(
            f"the serializer {serializer!r} cannot store the item "
            f"{reprlib.repr(item)} ({type(item).__name__}): {exc} (convert the "
            "item, or pass a serializer= that stores it)"
        ) from exc
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, bytes):
        raise TypeError(
            f"serializer.dumps must return bytes or str, got {type(data).__name__}"
        )
    return b"v", data


def load_item(serializer: Serializer, fields: list[Any]) -> Any:
    """The item back from an entry's flat ``[field, value, ...]`` list; raises
    whatever the serializer's ``loads`` raises."""
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    if b"b" in pairs:
        return pairs[b"b"]
    return serializer.loads(pairs[b"v"])
