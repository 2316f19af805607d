"""Presence: when a device counts as offline, judged by the device and not the platform.

A device is offline once it has been silent for longer than its family's ``offline_after_s``
(report interval times tolerance) times its damping. Two rules keep the verdict about the
device:

- **Silence is measured on the edge's clock, less the platform's own lag.** A twin's
  ``last_seen`` is when the edge (gateway, CoAP endpoint) received the device's newest
  message, not when a host got round to it; and the host subtracts its current lag (how far
  behind the edges its newest applied messages are, per protocol) before judging. A backlog
  inside the platform therefore delays the verdict instead of making one up.
- **Hysteresis (flap damping).** A device that comes back less than a threshold after its
  last message (it was marked offline, yet its gap was near its interval) doubles its damping,
  up to :data:`MAX_DAMPING`, so a device that reports near its limit stops flapping; every
  message on time takes a little of the damping back.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_DAMPING", "damping_after", "is_silent", "silence"]

#: The most a device's offline threshold is stretched by flapping.
MAX_DAMPING: Final = 4.0
#: What each on-time message takes back from a stretched threshold.
_RECOVERY: Final = 0.05


def silence(last_seen: float, *, now: float, lag: float = 0.0) -> float:
    """Seconds the device has been silent at ``now``, not counting ``lag`` of the platform."""
    return now - max(lag, 0.0) - last_seen


def is_silent(
    last_seen: float | None,
    *,
    now: float,
    offline_after_s: float,
    lag: float = 0.0,
    damping: float = 1.0,
) -> bool:
    """Whether a device last seen at ``last_seen`` has been silent past its threshold."""
    if last_seen is None:
        return False
    return silence(last_seen, now=now, lag=lag) > offline_after_s * damping


def damping_after(damping: float, *, gap: float, offline_after_s: float, was_online: bool) -> float:
    """A device's damping once a message arrives ``gap`` seconds after its previous one.

    Back from offline after a gap shorter than twice its (damped) threshold: a flap, so the
    damping doubles (at most :data:`MAX_DAMPING`). On time while online: it eases back to 1.
    """
    if not was_online:
        if gap < 2.0 * offline_after_s * damping:
            return min(MAX_DAMPING, damping * 2.0)
        return damping
    if damping > 1.0 and gap <= offline_after_s:
        return max(1.0, damping - _RECOVERY)
    return damping
