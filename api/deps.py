"""What every router shares: the API's context, who is calling, and request helpers.

The context (:class:`ApiContext`: the platform, the token store, the telemetry history, the
rate limiter, settings) is built once by ``create_app`` and reached by the routes as the
dependency :data:`Context`. Authentication is the dependency :func:`allowed`, which also counts
the request against the caller's rate limit.

Dependencies are coroutines: FastAPI runs plain functions in a thread pool, a hop per request
that costs more than the check itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, FastAPI, Header, Request, Response

from twinfleet.errors import InvalidPatch, InvalidRequest, Unauthorized, UnsupportedMediaType
from twinfleet.runtime.host.ledger import CallLedger
from twinfleet.runtime.telemetry import TelemetrySink
from twinfleet.twins import parse_timestamp

from .auth import Principal, TokenStore
from .platform import Platform
from .ratelimit import RequestLimiter

__all__ = [
    "API_PREFIX",
    "MERGE_PATCH",
    "ApiContext",
    "CallKey",
    "Context",
    "allowed",
    "context",
    "document",
    "expected_version",
    "idempotency_key",
    "install_context",
    "merge_patch",
    "once",
    "principal",
    "time_param",
]

# Every resource router declares it itself rather than being included under it: FastAPI names
# the route a request matched (``scope["route"]``, the metrics' label) as it was declared.
_T = TypeVar("_T")
API_PREFIX = "/api/v1"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the routes work with, one per app."""

    platform: Platform
    tokens: TokenStore
    telemetry: TelemetrySink | None = None
    limiter: RequestLimiter | None = None
    require_if_match: bool = False  # refuse desired-state patches without ``If-Match`` (428)
    # Answers of calls sent with an ``Idempotency-Key``, for a repeat of the same key
    ledger: CallLedger = field(default_factory=CallLedger)


def install_context(app: FastAPI, ctx: ApiContext) -> None:
    """Make ``ctx`` the context of ``app``'s routes."""
    app.state.twinfleet = ctx


async def context(request: Request) -> ApiContext:
    """The context of the app serving ``request``."""
    ctx: ApiContext = request.app.state.twinfleet
    return ctx


Context = Annotated[ApiContext, Depends(context)]
"""A route's parameter of this type receives the app's :class:`ApiContext`."""


async def principal(
    ctx: Context, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """Who sends the request, from its bearer token (:class:`Unauthorized` if none is valid)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send 'Authorization: Bearer <token>'", field="authorization")
    token = authorization[7:].strip()
    known = ctx.tokens.cached(token)
    return known if known is not None else await asyncio.to_thread(ctx.tokens.verify, token)


_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, as Stripe and the IETF draft


async def idempotency_key(
    who: Annotated[Principal, Depends(principal)],
    idempotency_key: Annotated[
        str | None,
        Header(description="Send the same key again to repeat this call without its effect"),
    ] = None,
) -> str | None:
    """The call id of a request that must take effect once: the client's ``Idempotency-Key``
    scoped to its token (None without one: the platform makes a fresh id)."""
    if idempotency_key is None:
        return None
    if _KEY.fullmatch(idempotency_key) is None:
        raise InvalidRequest(
            "Idempotency-Key is 1 to 255 printable ASCII characters", field="idempotency-key"
        )
    return f"{who.token_id}:{idempotency_key}"


CallKey = Annotated[str | None, Depends(idempotency_key)]
"""A route's parameter of this type receives the request's call id (see ``idempotency_key``)."""


async def once(
    ctx: ApiContext, route: str, key: str | None, answer: Callable[[], Coroutine[Any, Any, _T]]
) -> _T:
    """``await answer()``, or, for a key seen before in this API process (10 minutes), the
    first answer again. The host remembers the call ids it is sent too (commands and
    registrations are applied once even through another API process)."""
    return await ctx.ledger.once(route, key, answer)


def allowed(permission: str) -> Any:
    """A dependency: the caller, if their role has ``permission`` (else ``Forbidden``) and they
    are within their rate limit (else ``RateLimited``)."""

    async def check(ctx: Context, who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require(permission)
        if ctx.limiter is not None:
            await ctx.limiter.check(who.token_id)
        return who

    return Depends(check)


async def merge_patch(request: Request) -> dict[str, Any]:
    """The request's body as a JSON merge patch (RFC 7396): an object, sent as
    ``application/merge-patch+json`` or ``application/json``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in (MERGE_PATCH, "application/json"):
        raise UnsupportedMediaType(
            f"send {MERGE_PATCH} (or application/json), not {kind or 'nothing'}",
            field="content-type",
        )
    try:
        patch = orjson.loads(await request.body())
    except orjson.JSONDecodeError as err:
        raise InvalidPatch(f"the body is not JSON: {err}", field="body") from None
    if not isinstance(patch, dict):
        raise InvalidPatch("a merge patch here must be a JSON object", field="body")
    return patch


def expected_version(if_match: str | None) -> int | None:
    """The twin version an ``If-Match`` header names (None: no header, or ``*``)."""
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidRequest(f"If-Match {if_match!r} is not a twin version", field="if-match")
    return int(text)


def time_param(text: str, field: str) -> float:
    """A query parameter's time, Unix seconds or RFC 3339, as Unix seconds."""
    try:
        return parse_timestamp(float(text), field=field)
    except ValueError:
        return parse_timestamp(text, field=field)


def document(doc: Mapping[str, Any]) -> Response:
    """A twin document as the answer, its version as the ``ETag``."""
    return Response(
        orjson.dumps(doc), media_type="application/json", headers={"ETag": f'"{doc["version"]}"'}
    )
