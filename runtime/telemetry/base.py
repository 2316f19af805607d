"""The ``TelemetrySink`` protocol: where the history of a twin's measurements lives."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from twinfleet.errors import HistoryUnavailable

__all__ = [
    "ANOMALY_FLAG",
    "ANOMALY_SCORE",
    "HistoryUnavailable",
    "Point",
    "TelemetrySink",
    "check_bounds",
    "check_points",
    "points_from_message",
]


class Point(NamedTuple):
    """One measurement: ``metric`` of twin ``twin_id`` was ``value`` at ``ts`` (Unix seconds).

    A point is identified by ``(twin_id, metric, ts)``; writing another value under the same
    identity replaces the first.
    """

    twin_id: str
    metric: str
    ts: float
    value: float


@runtime_checkable
class TelemetrySink(Protocol):
    """Measurement history of twins, chosen by URL (see ``open_telemetry``).

    Methods are synchronous and may block; a host calls them from its store thread, so one
    sink instance sees its calls in order (one thread at a time). ``query`` answers with the
    *oldest* points of the range first: to page through a long range, ask again with
    ``since`` set to the last point's ``ts`` and drop the points already seen at that instant.
    """

    url: str

    def write(self, points: Sequence[Point]) -> None:
        """Store ``points`` all at once (one transaction); a point replaces any with its identity.

        Within one call the last of several points with the same identity wins. A ``ts`` or
        ``value`` that is not a finite number is a ``ValueError`` and nothing is written.
        """
        ...

    def query(
        self,
        twin_id: str,
        *,
        metric: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[Point]:
        """Points of ``twin_id`` with ``since <= ts < until``, by ``ts`` then metric, oldest first.

        ``metric`` keeps one metric only; ``None`` bounds are open; at most ``limit`` points
        (the oldest ones of the range) are returned.
        """
        ...

    def query_many(
        self,
        twin_ids: Sequence[str],
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> dict[str, list[Point]]:
        """Points of each of ``twin_ids`` (those that have any), ``since <= ts < until``, by
        ``ts`` then metric, at most ``limit`` per twin (the oldest of the range)."""
        ...

    def metrics(self, twin_id: str) -> list[str]:
        """The metrics ``twin_id`` has points of, sorted."""
        ...

    def delete_before(self, ts: float) -> int:
        """Delete the points of every twin older than ``ts`` (``ts`` itself stays); how many."""
        ...

    def close(self) -> None:
        """Release connections; the sink is not used afterwards."""
        ...


def check_points(points: Sequence[Point]) -> None:
    """``ValueError`` unless every point's ``ts`` and ``value`` are finite numbers.

    SQLite would store a NaN as NULL and time-series databases refuse it, so no sink takes one.
    """
    isfinite = math.isfinite
    for point in points:
        if not (isfinite(point.ts) and isfinite(point.value)):
            raise ValueError(
                f"telemetry point {point!r} has a time or value that is not a finite number"
            )


def check_bounds(since: float | None, until: float | None) -> tuple[float, float]:
    """``since`` and ``until`` as numbers, open bounds as infinities; ``ValueError`` for NaN."""
    low = -math.inf if since is None else float(since)
    high = math.inf if until is None else float(until)
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"query bounds since={since!r} until={until!r}: NaN is not a time")
    return low, high


ANOMALY_SCORE = "$anomaly.score"
"""The series of a twin's anomaly scores (one point per scored reading)."""
ANOMALY_FLAG = "$anomaly.flag"
"""1.0 where a twin became anomalous, 0.0 where it stopped: episodes are pairs of these."""


def points_from_message(device_id: str, payload: Mapping[str, Any], ts: float) -> list[Point]:
    """The points of one telemetry payload measured at ``ts``, in payload order.

    Numbers become points: ints and finite floats as they are, booleans as ``1.0``/``0.0``
    (flags such as ``motion`` or ``door_open`` are worth a history; the twin keeps the real
    boolean). Objects are flattened with dotted names (``{"gps": {"lat": 1}}`` gives
    ``gps.lat``). Strings, nulls, arrays, NaN, infinities, ints too large for a float and
    non-string keys are skipped. The top-level ``ts`` key is the time, not a metric; top-level
    keys starting with ``$`` are reserved for the platform's series and skipped.
    """
    if not math.isfinite(ts):
        raise ValueError(f"telemetry time {ts!r} is not a finite number")
    ts = float(ts)
    points: list[Point] = []
    # An explicit stack instead of recursion: payload order is kept and depth is no concern.
    stack: list[tuple[str, Any]] = [("", iter(payload.items()))]
    while stack:
        prefix, items = stack[-1]
        for key, value in items:
            if not isinstance(key, str) or (not prefix and (key == "ts" or key[:1] == "$")):
                continue  # the time, and the platform's own series ("$anomaly.score")
            if isinstance(value, bool):
                points.append(Point(device_id, prefix + key, ts, 1.0 if value else 0.0))
            elif isinstance(value, int | float):
                try:
                    number = float(value)
                except OverflowError:
                    continue
                if math.isfinite(number):
                    points.append(Point(device_id, prefix + key, ts, number))
            elif isinstance(value, Mapping):
                stack.append((f"{prefix}{key}.", iter(value.items())))
                break
        else:
            stack.pop()
    return points
