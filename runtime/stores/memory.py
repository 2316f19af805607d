"""``MemoryStore``: an in-process ``StateStore`` for tests and single-process runs."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from ._codec import decode, doc_id, encode
from .base import Change, Snapshot

__all__ = ["MemoryStore"]


def _page(docs: dict[str, bytes], after: str | None, limit: int) -> list[dict[str, Any]]:
    if limit <= 0:
        return []
    ids = heapq.nsmallest(limit, (i for i in docs if after is None or i > after))
    return [decode(docs[i]) for i in ids]


class MemoryStore:
    """Snapshots and registry entries kept as encoded bytes in dicts (``memory://``).

    Storing bytes rather than the dicts themselves means a caller never shares mutable state
    with the store, exactly as with the durable stores. Nothing outlives the process.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._twins: dict[str, bytes] = {}
        self._registry: dict[str, bytes] = {}
        self._items: dict[str, dict[str, bytes]] = {}

    def load_many(self, ids: Sequence[str]) -> dict[str, Snapshot]:
        """Snapshots of those ``ids`` that exist, by id."""
        return {i: decode(self._twins[i]) for i in ids if i in self._twins}

    def save_many(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        """Write many snapshots at once (all are encoded before any is stored)."""
        self._twins.update({doc_id(s): encode(s) for s in snapshots})

    def commit(
        self, snapshot: Mapping[str, Any], *, registry: Mapping[str, Any] | None = None
    ) -> None:
        """Write one snapshot (and its registry entry)."""
        self.commit_many([(snapshot, registry)])

    def commit_many(self, changes: Sequence[Change]) -> None:
        """Write several snapshots and registry entries."""
        for snapshot, registry in changes:
            if registry is not None:
                self.put_registry(registry)
            self._twins[doc_id(snapshot)] = encode(snapshot)

    def delete_many(self, ids: Sequence[str]) -> None:
        """Forget the snapshots of ``ids``; missing ids are ignored."""
        for i in ids:
            self._twins.pop(i, None)

    def scan(self, *, after: str | None = None, limit: int = 1000) -> list[Snapshot]:
        """Up to ``limit`` snapshots in id order, starting after id ``after``."""
        return _page(self._twins, after, limit)

    def count(self) -> int:
        """How many twin snapshots the store holds."""
        return len(self._twins)

    def put_registry(self, entry: Mapping[str, Any]) -> None:
        """Write a registry entry, replacing any."""
        self._registry[doc_id(entry)] = encode(entry)

    def get_registry(self, device_id: str) -> dict[str, Any] | None:
        """The registry entry of ``device_id``, if any."""
        raw = self._registry.get(device_id)
        return None if raw is None else decode(raw)

    def list_registry(self, *, after: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to ``limit`` registry entries in id order, starting after id ``after``."""
        return _page(self._registry, after, limit)

    def put_item(self, kind: str, key: str, doc: Mapping[str, Any]) -> None:
        """Write a document of another kind."""
        self._items.setdefault(kind, {})[key] = encode(doc)

    def get_item(self, kind: str, key: str) -> dict[str, Any] | None:
        """The document ``key`` of ``kind``, if any."""
        raw = self._items.get(kind, {}).get(key)
        return None if raw is None else decode(raw)

    def list_items(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``, in key order."""
        items = self._items.get(kind, {})
        return [decode(items[k]) for k in sorted(items)]

    def delete_item(self, kind: str, key: str) -> bool:
        """Forget a document; returns whether it existed."""
        return self._items.get(kind, {}).pop(key, None) is not None

    def clear(self) -> None:
        """Remove everything."""
        self._twins.clear()
        self._registry.clear()
        self._items.clear()

    def close(self) -> None:
        """Nothing to release."""
