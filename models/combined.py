"""EWMA z-scores and stuck values in one model: spikes, level shifts and frozen sensors.

A reading is anomalous when either part says so; the score is the larger of the two, each
scaled so that 1.0 sits on its own threshold. Each part learns as it would alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import ModelSpec, Reading, Verdict
from .ewma import EwmaZScore
from .stuck import StuckValue

__all__ = ["COMBINED_SPEC", "Combined"]


class Combined:
    """``ewma`` and ``stuck`` side by side; parameters ``{"ewma": {...}, "stuck": {...}}``."""

    name = "combined"
    __slots__ = ("_ewma", "_ewma_threshold", "_stuck")

    def __init__(self, ewma: EwmaZScore, stuck: StuckValue) -> None:
        self._ewma = ewma
        self._stuck = stuck
        self._ewma_threshold = float(ewma.state().get("params", {}).get("threshold", 5.0))

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """Both parts score and learn; the more severe verdict (relative to its threshold) wins."""
        z = self._ewma.update(values, ts)
        stuck = self._stuck.update(values, ts)
        z_scaled = z.score / self._ewma_threshold
        if stuck.anomalous and (not z.anomalous or stuck.score > z_scaled):
            return Verdict(stuck.score, True, stuck.metric)
        return Verdict(max(z_scaled, stuck.score), z.anomalous, z.metric or stuck.metric)

    def fit(self, history: Sequence[Reading]) -> None:
        """Fit both parts on ``history``."""
        self._ewma.fit(history)
        self._stuck.fit(history)

    def state(self) -> dict[str, Any]:
        """Both parts' states."""
        return {"ewma": self._ewma.state(), "stuck": self._stuck.state()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Combined:
        """Rebuild a model from :meth:`state`."""
        return cls(EwmaZScore.from_state(state["ewma"]), StuckValue.from_state(state["stuck"]))

    @classmethod
    def create(cls, params: Mapping[str, Any]) -> Combined:
        """A fresh model; ``params`` holds each part's parameters under its name."""
        unknown = set(params) - {"ewma", "stuck"}
        if unknown:
            raise ValueError(f"unknown combined parameters: {', '.join(sorted(unknown))}")
        return cls(
            EwmaZScore.create(params.get("ewma") or {}),
            StuckValue.create(params.get("stuck") or {}),
        )


COMBINED_SPEC = ModelSpec(
    name=Combined.name,
    create=Combined.create,
    restore=Combined.from_state,
    description="ewma and stuck together: spikes, level shifts and frozen sensors",
    params={"ewma": {}, "stuck": {}},
)
