"""What flows from the edges to the hosts: device messages and the hosts' answers."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

__all__ = ["ApplyResult", "DeviceMessage", "IngestResult", "Rejection"]


class DeviceMessage(NamedTuple):
    """One message from a device: telemetry (measurements) or a reported-state merge patch.

    ``ts`` is the measurement time in Unix seconds when the transport knows it (a ``ts`` key in
    the payload wins); ``device_type`` names the family for a twin this message creates;
    ``received`` is when the edge (gateway, CoAP endpoint) got it, in Unix seconds: presence
    and the platform's lag are judged by it, so a backlog inside the platform is not mistaken
    for a silent device.
    """

    device_id: str
    kind: Literal["telemetry", "reported"]
    payload: dict[str, Any]
    ts: float | None = None
    protocol: str | None = None
    device_type: str | None = None
    received: float | None = None


class Rejection(NamedTuple):
    """A message that was refused, and why (the error's stable code and message)."""

    device_id: str
    code: str
    message: str


class ApplyResult(NamedTuple):
    """What a host did with one batch."""

    applied: int
    stale: int
    rejected: tuple[Rejection, ...] = ()


class IngestResult(NamedTuple):
    """What ``Runtime.ingest`` accepted; malformed messages are rejected on the spot."""

    accepted: int
    rejected: tuple[Rejection, ...] = ()
