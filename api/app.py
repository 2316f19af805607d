"""The HTTP API (FastAPI) under ``/api/v1``: twins, commands, tokens, events.

The API holds no twin state: every answer comes from the runtime's hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twinfleet.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PreconditionRequired,
    Unauthorized,
    UnsupportedMediaType,
)
from twinfleet.runtime import Runtime, RuntimeFleet
from twinfleet.runtime.telemetry import ANOMALY_FLAG, ANOMALY_SCORE, Point, TelemetrySink
from twinfleet.twins import (
    ALARM_STATES,
    WINDOWS,
    InvalidPatch,
    PayloadTooLarge,
    TwinFilter,
    WithAlarms,
    parse_filter,
    parse_timestamp,
    validate_device_id,
    window_stats,
)
from twinfleet.twins.query import AllOf, TwinSelector

from .auth import Principal, TokenStore
from .dashboard import install_dashboard
from .errors import error_body, install_error_handlers
from .metrics import install_metrics
from .ratelimit import RequestLimiter

__all__ = ["create_app"]

MAX_BODY_BYTES = 256 * 1024
DEFAULT_RATE_LIMIT = "3000/minute"  # per token: 50/s sustained, bursts allowed
_MERGE_PATCH = "application/merge-patch+json"


class CommandIn(BaseModel):
    """A command for a device."""

    name: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, ge=0, le=300)
    ttl_s: float = Field(default=3600.0, ge=1, le=30 * 86_400)


class DeviceIn(BaseModel):
    """A device to register."""

    id: str = Field(min_length=1, max_length=128)
    type: str | None = Field(default=None, max_length=64)
    tags: dict[str, Any] = Field(default_factory=dict)


class ModelIn(BaseModel):
    """A model to assign, by name, with its parameters."""

    model: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)


class AlarmRuleIn(BaseModel):
    """One alarm rule: the anomaly verdict or a threshold, raise and clear conditions."""

    name: str = Field(min_length=1, max_length=64)
    kind: Literal["anomaly", "threshold"] = "anomaly"
    metric: str | None = Field(default=None, max_length=128)
    op: Literal["<", "<=", ">", ">="] | None = None
    value: float | None = None
    raise_after: int = Field(default=3, ge=1, le=100_000)
    raise_after_s: float | None = Field(default=None, gt=0)
    clear_after: int = Field(default=5, ge=1, le=100_000)
    severity: Literal["info", "warning", "critical"] = "warning"


class AlarmRulesIn(BaseModel):
    """A family's alarm rules (they replace the ones it has)."""

    rules: list[AlarmRuleIn] = Field(max_length=32)


