"""``twinfleet evaluate``: every anomaly model against the simulator's labelled anomalies.

The simulator's five families are replayed in simulated time (no Ray, no network): each model
scores every device's readings, and ``models.evaluation`` turns its verdicts and the injected
anomalies into precision, recall and F1 per kind, per family and overall. A data scientist's
plugin model installed in the environment is evaluated beside the built-ins the same way.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from twinfleet.adapters.simulator import FleetSimulator
from twinfleet.models import ModelRegistry, default_registry
from twinfleet.models.evaluation import KINDS, Label, Observation, Scores, evaluate

__all__ = ["EvaluationOptions", "run_evaluation"]

START = 1_800_000_000.0


@dataclass(frozen=True, slots=True)
class EvaluationOptions:
    """What to replay: how many devices, how long, how often they read, how many anomalies."""

    devices: int = 50
    hours: float = 6.0
    interval_s: float = 10.0
    anomaly_rate: float = 0.002
    seed: int = 0
    models: tuple[str, ...] = ()  # empty: every model the registry knows

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError("evaluate on at least one device")
        if self.hours <= 0 or self.interval_s <= 0:
            raise ValueError("hours and interval must be positive")
        if not 0.0 < self.anomaly_rate <= 0.1:
            raise ValueError("anomaly rate must lie in (0, 0.1]")

    @property
    def rounds(self) -> int:
        """Readings per device."""
        return max(1, math.ceil(self.hours * 3600 / self.interval_s))


def _observations(options: EvaluationOptions) -> tuple[list[Observation], list[Label]]:
    sim = FleetSimulator(
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


def run_evaluation(
    options: EvaluationOptions,
    *,
    registry: ModelRegistry | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate the models; print a table per model; return the figures as JSON-ready data."""
    registry = registry or default_registry()
    names = options.models or tuple(registry)
    for name in names:
        registry.spec(name)  # UnknownModel now, naming the known ones
    console = console or Console()
    console.print(
        f"twinfleet evaluate: {options.devices} devices x {options.rounds} readings "
        f"({options.hours:g} h every {options.interval_s:g} s), "
        f"anomaly rate {options.anomaly_rate:g}"
    )
    observations, labels = _observations(options)
    result: dict[str, Any] = {
        "devices": options.devices,
        "readings": len(observations),
        "anomalies": {k: sum(1 for lb in labels if lb.kind == k) for k in KINDS},
        "models": {},
    }
    for name in names:
        started = time.perf_counter()
        by_family = evaluate(
            functools.partial(registry.create, name),
            observations,
            labels,
            interval_s=options.interval_s,
        )
        elapsed = time.perf_counter() - started
        overall = Scores()
        for scores in by_family.values():
            overall.add(scores)
        result["models"][name] = {
            "version": registry.spec(name).version,
            "overall": overall.as_dict(),
            "families": {f: s.as_dict() for f, s in sorted(by_family.items())},
            "readings_per_s": round(len(observations) / elapsed),
        }
        console.print(_table(name, overall, by_family))
    return result


def _rows(overall: Scores, by_family: dict[str, Scores]) -> Iterator[tuple[str, Scores]]:
    yield "all families", overall
    yield from sorted(by_family.items())


def _table(name: str, overall: Scores, by_family: dict[str, Scores]) -> Table:
    table = Table(title=f"model {name}", title_justify="left")
    table.add_column("family")
    table.add_column("precision", justify="right")
    for kind in KINDS:
        table.add_column(f"{kind} recall", justify="right")
        table.add_column(f"{kind} F1", justify="right")
    table.add_column("false alarms", justify="right")
    for family, scores in _rows(overall, by_family):
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
