"""``MemoryTelemetrySink``: an in-process ``TelemetrySink`` for tests and single-process runs."""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import islice

from .base import Point, check_bounds, check_points

__all__ = ["MemoryTelemetrySink"]


class _Series:
    """The points of one (twin, metric): times sorted ascending, values alongside."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[float] = []

    def put(self, ts: float, value: float) -> None:
        times = self.times
        if not times or ts > times[-1]:  # the usual case: a newer reading
            times.append(ts)
            self.values.append(value)
            return
        at = bisect_left(times, ts)
        if times[at] == ts:
            self.values[at] = value
        else:
            times.insert(at, ts)
            self.values.insert(at, value)

    def between(self, metric: str, low: float, high: float) -> Iterator[tuple[float, str, float]]:
        start, stop = bisect_left(self.times, low), bisect_left(self.times, high)
        for ts, value in zip(self.times[start:stop], self.values[start:stop], strict=True):
            yield ts, metric, value


class MemoryTelemetrySink:
    """Points kept per twin and metric in sorted lists (``memory://``); gone with the process."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._twins: dict[str, dict[str, _Series]] = {}

    def write(self, points: Sequence[Point]) -> None:
        """Store ``points`` (all are checked before any is stored); the last duplicate wins."""
        check_points(points)
        twins = self._twins
        for twin_id, metric, ts, value in points:
            by_metric = twins.get(twin_id)
            if by_metric is None:
                by_metric = twins[twin_id] = {}
            series = by_metric.get(metric)
            if series is None:
                series = by_metric[metric] = _Series()
            series.put(float(ts), float(value))

    def query(
        self,
        twin_id: str,
        *,
        metric: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[Point]:
        """Points of ``twin_id``, ``since <= ts < until``, by ``ts`` then metric, oldest first."""
        low, high = check_bounds(since, until)
        by_metric = self._twins.get(twin_id, {})
        if limit <= 0 or low >= high:
            return []
        names = sorted(by_metric) if metric is None else [metric] if metric in by_metric else []
        # Within a series times are unique, so (ts, metric) orders the merge fully.
        merged = heapq.merge(*(by_metric[name].between(name, low, high) for name in names))
        return [Point(twin_id, m, ts, value) for ts, m, value in islice(merged, limit)]

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
        found = {t: self.query(t, since=since, until=until, limit=limit) for t in twin_ids}
        return {t: points for t, points in found.items() if points}

    def metrics(self, twin_id: str) -> list[str]:
        """The metrics ``twin_id`` has points of, sorted."""
        return sorted(self._twins.get(twin_id, ()))

    def delete_before(self, ts: float) -> int:
        """Delete the points of every twin older than ``ts``; how many."""
        cutoff, _ = check_bounds(ts, None)
        deleted = 0
        for twin_id, by_metric in list(self._twins.items()):
            for metric, series in list(by_metric.items()):
                cut = bisect_left(series.times, cutoff)
                if cut:
                    deleted += cut
                    del series.times[:cut], series.values[:cut]
                    if not series.times:
                        del by_metric[metric]
            if not by_metric:
                del self._twins[twin_id]
        return deleted

    def close(self) -> None:
        """Nothing to release."""
