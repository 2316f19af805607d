"""Hosting, placement, routing and persistence of twins on Ray."""

from __future__ import annotations

from .events import Event, EventHub, EventSink
from .host import HostSettings, QueryPage, TwinHost
from .messages import ApplyResult, DeviceMessage, Rejection
from .placement import Placement
from .port import FleetPort, LocalFleet, RuntimeFleet
from .router import RouterSettings
from .runtime import IngestResult, Page, Runtime, RuntimeSettings, TwinHandle

__all__ = [
    "ApplyResult",
    "DeviceMessage",
    "Event",
    "EventHub",
    "EventSink",
    "FleetPort",
    "HostSettings",
    "IngestResult",
    "LocalFleet",
    "Page",
    "Placement",
    "QueryPage",
    "Rejection",
    "RouterSettings",
    "Runtime",
    "RuntimeFleet",
    "RuntimeSettings",
    "TwinHandle",
    "TwinHost",
]
