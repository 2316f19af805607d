"""The HTTP API over real HTTP (uvicorn on a free port) against a real Ray runtime."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import pytest
from helpers import T0, Served

from twinfleet.runtime import DeviceMessage, RayPlatform

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    return dict(body["error"])


def test_health_needs_no_token(served: Served) -> None:
    assert served.client(None).get("/healthz").json() == {"status": "ok"}


def test_a_missing_or_bad_token_is_401(served: Served) -> None:
    response = served.client(None).get("/api/v1/twins/api-1")
    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthorized"
    bad = httpx.get(
        f"{served.url}/api/v1/twins/api-1", headers={"Authorization": "Bearer tf_nope_nope"}
    )
    assert bad.status_code == 401


def test_get_twin_with_etag(served: Served) -> None:
    response = served.client("viewer").get("/api/v1/twins/api-2")
    assert response.status_code == 200
    doc = response.json()
    assert doc["reported"] == {"temperature": 22.0}
    assert response.headers["etag"] == f'"{doc["version"]}"'
    missing = served.client("viewer").get("/api/v1/twins/nobody")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "twin_not_found"


def test_patch_desired_with_if_match(served: Served) -> None:
    client = served.client("developer")
    version = client.get("/api/v1/twins/api-3").json()["version"]
    headers = {"Content-Type": "application/merge-patch+json", "If-Match": f'"{version}"'}
    ok = client.patch("/api/v1/twins/api-3/desired", content=b'{"interval": 5}', headers=headers)
    assert ok.status_code == 200
    assert ok.json()["desired"] == {"interval": 5}
    assert ok.headers["etag"] == f'"{version + 1}"'
    stale = client.patch("/api/v1/twins/api-3/desired", content=b'{"interval": 9}', headers=headers)
    assert stale.status_code == 412
    assert error_of(stale)["code"] == "version_conflict"
    assert client.get("/api/v1/twins/api-3").json()["desired"] == {"interval": 5}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{nope", "application/merge-patch+json", 400, "invalid_patch"),
        (b"[1, 2]", "application/json", 400, "invalid_patch"),
        (b'{"a": 1}', "text/plain", 415, "unsupported_media_type"),
        (b'{"a": "' + b"x" * 300_000 + b'"}', "application/json", 413, "payload_too_large"),
    ],
)
def test_bad_patches(
    served: Served, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = served.client().patch(
        "/api/v1/twins/api-4/desired", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == status
    assert error_of(response)["code"] == code


def test_roles_are_enforced(served: Served) -> None:
    viewer = served.client("viewer")
    denied = viewer.patch(
        "/api/v1/twins/api-1/desired", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert denied.status_code == 403
    assert error_of(denied)["code"] == "forbidden"
    assert viewer.post("/api/v1/twins/api-1/commands", json={"name": "ping"}).status_code == 403
    assert (
        served.client("operator").post("/api/v1/tokens", json={"role": "viewer"}).status_code == 403
    )


def test_tokens_are_managed_by_admins(served: Served) -> None:
    admin = served.client("admin")
    created = admin.post("/api/v1/tokens", json={"role": "viewer", "name": "ci"})
    assert created.status_code == 201
    body = created.json()
    assert body["role"] == "viewer"
    assert body["token"].startswith("tf_")
    listed = admin.get("/api/v1/tokens").json()["items"]
    assert body["id"] in [t["id"] for t in listed]
    assert all("sha256" not in t and "token" not in t for t in listed)
    fresh = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {body['token']}"})
    assert fresh.get("/api/v1/twins/api-1").status_code == 200
    assert admin.delete(f"/api/v1/tokens/{body['id']}").status_code == 204
    assert admin.delete(f"/api/v1/tokens/{body['id']}").status_code == 404
    bad_role = admin.post("/api/v1/tokens", json={"role": "emperor"})
    assert bad_role.status_code == 400


def test_list_twins_with_cursor(served: Served) -> None:
    client = served.client("viewer")
    first = client.get("/api/v1/twins", params={"type": "smart-sensor", "limit": 3}).json()
    assert [d["id"] for d in first["items"]] == ["api-0", "api-1", "api-2"]
    second = client.get(
        "/api/v1/twins", params={"type": "smart-sensor", "limit": 3, "cursor": first["next"]}
    ).json()
    assert [d["id"] for d in second["items"]] == ["api-3", "api-4"]
    assert second["next"] is None
    assert client.get("/api/v1/twins", params={"limit": 0}).status_code == 422


def test_commands_answered_or_accepted(served: Served) -> None:
    fleet = RayPlatform(served.runtime)

    async def device() -> None:
        async for event in fleet.events(types={"command"}):
            if event.twin_id == "api-0" and event.data["status"] == "queued":
                [claimed] = await fleet.claim_commands("api-0", protocol="test")
                await fleet.command_response(
                    "api-0", claimed["id"], {"status": "ok", "result": {"pong": 1}}
                )
                return

    answering = threading.Thread(target=asyncio.run, args=(device(),))
    answering.start()
    time.sleep(0.5)
    client = served.client("operator")
    answered = client.post("/api/v1/twins/api-0/commands", json={"name": "ping", "timeout_s": 20})
    answering.join(20)
    assert answered.status_code == 200
    assert answered.json()["status"] == "succeeded"
    assert answered.json()["result"] == {"pong": 1}
    later = client.post("/api/v1/twins/api-1/commands", json={"name": "reboot", "timeout_s": 0})
    assert later.status_code == 202
    assert later.json()["status"] == "queued"
    status = client.get(f"/api/v1/twins/api-1/commands/{later.json()['id']}")
    assert status.json()["status"] == "queued"
    assert client.get("/api/v1/twins/api-1/commands/nope").status_code == 404
    assert client.post("/api/v1/twins/api-1/commands", json={"name": ""}).status_code == 422
    # Found by Schemathesis: an integer JSON allows but 64 bits do not (was a 500).
    huge = client.post("/api/v1/twins/api-1/commands", json={"name": "set", "params": {"n": 2**70}})
    assert huge.status_code == 400
    assert "Integer exceeds 64-bit range" in huge.json()["error"]["message"]


def test_events_stream_and_resume(served: Served) -> None:
    client = served.client("viewer")
    writer = served.client("developer")
    seen: list[dict[str, Any]] = []
    with client.stream(
        "GET", "/api/v1/events", params={"type": "desired", "twin": "api-4"}
    ) as stream:
        writer.patch(
            "/api/v1/twins/api-4/desired",
            content=b'{"mode": "eco"}',
            headers={"Content-Type": "application/json"},
        )
        event_id = None
        for line in stream.iter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                break
    assert seen[0]["type"] == "desired"
    assert seen[0]["data"]["desired"]["mode"] == "eco"
    # resume from just before it: the same event comes again
    assert event_id is not None
    with client.stream(
        "GET",
        "/api/v1/events",
        headers={"Last-Event-ID": str(event_id - 1)},
        params={"type": "desired"},
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("id: "):
                assert int(line[4:]) == event_id
                break


def test_openapi_document(served: Served) -> None:
    spec = httpx.get(f"{served.url}/openapi.json").json()
    assert spec["info"]["title"] == "twinfleet"
    assert "/api/v1/twins/{twin_id}/desired" in spec["paths"]


def test_telemetry_history(served: Served) -> None:
    served.runtime.ingest(
        DeviceMessage(
            "api-h",
            "telemetry",
            {"temperature": 20.0 + k, "humidity": 40.0},
            T0 + k,
            "test",
            "smart-sensor",
        )
        for k in range(10)
    )
    served.runtime.ingest([DeviceMessage("api-h", "telemetry", {"temperature": 99.0}, T0 + 2)])
    served.runtime.persist()  # history is written with the snapshots
    client = served.client("viewer")
    response = client.get(
        "/api/v1/twins/api-h/telemetry",
        params={"metric": "temperature", "since": T0 + 2, "until": T0 + 5},
    )
    assert response.status_code == 200
    assert response.json()["items"] == [
        {"metric": "temperature", "ts": T0 + 2, "value": 99.0},  # the late reading overwrote
        {"metric": "temperature", "ts": T0 + 3, "value": 23.0},
        {"metric": "temperature", "ts": T0 + 4, "value": 24.0},
    ]
    everything = client.get("/api/v1/twins/api-h/telemetry").json()["items"]
    assert len(everything) == 20
    rfc = client.get(
        "/api/v1/twins/api-h/telemetry",
        params={"since": "2027-01-15T08:00:05Z", "metric": "humidity"},
    )
    assert [p["ts"] for p in rfc.json()["items"]] == [T0 + k for k in range(5, 10)]
    bad = client.get("/api/v1/twins/api-h/telemetry", params={"since": "yesterday"})
    assert bad.status_code == 400
    assert error_of(bad)["code"] == "invalid_timestamp"


def test_list_twins_with_a_filter_expression(served: Served) -> None:
    client = served.client("viewer")
    hot = client.get(
        "/api/v1/twins",
        params={"filter": "reported.temperature >= 23 and reported.temperature < 25 and online"},
    ).json()
    assert [d["id"] for d in hot["items"]] == ["api-3", "api-4"]
    combined = client.get(
        "/api/v1/twins", params={"filter": "reported.temperature < 21.5", "type": "smart-sensor"}
    ).json()
    assert [d["id"] for d in combined["items"]] == ["api-0", "api-1"]
    bad = client.get("/api/v1/twins", params={"filter": "reported.temperature >> 3"})
    assert bad.status_code == 400
    error = error_of(bad)
    assert error["code"] == "invalid_filter"
    assert "offset" in error["message"]


def test_device_registry_and_lifecycle(served: Served) -> None:
    operator = served.client("operator")
    created = operator.post(
        "/api/v1/devices", json={"id": "reg-9", "type": "smart-meter", "tags": {"site": "x"}}
    )
    assert created.status_code == 201
    assert created.json()["lifecycle"] == "registered"
    assert created.json()["type"] == "smart-meter"
    again = operator.post("/api/v1/devices", json={"id": "reg-9"})
    assert again.status_code == 409
    assert error_of(again)["code"] == "conflict"
    assert served.client("viewer").post("/api/v1/devices", json={"id": "x-1"}).status_code == 403

    served.runtime.ingest([DeviceMessage("reg-9", "telemetry", {"power": 1.0}, T0)])
    served.runtime.flush()
    assert operator.get("/api/v1/devices/reg-9").json()["lifecycle"] == "active"
    suspended = operator.post("/api/v1/devices/reg-9/suspend")
    assert suspended.json()["lifecycle"] == "suspended"
    served.runtime.ingest([DeviceMessage("reg-9", "telemetry", {"power": 2.0}, T0 + 1)])
    served.runtime.flush()
    assert operator.get("/api/v1/twins/reg-9").json()["reported"] == {"power": 1.0}  # refused
    assert operator.post("/api/v1/devices/reg-9/resume").json()["lifecycle"] == "active"
    assert operator.post("/api/v1/devices/reg-9/decommission").json()["lifecycle"] == (
        "decommissioned"
    )
    stuck = operator.post("/api/v1/devices/reg-9/resume")
    assert stuck.status_code == 400
    listed = operator.get("/api/v1/devices").json()["items"]
    assert "reg-9" in [d["id"] for d in listed]
    assert operator.get("/api/v1/devices/nobody").status_code == 404
