"""The typed client (sync and async) against the API over real HTTP, and its decoding alone."""

from __future__ import annotations

import threading
from contextlib import aclosing

import httpx
import orjson
import pytest
from helpers import T0, Served

from twinfleet.client import (
    ApiError,
    AsyncTwinClient,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    StreamEvent,
    TwinClient,
    Unauthorized,
)
from twinfleet.runtime import DeviceMessage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def client_of(served: Served, role: str = "admin") -> TwinClient:
    return TwinClient(served.url, served.tokens[role])


def create(served: Served, twin_id: str, **reported: float) -> None:
    served.runtime.ingest(
        [DeviceMessage(twin_id, "telemetry", reported, T0, "test", "smart-sensor")]
    )
    served.runtime.flush()


def test_health_and_twins(served: Served) -> None:
    with client_of(served, "viewer") as fleet:
        assert fleet.health() == {"status": "ok"}
        doc = fleet.twin("api-2")
        assert doc["reported"] == {"temperature": 22.0}
        versioned = fleet.twin_versioned("api-2")
        assert versioned.version == versioned.doc["version"] == doc["version"]
        page = fleet.twins(filter="reported.temperature >= 23 and reported.temperature < 25")
        assert [d["id"] for d in page.items] == ["api-3", "api-4"]
        assert page.next is None


def test_iter_twins_follows_cursors(served: Served) -> None:
    with client_of(served, "viewer") as fleet:
        # the module's own twins (cl-...) are colder or of another type
        query = {"type": "smart-sensor", "filter": "reported.temperature >= 20"}
        first = fleet.twins(**query, limit=2)
        assert [d["id"] for d in first.items] == ["api-0", "api-1"]
        assert first.next is not None
        ids = [d["id"] for d in fleet.iter_twins(**query, limit=2)]
        assert ids == [f"api-{i}" for i in range(5)]


def test_patches_with_expected_version(served: Served) -> None:
    create(served, "cl-patch", temperature=1.0)
    with client_of(served, "developer") as fleet:
        version = fleet.twin_versioned("cl-patch").version
        doc = fleet.patch_desired("cl-patch", {"interval": 5}, expected_version=version)
        assert doc["desired"] == {"interval": 5}
        assert doc["version"] == version + 1
        with pytest.raises(PreconditionFailed) as stale:
            fleet.patch_desired("cl-patch", {"interval": 9}, expected_version=version)
        assert stale.value.status == 412
        assert stale.value.code == "version_conflict"
        tagged = fleet.patch_tags("cl-patch", {"site": "cl-north"})
        assert tagged["tags"]["site"] == "cl-north"
        assert [d["id"] for d in fleet.twins(tags={"site": "cl-north"}).items] == ["cl-patch"]
        assert fleet.twin("cl-patch")["desired"] == {"interval": 5}


def test_commands(served: Served) -> None:
    with client_of(served, "operator") as fleet:
        queued = fleet.send_command("api-1", "reboot", {"delay": 1}, timeout_s=0)
        assert not queued.answered
        assert queued.status == "queued"
        assert queued.record["name"] == "reboot"
        later = fleet.command("api-1", queued.id)
        assert (later.id, later.status) == (queued.id, "queued")
        with pytest.raises(NotFound):
            fleet.command("api-1", "nope")
        with pytest.raises(InvalidRequest) as invalid:
            fleet.send_command("api-1", "")
        assert invalid.value.status == 422


def test_telemetry(served: Served) -> None:
    served.runtime.ingest(
        DeviceMessage("cl-h", "telemetry", {"temperature": 20.0 + k}, T0 + k, "test", "x")
        for k in range(5)
    )
    served.runtime.persist()  # history is written with the snapshots
    with client_of(served, "viewer") as fleet:
        points = fleet.telemetry("cl-h", metric="temperature", since=T0 + 1, until=T0 + 3)
        assert points == [
            {"metric": "temperature", "ts": T0 + 1, "value": 21.0},
            {"metric": "temperature", "ts": T0 + 2, "value": 22.0},
        ]
        assert len(fleet.telemetry("cl-h", since="2027-01-15T08:00:00Z")) == 5
        with pytest.raises(InvalidRequest) as bad:
            fleet.telemetry("cl-h", since="yesterday")
        assert bad.value.code == "invalid_timestamp"


def test_tokens(served: Served) -> None:
    with client_of(served, "admin") as fleet:
        created = fleet.create_token("viewer", name="cl")
        assert created["token"].startswith("tf_")
        assert created["id"] in [t["id"] for t in fleet.tokens()]
        with TwinClient(served.url, created["token"]) as fresh:
            assert fresh.twin("api-1")["id"] == "api-1"
        fleet.revoke_token(created["id"])
        with pytest.raises(NotFound):
            fleet.revoke_token(created["id"])
        with pytest.raises(InvalidRequest):
            fleet.create_token("emperor")


def test_errors_are_typed(served: Served) -> None:
    with TwinClient(served.url, "tf_nope_nope") as stranger, pytest.raises(Unauthorized) as who:
        stranger.twin("api-1")
    assert (who.value.status, who.value.code) == (401, "unauthorized")
    with client_of(served, "viewer") as viewer:
        with pytest.raises(Forbidden) as denied:
            viewer.patch_desired("api-1", {"x": 1})
        assert denied.value.code == "forbidden"
        with pytest.raises(NotFound) as missing:
            viewer.twin("nobody")
        assert missing.value.code == "twin_not_found"
        with pytest.raises(InvalidRequest) as bad:
            viewer.twins(filter="reported.temperature >> 3")
        assert bad.value.status == 400
        assert bad.value.code == "invalid_filter"
        assert "offset" in bad.value.message
        with pytest.raises(InvalidRequest):
            viewer.twins(limit=0)
        assert isinstance(bad.value, ApiError)


