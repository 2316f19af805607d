"""Event-based scoring of a model against labelled anomalies, on hand-made series."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from twinfleet.models import Reading, Verdict
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
    scores = evaluate(Above, observations, labels, interval_s=10.0, drift_horizon=3).families
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
    scores = evaluate(Above, c, labels, interval_s=10.0, drift_horizon=2).families["tracker"]
    assert scores.found["drift"] == 0
    assert scores.false_alarms == 1


# -- training stretch ---------------------------------------------------------------------------


class Limit:
    """Trainable: flags ``x`` above twice the largest ``x`` of its training; nothing untrained."""

    name = "limit"

    def __init__(self, fits: list[list[float]] | None = None, limit: float | None = None) -> None:
        self.fits = fits if fits is not None else []
        self.limit = limit
        self.updates = 0

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        self.updates += 1
        flagged = self.limit is not None and values["x"] > self.limit
        return Verdict(values["x"], flagged, "x")

    def fit(self, history: Sequence[Reading]) -> None:
        xs = [values["x"] for _, values in history]
        self.fits.append(xs)
        if len(xs) < 2:
            raise ValueError(f"{len(xs)} readings: 2 needed to train")
        self.limit = 2 * max(xs)

    def state(self) -> dict[str, Any]:
        return {"limit": self.limit}


def at(device: str, family: str, xs: list[float], start: int = 0) -> list[Observation]:
    return [
        Observation(device, family, float(10 * (start + i)), {"x": x}) for i, x in enumerate(xs)
    ]


def by_time(*series_: list[Observation]) -> list[Observation]:
    return sorted((o for s in series_ for o in s), key=lambda o: o.ts)


# a (meter): trains on 1s, then reads 5 (over its own limit 2, under its family's 6) and 20;
# b (meter): trains on up to 3; c (tracker): trains on 1s, then reads 5.
FLEET = by_time(
    at("a", "meter", [1, 1, 1, 1, 5, 1, 20, 1]),
    at("b", "meter", [1, 3, 1, 1, 1, 1, 1, 1]),
    at("c", "tracker", [1, 1, 1, 1, 5, 1, 1, 1]),
)
FLEET_LABELS = [Label("a", "x", "spike", 40.0, 40.0), Label("a", "x", "spike", 60.0, 60.0)]


def test_a_trainable_model_is_fitted_on_its_family_before_scoring() -> None:
    fits: list[list[float]] = []
    result = evaluate(
        lambda: Limit(fits),
        FLEET,
        FLEET_LABELS,
        interval_s=10.0,
        train_until=40.0,
        restore=lambda state: Limit(limit=state["limit"]),
    )
    # one fit per family, on its devices' training readings concatenated device by device
    assert sorted(fits) == [[1, 1, 1, 1], [1, 1, 1, 1, 1, 3, 1, 1]]
    assert result.fitted == 2
    assert result.unfitted == {}
    meter = result.families["meter"]
    assert meter.found["spike"] == 1  # 20 > 6; 5 is under the family's limit
    assert meter.false_alarms == 0
    assert result.families["tracker"].false_alarms == 1  # 5 > 2 on c
    assert result.overall().readings == 12  # the scored stretch only


def test_per_twin_training_fits_each_device_on_its_own_readings() -> None:
    fits: list[list[float]] = []
    result = evaluate(
        lambda: Limit(fits), FLEET, FLEET_LABELS, interval_s=10.0, train_until=40.0, scope="twin"
    )
    assert sorted(fits) == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 3, 1, 1]]
    assert result.fitted == 3
    assert result.families["meter"].found["spike"] == 2  # a's own limit is 2


def test_without_training_a_trainable_model_finds_nothing() -> None:
    fits: list[list[float]] = []
    result = evaluate(lambda: Limit(fits), FLEET, FLEET_LABELS, interval_s=10.0)
    assert fits == []
    assert result.fitted == 0
    assert result.overall().found == {"spike": 0, "drift": 0, "stuck": 0}
    assert result.overall().labelled["spike"] == 2


def test_a_family_too_small_to_fit_stays_untrained() -> None:
    result = evaluate(Limit, FLEET, FLEET_LABELS, interval_s=10.0, train_until=20.0)
    assert result.fitted == 2  # 4 meter readings, 2 tracker readings: enough for both
    result = evaluate(Limit, FLEET, FLEET_LABELS, interval_s=10.0, train_until=10.0)
    assert result.fitted == 1
    assert result.unfitted == {"tracker": "1 readings: 2 needed to train"}
    assert result.families["tracker"].false_alarms == 0  # untrained: flags nothing


def test_the_training_stretch_is_neither_scored_nor_counted() -> None:
    # a: in training, a labelled spike (10 s) and a false alarm (30 s); a stuck value from 50 s
    # to 70 s, begun in training and flagged at 60 s: neither found nor a false alarm; a spike at
    # 80 s, found.
    a = at("a", "meter", [1, 50, 1, 60, 1, 30, 30, 1, 40, 1])
    labels = [
        Label("a", "x", "spike", 10.0, 10.0),
        Label("a", "x", "stuck", 50.0, 70.0),
        Label("a", "x", "spike", 80.0, 80.0),
    ]
    everything = evaluate(Above, a, labels, interval_s=10.0).families["meter"]
    assert everything.labelled == {"spike": 2, "drift": 0, "stuck": 1}
    assert everything.found == {"spike": 2, "drift": 0, "stuck": 1}
    assert everything.false_alarms == 1
    meter = evaluate(Above, a, labels, interval_s=10.0, train_until=60.0).families["meter"]
    assert meter.readings == 4
    assert meter.labelled == {"spike": 1, "drift": 0, "stuck": 0}
    assert meter.found == {"spike": 1, "drift": 0, "stuck": 0}
    assert meter.false_alarms == 0
    assert meter.precision == 1.0


class Novel:
    """Streaming, not trainable: flags a value it has not seen before."""

    name = "novel"

    def __init__(self) -> None:
        self.seen: set[float] = set()

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        new = values["x"] not in self.seen
        self.seen.add(values["x"])
        return Verdict(float(new), new, "x")

    def state(self) -> dict[str, Any]:
        return {}


def test_streaming_models_learn_through_the_training_stretch() -> None:
    a = at("a", "meter", [1, 2, 1, 2, 1, 2])
    streamed = evaluate(Novel, a, [], interval_s=10.0, train_until=20.0)
    assert streamed.fitted == 0
    assert streamed.families["meter"].false_alarms == 0  # 1 and 2 were learnt in training
    cold = evaluate(Novel, a[2:], [], interval_s=10.0)
    assert cold.families["meter"].false_alarms == 1  # the run of two novel readings


class Shared:
    """Batch-scoring: one group; verdicts come from ``score_batch`` through ``prime``."""

    name = "shared"

    def __init__(self, batches: list[int]) -> None:
        self.batches = batches
        self.batch_group = "one"
        self.primed: list[Verdict] = []

    def score_batch(self, readings: Sequence[Mapping[str, float]]) -> list[Verdict]:
        self.batches.append(len(readings))
        return [Verdict(v["x"], v["x"] > 10, "x") for v in readings]

    def prime(self, values: Mapping[str, float], verdict: Verdict) -> None:
        self.primed.append(verdict)

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        assert self.primed, "update before the round was batch-scored"
        return self.primed.pop(0)

    def state(self) -> dict[str, Any]:
        return {}


def test_each_round_is_batch_scored_before_the_updates() -> None:
    batches: list[int] = []
    result = evaluate(lambda: Shared(batches), FLEET, FLEET_LABELS, interval_s=10.0)
    assert batches == [3] * 8  # three devices' readings per timestep, in one call
    assert result.families["meter"].found["spike"] == 1  # 20 at 60 s
