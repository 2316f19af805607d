"""Event-based scoring of a model against labelled anomalies, on hand-made series."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from twinfleet.models import Verdict
from twinfleet.models.evaluation import Label, Observation, evaluate


class Above:
    """Anomalous whenever ``x`` is over 10."""

    name = "above"

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        return Verdict(values["x"], values["x"] > 10, "x")

    def state(self) -> dict[str, Any]:
        return {}


def series(device: str, family: str, xs: list[float]) -> list[Observation]:
    return [Observation(device, family, float(10 * i), {"x": x}) for i, x in enumerate(xs)]


def test_found_anomalies_false_alarm_runs_and_misses() -> None:
    a = series("a", "meter", [1, 1, 50, 1, 1, 60, 60, 60, 1, 1, 1, 1])
    b = series("b", "meter", [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    c = series("c", "tracker", [1, 1, 1, 20, 20, 1, 1, 1, 1, 1, 1, 1])
    labels = [
        Label("a", "x", "spike", 20.0, 20.0),  # flagged at its reading: found
        Label("b", "x", "spike", 40.0, 40.0),  # never flagged: missed
        Label("c", "x", "drift", 20.0, float("inf")),  # flagged 10 s later, in the horizon
        Label("c", "x", "stuck", 100.0, 110.0),  # nothing flagged then: missed
    ]
    observations = sorted(a + b + c, key=lambda o: o.ts)
    scores = evaluate(Above, observations, labels, interval_s=10.0, drift_horizon=3)
    meter, tracker = scores["meter"], scores["tracker"]
    assert meter.readings == tracker.readings * 2 == 24
    # a's run of three 60s (50-70 s) is one false alarm, however long it lasts
    assert meter.false_alarms == 1
    assert meter.found == {"spike": 1, "drift": 0, "stuck": 0}
    assert meter.labelled == {"spike": 2, "drift": 0, "stuck": 0}
    assert meter.precision == pytest.approx(0.5)
    assert meter.recall("spike") == pytest.approx(0.5)
    assert meter.f1("spike") == pytest.approx(0.5)
    assert meter.recall("drift") == 1.0  # nothing to find
    assert tracker.false_alarms == 0
    assert tracker.found == {"spike": 0, "drift": 1, "stuck": 0}
    assert tracker.precision == 1.0
    assert tracker.recall("stuck") == 0.0
    assert tracker.f1("stuck") == 0.0
    assert tracker.as_dict()["drift"] == {"labelled": 1, "found": 1, "recall": 1.0, "f1": 1.0}


def test_a_drift_found_too_late_is_a_false_alarm() -> None:
    c = series("c", "tracker", [1, 1, 1, 1, 1, 1, 20, 1])
    labels = [Label("c", "x", "drift", 0.0, float("inf"))]
    scores = evaluate(Above, c, labels, interval_s=10.0, drift_horizon=2)["tracker"]
    assert scores.found["drift"] == 0
    assert scores.false_alarms == 1
