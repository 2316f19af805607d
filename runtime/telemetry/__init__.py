"""Telemetry history: the points of every twin's measurements, in a sink chosen by URL.

``memory://`` (in-process, per process) and ``sqlite:///path.db`` (the embedded default, a
file of its own that the processes of one machine share; same URL rules as the SQLite state
store, so ``resolve_store_url`` makes a relative path absolute for Ray workers too).
"""

from __future__ import annotations

from twinfleet.runtime.stores.sqlite import sqlite_path

from .base import (
    ANOMALY_FLAG,
    ANOMALY_SCORE,
    HistoryUnavailable,
    Point,
    TelemetrySink,
    points_from_message,
)
from .influx import InfluxTelemetrySink
from .memory import MemoryTelemetrySink
from .sqlite import SqliteTelemetrySink

__all__ = [
    "ANOMALY_FLAG",
    "ANOMALY_SCORE",
    "HistoryUnavailable",
    "InfluxTelemetrySink",
    "MemoryTelemetrySink",
    "Point",
    "SqliteTelemetrySink",
    "TelemetrySink",
    "open_telemetry",
    "points_from_message",
]

_SCHEMES = "memory://, sqlite:///path.db or influx://host:port?bucket=..."


def open_telemetry(url: str) -> TelemetrySink:
    """The sink a URL names; ``ValueError`` for an unknown scheme or a malformed URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"malformed telemetry URL {url!r}: expected {_SCHEMES}")
    if scheme == "memory":
        if rest:
            raise ValueError(f"malformed telemetry URL {url!r}: memory:// takes nothing after it")
        return MemoryTelemetrySink(url)
    if scheme == "sqlite":
        sqlite_path(url)  # checks the URL before anything is created
        return SqliteTelemetrySink(url)
    if scheme == "influx":
        return InfluxTelemetrySink(url)
    raise ValueError(f"unknown telemetry scheme {scheme!r} in {url!r}: expected {_SCHEMES}")
