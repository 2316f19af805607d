"""``CoapEndpoint``: devices speak plain CoAP over UDP (RFC 7252) to the fleet.

Resources (the external contract), one request a device message or a read:

- ``POST /devices/{id}/telemetry`` and ``POST /devices/{id}/reported``: a body in JSON (50),
  CBOR (60), SenML+JSON (110) or SenML+CBOR (112), JSON when no Content-Format is given;
  reported state comes as JSON or CBOR only. Decoded by :mod:`twinfleet.adapters.payloads`,
  handed to ``fleet.ingest`` and answered 2.04 once the fleet accepted it. Bodies bigger than
  one datagram come block-wise (RFC 7959 Block1); aiocoap reassembles them.
- ``GET /devices/{id}/desired`` (observable, RFC 7641): ``{"version", "desired", "delta"}``.
- ``GET /devices/{id}/commands`` (observable): claims the device's queued commands and returns
  them, ``[{"id", "name", "params", "expires_at"}, ...]``; each notification claims again, so
  a notification carries the commands it announces.
- ``POST /devices/{id}/commands/{cmd_id}``: the device's answer
  ``{"status": "ok"|"error", "result", "error"}``.

GETs answer JSON, or CBOR when asked with ``Accept: 60``. Every refused request gets a short
diagnostic text (``<code>: <message>``) and is recorded with ``fleet.reject``. The answers are
mapped from twinfleet's error codes in one place, :data:`COAP_CODES`:

- 4.00 Bad Request: a malformed body (bad JSON, CBOR or SenML, wrong shape, bad ``ts``) or one
  the twin refuses (too deep, document too large).
- 4.04 Not Found: an unknown path, an invalid device id in the path (the URI names no
  resource, so not 4.00), a twin that does not exist (``desired``), an unknown command.
- 4.05 Method Not Allowed: a known path with the wrong method (GET on ``telemetry``).
- 4.06 Not Acceptable: a GET asking for a format other than JSON or CBOR.
- 4.13 Request Entity Too Large (with ``Size1: 131072``): a body over 128 KB, refused at the
  first block that declares (``Size1``) or reaches more, before the rest is sent.
- 4.15 Unsupported Content-Format: any other Content-Format.
- 5.03 Service Unavailable: the fleet could not take the message (not recorded as a rejection:
  the device should retry).

GET answers carry an ETag (a hash of the representation, so a GET that already holds it gets
2.03 Valid). aiocoap does not cut observation answers and notifications into blocks, and its
receivers read at most 4 KB per datagram, so the endpoint sends their first Block2 block itself
and keeps the whole for the client's follow-up requests; the ETag lets the client notice when a
newer notification replaced the representation in between. The same 4 KB receive buffer means a
device must send a body over ~4 KB block-wise (as RFC 7252 asks anyway): a bigger single
datagram arrives truncated and is refused as malformed.

Concurrent device messages are handed to ``fleet.ingest`` together: the first one waits up to
``batch_window_s`` for company, and while one batch is with the fleet the next one gathers.
Batches go one at a time, in arrival order, so one device's messages keep their order. A batch
holds at most one request per device, so a rejection the fleet returns (by device id) belongs
to exactly one request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import aiocoap
import aiocoap.resource
import cbor2
import orjson
from aiocoap.numbers.codes import Code

from twinfleet.errors import MethodNotAllowed, NotAcceptable, UnknownResource
from twinfleet.runtime.edge import EdgePlatform
from twinfleet.runtime.events import Event
from twinfleet.runtime.messages import DeviceMessage, Rejection
from twinfleet.twins import (
    MAX_PAYLOAD_BYTES,
    PayloadTooLarge,
    TwinfleetError,
    validate_device_id,
)

from .payloads import (
    ContentFormat,
    content_format,
    decode_command_response,
    decode_reported,
    decode_telemetry,
)

__all__ = [
    "COAP_CODES",
    "DEFAULT_PORT",
    "PROTOCOL",
    "CoapEndpoint",
    "MethodNotAllowed",
    "NotAcceptable",
    "UnknownResource",
    "coap_code",
]

log = logging.getLogger(__name__)

PROTOCOL: Final = "coap"
DEFAULT_PORT: Final = 5683
_EVENT_TYPES: Final = frozenset(("desired", "command"))
_DIAGNOSTIC_CHARS: Final = 200  # a diagnostic payload is for a human; keep the datagram small


COAP_CODES: Final[dict[str, Code]] = {
    "malformed_payload": Code.BAD_REQUEST,
    "invalid_patch": Code.BAD_REQUEST,
    "invalid_timestamp": Code.BAD_REQUEST,
    "nesting_too_deep": Code.BAD_REQUEST,
    "document_too_large": Code.BAD_REQUEST,  # the body fits; the twin it would make does not
    "invalid_device_id": Code.NOT_FOUND,
    "unknown_resource": Code.NOT_FOUND,
    "twin_not_found": Code.NOT_FOUND,
    "command_not_found": Code.NOT_FOUND,
    "method_not_allowed": Code.METHOD_NOT_ALLOWED,
    "not_acceptable": Code.NOT_ACCEPTABLE,
    "version_conflict": Code.PRECONDITION_FAILED,
    "payload_too_large": Code.REQUEST_ENTITY_TOO_LARGE,
    "unsupported_format": Code.UNSUPPORTED_CONTENT_FORMAT,
    "store_unavailable": Code.SERVICE_UNAVAILABLE,
}
"""CoAP answer of each twinfleet error code (the one place they are mapped)."""


def coap_code(code: str) -> Code:
    """The CoAP answer to a refusal with twinfleet error ``code`` (4.00 for any other code)."""
    return COAP_CODES.get(code, Code.BAD_REQUEST)


class _Route(NamedTuple):
    """What a request path names: the resource, the device and, for a response, the command."""

    resource: str  # telemetry | reported | desired | commands | command_response
    device_id: str
    command_id: str | None = None


_METHODS: Final[dict[str, Code]] = {
    "telemetry": Code.POST,
    "reported": Code.POST,
    "desired": Code.GET,
    "commands": Code.GET,
    "command_response": Code.POST,
}
_OBSERVABLE: Final = frozenset(("desired", "commands"))


def _route(path: Sequence[str]) -> _Route | None:
    """The resource ``path`` names, or None; the device id is not checked here."""
    if len(path) == 3 and path[0] == "devices" and path[2] in _METHODS:
        return _Route(path[2], path[1])
    if len(path) == 4 and path[0] == "devices" and path[2] == "commands" and path[3]:
        return _Route("command_response", path[1], path[3])
    return None


def _device_of(path: Sequence[str]) -> str:
    """The device id segment of a ``/devices/{id}/...`` path ("" if there is none)."""
    return path[1] if len(path) >= 2 and path[0] == "devices" else ""


class _Pending(NamedTuple):
    device_id: str
    messages: list[DeviceMessage]
    answer: asyncio.Future[Rejection | None]


class _Batcher:
    """Hands the device messages of concurrent requests to ``fleet.ingest`` in batches."""

    def __init__(
        self,
        ingest: Callable[[list[DeviceMessage]], Awaitable[tuple[int, Sequence[Rejection]]]],
        *,
        window_s: float,
        max_messages: int,
        stats: collections.Counter[str],
    ) -> None:
        self._ingest = ingest
        self._window_s = window_s
        self._max_messages = max_messages
        self._stats = stats
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_messages = 0
        self._wake = asyncio.Event()

    async def submit(self, device_id: str, messages: list[DeviceMessage]) -> Rejection | None:
        """Queue one request's messages; returns once the fleet took them (its rejection, if
        the fleet refused one of them)."""
        answer: asyncio.Future[Rejection | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(device_id, messages, answer))
        self._queued_messages += len(messages)
        self._wake.set()
        return await answer

    async def run(self) -> None:
        """Hand batches over until cancelled (then fail whatever is still queued)."""
        try:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                if self._window_s > 0 and self._queued_messages < self._max_messages:
                    await asyncio.sleep(self._window_s)  # let concurrent requests join
                while self._queue:
                    await self._hand_over(self._take())
        finally:
            while self._queue:
                pending = self._queue.popleft()
                if not pending.answer.done():
                    pending.answer.set_exception(ConnectionAbortedError("the endpoint closed"))

    def _take(self) -> list[_Pending]:
        """The next batch, up to ``max_messages``: the oldest request of each device.

        A device's later requests wait for the next batch (so its messages keep their order
        and a rejection by device id names one request); other devices' requests behind them
        still join this one.
        """
        batch: list[_Pending] = []
        devices: set[str] = set()
        size = 0
        queue = self._queue
        left: collections.deque[_Pending] = collections.deque()
        while queue:
            pending = queue.popleft()
            if batch and (
                size + len(pending.messages) > self._max_messages
                or len(left) >= self._max_messages  # keeps a one-device flood linear
            ):
                queue.appendleft(pending)
                break
            if pending.device_id in devices:
                left.append(pending)
                continue
            batch.append(pending)
            devices.add(pending.device_id)
            size += len(pending.messages)
        left.extend(queue)
        self._queue = left
        self._queued_messages -= size
        return batch

    async def _hand_over(self, batch: list[_Pending]) -> None:
        messages = [message for pending in batch for message in pending.messages]
        try:
            _accepted, rejected = await self._ingest(messages)
        except BaseException as err:
            failure = err if isinstance(err, Exception) else ConnectionAbortedError("closed")
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(failure)
            if not isinstance(err, Exception):
                raise
            return
        self._stats["batches"] += 1
        self._stats["messages"] += len(messages)
        refused: dict[str, Rejection] = {}
        for rejection in rejected:
            refused.setdefault(rejection.device_id, rejection)
        for pending in batch:
            if not pending.answer.done():  # a request whose answer is no longer awaited
                pending.answer.set_result(refused.get(pending.device_id))


@dataclass(eq=False, slots=True)
class _Watch:
    """One observation: aiocoap's handle and the newest desired version rendered for it."""

    observation: Any
    version: int = -1


