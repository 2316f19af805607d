"""The HTTP API (FastAPI) under ``/api/v1``: twins, commands, tokens, events.

The API holds no twin state: every answer comes from the runtime's hosts. This module only
wires the parts together: the routes (``api/routes/``, one module per resource), their context
and dependencies (``api/deps.py``), the request bodies (``api/schemas.py``), the middleware
(``api/middleware.py``), error answers, metrics and the dashboard.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI

from twinfleet.runtime import Runtime
from twinfleet.runtime.telemetry import TelemetrySink

from .auth import TokenStore
from .dashboard import install_dashboard
from .deps import ApiContext, install_context
from .errors import install_error_handlers
from .metrics import EdgeStatsSource, install_metrics
from .middleware import BodyLimit
from .platform import Platform
from .ratelimit import RequestLimiter
from .routes import include_routes

__all__ = ["DEFAULT_RATE_LIMIT", "MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 256 * 1024
DEFAULT_RATE_LIMIT = "3000/minute"  # per token: 50/s sustained, bursts allowed


def create_app(
    runtime: Runtime,
    tokens: TokenStore,
    *,
    telemetry: TelemetrySink | None = None,
    require_if_match: bool = False,
    direct: bool = True,
    rate_limit: str | None = DEFAULT_RATE_LIMIT,
    rate_limit_storage: str = "memory://",
    freeze_heap: bool = False,
    edges: EdgeStatsSource | None = None,
) -> FastAPI:
    """The API for ``runtime``, authenticating with ``tokens``, reading history from
    ``telemetry``.

    ``direct``: per-twin calls travel by the runtime's transport (``RuntimeSettings.transport``:
    the hosts' direct connections unless it says otherwise); off, each is a Ray actor call
    (slower; for networks where host ports are closed).
    ``rate_limit``: requests per token, like ``"3000/minute"`` (None: unlimited), counted in
    ``rate_limit_storage`` (``memory://`` per process, or ``redis://...`` shared); over it, 429
    with ``Retry-After``. ``require_if_match``: desired-state patches without ``If-Match`` are
    refused (428). ``edges``: the edge processes of ``twinfleet up``, whose metrics
    ``/metrics`` then serves too. ``freeze_heap``: once the app has started (its lifespan),
    move everything alive in the process out of the cyclic garbage collector's reach
    (``gc.freeze``); for a process that serves the API and little else, never for one that
    merely embeds it.
    """
    limiter = (
        None if rate_limit is None else RequestLimiter(rate_limit, storage_url=rate_limit_storage)
    )
    platform = Platform(runtime, direct=direct)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if freeze_heap:
            # A full collection over a process's long-lived objects (modules, the runtime's
            # caches) stalls every request for tens of milliseconds; frozen, they are never
            # walked again. Reference counting still frees what is dropped later.
            gc.collect()
            gc.freeze()
        yield
        await platform.close()

    app = FastAPI(
        lifespan=lifespan,
        title="twinfleet",
        version="0.1.0",
        description="Digital twins for IoT device fleets: twins, commands, events.",
        openapi_url="/openapi.json",
    )
    install_context(
        app,
        ApiContext(
            platform=platform,
            tokens=tokens,
            telemetry=telemetry,
            limiter=limiter,
            require_if_match=require_if_match,
        ),
    )
    install_error_handlers(app)
    install_metrics(app, runtime, edges=edges)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    include_routes(app)
    install_dashboard(app)  # last: it is mounted at "/" and would shadow later routes
    return app
