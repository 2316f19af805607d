"""Robust z-scores: distance from the median of a sliding window, in median absolute deviations.

Spikes stand out against the median and the MAD, which one outlier (or a short burst) barely
moves, where a mean and a variance would be dragged along. Costs a sort of ``window`` values
per metric and reading.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .base import ModelSpec, Reading, Verdict, parameters, replay

__all__ = ["MAD_SPEC", "MadParams", "MadZScore"]

_NORMAL = 1.4826  # MAD of a normal distribution, in standard deviations


@dataclass(frozen=True, slots=True)
class MadParams:
    """Parameters of :class:`MadZScore`."""

    window: int = 60
    threshold: float = 6.0
    warmup: int = 20
    min_scale: float = 1e-3

    def __post_init__(self) -> None:
        if self.window < 5:
            raise ValueError("window must be at least 5")
        if not 3 <= self.warmup <= self.window:
            raise ValueError("warmup must lie between 3 and window")
        if self.threshold <= 0 or self.min_scale <= 0:
            raise ValueError("threshold and min_scale must be positive")


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


class MadZScore:
    """Median/MAD z-score per metric over the last ``window`` readings."""

    name = "mad"
    __slots__ = ("_params", "_windows")

    def __init__(self, params: MadParams | None = None) -> None:
        self._params = params or MadParams()
        self._windows: dict[str, deque[float]] = {}

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """Score ``values`` against each metric's window, then add them to it."""
        p = self._params
        best = 0.0
        best_metric: str | None = None
        for metric, x in values.items():
            window = self._windows.get(metric)
            if window is None:
                window = self._windows[metric] = deque(maxlen=p.window)
            if len(window) >= p.warmup:
                ordered = sorted(window)
                median = _median(ordered)
                mad = _median(sorted(abs(v - median) for v in ordered))
                scale = max(_NORMAL * mad, p.min_scale * (1.0 + abs(median)))
                z = abs(x - median) / scale
                if z > best:
                    best, best_metric = z, metric
            window.append(float(x))
        return Verdict(best, best > p.threshold, best_metric)

    def fit(self, history: Sequence[Reading]) -> None:
        """Fill the windows from ``history`` (oldest first), from scratch."""
        self._windows = {}
        replay(self, history)

    def state(self) -> dict[str, Any]:
        """Parameters and windows, JSON-ready."""
        state: dict[str, Any] = {"windows": {k: list(v) for k, v in self._windows.items()}}
        if self._params != MadParams():
            state["params"] = asdict(self._params)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MadZScore:
        """Rebuild a model from :meth:`state`."""
        model = cls.create(state.get("params") or {})
        size = model._params.window
        model._windows = {
            str(k): deque((float(x) for x in v), maxlen=size) for k, v in state["windows"].items()
        }
        return model

    @classmethod
    def create(cls, params: Mapping[str, Any]) -> MadZScore:
        """A fresh model with ``params``."""
        return cls(parameters(MadParams, params, "mad"))


MAD_SPEC = ModelSpec(
    name=MadZScore.name,
    create=MadZScore.create,
    restore=MadZScore.from_state,
    description="median/MAD z-score per metric over a sliding window (spikes)",
    params=asdict(MadParams()),
)
