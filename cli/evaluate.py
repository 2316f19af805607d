"""``twinfleet evaluate``: anomaly models against the simulator's labelled anomalies.

The simulator's five families are replayed in simulated time (no Ray, no network). The first
``train_hours`` are the training stretch: models that can be fitted are fitted on it (per family
by default, or per device), the others stream through it; the rest is scored, and
``models.evaluation`` turns each model's verdicts and the injected anomalies into precision,
recall and F1 per kind, per family and overall. A model can be evaluated with parameters, and
several times with different ones; a data scientist's plugin model installed in the environment
is evaluated beside the built-ins the same way.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twinfleet.adapters.simulator import SignalSimulator
from twinfleet.models import ModelRegistry, default_registry, is_trainable
from twinfleet.models.evaluation import (
    KINDS,
    Evaluation,
    Label,
    Observation,
    Scope,
    Scores,
    evaluate,
)
from twinfleet.twins import TwinfleetError

__all__ = ["EvaluationOptions", "ModelChoice", "run_evaluation"]

START = 1_800_000_000.0


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """A model to evaluate: its registered name and parameters (empty: the defaults)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model to evaluate needs a name")
        object.__setattr__(self, "params", dict(self.params))

    @classmethod
    def parse(cls, text: str) -> ModelChoice:
        """``NAME`` or ``NAME:{"json": "params"}`` (split on the first colon)."""
        name, colon, raw = text.partition(":")
        name = name.strip()
        if not colon:
            return cls(name)
        if not name:
            raise ValueError(f"--model {text!r}: the model's name comes before the colon")
        try:
            params = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"--model {text!r}: the parameters are not JSON ({err})") from None
        if not isinstance(params, dict):
            raise ValueError(
                f"--model {text!r}: the parameters must be a JSON object, like "
                f'{name}:{{"threshold": 8}}'
            )
        return cls(name, params)

    @property
    def label(self) -> str:
        """How the model is named in the tables and the JSON: the name, then any parameters."""
        if not self.params:
            return self.name
        return self.name + json.dumps(self.params, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class EvaluationOptions:
    """What to replay: how many devices, how long, how often they read, how many anomalies,
    how much of it trains the models (and whether per family or per device), which models."""

    devices: int = 50
    hours: float = 6.0
    interval_s: float = 10.0
    anomaly_rate: float = 0.002
    seed: int = 0
    train_hours: float = 1.0
    train_scope: Scope = "family"
    models: tuple[ModelChoice, ...] = ()  # empty: every model the registry knows, as made

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError("evaluate on at least one device")
        if self.hours <= 0 or self.interval_s <= 0:
            raise ValueError("hours and interval must be positive")
        if not 0.0 < self.anomaly_rate <= 0.1:
            raise ValueError("anomaly rate must lie in (0, 0.1]")
        if self.train_scope not in ("family", "twin"):
            raise ValueError(f"train scope {self.train_scope!r} is not family or twin")
        if not 0 <= self.train_hours < self.hours or self.train_rounds >= self.rounds:
            raise ValueError(
                f"the training stretch (--train-hours {self.train_hours:g}) must be shorter "
                f"than the replay (--hours {self.hours:g}) and not negative"
            )
        once: dict[str, ModelChoice] = {}
        for choice in self.models:
            once.setdefault(choice.label, choice)  # the same model and parameters once
        object.__setattr__(self, "models", tuple(once.values()))

    @property
    def rounds(self) -> int:
        """Readings per device."""
        return max(1, math.ceil(self.hours * 3600 / self.interval_s))

    @property
    def train_rounds(self) -> int:
        """Readings per device in the training stretch (not scored)."""
        return math.ceil(self.train_hours * 3600 / self.interval_s)

    @property
    def train_until(self) -> float:
        """When the scored stretch begins (simulated Unix time)."""
        return START + self.train_rounds * self.interval_s


def _observations(options: EvaluationOptions) -> tuple[list[Observation], list[Label]]:
    sim = SignalSimulator(
        options.devices, seed=options.seed, anomaly_rate=options.anomaly_rate, start=START
    )
    observations = []
    for r in range(options.rounds):
        now = START + r * options.interval_s
        for msg in sim.readings(len(sim), now=now):
            values = {
                k: float(v)
                for k, v in msg.payload.items()
                if type(v) in (int, float) and k != "ts" and math.isfinite(v)
            }
            observations.append(Observation(msg.device_id, sim.family(msg.device_id), now, values))
    labels = [Label(a.device_id, a.metric, a.kind, a.start, a.end) for a in sim.anomalies]
    return observations, labels


def _check(registry: ModelRegistry, choices: Sequence[ModelChoice]) -> None:
    """Unknown models and bad parameters fail before anything is replayed."""
    for choice in choices:
        registry.spec(choice.name)  # UnknownModel, naming the known ones
        try:
            registry.create(choice.name, choice.params)
        except TwinfleetError:
            raise
        except Exception as err:  # whatever a model (a plugin's too) raises on bad params
            raise ValueError(f"parameters of model {choice.label!r}: {err}") from None


def run_evaluation(
    options: EvaluationOptions,
    *,
    registry: ModelRegistry | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate the models; print a table per model and a summary; return JSON-ready figures."""
    registry = registry or default_registry()
    choices = options.models or tuple(ModelChoice(name) for name in registry)
    _check(registry, choices)
    console = console or Console()
    scored_hours = (options.rounds - options.train_rounds) * options.interval_s / 3600
    console.print(
        f"twinfleet evaluate: {options.devices} devices x {options.rounds} readings "
        f"({options.hours:g} h every {options.interval_s:g} s), "
        f"anomaly rate {options.anomaly_rate:g}; the first {options.train_hours:g} h train "
        f"(per {'device' if options.train_scope == 'twin' else 'family'}), "
        f"the last {scored_hours:g} h are scored"
    )
    observations, labels = _observations(options)
    train_until = options.train_until
    counted = [lb for lb in labels if lb.start >= train_until]
    result: dict[str, Any] = {
        "devices": options.devices,
        "readings": len(observations),
        "scored_readings": sum(1 for o in observations if o.ts >= train_until),
        "training": {
            "hours": options.train_hours,
            "scope": options.train_scope,
            "readings": sum(1 for o in observations if o.ts < train_until),
            "anomalies": len(labels) - len(counted),
        },
        "anomalies": {k: sum(1 for lb in counted if lb.kind == k) for k in KINDS},
        "models": {},
    }
    summary: dict[str, Evaluation] = {}
    for choice in choices:
        make = functools.partial(registry.create, choice.name, choice.params)
        evaluation = evaluate(
            make,
            observations,
            labels,
            interval_s=options.interval_s,
            train_until=train_until,
            scope=options.train_scope,
            pooled=registry.spec(choice.name).pooled,
            restore=functools.partial(registry.restore, choice.name),
        )
        overall = evaluation.overall()
        result["models"][choice.label] = {
            "name": choice.name,
            "params": dict(choice.params),
            "version": registry.spec(choice.name).version,
            "trained": is_trainable(make()),
            "fitted": evaluation.fitted,
            "unfitted": evaluation.unfitted,
            "overall": overall.as_dict(),
            "families": {f: s.as_dict() for f, s in sorted(evaluation.families.items())},
            "train_s": round(evaluation.train_s, 3),
            "score_s": round(evaluation.score_s, 3),
            "readings_per_s": round(overall.readings / max(evaluation.score_s, 1e-9)),
        }
        for where, reason in sorted(evaluation.unfitted.items()):
            console.print(f"[yellow]{escape(choice.label)} not fitted on {where}: {escape(reason)}")
        fitted = f"{evaluation.fitted} fitted, " if evaluation.fitted else ""
        console.print(
            f"model {escape(choice.label)}: {fitted}train {evaluation.train_s:.1f} s, "
            f"score {evaluation.score_s:.1f} s"
        )
        console.print(_table(evaluation, overall))
        summary[choice.label] = evaluation
    console.print(_summary(summary))
    return result


def _rows(overall: Scores, by_family: dict[str, Scores]) -> Iterator[tuple[str, Scores]]:
    yield "all families", overall
    yield from sorted(by_family.items())


def _table(evaluation: Evaluation, overall: Scores) -> Table:
    table = Table()
    table.add_column("family")
    table.add_column("precision", justify="right")
    for kind in KINDS:
        table.add_column(f"{kind} recall", justify="right")
        table.add_column(f"{kind} F1", justify="right")
    table.add_column("false alarms", justify="right")
    for family, scores in _rows(overall, evaluation.families):
        cells: Sequence[str] = [
            family,
            f"{scores.precision:.2f}",
            *(
                text
                for kind in KINDS
                for text in (
                    f"{scores.recall(kind):.2f} ({scores.found[kind]}/{scores.labelled[kind]})",
                    f"{scores.f1(kind):.2f}",
                )
            ),
            str(scores.false_alarms),
        ]
        table.add_row(*cells)
    return table


def _summary(evaluations: Mapping[str, Evaluation]) -> Table:
    table = Table(
        title="all models, all families: precision, F1 per kind, false alarms, seconds",
        title_justify="left",
    )
    table.add_column("model", overflow="fold", min_width=20)
    for header in ("prec.", *KINDS, "false", "train", "score"):
        table.add_column(header, justify="right")
    for label, evaluation in evaluations.items():
        overall = evaluation.overall()
        table.add_row(
            escape(label),
            f"{overall.precision:.2f}",
            *(f"{overall.f1(kind):.2f}" for kind in KINDS),
            str(overall.false_alarms),
            f"{evaluation.train_s:.1f}",
            f"{evaluation.score_s:.1f}",
        )
    return table
