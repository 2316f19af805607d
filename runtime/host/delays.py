"""``DelaySamples``: how long messages took from measurement to applied, sampled."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from twinfleet.runtime.messages import DeviceMessage

__all__ = ["DelaySamples"]


class DelaySamples:
    """The newest sampled delays of one host (a few per batch) and their percentiles."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=capacity)

    def sample(self, messages: Sequence[DeviceMessage], now: float) -> None:
        """Keep how long some of ``messages``, applied at ``now``, took since measured."""
        step = max(1, len(messages) // 16)
        for i in range(0, len(messages), step):
            msg = messages[i]
            ts = msg[3]
            if ts is None and isinstance(msg[2], dict):
                ts = msg[2].get("ts")
            if type(ts) is float and 0 <= now - ts < 3600:
                self._samples.append(now - ts)

    def percentiles(self, *, reset: bool = False) -> dict[str, float | int]:
        """``{"samples", "p50_ms", "p99_ms", "max_ms"}`` (``{"samples": 0}`` without any)."""
        samples = sorted(self._samples)
        if reset:
            self._samples.clear()
        if not samples:
            return {"samples": 0}

        def pick(q: float) -> float:
            return round(1000 * samples[min(len(samples) - 1, int(q * len(samples)))], 2)

        return {
            "samples": len(samples),
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
            "max_ms": pick(1.0),
        }
