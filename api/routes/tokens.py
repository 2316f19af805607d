"""Bearer tokens: create (the token shown once), list, revoke."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from twinfleet.api.deps import API_PREFIX, CallKey, Context, allowed, once
from twinfleet.api.schemas import TokenIn
from twinfleet.errors import NotFound

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["tokens"], dependencies=[allowed("tokens:manage")])


@router.post("/tokens", status_code=201)
async def create_token(ctx: Context, body: TokenIn, key: CallKey) -> dict[str, Any]:
    """A new bearer token; the token itself is shown this once (and to a repeat of the
    same ``Idempotency-Key`` within 10 minutes, which creates no second token)."""

    async def create() -> dict[str, Any]:
        record, token = await asyncio.to_thread(ctx.tokens.create, body.role, name=body.name)
        return {**record, "token": token}

    return await once(ctx, "create_token", key, create)


@router.get("/tokens")
async def list_tokens(ctx: Context) -> dict[str, Any]:
    """Every token (without secrets)."""
    return {"items": await asyncio.to_thread(ctx.tokens.list)}


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(ctx: Context, token_id: str) -> Response:
    """Revoke a token."""
    if not await asyncio.to_thread(ctx.tokens.revoke, token_id):
        raise NotFound(f"no token {token_id!r}", field="token_id")
    return Response(status_code=204)
