"""Rolling windows: count, min, max, mean over 1 min, 5 min and 1 h, kept in time buckets."""

from __future__ import annotations

import random

import pytest

from twinfleet.twins import RollingWindows, Twin

T0 = 1_800_000_000.0  # a whole hour, so buckets line up with the readings below


def exact(readings: list[tuple[float, float]], now: float, span: float, size: float) -> list[float]:
    """What the window holds: readings in the buckets that began within (now - span, now]."""
    return [x for ts, x in readings if now - span < ts - ts % size and ts <= now]


@pytest.mark.parametrize(
    ("name", "span", "size"), [("1m", 60, 10), ("5m", 300, 60), ("1h", 3600, 300)]
)
def test_windows_agree_with_a_recount(name: str, span: float, size: float) -> None:
    rng = random.Random(7)
    windows = RollingWindows()
    readings = []
    ts = T0
    for _ in range(2000):
        ts += rng.uniform(0.5, 7.0)
        x = rng.gauss(20, 3)
        readings.append((ts, x))
        windows.add({"t": x}, ts)
    now = ts
    held = exact(readings, now, span, size)
    got = windows.stats(now)["t"][name]
    assert got["count"] == len(held)
    assert got["min"] == pytest.approx(min(held))
    assert got["max"] == pytest.approx(max(held))
    assert got["mean"] == pytest.approx(sum(held) / len(held))


def test_old_readings_age_out_and_late_ones_do_not_reopen_buckets() -> None:
    windows = RollingWindows()
    windows.add({"t": 1.0}, T0)
    windows.add({"t": 3.0}, T0 + 5)
    assert windows.stats(T0 + 5)["t"]["1m"] == {"count": 2, "min": 1.0, "max": 3.0, "mean": 2.0}
    assert windows.stats(T0 + 200)["t"]["1m"] == {
        "count": 0,
        "min": None,
        "max": None,
        "mean": None,
    }
    assert windows.stats(T0 + 200)["t"]["5m"]["count"] == 2
    windows.add({"t": 9.0}, T0 + 400)  # reuses the ring slot of T0's 1-min bucket
    windows.add({"t": 100.0}, T0 + 1)  # late: its slots hold newer buckets by now
    assert windows.stats(T0 + 400)["t"]["1m"]["max"] == 9.0
    assert windows.stats(T0 + 400)["t"]["1h"]["max"] == 100.0  # still inside the hour


def test_a_twin_keeps_windows_of_its_numeric_readings() -> None:
    twin = Twin("w-1", device_type="smart-sensor", now=T0)
    for k in range(6):
        twin.apply_message(
            "telemetry", {"temperature": 20.0 + k, "door": "open"}, now=T0 + k, ts=T0 + k
        )
    stats = twin.windows.stats(T0 + 6)
    assert set(stats) == {"temperature"}
    assert stats["temperature"]["1m"] == {"count": 6, "min": 20.0, "max": 25.0, "mean": 22.5}
