"""A spread model and stuck values in one: spikes, level shifts and frozen sensors.

The spread part is ``ewma`` (per-metric z-scores, the default) or ``mahalanobis`` (distance
under the metrics' covariance: better where metrics move together or sit far from zero, such
as GPS coordinates). A reading is anomalous when either part says so; the score is the larger
of the two, each scaled so that 1.0 sits on its own threshold. Each part learns as it would
alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import ModelSpec, Reading, Verdict
from .ewma import EwmaZScore
from .multivariate import Mahalanobis
from .stuck import StuckValue

__all__ = ["COMBINED_SPEC", "Combined"]

_SPREADS: Mapping[str, type[EwmaZScore] | type[Mahalanobis]] = {
    "ewma": EwmaZScore,
    "mahalanobis": Mahalanobis,
}
_DEFAULT_THRESHOLDS = {"ewma": 5.0, "mahalanobis": 6.0}


class Combined:
    """A spread part and ``stuck`` side by side.

    Parameters ``{"spread": "ewma"|"mahalanobis", "<spread>": {...}, "stuck": {...}}``.
    """

    name = "combined"
    __slots__ = ("_spread", "_spread_name", "_stuck", "_threshold")

    def __init__(self, spread: EwmaZScore | Mahalanobis, stuck: StuckValue) -> None:
        self._spread = spread
        self._spread_name = spread.name
        self._stuck = stuck
        default = _DEFAULT_THRESHOLDS[spread.name]
        self._threshold = float(spread.state().get("params", {}).get("threshold", default))

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """Both parts score and learn; the more severe verdict (relative to its threshold) wins."""
        z = self._spread.update(values, ts)
        stuck = self._stuck.update(values, ts)
        z_scaled = z.score / self._threshold
        if stuck.anomalous and (not z.anomalous or stuck.score > z_scaled):
            return Verdict(stuck.score, True, stuck.metric)
        return Verdict(max(z_scaled, stuck.score), z.anomalous, z.metric or stuck.metric)

    def fit(self, history: Sequence[Reading]) -> None:
        """Fit both parts on ``history``."""
        self._spread.fit(history)
        self._stuck.fit(history)

    def state(self) -> dict[str, Any]:
        """Both parts' states (and which spread part, when not ``ewma``)."""
        state: dict[str, Any] = {
            self._spread_name: self._spread.state(),
            "stuck": self._stuck.state(),
        }
        if self._spread_name != "ewma":
            state["spread"] = self._spread_name
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Combined:
        """Rebuild a model from :meth:`state`."""
        name = state.get("spread", "ewma")
        return cls(_SPREADS[name].from_state(state[name]), StuckValue.from_state(state["stuck"]))

    @classmethod
    def create(cls, params: Mapping[str, Any]) -> Combined:
        """A fresh model; ``params`` holds each part's parameters under its name."""
        name = params.get("spread", "ewma")
        if name not in _SPREADS:
            raise ValueError(f"spread {name!r} is not one of {', '.join(_SPREADS)}")
        unknown = set(params) - {"spread", name, "stuck"}
        if unknown:
            raise ValueError(f"unknown combined parameters: {', '.join(sorted(unknown))}")
        return cls(
            _SPREADS[name].create(params.get(name) or {}),
            StuckValue.create(params.get("stuck") or {}),
        )


COMBINED_SPEC = ModelSpec(
    name=Combined.name,
    create=Combined.create,
    restore=Combined.from_state,
    description="a spread model (ewma, or mahalanobis) and stuck together: spikes, level shifts "
    "and frozen sensors",
    params={"spread": "ewma", "ewma": {}, "stuck": {}},
)
