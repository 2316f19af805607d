"""Operations: what a load balancer or an orchestrator asks of the API process itself, and
how the platform keeps up with its devices."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from twinfleet.api.deps import API_PREFIX, Context, allowed

__all__ = ["ingest_router", "router"]

router = APIRouter(tags=["operations"])
ingest_router = APIRouter(prefix=API_PREFIX, tags=["operations"])


@ingest_router.get("/ingest", dependencies=[allowed("twins:read")])
async def ingest_flow(ctx: Context) -> dict[str, Any]:
    """Per protocol: messages/s and receive-to-applied lag (p50, p99, seconds) since the
    previous read of any client (at most once a second; empty on the very first)."""
    flow = await ctx.platform.flow()
    return {
        "protocols": [
            {"protocol": protocol, **figures} for protocol, figures in sorted(flow.items())
        ]
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the API process answers."""
    return {"status": "ok"}
