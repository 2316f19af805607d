"""Encoding shared by the stores: orjson bytes in, fresh dicts out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson

__all__ = ["decode", "doc_id", "encode"]


def encode(doc: Mapping[str, Any]) -> bytes:
    """``doc`` as compact JSON bytes (orjson serialises only real dicts at the top level)."""
    return orjson.dumps(doc if isinstance(doc, dict) else dict(doc))


def decode(raw: bytes | str) -> dict[str, Any]:
    """A new dict from bytes ``encode`` produced."""
    return cast("dict[str, Any]", orjson.loads(raw))


def doc_id(doc: Mapping[str, Any]) -> str:
    """The ``id`` of a snapshot or registry entry, which every stored document must carry."""
    value = doc.get("id")
    if not isinstance(value, str) or not value:
        raise ValueError(f"a stored document needs a non-empty string 'id', got {value!r}")
    return value
