"""``HistoryBuffer``: a host's telemetry history on its way to the sink, and back for training."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from twinfleet.runtime.telemetry import (
    ANOMALY_FLAG,
    ANOMALY_SCORE,
    HistoryUnavailable,
    Point,
    TelemetrySink,
)
from twinfleet.twins import Twin

from .activation import Activation
from .residents import Residents

__all__ = ["HistoryBuffer"]

log = logging.getLogger(__name__)

_WRITE_CHUNK = 20_000  # history points per sink write
_HISTORY_CHUNK = 100  # twins per history query when training reads a family
_MAX_PENDING_POINTS = 1_000_000  # history kept while the sink is down (about 100 MB)


class HistoryBuffer:
    """Telemetry history waiting for the sink: written in chunks, bounded while the sink is
    down or behind, expired after the retention, and read back for training."""

    def __init__(
        self,
        residents: Residents,
        sink: TelemetrySink | None,
        *,
        activation: Activation,
        retention_s: float | None,
    ) -> None:
        self._residents = residents
        self.sink = sink
        self._activation = activation
        self._retention_s = retention_s
        # Waiting for the sink, oldest first. Always this list (changed in place, never
        # replaced): the message loop appends to it across its yields.
        self.points: list[Point] = []
        self._failing = False
        # Training's history reads, beside the store thread where the sink allows (its flush
        # writes would otherwise queue every read behind a second or more of writing).
        self._reads = (
            ThreadPoolExecutor(1, thread_name_prefix=f"twinfleet-history-{residents.host_id}")
            if getattr(sink, "concurrent_reads", False)
            else residents.io
        )

    def record_score(self, twin: Twin, was_anomalous: bool, when: float) -> None:
        """Keep the model's verdict in history: every score, and each flip of the flag."""
        self.points.append(Point(twin.id, ANOMALY_SCORE, when, float(twin.anomaly_score)))
        if twin.anomalous != was_anomalous:
            self.points.append(Point(twin.id, ANOMALY_FLAG, when, 1.0 if twin.anomalous else 0.0))

    def bound(self) -> None:
        """Drop the oldest waiting points beyond the bound (counted): a sink that is down or
        slower than the devices must not grow a host without end."""
        excess = len(self.points) - _MAX_PENDING_POINTS
        if excess > 0:
            del self.points[:excess]
            self._residents.counters["history_dropped"] += excess
            if not self._failing:
                log.warning(
                    "host %s: history sink behind, oldest points dropped", self._residents.host_id
                )

    async def write(self, most: int | None = None) -> None:
        """Write the history waiting for the sink, in chunks (kept if it fails).

        Only what waits now (and at most ``most`` points): points arriving meanwhile wait for
        the next round, so a sink slower than the devices cannot hold back what follows.
        """
        residents = self._residents
        counters = residents.counters
        waiting = self.points
        budget = len(waiting) if most is None else min(most, len(waiting))
        while budget > 0 and waiting and self.sink is not None:
            # In chunks: snapshots and history queries take turns on the IO thread meanwhile.
            budget -= _WRITE_CHUNK
            chunk = waiting[:_WRITE_CHUNK]
            del waiting[:_WRITE_CHUNK]
            try:
                await residents.run(self.sink.write, chunk)
            except Exception as err:
                # Kept for the next flush (the sink may be restarting), up to a bound.
                waiting[:0] = chunk
                self.bound()
                counters["history_errors"] += 1
                if not self._failing:
                    log.warning(
                        "host %s: telemetry history not written, retrying: %s",
                        residents.host_id,
                        err,
                    )
                self._failing = True
                break
            else:
                counters["history_points"] += len(chunk)
                if self._failing:
                    log.warning("host %s: telemetry history written again", residents.host_id)
                self._failing = False

    async def expire(self) -> int:
        """Delete history older than the retention (every host's: the sink is shared, and
        deleting is idempotent); how many points went. Influx sinks keep their own."""
        retention = self._retention_s
        if self.sink is None or retention is None:
            return 0
        residents = self._residents
        deleted: int = await residents.run(self.sink.delete_before, residents.clock() - retention)
        residents.counters["history_expired"] += deleted
        return deleted

    async def training_history(
        self,
        *,
        family: str | None = None,
        twin_ids: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
        max_twins: int = 1_000,
    ) -> dict[str, list[tuple[float, dict[str, float]]]]:
        """Readings from history for training (see ``TwinHost.training_history``)."""
        sink = self.sink
        if sink is None:
            raise HistoryUnavailable("this platform keeps no telemetry history to train on")
        twins = self._residents.twins
        if twin_ids:
            await self._activation.activate([t for t in twin_ids if t not in twins])
            chosen = [t for t in twin_ids if t in twins]
        else:
            chosen = [t.id for t in twins.values() if t.family.name == family][:max_twins]
        # The readings waiting for the sink belong in it too (a bounded share of them when
        # the sink is behind: training must not wait for the whole backlog).
        await self.write(most=5 * _WRITE_CHUNK)
        history: dict[str, list[tuple[float, dict[str, float]]]] = {}
        for start in range(0, len(chosen), _HISTORY_CHUNK):
            # Many twins per query, and the IO thread free for flushes between the queries.
            read = functools.partial(
                sink.query_many,
                chosen[start : start + _HISTORY_CHUNK],
                since=since,
                until=until,
                limit=limit,
            )
            found = await asyncio.get_running_loop().run_in_executor(self._reads, read)
            for twin_id, points in found.items():
                readings: dict[float, dict[str, float]] = {}
                for point in points:
                    if not point.metric.startswith("$"):
                        readings.setdefault(point.ts, {})[point.metric] = point.value
                if readings:
                    history[twin_id] = sorted(readings.items())
        return history

    async def close(self) -> None:
        """Close the sink (on the store thread, after what is queued there)."""
        if self.sink is not None:
            await self._residents.run(self.sink.close)

    def shutdown(self) -> None:
        """Stop the history reads' thread, if it has one of its own."""
        if self._reads is not self._residents.io:
            self._reads.shutdown(wait=True)
