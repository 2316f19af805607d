"""Presence rules: silence on the edge's clock less the platform's lag, and flap damping."""

from __future__ import annotations

import pytest

from twinfleet.twins import Twin
from twinfleet.twins.presence import MAX_DAMPING, damping_after, is_silent, silence

T0 = 1_700_000_000.0


def test_silence_does_not_count_the_platforms_lag() -> None:
    assert silence(T0, now=T0 + 100) == 100
    assert silence(T0, now=T0 + 100, lag=90) == 10
    assert silence(T0, now=T0 + 100, lag=-5) == 100  # a negative lag counts as none


@pytest.mark.parametrize(
    ("now", "lag", "damping", "silent"),
    [
        (T0 + 30, 0.0, 1.0, False),  # exactly the threshold: not yet
        (T0 + 30.5, 0.0, 1.0, True),
        (T0 + 130, 100.0, 1.0, False),  # 100 s of backlog
        (T0 + 50, 0.0, 2.0, False),  # damped: 60 s
        (T0 + 61, 0.0, 2.0, True),
    ],
)
def test_is_silent(now: float, lag: float, damping: float, silent: bool) -> None:
    assert is_silent(T0, now=now, offline_after_s=30, lag=lag, damping=damping) is silent


def test_never_seen_is_never_silent() -> None:
    assert not is_silent(None, now=T0, offline_after_s=30)


def test_damping_doubles_on_a_flap_up_to_its_cap_and_eases_back() -> None:
    damping = 1.0
    for expected in (2.0, 4.0, MAX_DAMPING):
        damping = damping_after(damping, gap=31, offline_after_s=30, was_online=False)
        assert damping == expected
    # back after a long absence (not a flap): unchanged
    assert damping_after(2.0, gap=500, offline_after_s=30, was_online=False) == 2.0
    # on time while online: eases back to 1, never below
    for _ in range(100):
        damping = damping_after(damping, gap=10, offline_after_s=30, was_online=True)
    assert damping == 1.0
    # late but online (no flap): unchanged
    assert damping_after(2.0, gap=45, offline_after_s=30, was_online=True) == 2.0


def test_a_twin_is_last_seen_when_the_edge_received_its_message() -> None:
    twin = Twin("s-1", device_type="smart-sensor", now=T0)
    twin.apply_message("telemetry", {"temperature": 20.0}, now=T0 + 100, seen=T0 + 1)
    assert twin.last_seen == T0 + 1
    assert twin.silent(now=T0 + 100) is True
    assert twin.silent(now=T0 + 100, lag=99) is False
    # an edge clock ahead of the host's counts as the host's now
    twin.apply_message("telemetry", {"temperature": 21.0}, now=T0 + 200, seen=T0 + 205)
    assert twin.last_seen == T0 + 200
    # an older message (another gateway's) does not move last_seen back
    twin.apply_message("telemetry", {"temperature": 22.0}, now=T0 + 201, seen=T0 + 150)
    assert twin.last_seen == T0 + 200
