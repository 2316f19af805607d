"""A multivariate detector: Mahalanobis distance under an exponentially weighted covariance.

For families whose metrics move together (a motor's current and temperature, a meter's power
and current): a reading whose metrics are each ordinary but whose *combination* breaks the
usual relation lies far away in Mahalanobis distance while every per-metric z-score stays
small. The model keeps an EWMA mean vector and covariance matrix over its metrics and scores a
reading against them before learning it. Costs O(k^3) for k metrics per reading (k is small).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .base import ModelSpec, Reading, Verdict, parameters

__all__ = ["MAHALANOBIS_SPEC", "Mahalanobis", "MahalanobisParams"]


@dataclass(frozen=True, slots=True)
class MahalanobisParams:
    """Parameters of :class:`Mahalanobis`.

    ``metrics``: the metrics read together (empty: the numeric metrics of the first reading,
    at least two). ``threshold`` is a distance in standard deviations along the data's own axes.
    """

    metrics: tuple[str, ...] = field(default_factory=tuple)
    alpha: float = 0.02
    threshold: float = 6.0
    warmup: int = 30
    ridge: float = 1e-3

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(str(m) for m in self.metrics))
        if self.metrics and len(self.metrics) < 2:
            raise ValueError("a multivariate model needs at least two metrics")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("metrics must not repeat")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must lie strictly between 0 and 1")
        if self.threshold <= 0 or self.ridge <= 0:
            raise ValueError("threshold and ridge must be positive")
        if self.warmup < 2:
            raise ValueError("warmup must be at least 2")


_DEFAULTS = MahalanobisParams()


class Mahalanobis:
    """EWMA mean and covariance over several metrics; the score is the Mahalanobis distance."""

    name = "mahalanobis"
    __slots__ = ("_cov", "_mean", "_metrics", "_params", "_seen")

    def __init__(self, params: MahalanobisParams = _DEFAULTS) -> None:
        self._params = params
        self._metrics: tuple[str, ...] = params.metrics
        self._mean: np.ndarray | None = None
        self._cov: np.ndarray | None = None
        self._seen = 0

    def _vector(self, values: Mapping[str, float]) -> np.ndarray | None:
        if not self._metrics:
            numeric = sorted(k for k, v in values.items() if type(v) in (int, float))
            if len(numeric) < 2:
                return None
            self._metrics = tuple(numeric)
        try:
            return np.array([values[m] for m in self._metrics], dtype=np.float64)
        except KeyError:
            return None  # a reading without all the metrics says nothing of their relation

    def distance(self, x: np.ndarray) -> tuple[float, int]:
        """Mahalanobis distance of ``x`` from the mean, and the metric that moved most."""
        assert self._mean is not None
        assert self._cov is not None
        diff = x - self._mean
        scale = np.diag(self._cov).copy()
        floor = self._params.ridge * (1.0 + np.abs(self._mean))
        np.maximum(scale, floor * floor, out=scale)
        cov = self._cov + np.diag(scale * self._params.ridge)
        try:
            solved = np.linalg.solve(cov, diff)
        except np.linalg.LinAlgError:
            solved = np.linalg.lstsq(cov, diff, rcond=None)[0]
        d2 = float(diff @ solved)
        return math.sqrt(max(d2, 0.0)), int(np.argmax(np.abs(diff * solved)))

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """Score the reading against the mean and covariance so far, then fold it in."""
        x = self._vector(values)
        if x is None:
            return Verdict(0.0, False, None)
        if self._mean is None or self._cov is None:
            self._mean = x
            self._cov = np.zeros((x.size, x.size))
            self._seen = 1
            return Verdict(0.0, False, None)
        score, worst = (0.0, 0)
        if self._seen >= self._params.warmup:
            score, worst = self.distance(x)
        alpha = self._params.alpha
        diff = x - self._mean
        self._mean = self._mean + alpha * diff
        self._cov = (1.0 - alpha) * (self._cov + alpha * np.outer(diff, diff))
        self._seen += 1
        anomalous = score > self._params.threshold
        return Verdict(score, anomalous, self._metrics[worst] if score > 0 else None)

    def fit(self, history: Sequence[Reading]) -> None:
        """Mean and covariance of ``history`` (readings with every metric), from scratch."""
        self._metrics = self._params.metrics
        rows = [v for v in (self._vector(values) for _, values in history) if v is not None]
        if len(rows) < 2:
            self._mean = self._cov = None
            self._seen = 0
            return
        data = np.vstack(rows)
        self._mean = data.mean(axis=0)
        self._cov = np.atleast_2d(np.cov(data, rowvar=False))
        self._seen = len(rows)

    def state(self) -> dict[str, Any]:
        """Parameters, metrics, mean and covariance, JSON-ready."""
        state: dict[str, Any] = {"metrics": list(self._metrics), "seen": self._seen}
        if self._mean is not None and self._cov is not None:
            state["mean"] = self._mean.tolist()
            state["cov"] = self._cov.tolist()
        if self._params != _DEFAULTS:
            state["params"] = asdict(self._params)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Mahalanobis:
        """Rebuild a model from :meth:`state`."""
        model = cls.create(state.get("params") or {})
        model._metrics = tuple(str(m) for m in state.get("metrics", ()))
        model._seen = int(state.get("seen", 0))
        if "mean" in state:
            model._mean = np.asarray(state["mean"], dtype=np.float64)
            model._cov = np.asarray(state["cov"], dtype=np.float64)
        return model

    @classmethod
    def create(cls, params: Mapping[str, Any]) -> Mahalanobis:
        """A fresh model with ``params``."""
        if not params:
            return cls()
        parsed = parameters(MahalanobisParams, params, "mahalanobis")
        return cls(_DEFAULTS if parsed == _DEFAULTS else parsed)


MAHALANOBIS_SPEC = ModelSpec(
    name=Mahalanobis.name,
    create=Mahalanobis.create,
    restore=Mahalanobis.from_state,
    description="Mahalanobis distance under an EWMA covariance (correlated metrics)",
    params={**asdict(_DEFAULTS), "metrics": []},
)
