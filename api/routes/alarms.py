"""Alarms: the open ones across the fleet, acknowledging one, and each family's rules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from twinfleet.api.auth import Principal
from twinfleet.api.deps import API_PREFIX, Context, allowed
from twinfleet.api.schemas import AlarmRulesIn
from twinfleet.errors import InvalidRequest
from twinfleet.twins import ALARM_STATES, WithAlarms, validate_device_id

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["alarms"])


@router.get("/alarms", dependencies=[allowed("twins:read")])
async def alarms(
    ctx: Context,
    state: Annotated[list[str] | None, Query(description="repeatable")] = None,
    severity: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Alarms (default: active and acknowledged) of the twins that have them, a page of
    twins at a time (``next`` is the cursor of the following page)."""
    wanted = frozenset(state or ("active", "acknowledged"))
    unknown = wanted - set(ALARM_STATES)
    if unknown:
        raise InvalidRequest(
            f"alarm state {sorted(unknown)[0]!r} is not one of {', '.join(ALARM_STATES)}",
            field="state",
        )
    page = await ctx.platform.query(WithAlarms(wanted), after=cursor, limit=limit)
    items = [
        alarm
        for twin in page.items
        for alarm in twin["alarms"]
        if alarm["state"] in wanted and (severity is None or alarm["severity"] == severity)
    ]
    return {"items": items, "next": page.next}


@router.get("/alarms/rules", dependencies=[allowed("twins:read")])
async def list_alarm_rules(ctx: Context) -> dict[str, Any]:
    """Each family's alarm rules (``source``: built-in or custom)."""
    return {"items": await ctx.platform.alarm_rules()}


@router.put("/alarms/rules/{family}", dependencies=[allowed("alarms:manage")])
async def set_alarm_rules(ctx: Context, family: str, body: AlarmRulesIn) -> dict[str, Any]:
    """Replace a family's alarm rules; alarms of rules that are gone clear at once."""
    return await ctx.platform.set_alarm_rules(family, body.documents())


@router.delete("/alarms/rules/{family}", dependencies=[allowed("alarms:manage")])
async def reset_alarm_rules(ctx: Context, family: str) -> dict[str, Any]:
    """Back to the family's built-in alarm rules."""
    return await ctx.platform.set_alarm_rules(family, None)


@router.post("/twins/{twin_id}/alarms/{alarm_id}/ack")
async def acknowledge_alarm(
    ctx: Context,
    twin_id: str,
    alarm_id: str,
    who: Annotated[Principal, allowed("alarms:ack")],
) -> dict[str, Any]:
    """Acknowledge an open alarm (recorded with the token's name or id, and the time)."""
    validate_device_id(twin_id)
    return await ctx.platform.ack_alarm(twin_id, alarm_id, who=who.name or who.token_id)
