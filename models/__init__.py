"""Anomaly models for twins: the protocol, the registry and the built-in models."""

from __future__ import annotations

from .base import AnomalyModel, ModelRegistry, ModelSpec, Verdict
from .ewma import EWMA_SPEC, EwmaParams, EwmaZScore

__all__ = [
    "EWMA_SPEC",
    "AnomalyModel",
    "EwmaParams",
    "EwmaZScore",
    "ModelRegistry",
    "ModelSpec",
    "Verdict",
    "default_registry",
]


def default_registry() -> ModelRegistry:
    """A new registry holding the built-in models."""
    return ModelRegistry((EWMA_SPEC,))
