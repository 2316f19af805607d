"""Commands to devices: send one (answered if the device answers in time), read its record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from twinfleet.api.deps import API_PREFIX, CallKey, Context, allowed
from twinfleet.api.schemas import CommandIn
from twinfleet.twins import validate_device_id

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["commands"])


@router.post("/twins/{twin_id}/commands", dependencies=[allowed("commands:send")])
async def send_command(
    ctx: Context, twin_id: str, command: CommandIn, key: CallKey
) -> JSONResponse:
    """200 with the device's answer if it came within ``timeout_s``, else 202.

    With ``Idempotency-Key``, a repeat of the request queues nothing more and gets the
    first answer."""
    validate_device_id(twin_id)
    record = await ctx.platform.send_command(twin_id, command.model_dump(), call_id=key)
    final = record["status"] in ("succeeded", "failed")
    return JSONResponse(_public(record), 200 if final else 202)


@router.get("/twins/{twin_id}/commands/{command_id}", dependencies=[allowed("twins:read")])
async def get_command(ctx: Context, twin_id: str, command_id: str) -> dict[str, Any]:
    """A command's record."""
    validate_device_id(twin_id)
    return _public(await ctx.platform.get_command(twin_id, command_id))


def _public(record: Mapping[str, Any]) -> dict[str, Any]:
    # How a gateway delivered the command is the platform's business, not the API's.
    return {k: v for k, v in record.items() if k not in ("protocol", "online")}
