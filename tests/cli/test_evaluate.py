"""``twinfleet evaluate`` in process: training before scoring, models with parameters, errors."""

from __future__ import annotations

import io
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from twinfleet.cli.cli import cli
from twinfleet.cli.evaluate import EvaluationOptions, ModelChoice, run_evaluation

# 5 devices (one per family), 30 min every 10 s: the first 15 min train, the rest is scored.
TINY = {"devices": 5, "hours": 0.5, "train_hours": 0.25, "anomaly_rate": 0.02, "seed": 1}


def _run(*models: str, **options: Any) -> dict[str, Any]:
    chosen = tuple(ModelChoice.parse(text) for text in models)
    out = io.StringIO()
    figures = run_evaluation(
        EvaluationOptions(**{**TINY, **options}, models=chosen), console=Console(file=out)
    )
    figures["printed"] = out.getvalue()
    return figures


def test_sklearn_is_fitted_on_the_training_stretch_before_scoring() -> None:
    trained = _run("sklearn")
    untrained = _run("sklearn", train_hours=0)
    assert trained["anomalies"]["spike"] > 0
    sklearn = trained["models"]["sklearn"]
    assert sklearn["fitted"] == 5  # one estimator per family
    assert sklearn["unfitted"] == {}
    assert sklearn["overall"]["spike"]["found"] > 0
    assert sklearn["overall"]["spike"]["f1"] > 0
    # unfitted, the model scores nothing at all
    assert untrained["models"]["sklearn"]["fitted"] == 0
    for kind in ("spike", "drift", "stuck"):
        assert untrained["models"]["sklearn"]["overall"][kind]["found"] == 0
    assert untrained["models"]["sklearn"]["overall"]["false_alarms"] == 0


def test_only_the_stretch_after_training_is_counted() -> None:
    figures = _run("ewma")
    assert figures["readings"] == 5 * 180
    assert figures["scored_readings"] == figures["training"]["readings"] == 5 * 90
    assert figures["models"]["ewma"]["overall"]["readings"] == 5 * 90
    everything = _run("ewma", train_hours=0)
    assert everything["scored_readings"] == 5 * 180
    counted = sum(figures["anomalies"].values())
    assert counted + figures["training"]["anomalies"] == sum(everything["anomalies"].values())
    assert figures["training"]["anomalies"] > 0
    for kind in ("spike", "drift", "stuck"):
        assert figures["models"]["ewma"]["overall"][kind]["labelled"] == figures["anomalies"][kind]


def test_one_model_with_two_sets_of_parameters_gives_two_rows() -> None:
    figures = _run("mad", 'mad:{"threshold": 8}', 'mad: {"threshold":8}')
    assert list(figures["models"]) == ["mad", 'mad{"threshold":8}']
    loose, strict = figures["models"]["mad"], figures["models"]['mad{"threshold":8}']
    assert strict["params"] == {"threshold": 8}
    assert strict["overall"]["false_alarms"] <= loose["overall"]["false_alarms"]
    assert 'mad{"threshold":8}' in figures["printed"]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("ewma", "ewma"),
        ('mad:{"threshold": 8}', 'mad{"threshold":8}'),
        (
            'sklearn:{"estimator": "lof", "min_history": 60}',
            'sklearn{"estimator":"lof","min_history":60}',
        ),
        ("sklearn:{}", "sklearn"),
    ],
)
def test_model_options_parse_into_name_params_and_label(text: str, label: str) -> None:
    assert ModelChoice.parse(text).label == label


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "mad:{threshold: 8}"], "the parameters are not JSON"),
        (["--model", "mad:[8]"], "the parameters must be a JSON object"),
        (["--model", ':{"threshold": 8}'], "the model's name comes before the colon"),
        (["--model", "nope"], "no anomaly model named 'nope' (known: combined, ewma"),
        (["--model", 'mad:{"nope": 1}'], "parameters of model 'mad{\"nope\":1}': unknown mad"),
        (["--model", 'ewma:{"threshold": -1}'], "threshold must be positive"),
        (["--model", 'sklearn:{"estimator": "forest"}'], "estimator 'forest' is neither"),
        (["--hours", "2", "--train-hours", "2"], "--train-hours 2) must be shorter than"),
        (["--hours", "1", "--train-hours", "3"], "--train-hours 3) must be shorter than"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--devices", "5", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
