"""Stuck values: a metric that stops changing for longer than it ever did before.

Per metric it keeps the last value, how many readings in a row repeated it, the longest such
run seen while the metric behaved, and how often it changed. A run longer than ``factor``
times the longest normal one (and at least ``repeats`` readings) is an anomaly; a metric that
never varied (a constant, a rarely moving counter while warming up) is not judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .base import ModelSpec, Reading, Verdict, parameters, replay

__all__ = ["STUCK_SPEC", "StuckParams", "StuckValue"]


@dataclass(frozen=True, slots=True)
class StuckParams:
    """Parameters of :class:`StuckValue`."""

    repeats: int = 6
    factor: float = 2.0
    min_changes: int = 10

    def __post_init__(self) -> None:
        if self.repeats < 2:
            raise ValueError("repeats must be at least 2")
        if self.factor < 1.0:
            raise ValueError("factor must be at least 1")
        if self.min_changes < 1:
            raise ValueError("min_changes must be at least 1")


class StuckValue:
    """Flags metrics repeating one value far longer than they used to."""

    name = "stuck"
    __slots__ = ("_params", "_stats")

    def __init__(self, params: StuckParams | None = None) -> None:
        self._params = params or StuckParams()
        # metric -> [last value, current run, longest normal run, changes seen]
        self._stats: dict[str, list[float]] = {}

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """Score each metric's current run against its longest normal one."""
        p = self._params
        best = 0.0
        best_metric: str | None = None
        for metric, x in values.items():
            st = self._stats.get(metric)
            if st is None:
                self._stats[metric] = [float(x), 1.0, 1.0, 0.0]
                continue
            limit = max(float(p.repeats), p.factor * st[2])
            if x == st[0]:
                st[1] += 1.0
            else:
                # A run that ended without being anomalous is how long this metric may rest.
                if st[3] < p.min_changes or st[1] <= limit:
                    st[2] = max(st[2], st[1])
                st[0] = float(x)
                st[1] = 1.0
                st[3] += 1.0
            if st[3] < p.min_changes:
                continue  # still learning how long its runs are
            score = st[1] / limit
            if score > best:
                best, best_metric = score, metric
        return Verdict(best, best > 1.0, best_metric)

    def fit(self, history: Sequence[Reading]) -> None:
        """Learn ``history`` (oldest first) from scratch, as if it had streamed in."""
        self._stats = {}
        replay(self, history)

    def state(self) -> dict[str, Any]:
        """Parameters and per-metric runs, JSON-ready."""
        state: dict[str, Any] = {"metrics": {k: list(v) for k, v in self._stats.items()}}
        if self._params != StuckParams():
            state["params"] = asdict(self._params)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> StuckValue:
        """Rebuild a model from :meth:`state`."""
        model = cls.create(state.get("params") or {})
        model._stats = {str(k): [float(x) for x in v] for k, v in state["metrics"].items()}
        return model

    @classmethod
    def create(cls, params: Mapping[str, Any]) -> StuckValue:
        """A fresh model with ``params``."""
        return cls(parameters(StuckParams, params, "stuck"))


STUCK_SPEC = ModelSpec(
    name=StuckValue.name,
    create=StuckValue.create,
    restore=StuckValue.from_state,
    description="a metric repeating one value far longer than it used to",
    params=asdict(StuckParams()),
)
