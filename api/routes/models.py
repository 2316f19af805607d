"""Anomaly models: the ones known, assignments to families and twins, training jobs."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from twinfleet.api.deps import API_PREFIX, CallKey, Context, allowed, document, once
from twinfleet.api.schemas import ModelIn, TrainingIn
from twinfleet.twins import validate_device_id

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["models"])


@router.get("/models", dependencies=[allowed("twins:read")])
async def list_models(ctx: Context) -> dict[str, Any]:
    """The anomaly models this platform knows, and plugins that failed to load."""
    registry = ctx.platform.models()
    return {
        "items": [spec.describe() for spec in registry.specs()],
        "errors": dict(registry.plugin_errors),
    }


@router.get("/models/assignments", dependencies=[allowed("twins:read")])
async def model_assignments(ctx: Context) -> dict[str, Any]:
    """The model assigned to each family that has one (the others use their default)."""
    return {"items": await ctx.platform.model_assignments()}


@router.put("/models/assignments/{family}", dependencies=[allowed("models:manage")])
async def assign_model(ctx: Context, family: str, body: ModelIn) -> dict[str, Any]:
    """Give every twin of ``family`` this model (twins with their own keep theirs)."""
    return await ctx.platform.assign_model(family, body.model, body.params) or {}


@router.delete(
    "/models/assignments/{family}", status_code=204, dependencies=[allowed("models:manage")]
)
async def unassign_model(ctx: Context, family: str) -> Response:
    """Back to the family's built-in default model."""
    await ctx.platform.assign_model(family, None)
    return Response(status_code=204)


@router.put("/twins/{twin_id}/model", dependencies=[allowed("models:manage")])
async def set_twin_model(ctx: Context, twin_id: str, body: ModelIn) -> Response:
    """Give this twin a model of its own."""
    validate_device_id(twin_id)
    return document(await ctx.platform.set_model(twin_id, body.model, body.params))


@router.delete("/twins/{twin_id}/model", dependencies=[allowed("models:manage")])
async def reset_twin_model(ctx: Context, twin_id: str) -> Response:
    """Back to the model of the twin's family."""
    validate_device_id(twin_id)
    return document(await ctx.platform.set_model(twin_id, None, None))


@router.post("/models/training", status_code=202, dependencies=[allowed("models:manage")])
async def start_training(ctx: Context, body: TrainingIn, key: CallKey) -> dict[str, Any]:
    """Train a model on history beside the hosts; the running job (follow it by its id).

    ``scope=family``: one model fitted on the family's readings becomes the family's model;
    ``scope=twin``: each twin (``twins``, or the family's active ones) gets a model fitted
    on its own readings. The model defaults to the family's current one.
    """
    since = body.since if body.since is not None else time.time() - body.hours * 3600

    async def start() -> dict[str, Any]:
        return await ctx.platform.train(
            family=body.family,
            twins=body.twins,
            model=body.model,
            params=body.params,
            scope=body.scope,
            since=since,
            until=body.until,
            max_twins=body.max_twins,
        )

    return await once(ctx, "start_training", key, start)  # a repeat starts no second job


@router.get("/models/training", dependencies=[allowed("twins:read")])
async def list_trainings(
    ctx: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    """Training jobs, newest first."""
    return {"items": await ctx.platform.trainings(limit=limit)}


@router.get("/models/training/{job_id}", dependencies=[allowed("twins:read")])
async def get_training(ctx: Context, job_id: str) -> dict[str, Any]:
    """One training job: running, succeeded (what it trained) or failed (why)."""
    return await ctx.platform.training(job_id)
