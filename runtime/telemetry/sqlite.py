"""``SqliteTelemetrySink``: the embedded default ``TelemetrySink``, one SQLite file in WAL mode."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Literal

from twinfleet.runtime.stores.sqlite import SqliteFile

from .base import Point, check_bounds, check_points

__all__ = ["SqliteTelemetrySink"]

log = logging.getLogger(__name__)

# One row per point, clustered by series: a (twin, metric) time range is one index range.
# WITHOUT ROWID because rows are small and the key is the whole identity (no second b-tree).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    twin_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (twin_id, metric, ts)
) WITHOUT ROWID
"""
_UPSERT = (
    "INSERT INTO points (twin_id, metric, ts, value) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (twin_id, metric, ts) DO UPDATE SET value = excluded.value"
)
# The metrics of a twin by skipping from one to the next through the primary key, so the cost
# is one index seek per metric however long the history (a DISTINCT would read every point).
_METRICS = """
WITH RECURSIVE names(name) AS (
    SELECT min(metric) FROM points WHERE twin_id = :twin
    UNION ALL
    SELECT (SELECT min(metric) FROM points WHERE twin_id = :twin AND metric > names.name)
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL
"""
# All metrics: one primary-key range per metric (found as above), merged by a bounded sort.
_QUERY_ALL = """
WITH RECURSIVE names(name) AS (
    SELECT min(metric) FROM points WHERE twin_id = :twin
    UNION ALL
    SELECT (SELECT min(metric) FROM points WHERE twin_id = :twin AND metric > names.name)
    FROM names WHERE names.name IS NOT NULL
)
SELECT twin_id, metric, ts, value FROM points
WHERE twin_id = :twin AND metric IN (SELECT name FROM names) AND ts >= :since AND ts < :until
ORDER BY ts, metric LIMIT :limit
"""
_QUERY_ONE = (
    "SELECT twin_id, metric, ts, value FROM points"
    " WHERE twin_id = :twin AND metric = :metric AND ts >= :since AND ts < :until"
    " ORDER BY ts LIMIT :limit"
)
# Many twins at once (training reads whole families): their rows numbered per twin by time,
# so each keeps its oldest ``limit`` points of the range; one statement per chunk of twins.
_QUERY_MANY = """
SELECT twin_id, metric, ts, value FROM (
    SELECT twin_id, metric, ts, value,
           row_number() OVER (PARTITION BY twin_id ORDER BY ts, metric) AS n
    FROM points WHERE twin_id IN ({marks}) AND ts >= ? AND ts < ?
) WHERE n <= ? ORDER BY twin_id, ts, metric
"""
_CHECKPOINT_EVERY_S = 5.0
_WAL_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL file is trimmed back to this after a checkpoint
_MANY_CHUNK = 500  # twins per statement (well below SQLite's limit on parameters)
# Retention walks the series one index seek at a time: the oldest point of the next series.
_FIRST_SERIES = "SELECT twin_id, metric, ts FROM points ORDER BY twin_id, metric, ts LIMIT 1"
_NEXT_SERIES = (
    "SELECT twin_id, metric, ts FROM points WHERE (twin_id, metric) > (?, ?)"
    " ORDER BY twin_id, metric, ts LIMIT 1"
)
_DELETE_SERIES = "DELETE FROM points WHERE twin_id = ? AND metric = ? AND ts < ?"
# Retention commits after this many series or deleted points, so writers wait only briefly.
_RETENTION_SERIES_PER_TX = 1000
_RETENTION_POINTS_PER_TX = 50_000


