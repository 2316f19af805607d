"""Limits of the twin document and the checks that enforce them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from twinfleet.errors import InvalidDeviceId, InvalidTimestamp, NestingTooDeep

__all__ = [
    "DEVICE_ID_PATTERN",
    "MAX_DEPTH",
    "MAX_DEVICE_ID_LENGTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_PAYLOAD_BYTES",
    "check_depth",
    "parse_timestamp",
    "validate_device_id",
]

MAX_DOCUMENT_BYTES: Final = 32 * 1024
MAX_DEPTH: Final = 10
MAX_PAYLOAD_BYTES: Final = 128 * 1024

MAX_DEVICE_ID_LENGTH: Final = 128
DEVICE_ID_PATTERN: Final = rf"[A-Za-z0-9._:-]{{1,{MAX_DEVICE_ID_LENGTH}}}"  # the whole id

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_valid_ids: set[str] = set()  # ids already checked: a fleet repeats the same ids endlessly


def validate_device_id(device_id: object) -> str:
    """Return ``device_id`` if it is a valid device id, else raise :class:`InvalidDeviceId`."""
    if not isinstance(device_id, str):  # first: a list or dict cannot be looked up in a set
        raise InvalidDeviceId(f"device id {device_id!r} must be a string", field="id")
    if device_id in _valid_ids:
        return device_id
    if _DEVICE_ID.fullmatch(device_id) is None:
        raise InvalidDeviceId(f"device id {device_id!r} must match {DEVICE_ID_PATTERN}", field="id")
    if len(_valid_ids) < 250_000:
        _valid_ids.add(device_id)
    return device_id


def check_depth(value: Mapping[str, Any], *, base: int = 0, field: str = "patch") -> None:
    """Raise :class:`NestingTooDeep` if objects and arrays in ``value`` nest deeper than
    ``MAX_DEPTH``.

    ``base`` is the depth at which ``value`` itself sits (a patch applied to ``reported`` sits
    at depth 1 of the document section). Arrays count as a level, as in any JSON parser's
    depth limit; otherwise nesting inside arrays would escape the limit.
    """
    stack: list[tuple[Any, int]] = [(value, base + 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise NestingTooDeep(
                f"objects and arrays nest deeper than {MAX_DEPTH} levels", field=field
            )
        children = node.values() if isinstance(node, Mapping) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def parse_timestamp(value: object, *, field: str = "ts") -> float:
    """Turn Unix seconds (int or float) or an RFC 3339 string into Unix seconds."""
    if isinstance(value, bool):
        raise InvalidTimestamp("a timestamp cannot be a boolean", field=field)
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError:  # an int too big for a float is out of range too
            ts = math.inf
        return _in_range(ts, value, field)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidTimestamp(
                f"timestamp {value!r} is neither Unix seconds nor RFC 3339", field=field
            ) from None
        if moment.tzinfo is None:
            raise InvalidTimestamp(
                f"timestamp {value!r} has no time zone offset (RFC 3339 requires one)",
                field=field,
            )
        return _in_range(moment.timestamp(), value, field)
    raise InvalidTimestamp(f"timestamp {value!r} is neither a number nor a string", field=field)


def _in_range(ts: float, value: object, field: str) -> float:
    # The same range for numbers and strings: NaN, before 1970 and after year 3000 are errors.
    if math.isnan(ts) or ts < 0 or ts > 32_503_680_000:
        raise InvalidTimestamp(f"timestamp {value!r} is out of range", field=field)
    return ts
