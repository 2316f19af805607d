"""The built-in streaming model: an exponentially weighted mean and variance per metric.

A reading's score is its largest z-score across metrics, ``|x - mean| / std``, taken against the
statistics *before* the reading is learnt. Costs O(metrics) time and three numbers per metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .base import ModelSpec, Reading, Verdict, parameters, replay

__all__ = ["EWMA_SPEC", "EwmaParams", "EwmaZScore"]


@dataclass(frozen=True, slots=True)
class EwmaParams:
    """Parameters of :class:`EwmaZScore`."""

    alpha: float = 0.05
    threshold: float = 5.0
    warmup: int = 20
    min_std: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must lie strictly between 0 and 1")
        if self.threshold <= 0:
            raise ValueError("threshold must be positive")
        if self.warmup < 1:
            raise ValueError("warmup must be at least 1")
        if self.min_std <= 0:
            raise ValueError("min_std must be positive")

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> EwmaParams:
        """Parameters from a plain mapping, with a clear error for unknown names."""
        return parameters(cls, params, "ewma")


_DEFAULT_PARAMS = EwmaParams()


class EwmaZScore:
    """EWMA mean/variance z-score per metric (the model every twin gets by default)."""

    name = "ewma"
    __slots__ = ("_params", "_stats")

    def __init__(self, params: EwmaParams = _DEFAULT_PARAMS) -> None:
        self._params = params
        # metric -> [mean, variance, readings seen]; lists, as they are updated in place
        self._stats: dict[str, list[float]] = {}

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """Score ``values`` against the statistics so far, then fold them in."""
        alpha = self._params.alpha
        warmup = self._params.warmup
        min_std = self._params.min_std
        stats = self._stats
        best = 0.0
        best_metric: str | None = None
        for metric, x in values.items():
            st = stats.get(metric)
            if st is None:
                stats[metric] = [float(x), 0.0, 1.0]
                continue
            mean, var, seen = st
            diff = x - mean
            if seen >= warmup:
                std = math.sqrt(var)
                floor = min_std * (1.0 + abs(mean))
                z = abs(diff) / (std if std > floor else floor)
                if z > best:
                    best = z
                    best_metric = metric
            incr = alpha * diff
            st[0] = mean + incr
            st[1] = (1.0 - alpha) * (var + diff * incr)
            st[2] = seen + 1.0
        return Verdict(best, best > self._params.threshold, best_metric)

    def fit(self, history: Sequence[Reading]) -> None:
        """Learn ``history`` (oldest first) from scratch, as if it had streamed in."""
        self._stats = {}
        replay(self, history)

    def state(self) -> dict[str, Any]:
        """Parameters and per-metric statistics, JSON-ready."""
        state: dict[str, Any] = {"metrics": {k: list(v) for k, v in self._stats.items()}}
        if self._params != _DEFAULT_PARAMS:  # equal params are defaults, however made
            state["params"] = asdict(self._params)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EwmaZScore:
        """Rebuild a model from :meth:`state`."""
        model = cls(_params_of(state.get("params")))
        metrics = state.get("metrics", {})
        model._stats = {str(k): [float(x) for x in v] for k, v in metrics.items()}
        return model

    @classmethod
    def create(cls, params: Mapping[str, Any]) -> EwmaZScore:
        """A fresh model with ``params``."""
        return cls(_params_of(params))


def _params_of(params: Mapping[str, Any] | None) -> EwmaParams:
    if not params:
        return _DEFAULT_PARAMS
    parsed = EwmaParams.from_mapping(params)
    return _DEFAULT_PARAMS if parsed == _DEFAULT_PARAMS else parsed


EWMA_SPEC = ModelSpec(
    name=EwmaZScore.name,
    create=EwmaZScore.create,
    restore=EwmaZScore.from_state,
    description="EWMA mean/variance z-score per metric",
    params=asdict(_DEFAULT_PARAMS),
)
