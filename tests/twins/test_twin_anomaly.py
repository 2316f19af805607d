"""A twin's anomaly slot: what reaches the model, and how its verdicts become the document's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from twinfleet.models import EwmaParams, EwmaZScore, Verdict
from twinfleet.twins import Twin

T0 = 1_700_000_000.0


class ScriptedModel:
    """A model that answers from a script and records what it was given."""

    name = "scripted"

    def __init__(self, verdicts: list[tuple[float, bool]]) -> None:
        self.verdicts = list(verdicts)
        self.calls: list[tuple[dict[str, float], float]] = []

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        self.calls.append((dict(values), ts))
        score, anomalous = self.verdicts.pop(0)
        return Verdict(score, anomalous, "t")

    def state(self) -> dict[str, Any]:
        return {}


def feed_steady(twin: Twin, n: int, *, start: int = 0, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    for i, x in enumerate(20.0 + rng.uniform(-0.5, 0.5, n), start=start):
        twin.apply_message("telemetry", {"temperature": float(x)}, now=T0 + i, ts=T0 + i)


def test_steady_noisy_signal_is_not_anomalous() -> None:
    twin = Twin("sensor-1", device_type="smart-sensor", model=EwmaZScore(), now=T0)
    feed_steady(twin, 300)
    doc = twin.document()["anomaly"]
    assert doc["model"] == "ewma"
    assert doc["anomalous"] is False
    assert doc["since"] is None
    assert 0.0 < doc["score"] < 4.0


def test_spike_is_anomalous_since_its_reading_ts_and_normal_clears_it() -> None:
    twin = Twin("sensor-1", device_type="smart-sensor", model=EwmaZScore(), now=T0)
    feed_steady(twin, 300)

    spike_ts = "2023-11-14T23:00:00Z"  # the reading's own time, not the arrival time
    twin.apply_message(
        "telemetry", {"temperature": 60.0, "ts": spike_ts}, now=T0 + 4000, ts=T0 + 3999
    )
    anomaly = twin.document()["anomaly"]
    assert anomaly["anomalous"] is True
    assert anomaly["score"] > 4.0
    assert anomaly["since"] == 1_700_002_800.0

    twin.apply_message("telemetry", {"temperature": 20.1}, now=T0 + 4001, ts=T0 + 4001)
    anomaly = twin.document()["anomaly"]
    assert anomaly["anomalous"] is False
    assert anomaly["since"] is None


def test_since_stays_at_the_first_anomalous_reading() -> None:
    model = ScriptedModel([(9.0, True), (8.0, True), (1.0, False), (7.0, True)])
    twin = Twin("pump-7", model=model, now=T0)
    for i in range(4):
        twin.apply_message("telemetry", {"t": float(i)}, now=T0 + i, ts=T0 + 10 * i)
        if i == 1:
            assert (twin.anomalous, twin.anomaly_since, twin.anomaly_score) == (True, T0, 8.0)
    assert twin.anomaly_since == T0 + 30


def test_model_gets_only_accepted_top_level_numbers_at_the_reading_ts() -> None:
    model = ScriptedModel([(0.0, False)] * 3)
    twin = Twin("pump-7", model=model, now=T0)
    twin.apply_message("telemetry", {"t": 1.0, "n": 2}, now=T0, ts=T0 + 10)
    twin.apply_message(
        "reported",
        {"t": 0.5, "mode": "eco", "on": True, "gps": {"lat": 1.0}, "rpm": 3.5},
        now=T0 + 1,
        ts=T0 + 5,  # t is stale here
    )
    assert model.calls == [({"t": 1.0, "n": 2}, T0 + 10), ({"rpm": 3.5}, T0 + 5)]


def test_stale_or_non_numeric_message_does_not_reach_the_model() -> None:
    model = ScriptedModel([(0.0, False)])
    twin = Twin("pump-7", model=model, now=T0)
    twin.apply_message("telemetry", {"t": 1.0}, now=T0, ts=T0 + 10)
    twin.apply_message("telemetry", {"t": 2.0}, now=T0, ts=T0 + 5)
    twin.apply_message("reported", {"mode": "eco"}, now=T0, ts=T0 + 20)
    assert len(model.calls) == 1


def test_twin_without_model_keeps_a_neutral_verdict() -> None:
    twin = Twin("pump-7", now=T0)
    twin.apply_message("telemetry", {"t": 1e9}, now=T0)
    assert twin.document()["anomaly"] == {
        "model": None,
        "version": None,
        "source": None,
        "score": 0.0,
        "anomalous": False,
        "since": None,
    }


def test_set_model_forgets_the_old_verdict() -> None:
    twin = Twin("pump-7", model=ScriptedModel([(9.0, True)]), now=T0)
    twin.apply_message("telemetry", {"t": 1.0}, now=T0)
    assert twin.anomalous is True

    twin.set_model(EwmaZScore(EwmaParams(warmup=2)), now=T0 + 1)

    assert twin.document()["anomaly"] == {
        "model": "ewma",
        "version": None,
        "source": None,
        "score": 0.0,
        "anomalous": False,
        "since": None,
    }
