"""JSON merge patch (RFC 7396), its timestamped variant for reported state, and the delta."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import InvalidPatch

__all__ = ["delta", "merge_patch", "merge_timestamped", "newest", "validate_values"]



def validate_values(patch: Mapping[str, Any], *, field: str) -> None:
    """Raise :class:`InvalidPatch` unless ``patch`` holds only JSON values with finite numbers."""
    stack: list[tuple[str, Any]] = [(field, patch)]
    while stack:
        path, value = stack.pop()
        if value is None or isinstance(value, str | bool | int):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidPatch(f"{path} is {value}, not a finite number", field=path)
        elif isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str) or not key:
                    raise InvalidPatch(f"{path} has a key that is not a non-empty string",
                                       field=path)
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

    ``stamps`` mirrors ``values`` and holds each leaf's measurement time. A leaf whose stored
    reading is newer than ``ts`` is kept. ``null`` deletes (unless the stored value is newer).
    Accepted top-level numbers are also put in ``numeric`` (the anomaly model's input).
    Returns how many leaves were accepted.
    """
    accepted = 0
    for key, value in patch.items():
        old_stamp = stamps.get(key)
        if value is None:
            if key in values and (old_stamp is None or newest(old_stamp) <= ts):
                del values[key]
                stamps.pop(key, None)
                accepted += 1
        elif isinstance(value, dict):
            child = values.get(key)
            if not isinstance(child, dict):
                if old_stamp is not None and newest(old_stamp) > ts:
                    continue
                child = values[key] = {}
                stamps[key] = {}
            child_stamps = stamps.get(key)
            if not isinstance(child_stamps, dict):
                child_stamps = stamps[key] = {}
            accepted += merge_timestamped(child, child_stamps, value, ts)
        else:
            if old_stamp is not None and (
                old_stamp > ts if type(old_stamp) is float else newest(old_stamp) > ts
            ):
                continue
            values[key] = value
            stamps[key] = ts
            accepted += 1
            if numeric is not None and type(value) in (float, int):
                numeric[key] = value
    return accepted


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
