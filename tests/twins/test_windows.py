"""Rolling windows computed from a twin's recent readings."""

from __future__ import annotations

import random

import pytest

from twinfleet.twins import window_stats

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("name", "span"), [("1m", 60.0), ("5m", 300.0), ("1h", 3600.0)])
def test_each_window_holds_exactly_its_span(name: str, span: float) -> None:
    rng = random.Random(3)
    readings = [("t", NOW - rng.uniform(0, 4000), rng.gauss(20, 3)) for _ in range(3000)]
    held = [x for _, ts, x in readings if NOW - span < ts <= NOW]
    got = window_stats(readings, NOW)["t"][name]
    assert got["count"] == len(held)
    assert got["min"] == min(held)
    assert got["max"] == max(held)
    assert got["mean"] == pytest.approx(sum(held) / len(held))


def test_empty_windows_and_future_readings() -> None:
    stats = window_stats([("t", NOW - 120, 5.0), ("t", NOW + 10, 99.0), ("h", NOW, 1.0)], NOW)
    assert stats["t"]["1m"] == {"count": 0, "min": None, "max": None, "mean": None}
    assert stats["t"]["5m"] == {"count": 1, "min": 5.0, "max": 5.0, "mean": 5.0}
    assert list(stats) == ["h", "t"]
