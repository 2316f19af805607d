"""Alarm rules and their lifecycle on a twin: raise, acknowledge, clear."""

from __future__ import annotations

import pytest

from twinfleet.errors import InvalidRequest
from twinfleet.twins import AlarmRule, AlarmTracker, Twin, UnknownAlarm
from twinfleet.twins.alarms import rules_from_documents

T0 = 1_800_000_000.0
SPO2 = AlarmRule(
    "spo2-low",
    kind="threshold",
    metric="spo2",
    op="<",
    value=90,
    raise_after=2,
    clear_after=3,
    severity="critical",
)


def feed(
    tracker: AlarmTracker,
    rules: tuple[AlarmRule, ...],
    readings: list[tuple[bool, dict[str, float]]],
) -> list[list[str]]:
    out = []
    for i, (anomalous, values) in enumerate(readings):
        changed = tracker.observe(rules, anomalous=anomalous, values=values, ts=T0 + i, twin_id="p")
        out.append([f"{a['rule']}:{a['state']}" for a in changed])
    return out


def test_an_anomaly_streak_raises_and_a_normal_streak_clears() -> None:
    rule = AlarmRule("anomaly", raise_after=3, clear_after=2)
    tracker = AlarmTracker()
    flags = [True, True, False, True, True, True, True, False, False, True]
    changes = feed(tracker, (rule,), [(f, {"t": 1.0}) for f in flags])
    # two bad then a good one: no alarm; three in a row raise it (at reading 5); two good clear
    assert changes == [[], [], [], [], [], ["anomaly:active"], [], [], ["anomaly:cleared"], []]
    (cleared,) = tracker.alarms()
    assert (cleared["raised_at"], cleared["since"], cleared["cleared_at"]) == (
        T0 + 5,
        T0 + 3,
        T0 + 8,
    )


def test_a_threshold_rule_sees_only_its_metric() -> None:
    tracker = AlarmTracker()
    readings = [
        (False, {"spo2": 95}),
        (True, {"hr": 200}),
        (False, {"spo2": 88}),
        (False, {"hr": 70}),
        (False, {"spo2": 87}),
    ]
    assert feed(tracker, (SPO2,), readings)[-1] == ["spo2-low:active"]
    (alarm,) = tracker.alarms()
    assert alarm["value"] == 87
    assert alarm["severity"] == "critical"
    assert alarm["condition"] == "spo2 < 90 for 2 readings"


def test_a_long_enough_bad_stretch_raises_before_the_count() -> None:
    rule = AlarmRule("anomaly", raise_after=100, raise_after_s=2.0)
    tracker = AlarmTracker()
    assert feed(tracker, (rule,), [(True, {"t": 1.0})] * 4)[2] == ["anomaly:active"]


def test_acknowledged_then_cleared_keeps_who_and_when() -> None:
    tracker = AlarmTracker()
    feed(tracker, (SPO2,), [(False, {"spo2": 80})] * 2)
    alarm_id = tracker.alarms()[0]["id"]
    alarm, news = tracker.acknowledge(alarm_id, who="night shift", now=T0 + 10)
    assert news
    assert (alarm["state"], alarm["acknowledged_by"], alarm["acknowledged_at"]) == (
        "acknowledged",
        "night shift",
        T0 + 10,
    )
    assert tracker.acknowledge(alarm_id, who="again", now=T0 + 11)[1] is False
    feed(tracker, (SPO2,), [(False, {"spo2": 97})] * 3)
    (done,) = tracker.alarms()
    assert (done["state"], done["acknowledged_by"]) == ("cleared", "night shift")
    with pytest.raises(UnknownAlarm):
        tracker.acknowledge("nope", who="x", now=T0)
    again = AlarmTracker.from_state(tracker.state())
    assert again.alarms() == tracker.alarms()


def test_a_patient_monitor_twin_alarms_on_low_spo2() -> None:
    twin = Twin("pm-1", device_type="patient-monitor", now=T0)
    for k, spo2 in enumerate((97.0, 88.0, 86.0)):
        twin.apply_message("telemetry", {"spo2": spo2}, now=T0 + k, ts=T0 + k)
    assert [a["rule"] for a in twin.alarm_changes] == ["spo2-low"]
    (alarm,) = twin.document()["alarms"]
    assert alarm["state"] == "active"
    version = twin.version
    assert twin.acknowledge_alarm(alarm["id"], who="nurse", now=T0 + 5)
    assert twin.version == version + 1
    restored = Twin.from_snapshot(twin.snapshot())
    assert restored.document()["alarms"] == twin.document()["alarms"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "threshold", "metric": "spo2"},
        {"kind": "threshold", "metric": "spo2", "op": "~", "value": 1},
        {"kind": "weather"},
        {"raise_after": 0},
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        AlarmRule("r", **kwargs)  # type: ignore[arg-type]


def test_rules_from_json_are_checked_field_by_field() -> None:
    (rule,) = rules_from_documents(
        [
            {
                "name": "hot",
                "kind": "threshold",
                "metric": "t",
                "op": ">",
                "value": 80,
                "raise_after_s": 30,
            }
        ]
    )
    assert rule == AlarmRule(
        "hot", kind="threshold", metric="t", op=">", value=80, raise_after_s=30
    )
    assert rule.document()["condition"] == "t > 80 for 3 readings or 30 s"
    plain = {k: v for k, v in rule.document().items() if k != "condition"}
    assert AlarmRule.from_document(plain) == rule
    bad: list[tuple[object, str]] = [
        ({"name": "x"}, "a JSON array"),
        (["x"], "a JSON object"),
        ([{"name": "x", "color": "red"}], "unknown alarm rule fields: color"),
        ([{"name": "x", "raise_after": "3"}], "raise_after has the wrong type"),
        ([{"name": "x", "raise_after": True}], "raise_after has the wrong type"),
        ([{"name": "x", "severity": "mild"}], "severity 'mild'"),
        ([{"name": "x", "raise_after_s": -1}], "raise_after_s"),
        ([{"name": "x"}, {"name": "x"}], "unique"),
        ([{"name": f"r{i}"} for i in range(33)], "at most 32"),
    ]
    for docs, message in bad:
        with pytest.raises(InvalidRequest, match=message):
            rules_from_documents(docs)


def test_a_twin_given_other_rules_clears_the_alarms_of_rules_that_are_gone() -> None:
    twin = Twin("pm-2", device_type="patient-monitor", now=T0)
    for k, spo2 in enumerate((97.0, 88.0, 86.0)):
        twin.apply_message("telemetry", {"spo2": spo2}, now=T0 + k, ts=T0 + k)
    hot = AlarmRule(
        "fever", kind="threshold", metric="body_temperature", op=">", value=38.5, raise_after=1
    )
    version = twin.version
    assert twin.set_alarm_rules((hot,), now=T0 + 10)
    (gone,) = twin.alarm_changes
    assert (gone["rule"], gone["state"], gone["cleared_by"]) == (
        "spo2-low",
        "cleared",
        "rule removed",
    )
    assert twin.version == version + 1
    twin.alarm_changes = []
    twin.apply_message(
        "telemetry", {"spo2": 80.0, "body_temperature": 39.0}, now=T0 + 11, ts=T0 + 11
    )
    assert [a["rule"] for a in twin.alarm_changes] == ["fever"]  # only the rules it has now
    assert not twin.set_alarm_rules((hot,), now=T0 + 12)  # nothing gone: no change
    # Back to the built-in rules: the fever alarm's rule is gone, so it clears.
    assert twin.set_alarm_rules(None, now=T0 + 13)
    assert [a["rule"] for a in twin.alarm_changes] == ["fever"]
