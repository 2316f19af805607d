"""Anomaly models through the API: listing, family assignments, a twin's own model."""

from __future__ import annotations

import pytest

from twinfleet.client import Forbidden, InvalidRequest, TwinClient
from twinfleet.runtime import DeviceMessage

from .conftest import T0, Served

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
