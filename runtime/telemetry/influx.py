"""Telemetry history written to InfluxDB (or anything taking its line protocol) by influxdb-client.

``influx://host:8086?bucket=twinfleet&org=twinfleet&token=...`` (``&tls=true`` for HTTPS;
``&measurement=`` to rename the ``telemetry`` measurement). Points go to ``/api/v2/write``,
which InfluxDB 1.8+, 2.x and 3.x and VictoriaMetrics accept: one line per twin and instant,
the twin as the ``twin`` tag, each metric a field (``$anomaly.score`` too). The sink only
writes: history is read where it is stored (Flux, InfluxQL, PromQL), so ``query`` raises
:class:`HistoryUnavailable` and the API says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point as LinePoint
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision

from twinfleet.errors import StoreUnavailable

from .base import HistoryUnavailable, Point, check_points

__all__ = ["InfluxTelemetrySink"]

_KEYS = {"bucket", "org", "token", "tls", "measurement", "timeout_s"}


class InfluxTelemetrySink:
    """Writes points as InfluxDB line protocol, one request per batch."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "influx" or not parts.hostname:
            raise ValueError(f"malformed Influx URL {url!r}: expected influx://host:port?bucket=")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - _KEYS
        if unknown:
            raise ValueError(f"unknown Influx URL parameters: {', '.join(sorted(unknown))}")
        if not query.get("bucket"):
            raise ValueError(f"Influx URL {url!r} names no bucket (?bucket=...)")
        self.url = url
        self._bucket = query["bucket"]
        self._org = query.get("org", "twinfleet")
        self._measurement = query.get("measurement", "telemetry")
        scheme = "https" if query.get("tls", "").lower() in ("1", "true", "yes") else "http"
        self._client = InfluxDBClient(
            url=f"{scheme}://{parts.hostname}:{parts.port or 8086}",
            token=query.get("token", ""),
            org=self._org,
            timeout=int(float(query.get("timeout_s", "10")) * 1000),
        )
        self._writer = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, points: Sequence[Point]) -> None:
        """Send ``points`` in one request (one line per twin and instant)."""
        check_points(points)
        lines: dict[tuple[str, float], LinePoint] = {}
        for twin_id, metric, ts, value in points:
            line = lines.get((twin_id, ts))
            if line is None:
                line = lines[twin_id, ts] = (
                    LinePoint(self._measurement)
                    .tag("twin", twin_id)
                    .time(round(ts * 1e9), WritePrecision.NS)
                )
            line.field(metric, float(value))
        if not lines:
            return
        try:
            self._writer.write(
                bucket=self._bucket,
                org=self._org,
                record=list(lines.values()),
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]  # a str constant
            )
        except Exception as err:  # HTTP errors and refused connections alike
            raise StoreUnavailable(
                f"Influx at {self._client.url} refused the write: {err}"
            ) from err

    def query(
        self,
        twin_id: str,
        *,
        metric: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[Point]:
        """Not here: the history lives in Influx."""
        raise HistoryUnavailable(self._where())

    def query_many(
        self,
        twin_ids: Sequence[str],
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> dict[str, list[Point]]:
        """Not here: the history lives in Influx."""
        raise HistoryUnavailable(self._where())

    def metrics(self, twin_id: str) -> list[str]:
        """Not here: the history lives in Influx."""
        raise HistoryUnavailable(self._where())

    def delete_before(self, ts: float) -> int:
        """Retention is Influx's business (bucket retention policies)."""
        raise HistoryUnavailable(self._where())

    def close(self) -> None:
        """Close the HTTP client."""
        self._writer.close()
        self._client.close()

    def _where(self) -> str:
        return (
            f"telemetry history is written to Influx bucket {self._bucket!r} at "
            f"{self._client.url}; query it there"
        )
