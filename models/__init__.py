"""Anomaly models for twins: the protocol, the registry and the built-in models."""

from __future__ import annotations

from .base import (
    ENTRY_POINT_GROUP,
    AnomalyModel,
    ArtifactBackend,
    BatchScoring,
    MemoryArtifacts,
    ModelArtifacts,
    ModelRegistry,
    ModelSpec,
    Reading,
    SelectedInputs,
    TrainableModel,
    Verdict,
    is_trainable,
    prescore,
)
from .combined import COMBINED_SPEC, Combined
from .ewma import EWMA_SPEC, EwmaParams, EwmaZScore
from .multivariate import MAHALANOBIS_SPEC, Mahalanobis, MahalanobisParams
from .outliers import ESTIMATORS, OutlierDetector, OutlierParams, outlier_spec
from .robust import MAD_SPEC, MadParams, MadZScore
from .stuck import STUCK_SPEC, StuckParams, StuckValue

__all__ = [
    "BUILT_IN",
    "COMBINED_SPEC",
    "ENTRY_POINT_GROUP",
    "ESTIMATORS",
    "EWMA_SPEC",
    "MAD_SPEC",
    "MAHALANOBIS_SPEC",
    "STUCK_SPEC",
    "AnomalyModel",
    "ArtifactBackend",
    "BatchScoring",
    "Combined",
    "EwmaParams",
    "EwmaZScore",
    "MadParams",
    "MadZScore",
    "Mahalanobis",
    "MahalanobisParams",
    "MemoryArtifacts",
    "ModelArtifacts",
    "ModelRegistry",
    "ModelSpec",
    "OutlierDetector",
    "OutlierParams",
    "Reading",
    "SelectedInputs",
    "StuckParams",
    "StuckValue",
    "TrainableModel",
    "Verdict",
    "default_registry",
    "is_trainable",
    "outlier_spec",
    "prescore",
]

BUILT_IN = (COMBINED_SPEC, EWMA_SPEC, MAD_SPEC, MAHALANOBIS_SPEC, STUCK_SPEC)
"""The built-in models that need nothing but their parameters (``sklearn`` needs artifacts)."""


def default_registry(
    *, plugins: bool = True, artifacts: ModelArtifacts | None = None
) -> ModelRegistry:
    """A new registry: the built-ins, ``sklearn`` keeping its fitted estimators in
    ``artifacts`` (default: in this process), and (``plugins``) the installed models."""
    sklearn = outlier_spec(artifacts if artifacts is not None else ModelArtifacts())
    registry = ModelRegistry((*BUILT_IN, sklearn))
    if plugins:
        registry.load_plugins()
    return registry
