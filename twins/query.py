"""Selecting twins: a small filter value object evaluated against live twins or snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from . import snapshot as snapshots
from .merge import same
from .twin import Twin

__all__ = ["AllOf", "TwinFilter", "TwinSelector"]


class TwinSelector(Protocol):
    """What hosts need of a filter: a verdict on a live twin and on a saved one."""

    def matches_twin(self, twin: Twin) -> bool:
        """Whether the live ``twin`` passes."""
        ...

    def matches_snapshot(self, snap: Mapping[str, Any]) -> bool:
        """Whether the twin saved as ``snap`` passes."""
        ...


@dataclass(frozen=True, slots=True)
class AllOf:
    """Twins that pass every one of ``selectors``."""

    selectors: tuple[TwinSelector, ...]

    def matches_twin(self, twin: Twin) -> bool:
        """Whether the live ``twin`` passes them all."""
        return all(s.matches_twin(twin) for s in self.selectors)

    def matches_snapshot(self, snap: Mapping[str, Any]) -> bool:
        """Whether the twin saved as ``snap`` passes them all."""
        return all(s.matches_snapshot(snap) for s in self.selectors)


@dataclass(frozen=True, slots=True)
class TwinFilter:
    """Which twins a query wants: by type, tags (all must equal), online and anomalous.

    ``None`` means "any". ``type`` matches a family name or an exact subtype
    (``smart-meter`` matches ``smart-meter.water``).
    """

    type: str | None = None
    tags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    online: bool | None = None
    anomalous: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tags, Mapping):
            raise TypeError("tags must be a mapping of tag name to value")
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))

    def matches(self, twin: Twin) -> bool:
        """Whether ``twin`` passes this filter."""
        return self._matches(twin.type, twin.tags, twin.online, twin.anomalous)

    def matches_twin(self, twin: Twin) -> bool:
        """Whether the live ``twin`` passes (the name every twin selector shares)."""
        return self.matches(twin)

    def matches_snapshot(self, snap: Mapping[str, Any]) -> bool:
        """Whether the twin saved as ``snap`` passes this filter."""
        return self._matches(
            snapshots.twin_type(snap),
            snapshots.tags(snap),
            snapshots.online(snap),
            snapshots.anomaly(snap)[1],
        )

    def _matches(
        self, device_type: str, tags: Mapping[str, Any], online: bool, anomalous: bool
    ) -> bool:
        if (
            self.type is not None
            and device_type != self.type
            and not device_type.startswith(self.type + ".")
        ):
            return False
        if self.online is not None and online != self.online:
            return False
        if self.anomalous is not None and anomalous != self.anomalous:
            return False
        return all(key in tags and same(tags[key], want) for key, want in self.tags.items())
