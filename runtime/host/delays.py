"""``DelaySamples``: how late a host applies messages, measured on a sample of each batch.

Two delays per message, both ending when the host applied it: since the device measured it
(``ts``, "published") and since the edge received it ("received"). They feed

- percentiles of the newest samples (``percentiles``: benchmarks read them);
- cumulative histograms per protocol (``histograms``: Prometheus reads them through the host's
  stats), of the samples: their counts are samples, not messages (the host's ``applied``
  counter counts those);
- the current lag per protocol (``lags``): the largest receive-to-applied delay since the last
  look, carried forward while no message of that protocol arrives. Presence subtracts it, so a
  backlog inside the platform is never taken for silent devices.

Sampling (at most :data:`SAMPLES_PER_BATCH` messages a batch) keeps this off the hot path.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Sequence
from typing import Any, Final

from twinfleet.runtime.messages import DeviceMessage

__all__ = ["LAG_BUCKETS", "SAMPLES_PER_BATCH", "DelaySamples"]

#: Upper bounds (seconds) of the delay histograms' buckets.
LAG_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
SAMPLES_PER_BATCH: Final = 16


class _Histogram:
    """Counts per bucket (the last one +Inf), their sum, not yet cumulative."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LAG_BUCKETS, value)] += 1
        self.total += value

    def export(self) -> dict[str, Any]:
        cumulative, running = [], 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        return {"buckets": cumulative, "sum": self.total, "count": running}


class DelaySamples:
    """The sampled delays of one host: percentiles, histograms and current lag per protocol."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=capacity)
        self._histograms: dict[tuple[str, str], _Histogram] = {}
        self._lag_now: dict[str, float] = {}
        self._lag_seen: dict[str, float] = {}
        self._messages: collections.Counter[str | None] = collections.Counter()

    def sample(self, messages: Sequence[DeviceMessage], now: float) -> None:
        """Keep how long some of ``messages``, applied at ``now``, took since measured and
        since received."""
        if not messages:
            return
        self._messages.update(msg[4] if len(msg) > 4 else None for msg in messages)
        step = -(-len(messages) // SAMPLES_PER_BATCH)  # at most SAMPLES_PER_BATCH samples
        for i in range(0, len(messages), step):
            msg = messages[i]
            protocol = (msg[4] if len(msg) > 4 else None) or "api"
            ts = msg[3]
            if ts is None and isinstance(msg[2], dict):
                ts = msg[2].get("ts")
            if type(ts) is float and 0 <= now - ts < 3600:
                self._samples.append(now - ts)
                self._observe("published", protocol, now - ts)
            received = msg[6] if len(msg) > 6 else None
            if type(received) is float:
                late = max(0.0, now - received)
                self._observe("received", protocol, late)
                if late > self._lag_seen.get(protocol, -1.0):
                    self._lag_seen[protocol] = late

    def _observe(self, kind: str, protocol: str, value: float) -> None:
        histogram = self._histograms.get((kind, protocol))
        if histogram is None:
            histogram = self._histograms[(kind, protocol)] = _Histogram()
        histogram.observe(value)

    def lags(self) -> dict[str, float]:
        """The current receive-to-applied lag per protocol, in seconds: the largest since the
        last call, or the last one known for a protocol with no message since."""
        self._lag_now.update(self._lag_seen)
        self._lag_seen = {}
        return dict(self._lag_now)

    def messages(self) -> dict[str, int]:
        """Messages applied (or refused by their twin) per protocol, since the host started."""
        return {protocol or "api": n for protocol, n in self._messages.items()}

    def histograms(self) -> list[dict[str, Any]]:
        """``[{"kind": "published"|"received", "protocol", "buckets", "sum", "count"}]``;
        ``buckets`` are cumulative counts for :data:`LAG_BUCKETS` and +Inf."""
        return [
            {"kind": kind, "protocol": protocol, **histogram.export()}
            for (kind, protocol), histogram in sorted(self._histograms.items())
        ]

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