def test_events_after_a_patch_and_resume(served: Served) -> None:
    create(served, "cl-ev", temperature=1.0)
    with client_of(served, "viewer") as fleet, client_of(served, "developer") as writer:
        events = fleet.events(types=["desired"], twin="cl-ev")
        # the stream starts when first asked for an event: patch once it is open
        timer = threading.Timer(1.0, writer.patch_desired, ("cl-ev", {"mode": "eco"}))
        timer.start()
        try:
            first = next(events)
        finally:
            events.close()
            timer.join()
        assert first.type == "desired"
        assert first.twin_id == "cl-ev"
        assert first.data["desired"] == {"mode": "eco"}
        # resume from just before it: the same event comes again
        for again in fleet.events(types=["desired"], last_event_id=first.id - 1):
            assert again == first
            break


async def test_async_client(served: Served) -> None:
    create(served, "cl-async", temperature=1.0)
    async with AsyncTwinClient(served.url, served.tokens["developer"]) as fleet:
        assert await fleet.health() == {"status": "ok"}
        versioned = await fleet.twin_versioned("cl-async")
        doc = await fleet.patch_desired(
            "cl-async", {"mode": "eco"}, expected_version=versioned.version
        )
        assert doc["desired"] == {"mode": "eco"}
        assert (await fleet.twin("cl-async"))["version"] == doc["version"]
        with pytest.raises(PreconditionFailed):
            await fleet.patch_desired("cl-async", {}, expected_version=versioned.version)
        await fleet.patch_tags("cl-async", {"site": "cl-async"})
        page = await fleet.twins(tags={"site": "cl-async"})
        assert [d["id"] for d in page.items] == ["cl-async"]
        ids = [d["id"] async for d in fleet.iter_twins(filter="reported.temperature < 25", limit=2)]
        assert ids[:5] == [f"api-{i}" for i in range(5)]
        queued = await fleet.send_command("cl-async", "ping", timeout_s=0)
        assert not queued.answered
        assert (await fleet.command("cl-async", queued.id)).status == "queued"
        with pytest.raises(NotFound):
            await fleet.twin("nobody")
        async with aclosing(
            fleet.events(types=["desired"], twin="cl-async", last_event_id=0)
        ) as events:
            async for event in events:
                assert event.data["desired"] == {"mode": "eco"}
                break
    async with AsyncTwinClient(served.url, served.tokens["admin"]) as admin:
        created = await admin.create_token("viewer")
        assert created["id"] in [t["id"] for t in await admin.tokens()]
        await admin.revoke_token(created["id"])
        history = await admin.telemetry("cl-async")
        assert isinstance(history, list)


# -- decoding without a server -----------------------------------------------------------------


def test_decoding_with_a_mock_transport() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(
                503, text="upstream is down", headers={"Content-Type": "text/plain"}
            )
        assert request.headers["Authorization"] == "Bearer tf_x_y"
        assert request.headers["Content-Type"] == "application/merge-patch+json"
        assert request.headers["If-Match"] == '"7"'
        assert orjson.loads(request.content) == {"a": None}
        return httpx.Response(
            412, json={"error": {"code": "version_conflict", "message": "at 8", "field": None}}
        )

    with TwinClient("http://twins", "tf_x_y", transport=httpx.MockTransport(answer)) as fleet:
        with pytest.raises(ServiceUnavailable) as down:
            fleet.health()
        assert (down.value.status, down.value.code) == (503, "service_unavailable")
        assert down.value.message == "upstream is down"
        with pytest.raises(PreconditionFailed) as stale:
            fleet.patch_desired("pump-7", {"a": None}, expected_version=7)
        assert str(stale.value) == "412 version_conflict: at 8"


async def test_async_decoding_with_a_mock_transport() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        assert body["timeout_s"] == 5
        return httpx.Response(200, json={"id": "c1", "status": "succeeded", "result": {"ok": 1}})

    transport = httpx.MockTransport(answer)
    async with AsyncTwinClient("http://twins", "t", transport=transport) as fleet:
        done = await fleet.send_command("pump-7", "ping", timeout_s=5)
    assert (done.id, done.status, done.result, done.error, done.answered) == (
        "c1",
        "succeeded",
        {"ok": 1},
        None,
        True,
    )


def sse(event_id: int) -> bytes:
    data = {"id": event_id, "type": "desired", "twin_id": "p", "ts": T0, "data": {"n": event_id}}
    return b"id: %d\nevent: desired\ndata: %s\n\n" % (event_id, orjson.dumps(data))


def test_events_reconnect_with_last_event_id() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Last-Event-ID"))
        if len(seen) == 1:  # one event, a keep-alive, then the connection ends
            return httpx.Response(
                200, content=b": twinfleet events\n\n" + sse(1) + b": keep-alive\n\n"
            )
        if len(seen) == 2:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=sse(2))

    with TwinClient("http://twins", "t", transport=httpx.MockTransport(answer)) as fleet:
        got: list[StreamEvent] = []
        for event in fleet.events(backoff_s=0):
            got.append(event)
            if len(got) == 2:
                break
        assert [e.data for e in got] == [{"n": 1}, {"n": 2}]
        assert seen == [None, "1", "1"]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    down = TwinClient("http://twins", "t", transport=httpx.MockTransport(refuse))
    with down, pytest.raises(httpx.ConnectError):
        next(down.events(retries=2, backoff_s=0))
