"""The EWMA z-score model: its math against a closed-form reference, warmup, state, params."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import orjson
import pytest

from twinfleet.models import AnomalyModel, EwmaParams, EwmaZScore, Verdict


def reference_scores(
    xs: Sequence[float], *, alpha: float, warmup: int, min_std: float
) -> list[float]:
    """Scores from the closed form of the EWMA, independent of the model's recurrence.

    After readings x_0..x_n, the mean and variance are weighted with w_0 = (1 - alpha)^n and
    w_k = alpha (1 - alpha)^(n - k): mean = sum w_k x_k, var = sum w_k (x_k - mean)^2.
    Reading n is scored against the statistics of x_0..x_(n-1), once warmup readings are in.
    """
    data = np.asarray(xs, dtype=float)
    scores = [0.0]
    for n in range(1, len(data)):
        if n < warmup:
            scores.append(0.0)
            continue
        seen = data[:n]
        last = n - 1
        weights = alpha * (1 - alpha) ** (last - np.arange(n))
        weights[0] = (1 - alpha) ** last
        mean = float(np.sum(weights * seen))
        std = math.sqrt(float(np.sum(weights * (seen - mean) ** 2)))
        scores.append(abs(data[n] - mean) / max(std, min_std * (1 + abs(mean))))
    return scores


def feed(model: EwmaZScore, xs: Sequence[float], metric: str = "t") -> list[Verdict]:
    return [model.update({metric: float(x)}, float(i)) for i, x in enumerate(xs)]


@pytest.mark.parametrize(
    ("alpha", "warmup", "min_std"), [(0.05, 20, 1e-3), (0.3, 1, 1e-3), (0.5, 5, 0.5)]
)
def test_scores_match_closed_form_reference(alpha: float, warmup: int, min_std: float) -> None:
    rng = np.random.default_rng(42)
    xs = np.concatenate([rng.normal(10.0, 2.0, 80), [40.0], rng.normal(10.0, 2.0, 20)])
    model = EwmaZScore(EwmaParams(alpha=alpha, warmup=warmup, min_std=min_std))

    scores = [v.score for v in feed(model, xs)]

    assert scores == pytest.approx(
        reference_scores(xs, alpha=alpha, warmup=warmup, min_std=min_std)
    )


def test_final_statistics_match_closed_form_mean_and_variance() -> None:
    alpha = 0.1
    xs = np.random.default_rng(0).normal(5.0, 2.0, 50)
    model = EwmaZScore(EwmaParams(alpha=alpha))
    feed(model, xs)

    n = len(xs) - 1
    weights = alpha * (1 - alpha) ** (n - np.arange(n + 1))
    weights[0] = (1 - alpha) ** n
    mean = float(np.sum(weights * xs))
    var = float(np.sum(weights * (xs - mean) ** 2))
    stored_mean, stored_var, seen = model.state()["metrics"]["t"]
    assert stored_mean == pytest.approx(mean)
    assert stored_var == pytest.approx(var)
    assert seen == len(xs)


def test_first_reading_scores_zero() -> None:
    assert EwmaZScore().update({"t": 1e6}, 0.0) == Verdict(0.0, False, None)


def test_no_reading_is_scored_during_warmup() -> None:
    model = EwmaZScore(EwmaParams(warmup=5))
    verdicts = feed(model, [1.0, 1000.0, -1000.0, 5.0, 1e6])
    assert all(v == Verdict(0.0, False, None) for v in verdicts)
    assert model.update({"t": 1e9}, 5.0).anomalous is True  # the sixth reading is scored


def test_reading_is_scored_before_it_is_learnt() -> None:
    model = EwmaZScore(EwmaParams(warmup=3))
    feed(model, [10.0, 10.0, 10.0])
    # std is 0, so the floor min_std * (1 + |mean|) = 0.011 applies
    verdict = model.update({"t": 10.5}, 3.0)
    assert verdict.score == pytest.approx(0.5 / 0.011)
    assert verdict.anomalous is True
    assert verdict.metric == "t"


def test_threshold_is_strict() -> None:
    model = EwmaZScore(EwmaParams(warmup=1, threshold=2.0, min_std=1.0))
    model.update({"t": 0.0}, 0.0)
    verdict = model.update({"t": 2.0}, 1.0)  # std 0, floor 1.0: z == 2.0 exactly
    assert verdict.score == 2.0
    assert verdict.anomalous is False


def test_score_is_the_worst_metric() -> None:
    model = EwmaZScore(EwmaParams(warmup=2))
    for i in range(2):
        model.update({"a": 1.0, "b": 1.0}, float(i))
    verdict = model.update({"a": 1.001, "b": 2.0}, 2.0)
    assert verdict.metric == "b"
    assert verdict.score == pytest.approx(1.0 / (1e-3 * 2.0))


def test_metric_seen_later_warms_up_on_its_own() -> None:
    model = EwmaZScore(EwmaParams(warmup=3))
    feed(model, [1.0, 1.0, 1.0, 1.0], metric="a")
    verdicts = [model.update({"a": 1.0, "b": x}, 10.0 + i) for i, x in enumerate([5.0, 500.0])]
    assert [v.score for v in verdicts] == [0.0, 0.0]


def test_steady_noisy_signal_is_never_anomalous() -> None:
    rng = np.random.default_rng(7)
    model = EwmaZScore()
    verdicts = feed(model, 20.0 + rng.uniform(-0.5, 0.5, 1000))
    assert not any(v.anomalous for v in verdicts)


def test_state_is_json_ready() -> None:
    model = EwmaZScore()
    feed(model, [1.0, 2.0, 3.0])
    state = model.state()
    assert orjson.loads(orjson.dumps(state)) == state


def test_state_omits_default_params_and_keeps_custom_ones() -> None:
    assert "params" not in EwmaZScore().state()
    assert "params" not in EwmaZScore(EwmaParams()).state()  # equal to the defaults
    params = EwmaParams(alpha=0.2, threshold=3.0, warmup=4, min_std=0.01)
    assert EwmaZScore(params).state()["params"] == {
        "alpha": 0.2,
        "threshold": 3.0,
        "warmup": 4,
        "min_std": 0.01,
    }


@pytest.mark.parametrize("params", [EwmaParams(), EwmaParams(alpha=0.3, warmup=3, threshold=2.5)])
def test_restored_model_scores_identically(params: EwmaParams) -> None:
    rng = np.random.default_rng(3)
    first, second = rng.normal(0.0, 1.0, 60), np.concatenate([rng.normal(0.0, 1.0, 30), [9.0]])
    model = EwmaZScore(params)
    feed(model, first)

    restored = EwmaZScore.from_state(orjson.loads(orjson.dumps(model.state())))

    assert restored.state() == model.state()
    assert feed(restored, second) == feed(model, second)


def test_from_state_of_an_empty_state_is_a_fresh_default_model() -> None:
    model = EwmaZScore.from_state({})
    assert model.state() == {"metrics": {}}


def test_create_with_no_params_uses_defaults() -> None:
    assert EwmaZScore.create({}).state() == EwmaZScore().state()


def test_create_with_params_uses_them() -> None:
    model = EwmaZScore.create({"warmup": 1, "threshold": 1.5})
    assert model.state()["params"]["warmup"] == 1
    model.update({"t": 0.0}, 0.0)
    assert model.update({"t": 1.0}, 1.0).score > 0  # scored from the second reading


def test_create_with_params_equal_to_defaults_saves_no_params() -> None:
    assert "params" not in EwmaZScore.create({"alpha": 0.05}).state()


def test_create_rejects_unknown_params() -> None:
    with pytest.raises(ValueError, match="unknown ewma parameters: beta, gamma"):
        EwmaZScore.create({"alpha": 0.1, "gamma": 1, "beta": 2})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": 0.0}, "alpha must lie strictly between 0 and 1"),
        ({"alpha": 1.0}, "alpha must lie strictly between 0 and 1"),
        ({"alpha": -0.1}, "alpha must lie strictly between 0 and 1"),
        ({"alpha": 1.5}, "alpha must lie strictly between 0 and 1"),
        ({"threshold": 0.0}, "threshold must be positive"),
        ({"threshold": -1.0}, "threshold must be positive"),
        ({"warmup": 0}, "warmup must be at least 1"),
        ({"min_std": 0.0}, "min_std must be positive"),
        ({"min_std": -1e-3}, "min_std must be positive"),
    ],
)
def test_params_are_validated(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EwmaParams(**params)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        EwmaZScore.create(params)


def test_params_are_frozen() -> None:
    params = EwmaParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.alpha = 0.5  # type: ignore[misc]


def test_ewma_fits_the_anomaly_model_protocol() -> None:
    model = EwmaZScore()
    assert isinstance(model, AnomalyModel)
    assert model.name == "ewma"


def test_verdict_metric_defaults_to_none() -> None:
    assert Verdict(1.0, False) == (1.0, False, None)
