"""Rolling windows of a twin and fleet aggregates, through the client on real hosts."""

from __future__ import annotations

import time

import pytest
from helpers import Served

from twinfleet.client import InvalidRequest, TwinClient
from twinfleet.runtime import DeviceMessage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def test_windows_and_aggregates(served: Served) -> None:
    now = time.time()
    served.runtime.ingest(
        DeviceMessage(
            "agg-1", "telemetry", {"temperature": 10.0 + k}, now - 30 + k, "t", "smart-sensor"
        )
        for k in range(5)
    )
    served.runtime.ingest(
        [
            DeviceMessage("agg-2", "telemetry", {"temperature": 30.0}, now, "t", "smart-sensor"),
            DeviceMessage("agg-3", "telemetry", {"power": 2.5}, now, "t", "smart-meter"),
        ]
    )
    served.runtime.persist()  # history (which the windows are computed from) written now
    with TwinClient(served.url, served.tokens["developer"]) as client:
        windows = client.windows("agg-1")
        minute = windows["metrics"]["temperature"]["1m"]
        assert minute == {"count": 5, "min": 10.0, "max": 14.0, "mean": 12.0}
        assert windows["metrics"]["temperature"]["1h"]["count"] == 5

        for tag, twin in (("north", "agg-1"), ("north", "agg-2"), ("south", "agg-3")):
            client.patch_tags(twin, {"site": tag})
        groups = {g["group"]: g for g in client.aggregates(metric="temperature")}
        sensors = groups["smart-sensor"]
        assert sensors["twins"] >= 2  # other tests' sensors share the runtime
        assert sensors["reporting"] >= 2
        sites = {g["group"]: g for g in client.aggregates(by="tag:site", metric="temperature")}
        assert sites["north"] == {
            "group": "north",
            "twins": 2,
            "online": 2,
            "anomalous": 0,
            "metric": "temperature",
            "mean": (14.0 + 30.0) / 2,
            "reporting": 2,
        }
        assert sites["south"]["mean"] is None  # a meter reports no temperature
        with pytest.raises(InvalidRequest, match="aggregate by 'family' or 'tag:<key>'"):
            client.aggregates(by="colour")
