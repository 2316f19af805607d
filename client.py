"""A typed client of the HTTP API, sync (:class:`TwinClient`) and async (:class:`AsyncTwinClient`).

Both clients build their requests and decode the answers with the same :class:`_Call` objects,
so they differ only in how a request is sent. The API's errors come back as :class:`ApiError`
subclasses, one per HTTP outcome (the class says what the caller can do about it; ``code`` is
the server's stable error code, ``status`` the HTTP status). They are distinct on purpose from
the platform's own errors in ``twinfleet.errors`` (some share a name: ``Unauthorized``,
``NotFound``): those are raised inside the platform, these describe an HTTP answer, and this
module imports nothing of the platform. Calls that must take effect once (commands,
registrations, tokens, trainings) carry an ``Idempotency-Key`` and are resent with it when the
connection fails before the answer; reads are resent too; other writes never are.
:meth:`TwinClient.events` iterates over the Server-Sent Events stream, reconnecting with
``Last-Event-ID`` when the connection drops::

    with TwinClient("http://localhost:8000", token) as fleet:
        fleet.patch_desired("pump-7", {"interval": 5})
        for event in fleet.events(types=["desired"], twin="pump-7"):
            print(event.data)
            break
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import Any, Final, Generic, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
import orjson

__all__ = [
    "ApiError",
    "AsyncTwinClient",
    "CommandResult",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PreconditionFailed",
    "PreconditionRequired",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "StreamEvent",
    "TwinClient",
    "Unauthorized",
    "UnsupportedMediaType",
    "Versioned",
]

_T = TypeVar("_T")
_API = "/api/v1"
_MERGE_PATCH = "application/merge-patch+json"
_STREAM_READ_S = 60.0  # the server sends a keep-alive at least every ~20 s
_RETRIES = 5
_RESENDS = 2  # a read, or a write with an Idempotency-Key, whose connection failed
_IDEMPOTENCY = "Idempotency-Key"
_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 10.0

Timestamp = float | str | datetime
_Params = list[tuple[str, str | int | float | bool | None]]


# -- errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer of the API: its HTTP ``status`` and the body's ``code``, ``message``,
    ``field``."""

    code = "http_error"

    def __init__(
        self, message: str, *, status: int, code: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or type(self).code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.status} {self.code}: {self.message}{where}"


class InvalidRequest(ApiError):
    """The request is malformed: a bad patch, filter, timestamp or parameter (400, 422)."""

    code = "invalid_request"


class Unauthorized(ApiError):
    """No valid bearer token (401)."""

    code = "unauthorized"


class Forbidden(ApiError):
    """The token's role lacks the permission (403)."""

    code = "forbidden"


class NotFound(ApiError):
    """No such twin, command, token or route (404)."""

    code = "not_found"


class Conflict(ApiError):
    """The request conflicts with the current state (409)."""

    code = "conflict"


class PreconditionFailed(ApiError):
    """``expected_version`` is not the twin's version any more (412)."""

    code = "version_conflict"


class PayloadTooLarge(ApiError):
    """The body or the resulting document is too large (413)."""

    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    """The body's content type or format is not accepted (415)."""

    code = "unsupported_media_type"


class PreconditionRequired(ApiError):
    """This API requires ``expected_version`` on writes (428)."""

    code = "precondition_required"


class RateLimited(ApiError):
    """Too many requests for this token (429); ``retry_after``: seconds to wait, if told."""

    code = "rate_limited"
    retry_after: float | None = None


class ServerError(ApiError):
    """The platform failed (500, code ``internal_error``): not the request's fault."""

    code = "internal_error"


class ServiceUnavailable(ServerError):
    """The platform cannot answer now, e.g. its store is down (503)."""

    code = "service_unavailable"


# The one place an HTTP status chooses the exception class (the server maps codes to statuses).
_ERRORS: Final[Mapping[int, type[ApiError]]] = MappingProxyType(
    {
        400: InvalidRequest,
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        412: PreconditionFailed,
        413: PayloadTooLarge,
        415: UnsupportedMediaType,
        422: InvalidRequest,
        428: PreconditionRequired,
        429: RateLimited,
        500: ServerError,
        503: ServiceUnavailable,
    }
)


