"""Events as Server-Sent Events: twin changes, presence, anomalies, commands, rejections."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from twinfleet.api.deps import API_PREFIX, Context, allowed
from twinfleet.api.platform import Platform
from twinfleet.errors import InvalidRequest

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["events"])

_POLL_S = 5.0  # each wait for new events; the client's disconnection is noticed between them
_KEEP_ALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream


@router.get("/events", dependencies=[allowed("events:read")])
async def events(  # noqa: PLR0917 - FastAPI passes query parameters by name
    ctx: Context,
    request: Request,
    type: Annotated[list[str] | None, Query()] = None,  # noqa: A002 - the contract's name
    twin: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
    after: int | None = None,
) -> StreamingResponse:
    """Server-Sent Events: twin changes, presence, anomalies, commands, rejections.

    Resume with the ``Last-Event-ID`` header (or ``after``).
    """
    start = after
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise InvalidRequest("Last-Event-ID is an event id", field="last-event-id")
        start = int(last_event_id)
    return StreamingResponse(
        _stream(ctx.platform, request, types=type, twin=twin, after=start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    platform: Platform,
    request: Request,
    *,
    types: list[str] | None,
    twin: str | None,
    after: int | None,
) -> AsyncIterator[bytes]:
    cursor = await platform.last_event_id() if after is None else after
    wanted = frozenset(types) if types else None
    yield b": twinfleet events\n\n"
    last_beat = time.monotonic()
    while not await request.is_disconnected():
        batch = await platform.poll(cursor, wanted, _POLL_S)
        for event in batch:
            cursor = event.id
            if twin is not None and event.twin_id != twin:
                continue
            data = orjson.dumps(
                {
                    "id": event.id,
                    "type": event.type,
                    "twin_id": event.twin_id,
                    "ts": event.ts,
                    "data": event.data,
                }
            )
            yield b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), data)
        if time.monotonic() - last_beat > _KEEP_ALIVE_S:
            last_beat = time.monotonic()
            yield b": keep-alive\n\n"
