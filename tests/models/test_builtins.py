"""The robust (MAD) and stuck-value models on known series."""

from __future__ import annotations

import random

import pytest

from twinfleet.models import MadZScore, StuckValue, default_registry


def noisy(n: int, *, seed: int = 1, mean: float = 20.0, sd: float = 0.5) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


def test_mad_flags_a_spike_and_not_the_noise_around_it() -> None:
    model = MadZScore.create({})
    series = noisy(300)
    series[200] = 35.0
    verdicts = [model.update({"t": x}, float(i)) for i, x in enumerate(series)]
    flagged = [i for i, v in enumerate(verdicts) if v.anomalous]
    assert flagged == [200]
    assert verdicts[200].metric == "t"
    assert verdicts[200].score > 20
    assert all(v.score == 0.0 for v in verdicts[:20])  # warming up


def test_mad_keeps_its_window_through_state() -> None:
    model = MadZScore.create({"window": 10, "warmup": 5})
    for i, x in enumerate(noisy(30)):
        model.update({"t": x}, float(i))
    again = MadZScore.from_state(model.state())
    assert again.state() == model.state()
    assert len(model.state()["windows"]["t"]) == 10
    assert again.update({"t": 100.0}, 31.0) == model.update({"t": 100.0}, 31.0)


def test_stuck_flags_a_frozen_metric_and_not_a_slow_counter() -> None:
    model = StuckValue.create({})
    rng = random.Random(2)
    counter = 0.0
    flagged = []
    for i in range(400):
        if rng.random() < 0.3:
            counter += 1  # a counter that often stays put for a few readings
        value = 20.0 + rng.gauss(0, 0.3) if not 250 <= i < 280 else 21.5  # frozen 30 readings
        verdict = model.update({"t": value, "count": counter}, float(i))
        if verdict.anomalous:
            flagged.append((i, verdict.metric))
    assert flagged
    assert all(250 <= i < 280 and metric == "t" for i, metric in flagged)
    assert flagged[0][0] <= 250 + 6  # after ``repeats`` identical readings
    again = StuckValue.from_state(model.state())
    assert again.state() == model.state()


@pytest.mark.parametrize("name", ["combined", "ewma", "mad", "stuck"])
def test_unknown_parameters_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown"):
        default_registry(plugins=False).create(name, {"nope": 1})


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mad", {"window": 2}, "window must be at least 5"),
        ("mad", {"warmup": 100}, "warmup must lie between"),
        ("stuck", {"repeats": 1}, "repeats must be at least 2"),
        ("stuck", {"factor": 0.5}, "factor must be at least 1"),
    ],
)
def test_bad_parameter_values_are_refused(name: str, params: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        default_registry(plugins=False).create(name, params)


def test_combined_finds_both_a_spike_and_a_frozen_metric() -> None:
    model = default_registry(plugins=False).create("combined", {"stuck": {"repeats": 5}})
    series = noisy(300, seed=4)
    series[150] = 40.0  # a spike
    for i in range(220, 240):
        series[i] = 20.3  # frozen
    flagged = [i for i, x in enumerate(series) if model.update({"t": x}, float(i)).anomalous]
    assert flagged[0] == 150
    assert all(i == 150 or 220 <= i < 240 for i in flagged)
    assert any(224 <= i < 240 for i in flagged)
    again = default_registry(plugins=False).restore("combined", model.state())
    assert again.state() == model.state()
