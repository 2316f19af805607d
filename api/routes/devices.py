"""Devices: the registry (register, list, read) and lifecycle moves (suspend, resume,
decommission)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from twinfleet.api.deps import API_PREFIX, CallKey, Context, allowed, document, once
from twinfleet.api.schemas import DeviceIn
from twinfleet.errors import Conflict, NotFound
from twinfleet.twins import validate_device_id

__all__ = ["LIFECYCLE_ACTIONS", "router"]

# ``POST /devices/{device_id}/<action>`` -> the lifecycle state it moves the device to
LIFECYCLE_ACTIONS = {"suspend": "suspended", "resume": "active", "decommission": "decommissioned"}

router = APIRouter(prefix=API_PREFIX, tags=["devices"])


@router.post("/devices", status_code=201, dependencies=[allowed("devices:manage")])
async def register_device(ctx: Context, body: DeviceIn, key: CallKey) -> Response:
    """Register a device (id, family, tags); its twin is created in state ``registered``."""
    validate_device_id(body.id)

    async def register() -> dict[str, Any]:
        if await ctx.platform.device(body.id) is not None:
            raise Conflict(f"device {body.id!r} is registered already", field="id")
        return await ctx.platform.register(
            body.id, device_type=body.type, tags=body.tags, call_id=key
        )

    response = document(await once(ctx, "register_device", key, register))
    response.status_code = 201
    return response


@router.get("/devices", dependencies=[allowed("twins:read")])
async def list_devices(
    ctx: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None
) -> dict[str, Any]:
    """Registered devices in id order, a page at a time."""
    items = await ctx.platform.devices(after=cursor, limit=limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next": items[-1]["id"] if more and items else None}


@router.get("/devices/{device_id}", dependencies=[allowed("twins:read")])
async def get_device(ctx: Context, device_id: str) -> dict[str, Any]:
    """A device's registry entry and its twin's lifecycle state."""
    entry = await ctx.platform.device(device_id)
    if entry is None:
        raise NotFound(f"device {device_id!r} is not registered", field="id")
    doc = await ctx.platform.get(device_id)
    return {**entry, "lifecycle": doc["lifecycle"]}


def _lifecycle_route(action: str, state: str) -> None:
    async def move(ctx: Context, device_id: str, key: CallKey) -> Response:
        validate_device_id(device_id)
        return document(await ctx.platform.set_lifecycle(device_id, state, call_id=key))

    move.__doc__ = f"Move the device to ``{state}``."
    router.add_api_route(
        f"/devices/{{device_id}}/{action}",
        move,
        methods=["POST"],
        dependencies=[allowed("devices:manage")],
        name=f"{action}_device",
    )


for _action, _state in LIFECYCLE_ACTIONS.items():
    _lifecycle_route(_action, _state)
