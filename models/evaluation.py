"""Scoring anomaly models against labelled anomalies: precision, recall and F1 per kind.

Event-based, as operators see alarms: a labelled anomaly is *found* when the model calls a
reading of that device anomalous inside the anomaly's window (a spike: its reading or the next;
a drift: the first ``drift_horizon`` readings after the shift; a stuck value: while it lasts).
A run of consecutive anomalous readings is one alarm: it is a *false alarm* if it began outside
every window (a run that began on an anomaly and outlasts its window is still that anomaly's).
Recall is per kind (found / labelled); precision is per model and family (found / (found +
false alarms)), since a false alarm has no kind; F1 per kind combines the two.

History before ``train_until`` is the *training stretch*, never scored: a model that can be
fitted (:class:`TrainableModel`) is fitted on it first, the way the runtime's training jobs do
(one model per family on all its devices' readings, each device then restoring that model's
state; or, ``scope="twin"``, each device on its own readings); other models stream through it.
Only readings, alarms and labelled anomalies from ``train_until`` on are counted (an alarm
inside the window of an anomaly that began during training is that anomaly's, not a false
alarm). Each round of readings (one timestep) is batch-scored with :func:`prescore` before the
models' updates, as a host scores a batch.
"""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any, Literal, NamedTuple

from .base import AnomalyModel, Reading, TrainableModel, is_trainable, prescore

__all__ = ["Evaluation", "Label", "Observation", "Scope", "Scores", "evaluate"]

Scope = Literal["family", "twin"]
"""What a trainable model is fitted on: its family's readings, or its own device's."""

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


@dataclass
class Evaluation:
    """What one model scored, per family, and how its training went."""

    families: dict[str, Scores]
    fitted: int = 0  # models fitted: one per family, or one per device
    unfitted: dict[str, str] = field(default_factory=dict)  # family or device -> why not
    train_s: float = 0.0  # fitting, or streaming through the training stretch
    score_s: float = 0.0

    def overall(self) -> Scores:
        """The families' counts added up."""
        total = Scores()
        for scores in self.families.values():
            total.add(scores)
        return total


def evaluate(
    make_model: Callable[[], AnomalyModel],
    observations: Iterable[Observation],
    labels: Sequence[Label],
    *,
    interval_s: float,
    drift_horizon: int = 20,
    train_until: float = -math.inf,
    scope: Scope = "family",
    pooled: bool = True,
    restore: Callable[[Mapping[str, Any]], AnomalyModel] | None = None,
) -> Evaluation:
    """Train and run a model per device over ``observations`` (time order); score by family.

    ``interval_s`` is the devices' reading interval: windows are stretched by one reading, and
    a drift window lasts ``drift_horizon`` readings. Readings before ``train_until`` train the
    models (see the module's docstring); ``restore`` rebuilds a family's fitted model for each
    of its devices from its state (default: a deep copy). As the runtime trains a family, a
    model that is not ``pooled`` (its spec says) is fitted on each device's own readings.
    """
    history: list[Observation] = []
    scored: list[Observation] = []
    for observation in observations:
        (history if observation.ts < train_until else scored).append(observation)
    started = time.perf_counter()
    per_family = scope == "family" and pooled
    models, fitted, unfitted = _train(
        make_model, history, scope="family" if per_family else "twin", restore=restore
    )
    trained = time.perf_counter()
    scores = _score(
        make_model,
        models,
        scored,
        labels,
        interval_s=interval_s,
        drift_horizon=drift_horizon,
        since=train_until,
    )
    return Evaluation(
        scores,
        fitted=fitted,
        unfitted=unfitted,
        train_s=trained - started,
        score_s=time.perf_counter() - trained,
    )


def _train(
    make_model: Callable[[], AnomalyModel],
    history: Sequence[Observation],
    *,
    scope: Scope,
    restore: Callable[[Mapping[str, Any]], AnomalyModel] | None,
) -> tuple[dict[str, AnomalyModel], int, dict[str, str]]:
    """A model per device of ``history``: fitted on it, or having streamed through it."""
    models: dict[str, AnomalyModel] = {}
    if not history:
        return models, 0, {}
    if not is_trainable(make_model()):
        for device, _, ts, values in history:
            model = models.get(device)
            if model is None:
                model = models[device] = make_model()
            if values:
                model.update(values, ts)
        return models, 0, {}
    readings: dict[str, list[Reading]] = {}
    devices: dict[str, list[str]] = defaultdict(list)  # family -> its devices
    for device, family, ts, values in history:
        own = readings.get(device)
        if own is None:
            own = readings[device] = []
            devices[family].append(device)
        if values:
            own.append((ts, values))
    fitted = 0
    unfitted: dict[str, str] = {}
    groups = (
        {family: sorted(members) for family, members in devices.items()}
        if scope == "family"
        else {device: [device] for device in sorted(readings)}
    )
    for group, members in groups.items():
        model = make_model()
        assert isinstance(model, TrainableModel)
        try:
            # concatenated device by device, as the runtime's family-wide training does
            model.fit([reading for member in members for reading in readings[member]])
        except ValueError as err:  # too little history, say: this group stays untrained
            unfitted[group] = str(err)
            continue
        fitted += 1
        if scope == "twin":
            models[group] = model
            continue
        state = model.state()
        for member in members:
            models[member] = restore(state) if restore is not None else copy.deepcopy(model)
    return models, fitted, unfitted


def _score(
    make_model: Callable[[], AnomalyModel],
    models: dict[str, AnomalyModel],
    observations: Sequence[Observation],
    labels: Sequence[Label],
    *,
    interval_s: float,
    drift_horizon: int,
    since: float,
) -> dict[str, Scores]:
    """Event-based scores of ``models`` (made as devices appear) on ``observations``."""
    windows: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for index, label in enumerate(labels):
        end = label.end
        if label.kind == "drift" or math.isinf(end):
            end = label.start + drift_horizon * interval_s
        windows[label.device_id].append((label.start, end + interval_s, index))
    found: set[int] = set()
    scores: dict[str, Scores] = defaultdict(Scores)
    raising: dict[str, bool] = {}  # device -> its last reading was a false alarm
    family_of: dict[str, str] = {}
    for batch in _rounds(observations):
        pending: list[tuple[AnomalyModel, Observation]] = []
        for observation in batch:
            device = observation.device_id
            family_of[device] = observation.family
            scores[observation.family].readings += 1
            model = models.get(device)
            if model is None:
                model = models[device] = make_model()
            if observation.values:
                pending.append((model, observation))
            else:
                raising[device] = False
        prescore([(model, observation.values) for model, observation in pending])
        for model, (device, family, ts, values) in pending:
            if not model.update(values, ts).anomalous:
                raising[device] = False
                continue
            hits = [i for start, end, i in windows.get(device, ()) if start <= ts <= end]
            if hits:
                found.update(hits)
            elif not raising.get(device):
                scores[family].false_alarms += 1  # a run of alarms that began outside windows
            raising[device] = True  # later readings of this run continue the same alarm
    for index, label in enumerate(labels):
        of = family_of.get(label.device_id)
        if of is None or label.kind not in KINDS or label.start < since:
            continue  # anomalies that began in the training stretch are not counted
        scores[of].labelled[label.kind] += 1
        if index in found:
            scores[of].found[label.kind] += 1
    return dict(scores)


def _rounds(observations: Sequence[Observation]) -> Iterator[list[Observation]]:
    """Consecutive observations of one timestep: what a host would score in one batch."""
    for _, batch in groupby(observations, key=attrgetter("ts")):
        yield list(batch)
