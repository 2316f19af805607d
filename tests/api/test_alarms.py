"""Alarms over the API: raised by readings on real hosts, listed, acknowledged, cleared."""

from __future__ import annotations

import httpx
import pytest
from helpers import T0, Served

from twinfleet.client import Forbidden, NotFound, TwinClient
from twinfleet.runtime import DeviceMessage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def spo2(twin_id: str, k: int, value: float) -> DeviceMessage:
    return DeviceMessage(
        twin_id, "telemetry", {"spo2": value}, T0 + 100 + k, "t", "patient-monitor"
    )


def alarms(url: str, token: str, **params: object) -> list[dict[str, object]]:
    response = httpx.get(
        f"{url}/api/v1/alarms", params=params, headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    items: list[dict[str, object]] = response.json()["items"]
    return items


def test_low_spo2_raises_an_alarm_that_is_acknowledged_then_cleared(served: Served) -> None:
    served.runtime.ingest([spo2("alm-1", k, v) for k, v in enumerate((97, 89, 88))])
    served.runtime.ingest([spo2("alm-2", 0, 98.0)])
    served.runtime.flush()
    viewer = served.tokens["viewer"]
    (alarm,) = [a for a in alarms(served.url, viewer) if a["twin_id"] == "alm-1"]
    assert (alarm["rule"], alarm["severity"], alarm["state"]) == ("spo2-low", "critical", "active")
    assert alarm["value"] == 88
    assert alarm["raised_at"] == T0 + 102
    assert all(a["twin_id"] != "alm-2" for a in alarms(served.url, viewer))
    assert alarms(served.url, viewer, severity="info") == []

    with TwinClient(served.url, viewer) as client, pytest.raises(Forbidden):
        client.ack_alarm("alm-1", str(alarm["id"]))
    with TwinClient(served.url, served.tokens["operator"]) as operator:
        acked = operator.ack_alarm("alm-1", str(alarm["id"]))
        assert acked["state"] == "acknowledged"
        assert acked["acknowledged_by"]  # the token's name or id
        page = operator.alarms(states=["acknowledged"], severity="critical")
        assert [a["id"] for a in page.items if a["twin_id"] == "alm-1"] == [alarm["id"]]
        with pytest.raises(NotFound):
            operator.ack_alarm("alm-1", "nope")
    assert [a["state"] for a in alarms(served.url, viewer) if a["twin_id"] == "alm-1"] == [
        "acknowledged"
    ]

    served.runtime.ingest([spo2("alm-1", k, 97.0) for k in range(3, 6)])
    served.runtime.flush()
    assert all(a["twin_id"] != "alm-1" for a in alarms(served.url, viewer))
    (cleared,) = [a for a in alarms(served.url, viewer, state="cleared") if a["twin_id"] == "alm-1"]
    assert cleared["cleared_at"] == T0 + 105
    assert cleared["acknowledged_at"] is not None

    missing = httpx.post(
        f"{served.url}/api/v1/twins/alm-1/alarms/nope/ack",
        headers={"Authorization": f"Bearer {served.tokens['admin']}"},
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "alarm_not_found"
    bad = httpx.get(
        f"{served.url}/api/v1/alarms",
        params={"state": "sleeping"},
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "state"


def sensor(twin_id: str, k: int, temperature: float) -> DeviceMessage:
    payload = {"temperature": temperature}
    return DeviceMessage(twin_id, "telemetry", payload, T0 + 500 + k, "t", "smart-sensor")


def test_a_family_gets_alarm_rules_of_its_own_through_the_api(served: Served) -> None:
    hot = {
        "name": "hot",
        "kind": "threshold",
        "metric": "temperature",
        "op": ">",
        "value": 50,
        "raise_after": 2,
        "severity": "critical",
    }
    with (
        TwinClient(served.url, served.tokens["operator"]) as operator,
        TwinClient(served.url, served.tokens["viewer"]) as viewer,
    ):
        before = {r["family"]: r for r in viewer.alarm_rules()}
        assert before["smart-sensor"]["source"] == "built-in"
        assert [r["name"] for r in before["patient-monitor"]["rules"]] == ["anomaly", "spo2-low"]
        with pytest.raises(Forbidden):
            viewer.set_alarm_rules("smart-sensor", [hot])
        served.runtime.ingest([sensor("rule-1", 0, 20.0)])  # active before the change
        served.runtime.flush()
        item = operator.set_alarm_rules("smart-sensor", [hot, {"name": "anomaly"}])
        assert item["source"] == "custom"
        assert [r["condition"] for r in item["rules"]] == [
            "temperature > 50 for 2 readings",
            "anomalous for 3 readings",
        ]
        served.runtime.ingest([sensor(t, k, 60.0) for k in (1, 2) for t in ("rule-1", "rule-2")])
        served.runtime.flush()
        raised = [a for a in operator.alarms().items if a["rule"] == "hot"]
        assert sorted(a["twin_id"] for a in raised) == ["rule-1", "rule-2"]  # awake and new

        operator.set_alarm_rules("smart-sensor", [{"name": "anomaly"}])  # "hot" is gone
        twin = viewer.twin("rule-1")
        (gone,) = [a for a in twin["alarms"] if a["rule"] == "hot"]
        assert (gone["state"], gone["cleared_by"]) == ("cleared", "rule removed")
        reset = operator.set_alarm_rules("smart-sensor", None)
        assert reset["source"] == "built-in"

    bad = httpx.put(
        f"{served.url}/api/v1/alarms/rules/smart-sensor",
        json={"rules": [{"name": "x", "kind": "threshold", "metric": "temperature"}]},
        headers={"Authorization": f"Bearer {served.tokens['operator']}"},
    )
    assert bad.status_code == 400
    assert "needs metric, op" in bad.json()["error"]["message"]
    unknown = httpx.put(
        f"{served.url}/api/v1/alarms/rules/toaster",
        json={"rules": []},
        headers={"Authorization": f"Bearer {served.tokens['admin']}"},
    )
    assert unknown.status_code == 400
    assert "no device family 'toaster'" in unknown.json()["error"]["message"]
