"""Analytics of a twin and the fleet: telemetry history, sliding windows, fleet aggregates,
anomaly scores and episodes, and the twins anomalous now."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query

from twinfleet.api.deps import API_PREFIX, ApiContext, Context, allowed, time_param
from twinfleet.errors import NotFound
from twinfleet.runtime.telemetry import ANOMALY_FLAG, ANOMALY_SCORE, Point, TelemetrySink
from twinfleet.twins import WINDOWS, TwinFilter, validate_device_id, window_stats

__all__ = ["episodes", "router"]

router = APIRouter(prefix=API_PREFIX)


def _history(ctx: ApiContext) -> TelemetrySink:
    if ctx.telemetry is None:
        raise NotFound("this platform keeps no telemetry history", field="telemetry")
    return ctx.telemetry


def _bounds(since: str | None, until: str | None) -> dict[str, float | None]:
    return {
        "since": None if since is None else time_param(since, "since"),
        "until": None if until is None else time_param(until, "until"),
    }


@router.get("/twins/{twin_id}/telemetry", tags=["twins"], dependencies=[allowed("twins:read")])
async def telemetry_history(  # noqa: PLR0917 - FastAPI passes query parameters by name
    ctx: Context,
    twin_id: str,
    metric: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    """Readings of a twin (one metric or all) in ``[since, until)``, oldest first.

    ``since``/``until`` are Unix seconds or RFC 3339.
    """
    validate_device_id(twin_id)
    history = _history(ctx)
    points = await asyncio.to_thread(
        history.query, twin_id, metric=metric, limit=limit, **_bounds(since, until)
    )
    return {
        "items": [
            {"metric": p.metric, "ts": p.ts, "value": p.value}
            for p in points
            if metric is not None or not p.metric.startswith("$")  # the platform's series
        ]
    }


@router.get("/twins/{twin_id}/windows", tags=["analytics"], dependencies=[allowed("twins:read")])
async def twin_windows(ctx: Context, twin_id: str) -> dict[str, Any]:
    """Count, min, max and mean of each metric over the last 1 min, 5 min and 1 h.

    Computed from the telemetry history of the last hour (readings measured up to now).
    """
    validate_device_id(twin_id)
    await ctx.platform.get(twin_id)  # 404 for a twin that does not exist
    history = _history(ctx)
    now = time.time()
    points = await asyncio.to_thread(
        history.query, twin_id, since=now - max(WINDOWS.values()), limit=1_000_000
    )
    readings = ((p.metric, p.ts, p.value) for p in points if not p.metric.startswith("$"))
    return {"twin_id": twin_id, "now": now, "metrics": window_stats(readings, now)}


@router.get("/aggregates", tags=["analytics"], dependencies=[allowed("twins:read")])
async def aggregates(
    ctx: Context,
    by: Annotated[str, Query(description="family or tag:<key>")] = "family",
    metric: Annotated[str | None, Query(description="mean of this reported field")] = None,
) -> dict[str, Any]:
    """Fleet figures per group, answered by every host at once for its active twins."""
    return {"items": await ctx.platform.aggregate(by, metric)}


@router.get("/twins/{twin_id}/anomalies", tags=["anomalies"], dependencies=[allowed("twins:read")])
async def twin_anomalies(
    ctx: Context,
    twin_id: str,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    """The twin's verdict now, its anomaly scores in ``[since, until)`` and its episodes.

    An episode runs from the reading that made the twin anomalous to the one that cleared
    it (``end`` null: still anomalous; ``start`` null: it began before ``since``).
    """
    validate_device_id(twin_id)
    doc = await ctx.platform.get(twin_id)
    scores: list[Point] = []
    flags: list[Point] = []
    if ctx.telemetry is not None:
        bounds = _bounds(since, until)
        scores = await asyncio.to_thread(
            ctx.telemetry.query, twin_id, metric=ANOMALY_SCORE, limit=limit, **bounds
        )
        flags = await asyncio.to_thread(
            ctx.telemetry.query, twin_id, metric=ANOMALY_FLAG, limit=limit, **bounds
        )
    return {
        "current": doc["anomaly"],
        "scores": [{"ts": p.ts, "score": p.value} for p in scores],
        "episodes": episodes(flags),
    }


@router.get("/anomalies", tags=["anomalies"], dependencies=[allowed("twins:read")])
async def anomalies(
    ctx: Context,
    type: str | None = None,  # noqa: A002 - the contract's name
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Twins anomalous now (optionally of one family), in id order, a page at a time."""
    page = await ctx.platform.query(
        TwinFilter(type=type, anomalous=True), after=cursor, limit=limit
    )
    items = [
        {"id": t["id"], "type": t["type"], "tags": t["tags"], "anomaly": t["anomaly"]}
        for t in page.items
    ]
    return {"items": items, "next": page.next}


def episodes(flags: Sequence[Point]) -> list[dict[str, float | None]]:
    """Anomalous episodes from the flag series (1.0 where one starts, 0.0 where it ends)."""
    found: list[dict[str, float | None]] = []
    for point in flags:
        if point.value >= 0.5:
            if not found or found[-1]["end"] is not None:
                found.append({"start": point.ts, "end": None})
        elif found and found[-1]["end"] is None:
            found[-1]["end"] = point.ts
        else:
            found.append({"start": None, "end": point.ts})
    return found
