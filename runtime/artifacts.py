"""Model artifacts (fitted estimators) kept in the state store, where every host can read them."""

from __future__ import annotations

import base64
import time
from typing import Final

from .stores import StateStore

__all__ = ["MODEL_ARTIFACT", "StoreArtifacts"]

MODEL_ARTIFACT: Final = "model-artifact"  # store items: artifact id -> {"blob": base64, ...}


class StoreArtifacts:
    """An ``ArtifactBackend`` on a :class:`StateStore`: hosts and training tasks share it."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def load_artifact(self, artifact_id: str) -> bytes | None:
        """The artifact's bytes, if the store has them."""
        doc = self._store.get_item(MODEL_ARTIFACT, artifact_id)
        return None if doc is None else base64.b64decode(doc["blob"])

    def save_artifact(self, artifact_id: str, blob: bytes) -> None:
        """Write the artifact durably (ids are content hashes: rewriting one changes nothing)."""
        doc = {
            "id": artifact_id,
            "bytes": len(blob),
            "saved": time.time(),
            "blob": base64.b64encode(blob).decode("ascii"),
        }
        self._store.put_item(MODEL_ARTIFACT, artifact_id, doc)
