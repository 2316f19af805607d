"""The API's routes, one module per resource, each an ``APIRouter``.

The resource routers serve under ``/api/v1`` (``deps.API_PREFIX``), ``operations``
(``/healthz``) at the root. Routes reach the platform through the app's context
(``api/deps.py``), never through a ``Runtime`` of their own.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from . import alarms, analytics, commands, devices, events, models, operations, tokens, twins

__all__ = ["RESOURCE_ROUTERS", "include_routes"]

RESOURCE_ROUTERS: tuple[APIRouter, ...] = (
    twins.router,
    analytics.router,
    commands.router,
    devices.router,
    alarms.router,
    models.router,
    tokens.router,
    events.router,
    operations.ingest_router,
)


def include_routes(app: FastAPI) -> None:
    """Every resource's routes, and ``operations`` at the root."""
    app.include_router(operations.router)
    for router in RESOURCE_ROUTERS:
        app.include_router(router)
