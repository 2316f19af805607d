"""Rolling windows of a twin's readings: count, min, max and mean over 1 min, 5 min and 1 h.

Kept incrementally in fixed rings of time buckets per metric (1 min: six 10-s buckets, 5 min:
five 1-min buckets, 1 h: twelve 5-min buckets), so each reading costs a few additions and a
twin's memory stays bounded whatever its rate: one flat array of 23 buckets x (start, count,
min, max, sum) doubles per metric, under 1 KB. A window holds the buckets that began within
its span (the current one included), so its far edge is as fine as its bucket; readings older
than a slot's current bucket do not enter it. Windows live in memory only: a twin activated
again starts them afresh (its history is in the telemetry sink). Pure state: no I/O.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from typing import Final

__all__ = ["WINDOWS", "RollingWindows"]

# name -> (span in seconds, bucket in seconds)
WINDOWS: Final = {"1m": (60, 10), "5m": (300, 60), "1h": (3600, 300)}
_FIELDS: Final = 5  # start, count, min, max, sum
_LAYOUT: Final = []  # (name, span, size, offset of its first bucket, buckets)
_offset = 0
for _name, (_span, _size) in WINDOWS.items():
    _LAYOUT.append((_name, _span, _size, _offset, _span // _size))
    _offset += (_span // _size) * _FIELDS
_WIDTH: Final = _offset
_EMPTY: Final = array("d", [-1.0, 0.0, 0.0, 0.0, 0.0] * (_WIDTH // _FIELDS))

Stats = dict[str, dict[str, dict[str, float | int | None]]]


class RollingWindows:
    """Per metric, one array holding the rings of every window."""

    __slots__ = ("rings",)

    def __init__(self) -> None:
        self.rings: dict[str, array[float]] = {}

    def add(self, values: Mapping[str, float], ts: float) -> None:
        """Count a reading of ``values`` measured at ``ts``."""
        for metric, x in values.items():
            ring = self.rings.get(metric)
            if ring is None:
                ring = self.rings[metric] = array("d", _EMPTY)
            for _, _, size, offset, buckets in _LAYOUT:
                start = ts - ts % size
                at = offset + int(start // size) % buckets * _FIELDS
                held = ring[at]
                if held != start:
                    if held > start:
                        continue  # older than what this slot holds now: out of the window
                    ring[at : at + _FIELDS] = array("d", (start, 1.0, x, x, x))
                    continue
                ring[at + 1] += 1.0
                ring[at + 2] = min(ring[at + 2], x)
                ring[at + 3] = max(ring[at + 3], x)
                ring[at + 4] += x

    def stats(self, now: float) -> Stats:
        """``{metric: {"1m": {"count", "min", "max", "mean"}, ...}}`` as of ``now``."""
        out: Stats = {}
        for metric, ring in sorted(self.rings.items()):
            out[metric] = {}
            for name, span, _, offset, buckets in _LAYOUT:
                live = [
                    ring[at : at + _FIELDS]
                    for at in range(offset, offset + buckets * _FIELDS, _FIELDS)
                    if ring[at] > now - span and ring[at] <= now
                ]
                count = sum(b[1] for b in live)
                out[metric][name] = {
                    "count": int(count),
                    "min": min(b[2] for b in live) if live else None,
                    "max": max(b[3] for b in live) if live else None,
                    "mean": sum(b[4] for b in live) / count if count else None,
                }
        return out