class SqliteTelemetrySink(SqliteFile):
    """Telemetry points in a SQLite file of their own, which several processes may write.

    WAL lets readers run beside the one writer; ``busy_timeout`` makes writers from other
    processes wait instead of failing, and ``BEGIN IMMEDIATE`` takes the write lock up front
    (a deferred transaction upgrading its lock can fail without waiting). ``synchronous``
    is ``NORMAL`` by default: a commit survives a crash of the process, and the file stays
    consistent on power loss, but the last commits before a power loss may be lost, which
    suits history written in batches; pass ``"FULL"`` to sync every commit. SQLite failures
    raise ``StoreUnavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_s: float = 30.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        super().__init__(
            url,
            schema=_SCHEMA,
            what="telemetry sink",
            busy_timeout_s=busy_timeout_s,
            synchronous=synchronous,
        )
        self._conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
        self._checkpointed = time.monotonic()
        self._reader: sqlite3.Connection | None = None  # query_many's, opened when first used

    concurrent_reads = True
    """``query_many`` may run in another thread while writes go on (its own connection)."""

    def _read_connection(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._reader.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        return self._reader

    def close(self) -> None:
        """Close the connections."""
        if self._reader is not None:
            self._reader.close()
        super().close()

    def write(self, points: Sequence[Point]) -> None:
        """Store ``points`` in one transaction; a point replaces any with its identity."""
        check_points(points)
        if points:
            with self._write(f"write {len(points)} points") as conn:
                conn.executemany(_UPSERT, points)
            self._checkpoint_now_and_then()

    def _checkpoint_now_and_then(self) -> None:
        """Fold the WAL back into the file every few seconds of writing.

        SQLite's automatic checkpoints are passive: with hosts writing and training reading
        without pause none of them ever completes and the WAL grows without end (seen: 6 GB
        in five minutes at 40,000 msgs/s, every query slower for it). A ``RESTART``
        checkpoint waits for the readers of the moment, copies the WAL back and lets the next
        writer start the WAL over; ``journal_size_limit`` then trims the file.
        """
        now = time.monotonic()
        if now - self._checkpointed < _CHECKPOINT_EVERY_S:
            return
        self._checkpointed = now
        try:
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)")
        except sqlite3.OperationalError as err:  # busy past the timeout: next time then
            log.info("telemetry sink %s: checkpoint skipped: %s", self.path, err)

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
        if limit <= 0 or low >= high:  # SQLite reads a negative LIMIT as "no limit"
            return []
        # Open bounds are infinities: stored times are finite, so they compare as intended.
        params = {"twin": twin_id, "metric": metric, "since": low, "until": high, "limit": limit}
        rows = self._conn.execute(_QUERY_ALL if metric is None else _QUERY_ONE, params)
        return list(map(Point._make, rows))

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
        low, high = check_bounds(since, until)
        found: dict[str, list[Point]] = {}
        if limit <= 0 or low >= high:
            return found
        unique = list(dict.fromkeys(twin_ids))
        for start in range(0, len(unique), _MANY_CHUNK):
            chunk = unique[start : start + _MANY_CHUNK]
            sql = _QUERY_MANY.format(marks=", ".join("?" * len(chunk)))
            rows = self._read_connection().execute(sql, (*chunk, low, high, limit))
            for row in rows:
                found.setdefault(row[0], []).append(Point._make(row))
        return found

    def metrics(self, twin_id: str) -> list[str]:
        """The metrics ``twin_id`` has points of, sorted."""
        return [name for (name,) in self._conn.execute(_METRICS, {"twin": twin_id})]

    def delete_before(self, ts: float) -> int:
        """Delete the points of every twin older than ``ts``; how many.

        The series are visited one after another in several short transactions (so hosts
        writing meanwhile wait only briefly); each costs an index seek, not a full scan. If
        it fails midway, the transactions already committed stay committed.
        """
        cutoff, _ = check_bounds(ts, None)
        deleted = 0
        conn = self._conn
        row = conn.execute(_FIRST_SERIES).fetchone()
        while row is not None:
            series = deleted_here = 0
            with self._write("delete old points") as conn:
                while row is not None and series < _RETENTION_SERIES_PER_TX:
                    twin_id, metric, oldest = row
                    if oldest < cutoff:
                        deleted_here += conn.execute(
                            _DELETE_SERIES, (twin_id, metric, cutoff)
                        ).rowcount
                    row = conn.execute(_NEXT_SERIES, (twin_id, metric)).fetchone()
                    series += 1
                    if deleted_here >= _RETENTION_POINTS_PER_TX:
                        break
            deleted += deleted_here
        return deleted
