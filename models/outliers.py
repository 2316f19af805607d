"""Any scikit-learn outlier detector as a twin model, trained on a twin's or a family's history.

``IsolationForest``, ``LocalOutlierFactor(novelty=True)``, ``OneClassSVM``, ``EllipticEnvelope``
or any estimator with ``fit`` and ``decision_function`` (by its dotted name under
``sklearn``) is fitted on history (standardised first), then scores readings: the score is
``-decision_function`` (above 0: an outlier, scikit-learn's own cut). Until it is trained the
model scores 0 and flags nothing.

The fitted estimator is an artifact (:class:`ModelArtifacts`): twins trained together share one
object, their states only name it, and a host scores all of their readings in a batch with one
``decision_function`` call (a forest costs milliseconds per call, whatever the rows).
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .base import ModelArtifacts, ModelSpec, Reading, Verdict, parameters

__all__ = ["ESTIMATORS", "OutlierDetector", "OutlierParams", "outlier_spec"]

ESTIMATORS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "isolation_forest": (
        "sklearn.ensemble.IsolationForest",
        {"n_estimators": 100, "contamination": "auto", "random_state": 0},
    ),
    "lof": ("sklearn.neighbors.LocalOutlierFactor", {"novelty": True, "n_neighbors": 20}),
    "one_class_svm": ("sklearn.svm.OneClassSVM", {"nu": 0.01, "gamma": "scale"}),
    "elliptic_envelope": (
        "sklearn.covariance.EllipticEnvelope",
        {"contamination": 0.01, "random_state": 0},
    ),
}
"""Short names for common detectors, with defaults that suit sensor readings."""


@dataclass(frozen=True, slots=True)
class OutlierParams:
    """Parameters of :class:`OutlierDetector`.

    ``estimator``: a short name from :data:`ESTIMATORS` or a dotted class name under
    ``sklearn``; ``options`` its keyword arguments (over the short name's defaults);
    ``metrics``: the inputs (empty: the numeric metrics most readings of the history have,
    counters left out);
    ``min_history``: readings needed to train.
    """

    estimator: str = "isolation_forest"
    options: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = field(default_factory=tuple)
    min_history: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(str(m) for m in self.metrics))
        object.__setattr__(self, "options", dict(self.options))
        if self.estimator not in ESTIMATORS and not self.estimator.startswith("sklearn."):
            known = ", ".join(ESTIMATORS)
            raise ValueError(
                f"estimator {self.estimator!r} is neither {known} nor a sklearn.* class name"
            )
        if self.min_history < 2:
            raise ValueError("min_history must be at least 2")

    def make(self) -> Any:
        """A new, unfitted estimator."""
        path, defaults = ESTIMATORS.get(self.estimator, (self.estimator, {}))
        module_name, _, class_name = path.rpartition(".")
        try:
            kind = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            raise ValueError(f"no scikit-learn estimator {path!r}") from None
        estimator = kind(**{**defaults, **self.options})
        if not hasattr(estimator, "decision_function"):
            raise ValueError(f"{path} has no decision_function: not an outlier detector")
        return estimator


class OutlierDetector:
    """A fitted scikit-learn detector (shared through artifacts) scoring a twin's readings."""

    name = "sklearn"
    __slots__ = ("_artifacts", "_fitted", "_params", "_primed", "artifact", "batch_group", "inputs")

    def __init__(
        self,
        params: OutlierParams,
        artifacts: ModelArtifacts,
        *,
        artifact: str | None = None,
        inputs: tuple[str, ...] = (),
    ) -> None:
        self._params = params
        self._artifacts = artifacts
        self.artifact = artifact
        self.inputs = inputs or params.metrics
        self._fitted: Any = artifacts.get(artifact) if artifact is not None else None
        # Twins with the same fitted estimator are scored together.
        self.batch_group: Hashable | None = artifact
        self._primed: deque[tuple[tuple[float, ...], Verdict]] = deque()

    @property
    def trained(self) -> bool:
        """Whether the model has been fitted (it flags nothing before)."""
        return self._fitted is not None

    def _row(self, values: Mapping[str, float]) -> tuple[float, ...] | None:
        try:
            return tuple(float(values[m]) for m in self.inputs)
        except KeyError:
            return None

    def score_batch(self, readings: Sequence[Mapping[str, float]]) -> list[Verdict]:
        """Verdicts for many readings in one ``decision_function`` call."""
        rows = [self._row(values) for values in readings]
        complete = [row for row in rows if row is not None]
        if self._fitted is None or not complete:
            return [Verdict(0.0, False, None)] * len(readings)
        scores = iter(-self._fitted.decision_function(np.asarray(complete)))
        return [
            Verdict(0.0, False, None) if row is None else _verdict(float(next(scores)))
            for row in rows
        ]

    def prime(self, values: Mapping[str, float], verdict: Verdict) -> None:
        """Keep the verdict a batch gave ``values`` for their ``update``."""
        row = self._row(values)
        if row is not None:
            self._primed.append((row, verdict))

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """The verdict on ``values`` (primed by a batch, else scored alone); learns nothing."""
        row = self._row(values)
        if row is None or self._fitted is None:
            return Verdict(0.0, False, None)
        primed = self._primed
        while primed:
            seen, verdict = primed.popleft()
            if seen == row:
                return verdict
        return _verdict(float(-self._fitted.decision_function(np.asarray([row]))[0]))

    def fit(self, history: Sequence[Reading]) -> None:
        """Fit a new estimator (after standardising) on ``history``; saved as an artifact."""
        inputs = self._params.metrics or _common_metrics(history)
        if len(inputs) < 1:
            raise ValueError("the history has no numeric metric to learn from")
        rows = [
            [float(values[m]) for m in inputs]
            for _, values in history
            if all(m in values for m in inputs)
        ]
        if len(rows) < self._params.min_history:
            raise ValueError(
                f"{len(rows)} readings with {', '.join(inputs)}: "
                f"{self._params.min_history} needed to train"
            )
        # Imported here: scikit-learn takes 1.6 s to import, paid only where models train.
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        fitted = make_pipeline(StandardScaler(), self._params.make())
        fitted.fit(np.asarray(rows))
        self.inputs = inputs
        self._fitted = fitted
        self.artifact = self.batch_group = self._artifacts.put(fitted)
        self._primed.clear()

    def state(self) -> dict[str, Any]:
        """Parameters, inputs and the id of the fitted estimator (not the estimator)."""
        state: dict[str, Any] = {"params": _plain(self._params)}
        if self.artifact is not None:
            state["artifact"] = self.artifact
            state["inputs"] = list(self.inputs)
        return state


def _verdict(score: float) -> Verdict:
    return Verdict(score, score > 0.0, None)


def _plain(params: OutlierParams) -> dict[str, Any]:
    plain = asdict(params)
    plain["metrics"] = list(params.metrics)
    plain["options"] = dict(params.options)
    return plain


def _common_metrics(history: Sequence[Reading]) -> tuple[str, ...]:
    """The numeric metrics at least 90% of the readings carry, but counters, sorted.

    A counter (energy, cycles) only ever grows, so its level says how old a device is, not
    whether it is well: a detector trained on it flags every reading past the training
    period. Counters are told by their steps: (almost) none goes down. (History pooled over
    twins goes down once between two twins, hence "almost".)
    """
    counts: dict[str, int] = {}
    downs: dict[str, int] = {}
    last: dict[str, float] = {}
    for _, values in history:
        for metric, value in values.items():
            if type(value) in (int, float):
                counts[metric] = counts.get(metric, 0) + 1
                if metric in last and value < last[metric]:
                    downs[metric] = downs.get(metric, 0) + 1
                last[metric] = value
    cut = 0.9 * len(history)

    def counter(metric: str) -> bool:
        steps = counts[metric] - 1
        return steps >= 10 and downs.get(metric, 0) < 0.01 * steps

    return tuple(sorted(m for m, n in counts.items() if n >= cut and not counter(m)))


def outlier_spec(artifacts: ModelArtifacts) -> ModelSpec:
    """The ``sklearn`` model spec, keeping fitted estimators in ``artifacts``."""

    def create(params: Mapping[str, Any]) -> OutlierDetector:
        parsed = parameters(OutlierParams, params, "sklearn")
        parsed.make()  # an unknown estimator or bad options fail now, not at training
        return OutlierDetector(parsed, artifacts)

    def restore(state: Mapping[str, Any]) -> OutlierDetector:
        parsed = parameters(OutlierParams, state.get("params") or {}, "sklearn")
        return OutlierDetector(
            parsed,
            artifacts,
            artifact=state.get("artifact"),
            inputs=tuple(state.get("inputs") or ()),
        )

    return ModelSpec(
        name=OutlierDetector.name,
        create=create,
        restore=restore,
        description="a scikit-learn outlier detector (isolation_forest, lof, one_class_svm, "
        "elliptic_envelope or sklearn.*) trained on history",
        params=_plain(OutlierParams()),
        pooled=True,
    )
