"""JSON merge patch (RFC 7396), its timestamped variant for reported state, and the delta."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from twinfleet.errors import InvalidPatch

__all__ = [
    "FLOOR",
    "SEEN",
    "delta",
    "merge_patch",
    "merge_timestamped",
    "newest",
    "validate_values",
    "visible_stamps",
]

# The integers a JSON encoder (orjson) can write: one beyond them could never be saved.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


def validate_values(patch: Mapping[str, Any], *, field: str) -> None:
    """Raise :class:`InvalidPatch` unless ``patch`` holds only JSON values with finite numbers."""
    stack: list[tuple[str, Any]] = [(field, patch)]
    while stack:
        path, value = stack.pop()
        if value is None or isinstance(value, str | bool):
            continue
        if isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                raise InvalidPatch(f"{path} is an integer beyond 64 bits", field=path)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidPatch(f"{path} is {value}, not a finite number", field=path)
        elif isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str) or not key or "\x00" in key:
                    raise InvalidPatch(
                        f"{path} has a key that is empty, not a string, or holds NUL",
                        field=path,
                    )
                stack.append((f"{path}.{key}", child))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(value))
        else:
            raise InvalidPatch(
                f"{path} is a {type(value).__name__}, which JSON cannot hold", field=path
            )


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> bool:
    """Apply a JSON merge patch to ``target`` in place; return whether anything changed."""
    changed = False
    for key, value in patch.items():
        if value is None:
            if key in target:
                del target[key]
                changed = True
        elif isinstance(value, dict):
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
                changed = True
            changed = merge_patch(child, value) or changed
        elif key not in target or not same(target[key], value):
            target[key] = value
            changed = True
    return changed


FLOOR = "\x00floor"
"""Key, in a stamp tree's object, of the time before which that whole object is obsolete."""
SEEN = "\x00seen"
"""Key, in a stamp tree's object, of the newest patch that addressed the object itself.

Device keys cannot hold NUL (``validate_values`` refuses them), so neither meets a real key.
"""


def newest(stamps: Any) -> float:
    """The newest timestamp in a stamp tree (a float leaf or nested dicts of them)."""
    if isinstance(stamps, dict):
        return max((newest(v) for v in stamps.values()), default=0.0)
    return float(stamps)


def merge_timestamped(
    values: dict[str, Any],
    stamps: dict[str, Any],
    patch: Mapping[str, Any],
    ts: float,
    numeric: dict[str, float] | None = None,
) -> int:
    """Merge ``patch`` measured at ``ts`` into ``values``, leaf by leaf, newest reading winning.

    ``stamps`` mirrors ``values`` and holds each leaf's measurement time, so the result does
    not depend on arrival order. A deleted key keeps its deletion time in ``stamps`` (a
    tombstone), so an older value cannot bring it back; an object that an older leaf or
    ``null`` would have replaced keeps that time as its ``FLOOR``. Accepted top-level numbers
    are also put in ``numeric`` (the anomaly model's input). Returns the leaves accepted.
    """
    floor = stamps.get(FLOOR)
    if floor is not None and floor > ts:
        return 0
    accepted = 0
    for key, value in patch.items():
        old = stamps.get(key)
        if value is None or not isinstance(value, dict):
            if old is not None and (old > ts if type(old) is float else newest(old) > ts):
                if type(old) is dict:
                    # This leaf (or null) replaced the object at ts: what is older is gone.
                    accepted += _expire(values[key], old, ts)
                continue
            if value is None:
                stamps[key] = ts  # tombstone
                if key in values:
                    del values[key]
                    accepted += 1
                continue
            values[key] = value
            stamps[key] = ts
            accepted += 1
            if numeric is not None and type(value) in (float, int):
                numeric[key] = value
        else:
            child = values.get(key)
            created = False
            if not isinstance(child, dict):
                if old is not None and newest(old) > ts:
                    continue
                child = values[key] = {}
                created = True
                # The leaf or tombstone this object replaces was current until now.
                stamps[key] = {} if old is None else {FLOOR: newest(old)}
            child_stamps = stamps[key]
            if child_stamps.get(FLOOR, 0.0) > ts:
                continue  # a newer leaf or null replaced the object this patch addresses
            if child_stamps.get(SEEN, 0.0) < ts:
                child_stamps[SEEN] = ts  # the object exists from here on, even if empty
            # A new (even empty) object is a change of its own, as in RFC 7396.
            accepted += merge_timestamped(child, child_stamps, value, ts) or int(created)
    return accepted


def _expire(values: dict[str, Any], stamps: dict[str, Any], ts: float) -> int:
    """Drop leaves older than ``ts`` from an object and floor it at ``ts``; return drops."""
    dropped = 0
    for key in [k for k in values if k in stamps]:
        stamp = stamps[key]
        if type(stamp) is dict:
            dropped += _expire(values[key], stamp, ts)
        elif stamp < ts:
            del values[key]
            del stamps[key]  # the floor below covers it
            dropped += 1
    if stamps.get(FLOOR, 0.0) < ts:
        stamps[FLOOR] = ts
    return dropped


def visible_stamps(values: Mapping[str, Any], stamps: Mapping[str, Any]) -> dict[str, Any]:
    """The stamps of the values present: no tombstones, no floors (the document's metadata)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        stamp = stamps.get(key)
        if stamp is None:
            continue
        if isinstance(value, dict):
            out[key] = visible_stamps(value, stamp) if isinstance(stamp, dict) else {}
        else:
            out[key] = stamp if not isinstance(stamp, dict) else newest(stamp)
    return out


def same(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``True != 1``."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def delta(desired: Mapping[str, Any], reported: Mapping[str, Any]) -> dict[str, Any]:
    """The leaves of ``desired`` that ``reported`` does not match (AWS Device Shadow rules).

    Desired keys missing from reported are in the delta; reported-only keys are not; arrays
    compare as a whole.
    """
    out: dict[str, Any] = {}
    for key, want in desired.items():
        have = reported.get(key, _MISSING)
        if isinstance(want, dict):
            if isinstance(have, dict):
                sub = delta(want, have)
                if sub:
                    out[key] = sub
            else:
                out[key] = want
        elif have is _MISSING or not same(want, have):
            out[key] = want
    return out


_MISSING: Any = object()
