"""Scoring anomaly models against labelled anomalies: precision, recall and F1 per kind.

Event-based, as operators see alarms: a labelled anomaly is *found* when the model calls a
reading of that device anomalous inside the anomaly's window (a spike: its reading or the next;
a drift: the first ``drift_horizon`` readings after the shift; a stuck value: while it lasts).
A run of consecutive anomalous readings is one alarm: it is a *false alarm* if it began outside
every window (a run that began on an anomaly and outlasts its window is still that anomaly's).
Recall is per kind (found / labelled); precision is per model and family (found / (found +
false alarms)), since a false alarm has no kind; F1 per kind combines the two.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .base import AnomalyModel

__all__ = ["Label", "Observation", "Scores", "evaluate"]

KINDS = ("spike", "drift", "stuck")


class Observation(NamedTuple):
    """One reading of one device: its family, time and numeric metrics."""

    device_id: str
    family: str
    ts: float
    values: Mapping[str, float]


class Label(NamedTuple):
    """A labelled anomaly: device, metric, kind (spike, drift, stuck), start and end times."""

    device_id: str
    metric: str
    kind: str
    start: float
    end: float


@dataclass
class Scores:
    """Counts and figures of one model on one family."""

    labelled: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    found: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    false_alarms: int = 0
    readings: int = 0

    @property
    def precision(self) -> float:
        """Found anomalies over everything the model raised."""
        found = sum(self.found.values())
        raised = found + self.false_alarms
        return found / raised if raised else 1.0

    def recall(self, kind: str) -> float:
        """Found over labelled anomalies of ``kind`` (1.0 when there were none)."""
        return self.found[kind] / self.labelled[kind] if self.labelled[kind] else 1.0

    def f1(self, kind: str) -> float:
        """Harmonic mean of the precision and the recall of ``kind``."""
        p, r = self.precision, self.recall(kind)
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, other: Scores) -> None:
        """Add another family's counts to these."""
        for kind in KINDS:
            self.labelled[kind] += other.labelled[kind]
            self.found[kind] += other.found[kind]
        self.false_alarms += other.false_alarms
        self.readings += other.readings

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "readings": self.readings,
            "false_alarms": self.false_alarms,
            "precision": round(self.precision, 4),
            **{
                kind: {
                    "labelled": self.labelled[kind],
                    "found": self.found[kind],
                    "recall": round(self.recall(kind), 4),
                    "f1": round(self.f1(kind), 4),
                }
                for kind in KINDS
            },
        }


def evaluate(
    make_model: Callable[[], AnomalyModel],
    observations: Iterable[Observation],
    labels: Sequence[Label],
    *,
    interval_s: float,
    drift_horizon: int = 20,
) -> dict[str, Scores]:
    """Run a fresh model per device over ``observations`` (time order) and score it by family.

    ``interval_s`` is the devices' reading interval: windows are stretched by one reading, and
    a drift window lasts ``drift_horizon`` readings.
    """
    windows: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for index, label in enumerate(labels):
        end = label.end
        if label.kind == "drift" or math.isinf(end):
            end = label.start + drift_horizon * interval_s
        windows[label.device_id].append((label.start, end + interval_s, index))
    found: set[int] = set()
    scores: dict[str, Scores] = defaultdict(Scores)
    models: dict[str, AnomalyModel] = {}
    raising: dict[str, bool] = {}  # device -> its last reading was a false alarm
    family_of: dict[str, str] = {}
    for device, family, ts, values in observations:
        family_of[device] = family
        model = models.get(device)
        if model is None:
            model = models[device] = make_model()
        score = scores[family]
        score.readings += 1
        if not values or not model.update(values, ts).anomalous:
            raising[device] = False
            continue
        hits = [i for start, end, i in windows.get(device, ()) if start <= ts <= end]
        if hits:
            found.update(hits)
        elif not raising.get(device):
            score.false_alarms += 1  # a run of alarms that began outside every window
        raising[device] = True  # later readings of this run continue the same alarm
    for index, label in enumerate(labels):
        of = family_of.get(label.device_id)
        if of is None or label.kind not in KINDS:
            continue
        scores[of].labelled[label.kind] += 1
        if index in found:
            scores[of].found[label.kind] += 1
    return dict(scores)
