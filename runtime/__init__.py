"""Hosting, placement, routing and persistence of twins on Ray."""

from __future__ import annotations

from .host import HostSettings, QueryPage, TwinHost
from .messages import ApplyResult, DeviceMessage, Rejection
from .placement import Placement
from .router import RouterSettings
from .runtime import IngestResult, Page, Runtime, RuntimeSettings, TwinHandle

__all__ = [
    "ApplyResult",
    "DeviceMessage",
    "HostSettings",
    "IngestResult",
    "Page",
    "Placement",
    "QueryPage",
    "Rejection",
    "RouterSettings",
    "Runtime",
    "RuntimeSettings",
    "TwinHandle",
    "TwinHost",
]
