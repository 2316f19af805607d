"""``FlowMeter``: messages per second and lag per protocol, from successive host stats.

Hosts count messages per protocol and keep cumulative lag histograms (``runtime/host/delays``).
A meter reads them now and then (``update``) and reports the flow between its last two reads:
messages/s, and lag percentiles estimated from the histograms' buckets as Prometheus's
``histogram_quantile`` does (linear within a bucket). Pure: no Ray, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .host.delays import LAG_BUCKETS

__all__ = ["FlowMeter", "lag_buckets", "quantile"]


def quantile(buckets: Sequence[float], q: float, bounds: Sequence[float] = LAG_BUCKETS) -> float:
    """The ``q`` quantile of cumulative bucket counts (``bounds`` and +Inf), linear inside a
    bucket; the last finite bound when it falls in +Inf; 0.0 without observations."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie between 0 and 1, not {q}")
    total = buckets[-1] if buckets else 0
    if total <= 0:
        return 0.0
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, buckets, strict=False):
        if count >= rank:
            inside = count - below
            share = 1.0 if inside <= 0 else (rank - below) / inside
            return lower + (bound - lower) * share
        lower, below = bound, count
    return float(bounds[-1])


def lag_buckets(
    hosts: Iterable[Mapping[str, Any]], since: str = "received"
) -> dict[str, list[int]]:
    """Cumulative lag bucket counts per protocol over all hosts, counted from when the edge
    received each message (``since="received"``) or the device measured it (``"published"``)."""
    lag: dict[str, list[int]] = {}
    for host in hosts:
        for histogram in host.get("lag", ()):
            if histogram.get("kind") != since:
                continue
            counts = lag.setdefault(histogram["protocol"], [0] * len(histogram["buckets"]))
            for i, n in enumerate(histogram["buckets"]):
                counts[i] += int(n)
    return lag


def _totals(hosts: Iterable[Mapping[str, Any]]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Messages per protocol, and received-lag bucket counts per protocol, over all hosts."""
    hosts = list(hosts)
    messages: dict[str, int] = {}
    for host in hosts:
        for protocol, n in host.get("messages_by_protocol", {}).items():
            messages[protocol] = messages.get(protocol, 0) + int(n)
    return messages, lag_buckets(hosts)


class FlowMeter:
    """Feed it host stats with their time (``update``); ``flow()`` gives each protocol's
    ``messages_per_s``, ``lag_p50_s`` and ``lag_p99_s`` between the last two reads."""

    def __init__(self) -> None:
        self._previous: tuple[float, dict[str, int], dict[str, list[int]]] | None = None
        self._flow: dict[str, dict[str, float]] = {}

    def update(self, hosts: Iterable[Mapping[str, Any]], now: float) -> dict[str, dict[str, float]]:
        """Take a new read of every host's stats at ``now``; returns :meth:`flow`."""
        messages, lag = _totals(hosts)
        previous = self._previous
        self._previous = (now, messages, lag)
        if previous is None or now <= previous[0]:
            return self.flow()
        then, old_messages, old_lag = previous
        flow: dict[str, dict[str, float]] = {}
        for protocol in sorted(set(messages) | set(lag) | set(old_messages)):
            # A host that restarted counts from zero again: never a negative rate.
            sent = max(0, messages.get(protocol, 0) - old_messages.get(protocol, 0))
            counts = lag.get(protocol, [])
            before = old_lag.get(protocol, [0] * len(counts))
            window = [max(0, a - b) for a, b in zip(counts, before, strict=False)]
            flow[protocol] = {
                "messages_per_s": sent / (now - then),
                "lag_p50_s": quantile(window, 0.5),
                "lag_p99_s": quantile(window, 0.99),
                "lag_samples": float(window[-1] if window else 0),
            }
        self._flow = flow
        return self.flow()

    def flow(self) -> dict[str, dict[str, float]]:
        """The flow per protocol between the last two reads (empty before the second)."""
        return {protocol: dict(figures) for protocol, figures in self._flow.items()}