class _DeviceResources(aiocoap.resource.ObservableResource):  # type: ignore[misc]
    """The ``/devices/...`` tree as one aiocoap resource (the server site itself)."""

    def __init__(self, endpoint: CoapEndpoint) -> None:
        super().__init__()
        self._endpoint = endpoint
        self.observers: dict[tuple[str, str], set[_Watch]] = {}  # by (resource, device id)
        self._watches: dict[int, _Watch] = {}  # by id() of the observation's request

    # -- aiocoap hooks -------------------------------------------------------------------------

    async def render_to_pipe(self, pipe: Any) -> None:
        """Refuse an oversized block-wise body at its first telling block, else serve it."""
        request = pipe.request
        block1 = request.opt.block1
        if block1 is None or not block1.more:
            self._endpoint.stats["requests"] += 1
        if block1 is not None:
            size = max(request.opt.size1 or 0, block1.start + len(request.payload))
            if size > MAX_PAYLOAD_BYTES:
                if block1.more:  # counted only once the transfer ends, here it ends early
                    self._endpoint.stats["requests"] += 1
                err = PayloadTooLarge(
                    f"the body is {'at least ' if block1.more else ''}{size} bytes, "
                    f"over the limit of {MAX_PAYLOAD_BYTES}",
                    field="payload",
                )
                answer = await self._refuse(_device_of(request.opt.uri_path), err)
                pipe.add_response(answer, is_last=True)
                return
        await super().render_to_pipe(pipe)

    async def add_observation(self, request: Any, observation: Any) -> None:
        """Register observers of ``desired`` and ``commands``; end any other at once."""
        route = _route(request.opt.uri_path)
        if route is None or route.resource not in _OBSERVABLE or request.code != Code.GET:
            # aiocoap needs every observation accepted; deregistering now answers just once.
            observation.accept(lambda: None)
            observation.deregister()
            return
        key = (route.resource, route.device_id)
        watch = _Watch(observation)
        self.observers.setdefault(key, set()).add(watch)
        self._watches[id(request)] = watch  # aiocoap renders every notification from it

        def cancelled() -> None:
            self._watches.pop(id(request), None)
            watchers = self.observers.get(key)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self.observers[key]

        observation.accept(cancelled)

    def notify(self, resource: str, device_id: str, *, version: int | None = None) -> int:
        """Have the observers of one resource re-rendered (their notification); how many.

        With a desired ``version``, observers that were already sent it (or a newer one, say
        when they registered after the change but before its event) are left alone.
        """
        notified = 0
        for watch in list(self.observers.get((resource, device_id), ())):
            if version is None or version > watch.version:
                watch.observation.trigger()  # lossy: two quick changes make one notification
                notified += 1
        return notified

    async def render(self, request: Any) -> Any:
        """Answer one request (or render one notification)."""
        path = request.opt.uri_path
        try:
            route = _route(path)
            if route is None:
                raise UnknownResource(f"there is no resource /{'/'.join(path)}", field="path")
            if request.code != _METHODS[route.resource]:
                raise MethodNotAllowed(
                    f"/{'/'.join(path)} takes {_METHODS[route.resource]}, not {request.code}",
                    field="method",
                )
            validate_device_id(route.device_id)
            if request.code != Code.GET:
                return await self._write(request, route)
            answer, version = await self._read(request, route)
            if request.opt.observe == 0:
                watch = self._watches.get(id(request))
                if watch is not None and version is not None:
                    watch.version = max(watch.version, version)

                # Observation answers and notifications bypass aiocoap's Block2 handling (and
                # its receivers read 4 KB datagrams): send the first block, and keep the whole
                # representation where the client's follow-up block requests find it.
                async def whole() -> Any:
                    return answer

                answer = await self._block2.extract_or_insert(request, whole)
            return answer
        except TwinfleetError as err:
            if coap_code(err.code) == Code.SERVICE_UNAVAILABLE:
                return self._unavailable(err)
            return await self._refuse(_device_of(path), err)
        except Exception as err:
            return self._unavailable(err)

    # -- the resources -------------------------------------------------------------------------

    async def _read(self, request: Any, route: _Route) -> tuple[Any, int | None]:
        """The answer to a GET, and the desired version it carries (None for commands)."""
        accept = request.opt.accept
        if accept is not None and int(accept) not in (ContentFormat.JSON, ContentFormat.CBOR):
            raise NotAcceptable(
                f"answers come as JSON (50) or CBOR (60), not content format {int(accept)}",
                field="accept",
            )
        fleet = self._endpoint.fleet
        document: Any
        version: int | None = None
        if route.resource == "desired":
            desired = await fleet.desired(route.device_id)
            document = {k: desired.get(k) for k in ("version", "desired", "delta")}
            version = int(desired["version"])
        else:
            claimed = await fleet.claim_commands(route.device_id, protocol=PROTOCOL)
            document = [
                {k: command.get(k) for k in ("id", "name", "params", "expires_at")}
                for command in claimed
            ]
            self._endpoint.stats["commands_delivered"] += len(document)
        if accept is not None and int(accept) == ContentFormat.CBOR:
            payload, fmt = cbor2.dumps(document), ContentFormat.CBOR
        else:
            payload, fmt = orjson.dumps(document), ContentFormat.JSON
        answer = aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=int(fmt))
        # An ETag lets a client tell that the blocks of a big answer belong together, and
        # answers 2.03 Valid to a GET that already holds this representation.
        aiocoap.resource.hashing_etag(request, answer)
        return answer, version

    async def _write(self, request: Any, route: _Route) -> Any:
        number = request.opt.content_format
        fmt = ContentFormat.JSON if number is None else content_format(int(number))
        body = bytes(request.payload)
        endpoint = self._endpoint
        if route.command_id is not None:  # the device's answer to a command
            response = decode_command_response(body, fmt=fmt)
            await endpoint.fleet.command_response(route.device_id, route.command_id, response)
            endpoint.stats["responses"] += 1
            return aiocoap.Message(code=Code.CHANGED)
        received = time.time()
        if route.resource == "telemetry":
            messages = decode_telemetry(
                body, route.device_id, fmt=fmt, protocol=PROTOCOL, received=received
            )
        else:
            messages = [
                decode_reported(
                    body, route.device_id, fmt=fmt, protocol=PROTOCOL, received=received
                )
            ]
        rejection = await endpoint.batcher.submit(route.device_id, messages)
        if rejection is not None:
            return await self._refuse_code(rejection.device_id, rejection.code, rejection.message)
        endpoint.stats["accepted"] += 1
        return aiocoap.Message(code=Code.CHANGED)

    # -- refusals ------------------------------------------------------------------------------

    async def _refuse(self, device_id: str, err: TwinfleetError) -> Any:
        return await self._refuse_code(device_id, err.code, err.message)

    async def _refuse_code(self, device_id: str, code: str, message: str) -> Any:
        """Record a refused request with the fleet and build its answer."""
        stats = self._endpoint.stats
        stats["rejected"] += 1
        stats[f"rejected:{code}"] += 1
        log.debug("CoAP endpoint: refused a request of %r: %s (%s)", device_id, message, code)
        try:
            await self._endpoint.fleet.reject(device_id, code, message, protocol=PROTOCOL)
        except Exception:
            stats["errors"] += 1
            log.exception("CoAP endpoint: recording a rejection failed")
        text = f"{code}: {message}"
        if len(text) > _DIAGNOSTIC_CHARS:
            text = text[: _DIAGNOSTIC_CHARS - 3] + "..."
        answer = aiocoap.Message(code=coap_code(code), payload=text.encode())
        if code == PayloadTooLarge.code:
            answer.opt.size1 = MAX_PAYLOAD_BYTES  # RFC 7959 2.9.3: the largest body we take
        return answer

    def _unavailable(self, err: Exception) -> Any:
        """5.03 for a fleet that failed us: the device should retry, so no rejection."""
        self._endpoint.stats["errors"] += 1
        log.warning("CoAP endpoint: the fleet failed a request: %r", err, exc_info=err)
        # The cause stays in the log: a device only needs to know to retry.
        text = b"unavailable: the fleet could not take this request now; retry later"
        return aiocoap.Message(code=Code.SERVICE_UNAVAILABLE, payload=text)


