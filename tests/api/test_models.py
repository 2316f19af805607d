"""Anomaly models through the API: listing, family assignments, a twin's own model."""

from __future__ import annotations

import time

import pytest
from helpers import T0, Served

from twinfleet.client import Forbidden, InvalidRequest, NotFound, TwinClient
from twinfleet.runtime import DeviceMessage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def meter(twin_id: str, k: int) -> DeviceMessage:
    return DeviceMessage(twin_id, "telemetry", {"power": 1.0 + k}, T0 + k, "test", "smart-meter")


def test_models_are_listed_and_assigned_to_families_and_twins(served: Served) -> None:
    served.runtime.ingest([meter("mdl-1", 0), meter("mdl-2", 0)])
    served.runtime.flush()
    with (
        TwinClient(served.url, served.tokens["data-scientist"]) as scientist,
        TwinClient(served.url, served.tokens["viewer"]) as viewer,
    ):
        listed = viewer.models()
        names = [m["name"] for m in listed["items"]]
        assert {"ewma", "mad", "stuck"} <= set(names)
        mad = next(m for m in listed["items"] if m["name"] == "mad")
        assert mad["params"]["window"] == 60
        assert mad["version"] == "1"

        with pytest.raises(Forbidden):
            viewer.assign_model("smart-meter", "stuck")
        assigned = scientist.assign_model("smart-meter", "mad", {"threshold": 8})
        assert assigned == {"family": "smart-meter", "model": "mad", "params": {"threshold": 8}}
        assert {"family": "smart-meter", "model": "mad", "params": {"threshold": 8}} in (
            viewer.model_assignments()
        )
        twin = viewer.twin("mdl-1")
        assert (twin["anomaly"]["model"], twin["anomaly"]["source"]) == ("mad", "family")

        own = scientist.set_twin_model("mdl-2", "stuck", {"repeats": 4})
        assert (own["anomaly"]["model"], own["anomaly"]["source"]) == ("stuck", "twin")
        scientist.assign_model("smart-meter", "ewma")
        assert viewer.twin("mdl-1")["anomaly"]["model"] == "ewma"
        assert viewer.twin("mdl-2")["anomaly"]["model"] == "stuck"  # its own stays

        # Scores keep flowing with the assigned model.
        served.runtime.ingest([meter("mdl-2", k) for k in range(1, 5)])
        served.runtime.flush()
        assert viewer.twin("mdl-2")["anomaly"]["model"] == "stuck"

        back = scientist.set_twin_model("mdl-2", None)
        assert (back["anomaly"]["model"], back["anomaly"]["source"]) == ("ewma", "family")
        assert scientist.assign_model("smart-meter", None) is None
        assert viewer.twin("mdl-1")["anomaly"]["source"] == "default"
        assert all(a["family"] != "smart-meter" for a in viewer.model_assignments())

        with pytest.raises(InvalidRequest, match="no anomaly model named 'nope'"):
            scientist.assign_model("smart-meter", "nope")
        with pytest.raises(InvalidRequest, match="unknown mad parameters: nope"):
            scientist.set_twin_model("mdl-1", "mad", {"nope": 1})
        with pytest.raises(InvalidRequest, match="no device family 'toaster'"):
            scientist.assign_model("toaster", "mad")


def test_a_model_from_an_installed_package_is_assigned_and_scores(served: Served) -> None:
    """``twinfleet-level`` (examples/, installed by the test command), by its entry point."""
    served.runtime.ingest([meter("mdl-9", 0)])
    served.runtime.flush()
    with TwinClient(served.url, served.tokens["data-scientist"]) as scientist:
        level = next(m for m in scientist.models()["items"] if m["name"] == "level")
        assert (level["version"], level["params"]) == ("1.0.0", {"limit": 100.0})
        twin = scientist.set_twin_model("mdl-9", "level", {"limit": 5})
        assert twin["anomaly"]["model"] == "level"
        assert (twin["anomaly"]["version"], twin["anomaly"]["source"]) == ("1.0.0", "twin")
        served.runtime.ingest([meter("mdl-9", 9)])  # power 10.0 > 5
        served.runtime.flush()
        anomaly = scientist.twin("mdl-9")["anomaly"]
        assert anomaly["anomalous"] is True
        assert anomaly["score"] == 2.0
        assert anomaly["since"] == T0 + 9


def tracker(twin_id: str, k: int, *, speed: float | None = None) -> DeviceMessage:
    """A vehicle whose fuel falls as it drives and whose engine warms with speed."""
    v = 60.0 + (k * 37 % 41) if speed is None else speed
    payload = {"speed": v, "engine_temperature": 70.0 + v / 10.0, "fuel": 80.0 - k * 0.01}
    return DeviceMessage(twin_id, "telemetry", payload, T0 + k, "test", "vehicle-tracker")


def test_a_model_is_trained_on_history_through_the_api(served: Served) -> None:
    ids = [f"trk-{i}" for i in range(4)]
    served.runtime.ingest([tracker(t, k) for k in range(80) for t in ids])
    served.runtime.flush()
    with (
        TwinClient(served.url, served.tokens["data-scientist"]) as scientist,
        TwinClient(served.url, served.tokens["viewer"]) as viewer,
    ):
        with pytest.raises(Forbidden):
            viewer.train(family="vehicle-tracker", model="mahalanobis")
        job = scientist.train(family="vehicle-tracker", model="sklearn", params={})
        assert (job["status"], job["scope"], job["model"]) == ("running", "family", "sklearn")
        for _ in range(600):
            job = viewer.training(job["id"])
            if job["status"] != "running":
                break
            time.sleep(0.1)
        assert job["status"] == "succeeded", job["error"]
        assert job["twins_trained"] == 4
        assert job["readings"] == 320
        assert job["id"] in [j["id"] for j in viewer.trainings()]
        anomaly = viewer.twin("trk-2")["anomaly"]
        assert (anomaly["model"], anomaly["version"]) == ("sklearn", job["version"])
        served.runtime.ingest([tracker("trk-2", 500, speed=200.0)])
        served.runtime.flush()
        assert viewer.twin("trk-2")["anomaly"]["anomalous"]

        with pytest.raises(InvalidRequest, match="cannot be trained"):
            scientist.train(family="vehicle-tracker", model="level")
        with pytest.raises(InvalidRequest, match="names a family and no twins"):
            scientist.train(twins=["trk-1"], model="ewma")
        with pytest.raises(InvalidRequest):
            scientist.train(family="vehicle-tracker", scope="nope")
        with pytest.raises(NotFound, match="no training job"):
            viewer.training("nope")
        scientist.assign_model("vehicle-tracker", None)