def _error(response: httpx.Response) -> ApiError:
    """The typed exception for an error answer, whether or not its body is the API's JSON."""
    kind = _ERRORS.get(
        response.status_code, ServerError if response.status_code >= 500 else ApiError
    )
    try:
        body = orjson.loads(response.content)["error"]
        error = kind(
            str(body["message"]),
            status=response.status_code,
            code=str(body["code"]),
            field=body.get("field"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = response.text.strip()[:500] or response.reason_phrase
        error = kind(text, status=response.status_code)
    retry_after = response.headers.get("retry-after", "")
    if isinstance(error, RateLimited) and retry_after.isdigit():
        error.retry_after = float(retry_after)
    return error


# -- values -------------------------------------------------------------------------------------


def _page(response: httpx.Response) -> Page:
    body = _json(response)
    return Page(list(body["items"]), body.get("next"))


class Page(NamedTuple):
    """One page of twins; ``next`` is the cursor of the following page (``None`` at the end)."""

    items: list[dict[str, Any]]
    next: str | None


class Versioned(NamedTuple):
    """A twin document and its version, from the ``ETag`` header."""

    doc: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A command's state: ``answered`` is true when the device answered within ``timeout_s``
    (HTTP 200), false when the command was accepted for later (202)."""

    id: str
    status: str
    result: Any
    error: Any
    answered: bool
    record: Mapping[str, Any] = field(repr=False)

    @classmethod
    def of(cls, record: Mapping[str, Any], *, answered: bool) -> CommandResult:
        """The result of a command record."""
        return cls(
            id=str(record["id"]),
            status=str(record["status"]),
            result=record.get("result"),
            error=record.get("error"),
            answered=answered,
            record=record,
        )


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of the stream: a desired change, presence, anomaly, command or rejection."""

    id: int
    type: str
    twin_id: str
    ts: float
    data: dict[str, Any]

    def __post_init__(self) -> None:
        if self.id < 0 or not self.type:
            raise ValueError(f"an event needs an id >= 0 and a type, not {self.id}, {self.type!r}")


# -- requests, shared by both clients -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call(Generic[_T]):
    """One API request and how to read its answer: both clients send these."""

    method: str
    path: str
    read: Callable[[httpx.Response], _T]
    params: _Params = field(default_factory=list)
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The request, with ``http``'s base URL, token and timeout (unless this call's own)."""
        return http.build_request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            content=self.content,
            headers=self.headers,
            timeout=httpx.USE_CLIENT_DEFAULT if self.timeout is None else self.timeout,
        )

    def finish(self, response: httpx.Response) -> _T:
        """The decoded answer, or the typed error."""
        if response.is_error:
            raise _error(response)
        return self.read(response)


def _json(response: httpx.Response) -> Any:
    return orjson.loads(response.content)


def _once() -> dict[str, str]:
    """Headers of a request that must take effect once: a fresh ``Idempotency-Key``, so the
    client may resend it when the connection fails before the answer (the API answers a
    repeated key with the first answer)."""
    return {"Idempotency-Key": uuid.uuid4().hex}


def _resendable(call: _Call[Any], attempt: int) -> bool:
    """Whether to send ``call`` again after a connection failure on try ``attempt``."""
    return attempt < _RESENDS and (call.method in ("GET", "HEAD") or _IDEMPOTENCY in call.headers)


def _items(response: httpx.Response) -> list[dict[str, Any]]:
    return list(orjson.loads(response.content)["items"])


def _twin_path(twin_id: str, *rest: str) -> str:
    return "/".join((f"{_API}/twins", quote(twin_id, safe=""), *(quote(r, safe="") for r in rest)))


def _when(value: Timestamp) -> str:
    if isinstance(value, datetime):
        return repr(value.timestamp())
    return value if isinstance(value, str) else repr(float(value))


def _flag(value: bool | None) -> list[str]:
    return [] if value is None else ["true" if value else "false"]


class _Calls:
    """The API's requests, one function each."""

    @staticmethod
    def health() -> _Call[dict[str, Any]]:
        return _Call("GET", "/healthz", _json)

    @staticmethod
    def twin(twin_id: str) -> _Call[Versioned]:
        def read(response: httpx.Response) -> Versioned:
            doc = _json(response)
            etag = response.headers.get("etag", "").removeprefix("W/").strip('"')
            return Versioned(doc, int(etag) if etag.isdigit() else int(doc["version"]))

        return _Call("GET", _twin_path(twin_id), read)

    @staticmethod
    def twins(
        type: str | None,  # noqa: A002 - the API's name
        tags: Mapping[str, str] | None,
        online: bool | None,
        anomalous: bool | None,
        filter: str | None,  # noqa: A002 - the API's name
        *,
        limit: int,
        cursor: str | None,
    ) -> _Call[Page]:
        params: _Params = [("limit", limit)]
        params += [("type", type)] if type is not None else []
        params += [("tag", f"{k}:{v}") for k, v in (tags or {}).items()]
        params += [("online", v) for v in _flag(online)]
        params += [("anomalous", v) for v in _flag(anomalous)]
        params += [("filter", filter)] if filter else []
        params += [("cursor", cursor)] if cursor else []

        return _Call("GET", f"{_API}/twins", _page, params)

    @staticmethod
    def patch(
        twin_id: str, part: str, patch: Mapping[str, Any], expected_version: int | None
    ) -> _Call[dict[str, Any]]:
        headers = {"Content-Type": _MERGE_PATCH}
        if expected_version is not None:
            headers["If-Match"] = f'"{expected_version}"'
        return _Call(
            "PATCH",
            _twin_path(twin_id, part),
            _json,
            content=orjson.dumps(patch),
            headers=headers,
        )

    @staticmethod
    def send_command(
        twin_id: str,
        name: str,
        params: Mapping[str, Any] | None,
        *,
        timeout_s: float,
        ttl_s: float,
        http_timeout: float,
    ) -> _Call[CommandResult]:
        body = {"name": name, "params": dict(params or {}), "timeout_s": timeout_s, "ttl_s": ttl_s}
        return _Call(
            "POST",
            _twin_path(twin_id, "commands"),
            lambda r: CommandResult.of(_json(r), answered=r.status_code == 200),
            json=body,
            headers=_once(),
            # the server holds the request up to timeout_s for the device's answer
            timeout=max(http_timeout, timeout_s + http_timeout),
        )

    @staticmethod
    def command(twin_id: str, command_id: str) -> _Call[CommandResult]:
        return _Call(
            "GET",
            _twin_path(twin_id, "commands", command_id),
            lambda r: CommandResult.of(_json(r), answered=True),
        )

    @staticmethod
    def telemetry(
        twin_id: str,
        *,
        metric: str | None,
        since: Timestamp | None,
        until: Timestamp | None,
        limit: int,
    ) -> _Call[list[dict[str, Any]]]:
        params: _Params = [("limit", limit)]
        params += [("metric", metric)] if metric is not None else []
        params += [("since", _when(since))] if since is not None else []
        params += [("until", _when(until))] if until is not None else []
        return _Call("GET", _twin_path(twin_id, "telemetry"), _items, params)

    @staticmethod
    def anomalies(
        twin_id: str, *, since: Timestamp | None, until: Timestamp | None, limit: int
    ) -> _Call[dict[str, Any]]:
        params: _Params = [("limit", limit)]
        params += [("since", _when(since))] if since is not None else []
        params += [("until", _when(until))] if until is not None else []
        return _Call("GET", _twin_path(twin_id, "anomalies"), _json, params)

    @staticmethod
    def anomalous(type: str | None, *, limit: int, cursor: str | None) -> _Call[Page]:  # noqa: A002
        params: _Params = [("limit", limit)]
        params += [("type", type)] if type is not None else []
        params += [("cursor", cursor)] if cursor else []
        return _Call("GET", f"{_API}/anomalies", _page, params)

    @staticmethod
    def create_token(role: str, name: str) -> _Call[dict[str, Any]]:
        return _Call(
            "POST", f"{_API}/tokens", _json, json={"role": role, "name": name}, headers=_once()
        )

    @staticmethod
    def tokens() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", f"{_API}/tokens", _items)

    @staticmethod
    def revoke_token(token_id: str) -> _Call[None]:
        return _Call("DELETE", f"{_API}/tokens/{quote(token_id, safe='')}", lambda _: None)

    @staticmethod
    def windows(twin_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", _twin_path(twin_id, "windows"), _json)

    @staticmethod
    def aggregates(by: str, metric: str | None) -> _Call[list[dict[str, Any]]]:
        params: _Params = [("by", by)]
        params += [("metric", metric)] if metric else []
        return _Call("GET", f"{_API}/aggregates", _items, params)

    @staticmethod
    def alarms(
        states: Sequence[str] | None, severity: str | None, *, limit: int, cursor: str | None
    ) -> _Call[Page]:
        params: _Params = [("limit", limit)]
        params += [("state", s) for s in states or ()]
        params += [("severity", severity)] if severity else []
        params += [("cursor", cursor)] if cursor else []
        return _Call("GET", f"{_API}/alarms", _page, params)

    @staticmethod
    def ack_alarm(twin_id: str, alarm_id: str) -> _Call[dict[str, Any]]:
        return _Call("POST", _twin_path(twin_id, "alarms", alarm_id, "ack"), _json)

    @staticmethod
    def models() -> _Call[dict[str, Any]]:
        return _Call("GET", f"{_API}/models", _json)

    @staticmethod
    def model_assignments() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", f"{_API}/models/assignments", _items)

    @staticmethod
    def assign_model(
        family: str, model: str | None, params: Mapping[str, Any] | None
    ) -> _Call[Any]:
        path = f"{_API}/models/assignments/{quote(family, safe='')}"
        if model is None:
            return _Call("DELETE", path, lambda _: None)
        return _Call("PUT", path, _json, json={"model": model, "params": dict(params or {})})

    @staticmethod
    def set_twin_model(
        twin_id: str, model: str | None, params: Mapping[str, Any] | None
    ) -> _Call[dict[str, Any]]:
        path = _twin_path(twin_id, "model")
        if model is None:
            return _Call("DELETE", path, _json)
        return _Call("PUT", path, _json, json={"model": model, "params": dict(params or {})})

    @staticmethod
    def alarm_rules() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", f"{_API}/alarms/rules", _items)

    @staticmethod
    def set_alarm_rules(
        family: str, rules: Sequence[Mapping[str, Any]] | None
    ) -> _Call[dict[str, Any]]:
        path = f"{_API}/alarms/rules/{quote(family, safe='')}"
        if rules is None:
            return _Call("DELETE", path, _json)
        return _Call("PUT", path, _json, json={"rules": [dict(r) for r in rules]})

    @staticmethod
    def train(body: Mapping[str, Any]) -> _Call[dict[str, Any]]:
        return _Call("POST", f"{_API}/models/training", _json, json=dict(body), headers=_once())

    @staticmethod
    def training(job_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"{_API}/models/training/{quote(job_id, safe='')}", _json)

    @staticmethod
    def trainings(limit: int) -> _Call[list[dict[str, Any]]]:
        return _Call("GET", f"{_API}/models/training", _items, params=[("limit", limit)])

    @staticmethod
    def register_device(
        device_id: str, device_type: str | None, tags: Mapping[str, Any] | None
    ) -> _Call[dict[str, Any]]:
        body = {"id": device_id, "type": device_type, "tags": dict(tags or {})}
        return _Call("POST", f"{_API}/devices", _json, json=body, headers=_once())

    @staticmethod
    def devices(limit: int, cursor: str | None) -> _Call[dict[str, Any]]:
        params: list[tuple[str, Any]] = [("limit", limit)]
        params += [("cursor", cursor)] if cursor else []
        return _Call("GET", f"{_API}/devices", _json, params)

    @staticmethod
    def device(device_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"{_API}/devices/{quote(device_id, safe='')}", _json)

    @staticmethod
    def move_device(device_id: str, action: str) -> _Call[dict[str, Any]]:
        if action not in ("suspend", "resume", "decommission"):
            raise ValueError("action is suspend, resume or decommission")
        return _Call("POST", f"{_API}/devices/{quote(device_id, safe='')}/{action}", _json)


class _EventStream:
    """The state of one event subscription: its parser, its resume point and its retries.

    Both clients run the same loop around it: open (:meth:`call`), :meth:`feed` each line, and
    on a dropped connection wait :meth:`backoff` seconds and open again from the last event.
    """

    def __init__(
        self,
        types: Iterable[str] | None,
        twin: str | None,
        last_event_id: int | None,
        retries: int,
        backoff_s: float,
    ) -> None:
        self._types = list(types or ())
        self._twin = twin
        self.last_event_id = last_event_id
        self._retries = retries
        self._backoff_s = backoff_s
        self._failures = 0
        self._reset()

    def _reset(self) -> None:
        self._id: str | None = None
        self._type: str | None = None
        self._data: list[str] = []

    def call(self, http_timeout: float) -> _Call[None]:
        """The request that opens (or reopens) the stream."""
        params: _Params = [("type", t) for t in self._types]
        params += [("twin", self._twin)] if self._twin is not None else []
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        self._reset()
        return _Call(
            "GET",
            f"{_API}/events",
            lambda _: None,
            params,
            headers=headers,
            timeout=max(http_timeout, _STREAM_READ_S),
        )

    def feed(self, line: str) -> StreamEvent | None:
        """Take one line of the stream; returns the event a blank line completes."""
        if not line:
            event = self._dispatch()
            self._reset()
            return event
        if line.startswith(":"):  # a comment or a keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> StreamEvent | None:
        if not self._data:
            return None
        body = orjson.loads("\n".join(self._data))
        event = StreamEvent(
            id=int(body.get("id", self._id or 0)),
            type=str(body.get("type", self._type or "message")),
            twin_id=str(body.get("twin_id", "")),
            ts=float(body.get("ts", 0.0)),
            data=dict(body.get("data") or {}),
        )
        self.last_event_id = event.id
        self._failures = 0
        return event

    def backoff(self, error: Exception) -> float:
        """Seconds to wait before reconnecting after ``error``; re-raises it when out of
        retries."""
        self._failures += 1
        if self._failures > self._retries:
            raise error
        return float(min(self._backoff_s * 2 ** (self._failures - 1), _MAX_BACKOFF_S))


def _ended() -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError("the event stream ended")


def _http_options(base_url: str, token: str, timeout: float) -> dict[str, Any]:
    return {
        "base_url": base_url,
        "headers": {"Authorization": f"Bearer {token}", "Accept": "application/json"},
        "timeout": timeout,
    }


# -- the clients --------------------------------------------------------------------------------


class TwinClient:
    """The API, synchronously: ``with TwinClient(url, token) as fleet: fleet.twin("pump-7")``.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._timeout = timeout
        self._http = httpx.Client(**_http_options(base_url, token, timeout), transport=transport)

    def __enter__(self) -> TwinClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _send(self, call: _Call[_T]) -> _T:
        for attempt in itertools.count():
            try:
                return call.finish(self._http.send(call.build(self._http)))
            except httpx.TransportError:
                if not _resendable(call, attempt):
                    raise
                time.sleep(_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def health(self) -> dict[str, Any]:
        """Liveness of the API."""
        return self._send(_Calls.health())

    def twin(self, twin_id: str) -> dict[str, Any]:
        """A twin's document."""
        return self._send(_Calls.twin(twin_id)).doc

    def twin_versioned(self, twin_id: str) -> Versioned:
        """A twin's document with its ``ETag`` version, for ``expected_version``."""
        return self._send(_Calls.twin(twin_id))

    def twins(
        self,
        *,
        type: str | None = None,  # noqa: A002 - the API's name
        tags: Mapping[str, str] | None = None,
        online: bool | None = None,
        anomalous: bool | None = None,
        filter: str | None = None,  # noqa: A002 - the API's name
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """One page of twins in id order, e.g. ``filter="reported.temperature > 30"``."""
        call = _Calls.twins(type, tags, online, anomalous, filter, limit=limit, cursor=cursor)
        return self._send(call)

    def iter_twins(
        self,
        *,
        type: str | None = None,  # noqa: A002 - the API's name
        tags: Mapping[str, str] | None = None,
        online: bool | None = None,
        anomalous: bool | None = None,
        filter: str | None = None,  # noqa: A002 - the API's name
        limit: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every matching twin, fetching ``limit`` at a time."""
        cursor: str | None = None
        while True:
            page = self.twins(
                type=type,
                tags=tags,
                online=online,
                anomalous=anomalous,
                filter=filter,
                limit=limit,
                cursor=cursor,
            )
            yield from page.items
            if page.next is None:
                return
            cursor = page.next

    def patch_desired(
        self, twin_id: str, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Merge-patch desired state; the twin's new document."""
        return self._send(_Calls.patch(twin_id, "desired", patch, expected_version))

    def patch_tags(
        self, twin_id: str, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Merge-patch the twin's tags; the twin's new document."""
        return self._send(_Calls.patch(twin_id, "tags", patch, expected_version))

    def send_command(
        self,
        twin_id: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float = 10,
        ttl_s: float = 3600,
    ) -> CommandResult:
        """Send a command, waiting up to ``timeout_s`` for the device's answer."""
        call = _Calls.send_command(
            twin_id, name, params, timeout_s=timeout_s, ttl_s=ttl_s, http_timeout=self._timeout
        )
        return self._send(call)

    def command(self, twin_id: str, command_id: str) -> CommandResult:
        """A command's current state."""
        return self._send(_Calls.command(twin_id, command_id))

    def telemetry(
        self,
        twin_id: str,
        *,
        metric: str | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Readings ``{"metric", "ts", "value"}`` in ``[since, until)``, oldest first."""
        call = _Calls.telemetry(twin_id, metric=metric, since=since, until=until, limit=limit)
        return self._send(call)

    def anomalies(
        self,
        twin_id: str,
        *,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        limit: int = 10_000,
    ) -> dict[str, Any]:
        """``{"current", "scores", "episodes"}``: the twin's verdict now and its history."""
        return self._send(_Calls.anomalies(twin_id, since=since, until=until, limit=limit))

    def anomalous(
        self,
        *,
        type: str | None = None,  # noqa: A002 - the API's name
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """One page of the twins anomalous now (``id``, ``type``, ``tags``, ``anomaly``)."""
        return self._send(_Calls.anomalous(type, limit=limit, cursor=cursor))

    def create_token(self, role: str, *, name: str = "") -> dict[str, Any]:
        """A new token's record, with the token itself under ``"token"`` (shown this once)."""
        return self._send(_Calls.create_token(role, name))

    def tokens(self) -> list[dict[str, Any]]:
        """Every token's record (without secrets)."""
        return self._send(_Calls.tokens())

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token."""
        self._send(_Calls.revoke_token(token_id))

    def windows(self, twin_id: str) -> dict[str, Any]:
        """The twin's count, min, max and mean per metric over the last 1 min, 5 min, 1 h."""
        return self._send(_Calls.windows(twin_id))

    def aggregates(self, *, by: str = "family", metric: str | None = None) -> list[dict[str, Any]]:
        """Per family (or ``tag:<key>`` value): twins, online, anomalous, mean of ``metric``."""
        return self._send(_Calls.aggregates(by, metric))

    def alarms(
        self,
        *,
        states: Sequence[str] | None = None,
        severity: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Alarms (default: active and acknowledged) of a page of twins that have them."""
        return self._send(_Calls.alarms(states, severity, limit=limit, cursor=cursor))

    def ack_alarm(self, twin_id: str, alarm_id: str) -> dict[str, Any]:
        """Acknowledge an open alarm; the alarm as it is now."""
        return self._send(_Calls.ack_alarm(twin_id, alarm_id))

    def models(self) -> dict[str, Any]:
        """``{"items": [model specs], "errors": {plugin: why it did not load}}``."""
        return self._send(_Calls.models())

    def model_assignments(self) -> list[dict[str, Any]]:
        """``{"family", "model", "params"}`` of each family with an assigned model."""
        return self._send(_Calls.model_assignments())

    def assign_model(
        self, family: str, model: str | None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Give a family's twins ``model`` (None: back to the built-in default)."""
        result: dict[str, Any] | None = self._send(_Calls.assign_model(family, model, params))
        return result

    def set_twin_model(
        self, twin_id: str, model: str | None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Give one twin a model of its own (None: back to its family's); the twin."""
        return self._send(_Calls.set_twin_model(twin_id, model, params))

    def alarm_rules(self) -> list[dict[str, Any]]:
        """Each family's alarm rules: ``{"family", "rules", "source"}``."""
        return self._send(_Calls.alarm_rules())

    def set_alarm_rules(
        self, family: str, rules: Sequence[Mapping[str, Any]] | None
    ) -> dict[str, Any]:
        """Replace a family's alarm rules (None: back to its built-in ones)."""
        return self._send(_Calls.set_alarm_rules(family, rules))

    def train(
        self,
        *,
        family: str | None = None,
        twins: Sequence[str] = (),
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        scope: str = "family",
        hours: float = 24.0,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, Any]:
        """Start training a model on history (see ``POST /models/training``); the running job."""
        body = _training_body(
            twins,
            params,
            family=family,
            model=model,
            scope=scope,
            hours=hours,
            since=since,
            until=until,
        )
        return self._send(_Calls.train(body))

    def training(self, job_id: str) -> dict[str, Any]:
        """A training job's record (``status`` running, succeeded or failed)."""
        return self._send(_Calls.training(job_id))

    def trainings(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Training jobs, newest first."""
        return self._send(_Calls.trainings(limit))

    def register_device(
        self,
        device_id: str,
        *,
        device_type: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register a device; returns its new twin (``Conflict`` if registered already)."""
        return self._send(_Calls.register_device(device_id, device_type, tags))

    def devices(self, *, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        """One page of registry entries: ``{"items", "next"}``."""
        return self._send(_Calls.devices(limit, cursor))

    def device(self, device_id: str) -> dict[str, Any]:
        """A device's registry entry with its lifecycle state."""
        return self._send(_Calls.device(device_id))

    def move_device(self, device_id: str, action: str) -> dict[str, Any]:
        """``suspend``, ``resume`` or ``decommission`` a device; returns its twin."""
        return self._send(_Calls.move_device(device_id, action))

    def events(
        self,
        *,
        types: Iterable[str] | None = None,
        twin: str | None = None,
        last_event_id: int | None = None,
        retries: int = _RETRIES,
        backoff_s: float = _BACKOFF_S,
    ) -> Iterator[StreamEvent]:
        """Events as they happen (after ``last_event_id`` if given); break out to stop.

        A dropped connection is reopened from the last event, up to ``retries`` times in a row
        with exponential backoff; then its ``httpx.TransportError`` is raised.
        """
        stream = _EventStream(types, twin, last_event_id, retries, backoff_s)
        while True:
            try:
                response = self._http.send(
                    stream.call(self._timeout).build(self._http), stream=True
                )
                try:
                    if response.is_error:
                        response.read()
                        raise _error(response)
                    for line in response.iter_lines():
                        event = stream.feed(line)
                        if event is not None:
                            yield event
                finally:
                    response.close()
                raise _ended()
            except httpx.TransportError as error:
                time.sleep(stream.backoff(error))


class AsyncTwinClient:
    """The API, asynchronously: ``async with AsyncTwinClient(url, token) as fleet: ...``.

    The same methods as :class:`TwinClient`, as coroutines; :meth:`events` is an async
    iterator (close it with ``contextlib.aclosing`` when breaking out early).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            **_http_options(base_url, token, timeout), transport=transport
        )

    async def __aenter__(self) -> AsyncTwinClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(self, call: _Call[_T]) -> _T:
        for attempt in itertools.count():
            try:
                return call.finish(await self._http.send(call.build(self._http)))
            except httpx.TransportError:
                if not _resendable(call, attempt):
                    raise
                await asyncio.sleep(_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    async def health(self) -> dict[str, Any]:
        """Liveness of the API."""
        return await self._send(_Calls.health())

    async def twin(self, twin_id: str) -> dict[str, Any]:
        """A twin's document."""
        return (await self._send(_Calls.twin(twin_id))).doc

    async def twin_versioned(self, twin_id: str) -> Versioned:
        """A twin's document with its ``ETag`` version, for ``expected_version``."""
        return await self._send(_Calls.twin(twin_id))

    async def twins(
        self,
        *,
        type: str | None = None,  # noqa: A002 - the API's name
        tags: Mapping[str, str] | None = None,
        online: bool | None = None,
        anomalous: bool | None = None,
        filter: str | None = None,  # noqa: A002 - the API's name
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """One page of twins in id order, e.g. ``filter="reported.temperature > 30"``."""
        call = _Calls.twins(type, tags, online, anomalous, filter, limit=limit, cursor=cursor)
        return await self._send(call)

    async def iter_twins(
        self,
        *,
        type: str | None = None,  # noqa: A002 - the API's name
        tags: Mapping[str, str] | None = None,
        online: bool | None = None,
        anomalous: bool | None = None,
        filter: str | None = None,  # noqa: A002 - the API's name
        limit: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching twin, fetching ``limit`` at a time."""
        cursor: str | None = None
        while True:
            page = await self.twins(
                type=type,
                tags=tags,
                online=online,
                anomalous=anomalous,
                filter=filter,
                limit=limit,
                cursor=cursor,
            )
            for item in page.items:
                yield item
            if page.next is None:
                return
            cursor = page.next

    async def patch_desired(
        self, twin_id: str, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Merge-patch desired state; the twin's new document."""
        return await self._send(_Calls.patch(twin_id, "desired", patch, expected_version))

    async def patch_tags(
        self, twin_id: str, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Merge-patch the twin's tags; the twin's new document."""
        return await self._send(_Calls.patch(twin_id, "tags", patch, expected_version))

    async def send_command(
        self,
        twin_id: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float = 10,
        ttl_s: float = 3600,
    ) -> CommandResult:
        """Send a command, waiting up to ``timeout_s`` for the device's answer."""
        call = _Calls.send_command(
            twin_id, name, params, timeout_s=timeout_s, ttl_s=ttl_s, http_timeout=self._timeout
        )
        return await self._send(call)

    async def command(self, twin_id: str, command_id: str) -> CommandResult:
        """A command's current state."""
        return await self._send(_Calls.command(twin_id, command_id))

    async def telemetry(
        self,
        twin_id: str,
        *,
        metric: str | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Readings ``{"metric", "ts", "value"}`` in ``[since, until)``, oldest first."""
        call = _Calls.telemetry(twin_id, metric=metric, since=since, until=until, limit=limit)
        return await self._send(call)

    async def anomalies(
        self,
        twin_id: str,
        *,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        limit: int = 10_000,
    ) -> dict[str, Any]:
        """``{"current", "scores", "episodes"}``: the twin's verdict now and its history."""
        return await self._send(_Calls.anomalies(twin_id, since=since, until=until, limit=limit))

    async def anomalous(
        self,
        *,
        type: str | None = None,  # noqa: A002 - the API's name
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """One page of the twins anomalous now (``id``, ``type``, ``tags``, ``anomaly``)."""
        return await self._send(_Calls.anomalous(type, limit=limit, cursor=cursor))

    async def create_token(self, role: str, *, name: str = "") -> dict[str, Any]:
        """A new token's record, with the token itself under ``"token"`` (shown this once)."""
        return await self._send(_Calls.create_token(role, name))

    async def tokens(self) -> list[dict[str, Any]]:
        """Every token's record (without secrets)."""
        return await self._send(_Calls.tokens())

    async def revoke_token(self, token_id: str) -> None:
        """Revoke a token."""
        await self._send(_Calls.revoke_token(token_id))

    async def windows(self, twin_id: str) -> dict[str, Any]:
        """The twin's count, min, max and mean per metric over the last 1 min, 5 min, 1 h."""
        return await self._send(_Calls.windows(twin_id))

    async def aggregates(
        self, *, by: str = "family", metric: str | None = None
    ) -> list[dict[str, Any]]:
        """Per family (or ``tag:<key>`` value): twins, online, anomalous, mean of ``metric``."""
        return await self._send(_Calls.aggregates(by, metric))

    async def alarms(
        self,
        *,
        states: Sequence[str] | None = None,
        severity: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Alarms (default: active and acknowledged) of a page of twins that have them."""
        return await self._send(_Calls.alarms(states, severity, limit=limit, cursor=cursor))

    async def ack_alarm(self, twin_id: str, alarm_id: str) -> dict[str, Any]:
        """Acknowledge an open alarm; the alarm as it is now."""
        return await self._send(_Calls.ack_alarm(twin_id, alarm_id))

    async def models(self) -> dict[str, Any]:
        """``{"items": [model specs], "errors": {plugin: why it did not load}}``."""
        return await self._send(_Calls.models())

    async def model_assignments(self) -> list[dict[str, Any]]:
        """``{"family", "model", "params"}`` of each family with an assigned model."""
        return await self._send(_Calls.model_assignments())

    async def assign_model(
        self, family: str, model: str | None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Give a family's twins ``model`` (None: back to the built-in default)."""
        result: dict[str, Any] | None = await self._send(_Calls.assign_model(family, model, params))
        return result

    async def set_twin_model(
        self, twin_id: str, model: str | None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Give one twin a model of its own (None: back to its family's); the twin."""
        return await self._send(_Calls.set_twin_model(twin_id, model, params))

    async def alarm_rules(self) -> list[dict[str, Any]]:
        """Each family's alarm rules: ``{"family", "rules", "source"}``."""
        return await self._send(_Calls.alarm_rules())

    async def set_alarm_rules(
        self, family: str, rules: Sequence[Mapping[str, Any]] | None
    ) -> dict[str, Any]:
        """Replace a family's alarm rules (None: back to its built-in ones)."""
        return await self._send(_Calls.set_alarm_rules(family, rules))

    async def train(
        self,
        *,
        family: str | None = None,
        twins: Sequence[str] = (),
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        scope: str = "family",
        hours: float = 24.0,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, Any]:
        """Start training a model on history (see ``POST /models/training``); the running job."""
        body = _training_body(
            twins,
            params,
            family=family,
            model=model,
            scope=scope,
            hours=hours,
            since=since,
            until=until,
        )
        return await self._send(_Calls.train(body))

    async def training(self, job_id: str) -> dict[str, Any]:
        """A training job's record (``status`` running, succeeded or failed)."""
        return await self._send(_Calls.training(job_id))

    async def trainings(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Training jobs, newest first."""
        return await self._send(_Calls.trainings(limit))

    async def register_device(
        self,
        device_id: str,
        *,
        device_type: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register a device; returns its new twin (``Conflict`` if registered already)."""
        return await self._send(_Calls.register_device(device_id, device_type, tags))

    async def devices(self, *, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        """One page of registry entries: ``{"items", "next"}``."""
        return await self._send(_Calls.devices(limit, cursor))

    async def device(self, device_id: str) -> dict[str, Any]:
        """A device's registry entry with its lifecycle state."""
        return await self._send(_Calls.device(device_id))

    async def move_device(self, device_id: str, action: str) -> dict[str, Any]:
        """``suspend``, ``resume`` or ``decommission`` a device; returns its twin."""
        return await self._send(_Calls.move_device(device_id, action))

    async def events(
        self,
        *,
        types: Iterable[str] | None = None,
        twin: str | None = None,
        last_event_id: int | None = None,
        retries: int = _RETRIES,
        backoff_s: float = _BACKOFF_S,
    ) -> AsyncIterator[StreamEvent]:
        """Events as they happen (after ``last_event_id`` if given); break out to stop.

        A dropped connection is reopened from the last event, up to ``retries`` times in a row
        with exponential backoff; then its ``httpx.TransportError`` is raised.
        """
        stream = _EventStream(types, twin, last_event_id, retries, backoff_s)
        while True:
            try:
                request = stream.call(self._timeout).build(self._http)
                response = await self._http.send(request, stream=True)
                try:
                    if response.is_error:
                        await response.aread()
                        raise _error(response)
                    async for line in response.aiter_lines():
                        event = stream.feed(line)
                        if event is not None:
                            yield event
                finally:
                    await response.aclose()
                raise _ended()
            except httpx.TransportError as error:
                await asyncio.sleep(stream.backoff(error))


def _training_body(
    twins: Sequence[str], params: Mapping[str, Any] | None, **fields: Any
) -> dict[str, Any]:
    """A ``POST /models/training`` body: the fields that are set."""
    body: dict[str, Any] = {"twins": list(twins)}
    body.update({k: v for k, v in fields.items() if v is not None})
    if params is not None:
        body["params"] = dict(params)
    return body