class CoapEndpoint:
    """The CoAP side of a fleet: a UDP server on ``host:port`` and the events it notifies.

    Use as an async context manager: entering binds the socket (``port=0`` picks a free one,
    read back from :attr:`port`) and starts the ingest and event tasks; leaving closes them.
    ``stats`` counts ``requests``, ``accepted`` (device messages answered 2.04), ``batches``
    and ``messages`` (handed to ``fleet.ingest``), ``rejected`` (and ``rejected:<code>``),
    ``responses`` (command answers), ``commands_delivered``, ``notifications`` and ``errors``.
    """

    def __init__(
        self,
        fleet: EdgePlatform,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        batch_window_s: float = 0.002,
        max_batch: int = 1000,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError("port must lie between 0 and 65535")
        if batch_window_s < 0 or max_batch < 1:
            raise ValueError("batch_window_s must be >= 0 and max_batch >= 1")
        self.fleet = fleet
        self.host = host
        self.port = port
        self.stats: collections.Counter[str] = collections.Counter(
            dict.fromkeys(
                (
                    "requests",
                    "accepted",
                    "batches",
                    "messages",
                    "rejected",
                    "responses",
                    "commands_delivered",
                    "notifications",
                    "errors",
                ),
                0,
            )
        )
        self.batcher = _Batcher(
            self._ingest, window_s=batch_window_s, max_messages=max_batch, stats=self.stats
        )
        self._resources = _DeviceResources(self)
        self._context: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._event_cursor: int | None = None

    @property
    def observers(self) -> int:
        """How many observations of ``desired`` and ``commands`` are live now."""
        return sum(len(watchers) for watchers in self._resources.observers.values())

    async def __aenter__(self) -> CoapEndpoint:
        self._event_cursor = await self._last_event_id()
        self._tasks = [
            asyncio.create_task(self.batcher.run(), name="coap-ingest"),
            asyncio.create_task(self._events_loop(), name="coap-events"),
        ]
        try:
            # Plain CoAP over UDP only: aiocoap's default list would also open TCP and
            # WebSocket servers on the same port number.
            self._context = await aiocoap.Context.create_server_context(
                self._resources, bind=(self.host, self.port), transports=["udp6"]
            )
            self.port = _bound_port(self._context)
            widen_receive_buffers(self._context)
        except BaseException:
            await self._stop_tasks()
            if self._context is not None:
                await self._context.shutdown()
                self._context = None
            raise
        log.info("CoAP endpoint listening on udp %s:%d", self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        context, self._context = self._context, None
        try:
            if context is not None:
                await context.shutdown()
        finally:
            await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _ingest(self, messages: list[DeviceMessage]) -> tuple[int, Sequence[Rejection]]:
        result = await self.fleet.ingest(messages)
        # Answer 2.04 only once the twins applied them: an endpoint process that dies then
        # has acknowledged nothing it had not handed over.
        await self.fleet.settled()
        return result.accepted, result.rejected

    # -- events: notifications to observers ----------------------------------------------------

    async def _last_event_id(self) -> int | None:
        """Where the event stream starts: now, if the fleet can tell (else at its first poll)."""
        last_event_id = getattr(self.fleet, "last_event_id", None)
        if last_event_id is None:
            return None
        try:
            return int(await last_event_id())
        except Exception:
            log.exception("CoAP endpoint: asking the fleet for its last event failed")
            return None

    async def _events_loop(self) -> None:
        """Follow ``desired`` and ``command`` events for ever, resuming where it stopped."""
        while True:
            try:
                stream = self.fleet.events(types=_EVENT_TYPES, after=self._event_cursor)
                async for event in stream:
                    self._on_event(event)
                    self._event_cursor = event.id
            except Exception:
                self.stats["errors"] += 1
                log.exception("CoAP endpoint: following the fleet's events failed; retrying")
            await asyncio.sleep(1.0)

    def _on_event(self, event: Event) -> None:
        if event.type == "desired":
            version = event.data.get("version")
            notified = self._resources.notify(
                "desired", event.twin_id, version=version if isinstance(version, int) else None
            )
        elif event.type == "command" and event.data.get("status") == "queued":
            # The notification's rendering claims the command: only observers get one.
            notified = self._resources.notify("commands", event.twin_id)
        else:
            return
        self.stats["notifications"] += notified


def udp_sockets(context: Any) -> list[Any]:
    """The UDP sockets of an aiocoap context.

    aiocoap has no public way to reach them (chrysn/aiocoap#274); the transport sits behind its
    token and message managers.
    """
    sockets = []
    for interface in getattr(context, "request_interfaces", ()):
        manager = getattr(interface, "token_interface", None)
        transport = getattr(getattr(manager, "message_interface", None), "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            sockets.append(sock)
    return sockets


#: Receive buffer asked for on CoAP sockets (the kernel caps it at net.core.rmem_max). With
#: the default ~208 KB, a burst of readings while the process was busy overflowed it: 8,625
#: datagrams dropped in 90 s at 10,000 devices, and CoAP devices seen offline.
UDP_RECEIVE_BUFFER: Final = 4 * 1024 * 1024


def widen_receive_buffers(context: Any) -> None:
    """Ask for :data:`UDP_RECEIVE_BUFFER` on every UDP socket of an aiocoap context."""
    for sock in udp_sockets(context):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)


def _bound_port(context: Any) -> int:
    """The UDP port the server context's socket is bound to."""
    for sock in udp_sockets(context):
        return int(sock.getsockname()[1])
    raise RuntimeError("cannot find the UDP socket of the aiocoap server context")