class TrainingIn(BaseModel):
    """A training job: a model fitted on a family's (or some twins') telemetry history."""

    family: str | None = Field(default=None, max_length=64)
    twins: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=10_000
    )
    model: str | None = Field(default=None, min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    scope: Literal["family", "twin"] = "family"
    since: float | None = Field(default=None, description="Unix seconds; default: hours ago")
    until: float | None = None
    hours: float = Field(default=24.0, gt=0, le=24 * 366, description="history used if no since")
    max_twins: int = Field(default=1_000, ge=1, le=100_000)


class TokenIn(BaseModel):
    """A token to create."""

    role: str
    name: str = Field(default="", max_length=100)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413 (plain ASGI: no task per request).

    A declared ``Content-Length`` over the limit is refused before any route runs; a body
    without one (chunked) is counted as it is read and refused where it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count what is read."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await self._refuse(scope, receive, send)
                    return
                break
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(self._message(), field="body")
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request bodies are limited to {self.limit} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = error_body(PayloadTooLarge.code, self._message(), "body")
        await JSONResponse(body, 413)(scope, receive, send)


def create_app(
    runtime: Runtime,
    tokens: TokenStore,
    *,
    telemetry: TelemetrySink | None = None,
    require_if_match: bool = False,
    direct: bool = True,
    rate_limit: str | None = DEFAULT_RATE_LIMIT,
    rate_limit_storage: str = "memory://",
) -> FastAPI:
    """The API for ``runtime``, authenticating with ``tokens``, reading history from
    ``telemetry``.

    ``direct``: per-twin calls go over the hosts' direct connections (``runtime/wire.py``);
    off, each is a Ray actor call (slower; for networks where host ports are closed).
    ``rate_limit``: requests per token, like ``"3000/minute"`` (None: unlimited), counted in
    ``rate_limit_storage`` (``memory://`` per process, or ``redis://...`` shared); over it, 429
    with ``Retry-After``.
    """
    limiter = (
        None if rate_limit is None else RequestLimiter(rate_limit, storage_url=rate_limit_storage)
    )
    fleet = RuntimeFleet(runtime, direct=direct)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything alive once the app is up (modules, the runtime's caches) is frozen out
        # of the cyclic collector: a full collection over it stalls every request for tens
        # of milliseconds. Reference counting still frees what is dropped later.
        gc.collect()
        gc.freeze()
        yield
        await fleet.close()

    app = FastAPI(
        lifespan=lifespan,
        title="twinfleet",
        version="0.1.0",
        description="Digital twins for IoT device fleets: twins, commands, events.",
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    install_metrics(app, runtime)

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    # Dependencies are coroutines: FastAPI runs plain functions in a thread pool, a hop per
    # request that costs more than the check itself.
    async def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("send 'Authorization: Bearer <token>'", field="authorization")
        token = authorization[7:].strip()
        known = tokens.cached(token)
        return known if known is not None else await asyncio.to_thread(tokens.verify, token)

    def allowed(permission: str) -> Any:
        # A default, not Annotated: ``principal`` is local, and annotations are strings here.
        async def check(who: Principal = Depends(principal)) -> Principal:  # noqa: B008
            who.require(permission)
            if limiter is not None:
                await limiter.check(who.token_id)
            return who

        return Depends(check)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the API process answers."""
        return {"status": "ok"}

    api = APIRouter(prefix="/api/v1")

    @api.get("/twins", tags=["twins"], dependencies=[allowed("twins:read")])
    async def list_twins(  # noqa: PLR0917 - FastAPI passes query parameters by name
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
        selector: TwinSelector = TwinFilter(
            type=type, tags=tags, online=online, anomalous=anomalous
        )
        if filter:
            selector = AllOf((selector, parse_filter(filter)))
        page = await asyncio.to_thread(runtime.query, selector, after=cursor, limit=limit)
        return {"items": page.items, "next": page.next}

    @api.get("/twins/{twin_id}", tags=["twins"], dependencies=[allowed("twins:read")])
    async def get_twin(twin_id: str) -> Response:
        """The twin document; ``ETag`` is its version."""
        validate_device_id(twin_id)
        return _document(await fleet.call(twin_id, "get", twin_id))

    @api.patch("/twins/{twin_id}/desired", tags=["twins"], dependencies=[allowed("twins:write")])
    async def patch_desired(
        twin_id: str, request: Request, if_match: Annotated[str | None, Header()] = None
    ) -> Response:
        """Merge-patch desired state (RFC 7396); answered once the change is durable."""
        validate_device_id(twin_id)
        patch = await _merge_patch(request)
        expected = _expected_version(if_match)
        if expected is None and require_if_match:
            raise PreconditionRequired("send If-Match with the twin's version", field="if-match")
        doc = await fleet.call(twin_id, "patch_desired", twin_id, patch, expected_version=expected)
        return _document(doc)

    @api.patch("/twins/{twin_id}/tags", tags=["twins"], dependencies=[allowed("twins:write")])
    async def patch_tags(
        twin_id: str, request: Request, if_match: Annotated[str | None, Header()] = None
    ) -> Response:
        """Merge-patch the twin's tags; answered once the change is durable."""
        validate_device_id(twin_id)
        patch = await _merge_patch(request)
        doc = await fleet.call(
            twin_id, "patch_tags", twin_id, patch, expected_version=_expected_version(if_match)
        )
        return _document(doc)

    @api.get("/twins/{twin_id}/telemetry", tags=["twins"], dependencies=[allowed("twins:read")])
    async def telemetry_history(
        twin_id: str,
        metric: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> dict[str, Any]:
        """Readings of a twin (one metric or all) in ``[since, until)``, oldest first.

        ``since``/``until`` are Unix seconds or RFC 3339.
        """
        validate_device_id(twin_id)
        if telemetry is None:
            raise NotFound("this platform keeps no telemetry history", field="telemetry")
        points = await asyncio.to_thread(
            telemetry.query,
            twin_id,
            metric=metric,
            since=None if since is None else _time(since, "since"),
            until=None if until is None else _time(until, "until"),
            limit=limit,
        )
        return {
            "items": [
                {"metric": p.metric, "ts": p.ts, "value": p.value}
                for p in points
                if metric is not None or not p.metric.startswith("$")  # the platform's series
            ]
        }

    @api.get("/twins/{twin_id}/anomalies", tags=["anomalies"], dependencies=[allowed("twins:read")])
    async def twin_anomalies(
        twin_id: str,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> dict[str, Any]:
        """The twin's verdict now, its anomaly scores in ``[since, until)`` and its episodes.

        An episode runs from the reading that made the twin anomalous to the one that cleared
        it (``end`` null: still anomalous; ``start`` null: it began before ``since``).
        """
        validate_device_id(twin_id)
        doc = await fleet.call(twin_id, "get", twin_id)
        scores: list[Any] = []
        flags: list[Any] = []
        if telemetry is not None:
            bounds = {
                "since": None if since is None else _time(since, "since"),
                "until": None if until is None else _time(until, "until"),
            }
            scores = await asyncio.to_thread(
                telemetry.query, twin_id, metric=ANOMALY_SCORE, limit=limit, **bounds
            )
            flags = await asyncio.to_thread(
                telemetry.query, twin_id, metric=ANOMALY_FLAG, limit=limit, **bounds
            )
        return {
            "current": doc["anomaly"],
            "scores": [{"ts": p.ts, "score": p.value} for p in scores],
            "episodes": _episodes(flags),
        }

    @api.get("/anomalies", tags=["anomalies"], dependencies=[allowed("twins:read")])
    async def anomalies(
        type: str | None = None,  # noqa: A002 - the contract's name
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Twins anomalous now (optionally of one family), in id order, a page at a time."""
        page = await asyncio.to_thread(
            runtime.query, TwinFilter(type=type, anomalous=True), after=cursor, limit=limit
        )
        items = [
            {"id": t["id"], "type": t["type"], "tags": t["tags"], "anomaly": t["anomaly"]}
            for t in page.items
        ]
        return {"items": items, "next": page.next}

    @api.post(
        "/twins/{twin_id}/commands", tags=["commands"], dependencies=[allowed("commands:send")]
    )
    async def send_command(twin_id: str, command: CommandIn) -> JSONResponse:
        """200 with the device's answer if it came within ``timeout_s``, else 202."""
        validate_device_id(twin_id)
        record = await fleet.call(twin_id, "send_command", twin_id, command.model_dump())
        final = record["status"] in ("succeeded", "failed")
        return JSONResponse(_command(record), 200 if final else 202)

    @api.get(
        "/twins/{twin_id}/commands/{command_id}",
        tags=["commands"],
        dependencies=[allowed("twins:read")],
    )
    async def get_command(twin_id: str, command_id: str) -> dict[str, Any]:
        """A command's record."""
        validate_device_id(twin_id)
        return _command(await fleet.call(twin_id, "get_command", twin_id, command_id))

    @api.post(
        "/devices", tags=["devices"], status_code=201, dependencies=[allowed("devices:manage")]
    )
    async def register_device(body: DeviceIn) -> Response:
        """Register a device (id, family, tags); its twin is created in state ``registered``."""
        validate_device_id(body.id)
        if await asyncio.to_thread(runtime.device, body.id) is not None:
            raise Conflict(f"device {body.id!r} is registered already", field="id")
        doc = await asyncio.to_thread(
            runtime.register, body.id, device_type=body.type, tags=body.tags
        )
        response = _document(doc)
        response.status_code = 201
        return response

    @api.get("/devices", tags=["devices"], dependencies=[allowed("twins:read")])
    async def list_devices(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        """Registered devices in id order, a page at a time."""
        items = await asyncio.to_thread(runtime.devices, after=cursor, limit=limit + 1)
        more = len(items) > limit
        items = items[:limit]
        return {"items": items, "next": items[-1]["id"] if more and items else None}

    @api.get("/devices/{device_id}", tags=["devices"], dependencies=[allowed("twins:read")])
    async def get_device(device_id: str) -> dict[str, Any]:
        """A device's registry entry and its twin's lifecycle state."""
        entry = await asyncio.to_thread(runtime.device, device_id)
        if entry is None:
            raise NotFound(f"device {device_id!r} is not registered", field="id")
        doc = await fleet.call(device_id, "get", device_id)
        return {**entry, "lifecycle": doc["lifecycle"]}

    for action, state in (
        ("suspend", "suspended"),
        ("resume", "active"),
        ("decommission", "decommissioned"),
    ):
        _lifecycle_route(api, runtime, action, state, allowed("devices:manage"))

    @api.get("/twins/{twin_id}/windows", tags=["analytics"], dependencies=[allowed("twins:read")])
    async def twin_windows(twin_id: str) -> dict[str, Any]:
        """Count, min, max and mean of each metric over the last 1 min, 5 min and 1 h.

        Computed from the telemetry history of the last hour (readings measured up to now).
        """
        validate_device_id(twin_id)
        await fleet.call(twin_id, "get", twin_id)  # 404 for a twin that does not exist
        if telemetry is None:
            raise NotFound("this platform keeps no telemetry history", field="telemetry")
        now = time.time()
        points = await asyncio.to_thread(
            telemetry.query, twin_id, since=now - max(WINDOWS.values()), limit=1_000_000
        )
        readings = ((p.metric, p.ts, p.value) for p in points if not p.metric.startswith("$"))
        return {"twin_id": twin_id, "now": now, "metrics": window_stats(readings, now)}

    @api.get("/aggregates", tags=["analytics"], dependencies=[allowed("twins:read")])
    async def aggregates(
        by: Annotated[str, Query(description="family or tag:<key>")] = "family",
        metric: Annotated[str | None, Query(description="mean of this reported field")] = None,
    ) -> dict[str, Any]:
        """Fleet figures per group, answered by every host at once for its active twins."""
        return {"items": await asyncio.to_thread(runtime.aggregate, by, metric)}

    @api.get("/alarms", tags=["alarms"], dependencies=[allowed("twins:read")])
    async def alarms(
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
        page = await asyncio.to_thread(runtime.query, WithAlarms(wanted), after=cursor, limit=limit)
        items = [
            alarm
            for twin in page.items
            for alarm in twin["alarms"]
            if alarm["state"] in wanted and (severity is None or alarm["severity"] == severity)
        ]
        return {"items": items, "next": page.next}

    @api.get("/alarms/rules", tags=["alarms"], dependencies=[allowed("twins:read")])
    async def list_alarm_rules() -> dict[str, Any]:
        """Each family's alarm rules (``source``: built-in or custom)."""
        return {"items": await asyncio.to_thread(runtime.alarm_rules)}

    @api.put("/alarms/rules/{family}", tags=["alarms"], dependencies=[allowed("alarms:manage")])
    async def set_alarm_rules(family: str, body: AlarmRulesIn) -> dict[str, Any]:
        """Replace a family's alarm rules; alarms of rules that are gone clear at once."""
        rules = [rule.model_dump() for rule in body.rules]
        result: dict[str, Any] = await asyncio.to_thread(runtime.set_alarm_rules, family, rules)
        return result

    @api.delete("/alarms/rules/{family}", tags=["alarms"], dependencies=[allowed("alarms:manage")])
    async def reset_alarm_rules(family: str) -> dict[str, Any]:
        """Back to the family's built-in alarm rules."""
        result: dict[str, Any] = await asyncio.to_thread(runtime.set_alarm_rules, family, None)
        return result

    @api.post("/twins/{twin_id}/alarms/{alarm_id}/ack", tags=["alarms"])
    async def acknowledge_alarm(
        twin_id: str,
        alarm_id: str,
        who: Principal = allowed("alarms:ack"),  # noqa: B008 - FastAPI's dependency idiom
    ) -> dict[str, Any]:
        """Acknowledge an open alarm (recorded with the token's name or id, and the time)."""
        validate_device_id(twin_id)
        by = who.name or who.token_id
        alarm: dict[str, Any] = await fleet.call(twin_id, "ack_alarm", twin_id, alarm_id, who=by)
        return alarm

    @api.get("/models", tags=["models"], dependencies=[allowed("twins:read")])
    async def list_models() -> dict[str, Any]:
        """The anomaly models this platform knows, and plugins that failed to load."""
        registry = runtime.models()
        return {
            "items": [spec.describe() for spec in registry.specs()],
            "errors": dict(registry.plugin_errors),
        }

    @api.get("/models/assignments", tags=["models"], dependencies=[allowed("twins:read")])
    async def model_assignments() -> dict[str, Any]:
        """The model assigned to each family that has one (the others use their default)."""
        return {"items": await asyncio.to_thread(runtime.model_assignments)}

    @api.put(
        "/models/assignments/{family}",
        tags=["models"],
        dependencies=[allowed("models:manage")],
    )
    async def assign_model(family: str, body: ModelIn) -> dict[str, Any]:
        """Give every twin of ``family`` this model (twins with their own keep theirs)."""
        assignment = await asyncio.to_thread(runtime.assign_model, family, body.model, body.params)
        return assignment or {}

    @api.delete(
        "/models/assignments/{family}",
        tags=["models"],
        status_code=204,
        dependencies=[allowed("models:manage")],
    )
    async def unassign_model(family: str) -> Response:
        """Back to the family's built-in default model."""
        await asyncio.to_thread(runtime.assign_model, family, None)
        return Response(status_code=204)

    @api.put("/twins/{twin_id}/model", tags=["models"], dependencies=[allowed("models:manage")])
    async def set_twin_model(twin_id: str, body: ModelIn) -> Response:
        """Give this twin a model of its own."""
        validate_device_id(twin_id)
        return _document(await fleet.call(twin_id, "set_model", twin_id, body.model, body.params))

    @api.delete("/twins/{twin_id}/model", tags=["models"], dependencies=[allowed("models:manage")])
    async def reset_twin_model(twin_id: str) -> Response:
        """Back to the model of the twin's family."""
        validate_device_id(twin_id)
        return _document(await fleet.call(twin_id, "set_model", twin_id, None, None))

    @api.post(
        "/models/training",
        tags=["models"],
        status_code=202,
        dependencies=[allowed("models:manage")],
    )
    async def start_training(body: TrainingIn) -> dict[str, Any]:
        """Train a model on history beside the hosts; the running job (follow it by its id).

        ``scope=family``: one model fitted on the family's readings becomes the family's model;
        ``scope=twin``: each twin (``twins``, or the family's active ones) gets a model fitted
        on its own readings. The model defaults to the family's current one.
        """
        since = body.since if body.since is not None else time.time() - body.hours * 3600
        job: dict[str, Any] = await asyncio.to_thread(
            functools.partial(
                runtime.train,
                family=body.family,
                twins=body.twins,
                model=body.model,
                params=body.params,
                scope=body.scope,
                since=since,
                until=body.until,
                max_twins=body.max_twins,
            )
        )
        return job

    @api.get("/models/training", tags=["models"], dependencies=[allowed("twins:read")])
    async def list_trainings(limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        """Training jobs, newest first."""
        return {"items": await asyncio.to_thread(runtime.trainings, limit=limit)}

    @api.get("/models/training/{job_id}", tags=["models"], dependencies=[allowed("twins:read")])
    async def get_training(job_id: str) -> dict[str, Any]:
        """One training job: running, succeeded (what it trained) or failed (why)."""
        job: dict[str, Any] = await asyncio.to_thread(runtime.training, job_id)
        return job

    @api.post("/tokens", tags=["tokens"], status_code=201, dependencies=[allowed("tokens:manage")])
    async def create_token(body: TokenIn) -> dict[str, Any]:
        """A new bearer token; the token itself is shown this once."""
        record, token = await asyncio.to_thread(tokens.create, body.role, name=body.name)
        return {**record, "token": token}

    @api.get("/tokens", tags=["tokens"], dependencies=[allowed("tokens:manage")])
    async def list_tokens() -> dict[str, Any]:
        """Every token (without secrets)."""
        return {"items": await asyncio.to_thread(tokens.list)}

    @api.delete(
        "/tokens/{token_id}",
        tags=["tokens"],
        status_code=204,
        dependencies=[allowed("tokens:manage")],
    )
    async def revoke_token(token_id: str) -> Response:
        """Revoke a token."""
        if not await asyncio.to_thread(tokens.revoke, token_id):
            raise NotFound(f"no token {token_id!r}", field="token_id")
        return Response(status_code=204)

    @api.get("/events", tags=["events"], dependencies=[allowed("events:read")])
    async def events(
        request: Request,
        type: Annotated[list[str] | None, Query()] = None,  # noqa: A002
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
            _sse(fleet, request, types=type, twin=twin, after=start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    app.include_router(api)
    install_dashboard(app)  # last: it is mounted at "/" and would shadow later routes
    return app


def _lifecycle_route(api: APIRouter, runtime: Runtime, action: str, state: str, guard: Any) -> None:
    async def move(device_id: str) -> Response:
        validate_device_id(device_id)
        return _document(await asyncio.to_thread(runtime.set_lifecycle, device_id, state))

    move.__doc__ = f"Move the device to ``{state}``."
    api.add_api_route(
        f"/devices/{{device_id}}/{action}",
        move,
        methods=["POST"],
        tags=["devices"],
        dependencies=[guard],
        name=f"{action}_device",
    )


async def _sse(
    fleet: RuntimeFleet,
    request: Request,
    *,
    types: list[str] | None,
    twin: str | None,
    after: int | None,
) -> AsyncIterator[bytes]:
    cursor = await fleet.last_event_id() if after is None else after
    wanted = frozenset(types) if types else None
    yield b": twinfleet events\n\n"
    last_beat = time.monotonic()
    while not await request.is_disconnected():
        batch = await fleet.poll(cursor, wanted, 5.0)
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
        if time.monotonic() - last_beat > 15:
            last_beat = time.monotonic()
            yield b": keep-alive\n\n"


async def _merge_patch(request: Request) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in (_MERGE_PATCH, "application/json"):
        raise UnsupportedMediaType(
            f"send {_MERGE_PATCH} (or application/json), not {kind or 'nothing'}",
            field="content-type",
        )
    try:
        patch = orjson.loads(await request.body())
    except orjson.JSONDecodeError as err:
        raise InvalidPatch(f"the body is not JSON: {err}", field="body") from None
    if not isinstance(patch, dict):
        raise InvalidPatch("a merge patch here must be a JSON object", field="body")
    return patch


def _episodes(flags: Sequence[Point]) -> list[dict[str, float | None]]:
    """Anomalous episodes from the flag series (1.0 where one starts, 0.0 where it ends)."""
    episodes: list[dict[str, float | None]] = []
    for point in flags:
        if point.value >= 0.5:
            if not episodes or episodes[-1]["end"] is not None:
                episodes.append({"start": point.ts, "end": None})
        elif episodes and episodes[-1]["end"] is None:
            episodes[-1]["end"] = point.ts
        else:
            episodes.append({"start": None, "end": point.ts})
    return episodes


def _time(text: str, field: str) -> float:
    try:
        return parse_timestamp(float(text), field=field)
    except ValueError:
        return parse_timestamp(text, field=field)


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidRequest(f"If-Match {if_match!r} is not a twin version", field="if-match")
    return int(text)


def _document(doc: Mapping[str, Any]) -> Response:
    return Response(
        orjson.dumps(doc), media_type="application/json", headers={"ETag": f'"{doc["version"]}"'}
    )


def _command(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("protocol", "online")}
