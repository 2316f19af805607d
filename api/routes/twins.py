"""Twins: list and query them, read one, merge-patch its desired state and tags."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from twinfleet.api.deps import API_PREFIX, Context, allowed, document, expected_version, merge_patch
from twinfleet.errors import InvalidRequest, PreconditionRequired
from twinfleet.twins import TwinFilter, parse_filter, validate_device_id
from twinfleet.twins.query import AllOf, TwinSelector

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["twins"])


@router.get("/twins", dependencies=[allowed("twins:read")])
async def list_twins(  # noqa: PLR0917 - FastAPI passes query parameters by name
    ctx: Context,
    type: str | None = None,  # noqa: A002 - the contract's name
    tag: Annotated[list[str] | None, Query(description="key:value, repeatable")] = None,
    online: bool | None = None,
    anomalous: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    filter: Annotated[  # noqa: A002 - the contract's name
        str | None, Query(description="e.g. reported.temperature > 30 and online")
    ] = None,
) -> dict[str, Any]:
    """Twins in id order, a page at a time (``next`` is the cursor of the following one)."""
    tags = {}
    for item in tag or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise InvalidRequest(f"tag {item!r} is not key:value", field="tag")
        tags[key] = value
    selector: TwinSelector = TwinFilter(type=type, tags=tags, online=online, anomalous=anomalous)
    if filter:
        selector = AllOf((selector, parse_filter(filter)))
    page = await ctx.platform.query(selector, after=cursor, limit=limit)
    return {"items": page.items, "next": page.next}


@router.get("/twins/{twin_id}", dependencies=[allowed("twins:read")])
async def get_twin(ctx: Context, twin_id: str) -> Response:
    """The twin document; ``ETag`` is its version."""
    validate_device_id(twin_id)
    return document(await ctx.platform.get(twin_id))


@router.patch("/twins/{twin_id}/desired", dependencies=[allowed("twins:write")])
async def patch_desired(
    ctx: Context,
    twin_id: str,
    request: Request,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Merge-patch desired state (RFC 7396); answered once the change is durable."""
    validate_device_id(twin_id)
    patch = await merge_patch(request)
    expected = expected_version(if_match)
    if expected is None and ctx.require_if_match:
        raise PreconditionRequired("send If-Match with the twin's version", field="if-match")
    return document(await ctx.platform.patch_desired(twin_id, patch, expected_version=expected))


@router.patch("/twins/{twin_id}/tags", dependencies=[allowed("twins:write")])
async def patch_tags(
    ctx: Context,
    twin_id: str,
    request: Request,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Merge-patch the twin's tags; answered once the change is durable."""
    validate_device_id(twin_id)
    patch = await merge_patch(request)
    expected = expected_version(if_match)
    return document(await ctx.platform.patch_tags(twin_id, patch, expected_version=expected))
