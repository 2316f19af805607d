"""Calls that must take effect once: ``Idempotency-Key`` over real HTTP; errors that are the
platform's own are 500, never 400."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from twinfleet.api.errors import HTTP_STATUS, install_error_handlers
from twinfleet.errors import ERRORS_BY_CODE, InternalError, TwinfleetError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

Served = Any  # the fixture's class lives in conftest.py


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def test_a_repeated_token_request_creates_one_token(served: Served) -> None:
    with served.client() as http:
        before = len(http.get("/api/v1/tokens").json()["items"])
        key = _key()
        first = http.post("/api/v1/tokens", json={"role": "viewer", "name": "once"}, headers=key)
        again = http.post("/api/v1/tokens", json={"role": "viewer", "name": "once"}, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()  # the same token, shown to the repeat only
        assert len(http.get("/api/v1/tokens").json()["items"]) == before + 1
        other = http.post("/api/v1/tokens", json={"role": "viewer"}, headers=_key())
        assert other.json()["id"] != first.json()["id"]


def test_a_repeated_command_is_queued_once(served: Served) -> None:
    body = {"name": "ping", "timeout_s": 0}
    with served.client("operator") as http:
        key = _key()
        first = http.post("/api/v1/twins/api-1/commands", json=body, headers=key)
        again = http.post("/api/v1/twins/api-1/commands", json=body, headers=key)
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"]
        fresh = http.post("/api/v1/twins/api-1/commands", json=body, headers=_key())
        assert fresh.json()["id"] != first.json()["id"]
        # the same key from another token is another call
        with served.client("developer") as other:
            theirs = other.post("/api/v1/twins/api-1/commands", json=body, headers=key)
        assert theirs.json()["id"] != first.json()["id"]


def test_a_repeated_registration_is_answered_like_the_first(served: Served) -> None:
    device = {"id": f"once-{uuid.uuid4().hex[:8]}", "type": "smart-meter"}
    with served.client("operator") as http:
        key = _key()
        first = http.post("/api/v1/devices", json=device, headers=key)
        again = http.post("/api/v1/devices", json=device, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        conflict = http.post("/api/v1/devices", json=device, headers=_key())
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "conflict"


def test_a_malformed_idempotency_key_is_refused(served: Served) -> None:
    with served.client("operator") as http:
        answer = http.post(
            "/api/v1/twins/api-1/commands",
            json={"name": "ping", "timeout_s": 0},
            headers={"Idempotency-Key": "x" * 256},
        )
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "code": "invalid_request",
        "message": "Idempotency-Key is 1 to 255 printable ASCII characters",
        "field": "idempotency-key",
    }


# -- the platform's own failures (no Ray needed, but the module's marks are cheap) ------------


class _FromTheFuture(TwinfleetError):
    """An error code this API has no status for (a newer host's, say)."""

    code = "from_the_future"


ERRORS_BY_CODE.pop(_FromTheFuture.code)  # not a real code of this version


def _failing_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/bug")
    async def bug() -> None:
        raise KeyError("a bug")

    @app.get("/internal")
    async def internal() -> None:
        raise InternalError("a host failed: KeyError: 'x'")

    @app.get("/unknown")
    async def unknown() -> None:
        raise _FromTheFuture("later")

    return app


@pytest.mark.parametrize("path", ["/bug", "/internal", "/unknown"])
async def test_the_platforms_own_failures_are_500(path: str) -> None:
    transport = httpx.ASGITransport(app=_failing_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        answer = await http.get(path)
    assert answer.status_code == 500
    body = answer.json()["error"]
    assert body["code"] in ("internal_error", "from_the_future")
    assert "a bug" not in body["message"]  # no detail of a bug leaks


def test_every_error_code_has_a_status() -> None:
    assert set(ERRORS_BY_CODE) <= set(HTTP_STATUS)
