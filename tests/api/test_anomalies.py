"""Anomaly history and the fleet's anomalous twins, and rate limits, through ``TwinClient``."""

from __future__ import annotations

import httpx
import pytest
from helpers import T0, Served, serving

from twinfleet.api.app import create_app
from twinfleet.client import NotFound, RateLimited, TwinClient
from twinfleet.runtime import DeviceMessage
from twinfleet.runtime.telemetry import open_telemetry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

BASE = T0 + 10_000


def readings(twin_id: str, values: list[float]) -> list[DeviceMessage]:
    return [
        DeviceMessage(twin_id, "telemetry", {"temperature": v}, BASE + k, "test", "smart-sensor")
        for k, v in enumerate(values)
    ]


def test_scores_episodes_and_the_anomalous_twins(served: Served) -> None:
    calm = [20.0 + 0.1 * (k % 5) for k in range(40)]
    # anom-1: a spike that clears at the next reading; anom-2: still anomalous at the end.
    served.runtime.ingest(readings("anom-1", [*calm, 95.0, 20.1, 20.2]))
    served.runtime.ingest(readings("anom-2", [*calm, 95.0]))
    served.runtime.persist()  # history is written with the hosts' snapshots
    with TwinClient(served.url, served.tokens["viewer"]) as client:
        first = client.anomalies("anom-1")
        assert first["current"]["anomalous"] is False
        assert [p["ts"] for p in first["scores"]] == [BASE + k for k in range(43)]
        spike = first["scores"][40]["score"]
        assert spike > 4 > max(p["score"] for p in first["scores"][:40])
        assert first["episodes"] == [{"start": BASE + 40, "end": BASE + 41}]

        second = client.anomalies("anom-2")
        assert second["current"]["anomalous"] is True
        assert second["current"]["since"] == BASE + 40
        assert second["episodes"] == [{"start": BASE + 40, "end": None}]

        window = client.anomalies("anom-1", since=BASE + 38, until=BASE + 41)
        assert [p["ts"] for p in window["scores"]] == [BASE + 38, BASE + 39, BASE + 40]
        assert window["episodes"] == [{"start": BASE + 40, "end": None}]
        later = client.anomalies("anom-1", since=BASE + 41)
        assert later["episodes"] == [{"start": None, "end": BASE + 41}]

        anomalous = client.anomalous(type="smart-sensor")
        ids = [t["id"] for t in anomalous.items]
        assert "anom-2" in ids
        assert "anom-1" not in ids
        assert all(t["anomaly"]["anomalous"] for t in anomalous.items)
        assert client.anomalous(type="gps-tracker").items == []

        # The platform's series stay out of the device's own telemetry.
        metrics = {p["metric"] for p in client.telemetry("anom-1")}
        assert metrics == {"temperature"}
        with pytest.raises(NotFound):
            client.anomalies("no-such-twin")


def test_a_token_over_its_rate_limit_gets_429_with_retry_after(served: Served) -> None:
    app = create_app(served.runtime, served.store, rate_limit="3/minute")
    with serving(app) as url:
        with TwinClient(url, served.tokens["viewer"]) as viewer:
            for _ in range(3):
                viewer.twin("api-1")
            with pytest.raises(RateLimited) as limited:
                viewer.twin("api-1")
            assert limited.value.status == 429
            assert limited.value.code == "rate_limited"
            assert limited.value.retry_after is not None
            assert 1 <= limited.value.retry_after <= 60
        # Per token: another one still gets through; unauthenticated routes are not counted.
        with TwinClient(url, served.tokens["developer"]) as developer:
            assert developer.twin("api-1")["id"] == "api-1"
        for _ in range(5):
            assert httpx.get(f"{url}/healthz").status_code == 200
        raw = httpx.get(
            f"{url}/api/v1/twins/api-1",
            headers={"Authorization": f"Bearer {served.tokens['viewer']}"},
        )
        assert raw.status_code == 429
        assert raw.json()["error"]["code"] == "rate_limited"
        assert int(raw.headers["retry-after"]) >= 1


def test_bodies_over_the_limit_are_refused_even_without_a_length(served: Served) -> None:
    def chunks() -> object:
        for _ in range(300):
            yield b" " * 1024  # 300 KB of JSON whitespace, streamed (no Content-Length)

    response = httpx.patch(
        f"{served.url}/api/v1/twins/api-1/desired",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {served.tokens['admin']}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_history_kept_in_influx_is_not_queried_here(served: Served) -> None:
    sink = open_telemetry("influx://127.0.0.1:8086?bucket=fleet&org=ops")
    app = create_app(served.runtime, served.store, telemetry=sink)
    with serving(app) as url:
        response = httpx.get(
            f"{url}/api/v1/twins/api-1/telemetry",
            headers={"Authorization": f"Bearer {served.tokens['viewer']}"},
        )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "history_unavailable"
    assert "bucket 'fleet'" in error["message"]
    sink.close()
