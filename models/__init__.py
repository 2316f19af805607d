"""Anomaly models for twins: the protocol, the registry and the built-in models."""

from __future__ import annotations

from .base import (
    ENTRY_POINT_GROUP,
    AnomalyModel,
    ModelRegistry,
    ModelSpec,
    Reading,
    SelectedInputs,
    TrainableModel,
    Verdict,
)
from .combined import COMBINED_SPEC, Combined
from .ewma import EWMA_SPEC, EwmaParams, EwmaZScore
from .robust import MAD_SPEC, MadParams, MadZScore
from .stuck import STUCK_SPEC, StuckParams, StuckValue

__all__ = [
    "BUILT_IN",
    "COMBINED_SPEC",
    "ENTRY_POINT_GROUP",
    "EWMA_SPEC",
    "MAD_SPEC",
    "STUCK_SPEC",
    "AnomalyModel",
    "Combined",
    "EwmaParams",
    "EwmaZScore",
    "MadParams",
    "MadZScore",
    "ModelRegistry",
    "ModelSpec",
    "Reading",
    "SelectedInputs",
    "StuckParams",
    "StuckValue",
    "TrainableModel",
    "Verdict",
    "default_registry",
]

BUILT_IN = (COMBINED_SPEC, EWMA_SPEC, MAD_SPEC, STUCK_SPEC)


def default_registry(*, plugins: bool = True) -> ModelRegistry:
    """A new registry holding the built-in models and (``plugins``) the installed ones."""
    registry = ModelRegistry(BUILT_IN)
    if plugins:
        registry.load_plugins()
    return registry
