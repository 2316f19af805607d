"""Hosting, placement, routing and persistence of twins on Ray.

Names load lazily (PEP 562): ``from twinfleet.runtime import DeviceMessage`` loads the message
types only, not Ray; ``Runtime`` (and with it Ray) loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calls import HostCalls, HostTransport, RayTransport, WireTransport
    from .directory import HostRoster, HostRouting
    from .edge import EdgePlatform, InProcessPlatform, RayPlatform
    from .events import Event, EventHub, EventSink
    from .host import HostSettings, QueryPage, TwinHost
    from .messages import ApplyResult, DeviceMessage, IngestResult, Rejection
    from .placement import Placement
    from .router import RouterSettings
    from .runtime import Page, Runtime, RuntimeSettings, TwinHandle

# name -> the module of this package that defines it
_WHERE = {
    "ApplyResult": "messages",
    "DeviceMessage": "messages",
    "IngestResult": "messages",
    "Rejection": "messages",
    "Event": "events",
    "EventHub": "events",
    "EventSink": "events",
    "HostSettings": "host",
    "QueryPage": "host",
    "TwinHost": "host",
    "Placement": "placement",
    "RouterSettings": "router",
    "HostCalls": "calls",
    "HostTransport": "calls",
    "RayTransport": "calls",
    "WireTransport": "calls",
    "HostRoster": "directory",
    "HostRouting": "directory",
    "EdgePlatform": "edge",
    "InProcessPlatform": "edge",
    "RayPlatform": "edge",
    "Page": "runtime",
    "Runtime": "runtime",
    "RuntimeSettings": "runtime",
    "TwinHandle": "runtime",
}

__all__ = [
    "ApplyResult",
    "DeviceMessage",
    "EdgePlatform",
    "Event",
    "EventHub",
    "EventSink",
    "HostCalls",
    "HostRoster",
    "HostRouting",
    "HostSettings",
    "HostTransport",
    "InProcessPlatform",
    "IngestResult",
    "Page",
    "Placement",
    "QueryPage",
    "RayPlatform",
    "RayTransport",
    "Rejection",
    "RouterSettings",
    "Runtime",
    "RuntimeSettings",
    "TwinHandle",
    "TwinHost",
    "WireTransport",
]


if not TYPE_CHECKING:  # mypy sees the imports above; unknown names stay errors there

    def __getattr__(name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module 'twinfleet.runtime' has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted((*globals(), *_WHERE))
