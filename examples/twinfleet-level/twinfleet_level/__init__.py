"""An anomaly model in a package of its own, found by twinfleet through its entry point."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinfleet.models import ModelSpec, Verdict

__all__ = ["LEVEL_SPEC", "Level"]


class Level:
    """Anomalous when a metric is above a fixed level."""

    name = "level"

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """The highest metric against the level."""
        worst = max(values, key=lambda k: values[k])
        return Verdict(values[worst] / self.limit, values[worst] > self.limit, worst)

    def state(self) -> dict[str, Any]:
        """Only the level: this model learns nothing."""
        return {"limit": self.limit}


LEVEL_SPEC = ModelSpec(
    name="level",
    create=lambda params: Level(float(params.get("limit", 100.0))),
    restore=lambda state: Level(float(state["limit"])),
    description="above a fixed level",
    params={"limit": 100.0},
    version="1.0.0",
)
