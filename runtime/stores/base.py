"""The ``StateStore`` protocol: where twin snapshots and registry entries live."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Change", "Snapshot", "StateStore"]

Change = tuple[Mapping[str, Any], Mapping[str, Any] | None]
"""One durable change: a twin snapshot and, if the registry changes too, its entry."""

Snapshot = dict[str, Any]
"""A twin snapshot: the JSON-ready dict ``Twin.snapshot()`` returns (it carries ``id``)."""


@runtime_checkable
class StateStore(Protocol):
    """Durable home of twin snapshots and registry entries, chosen by URL (see ``open_store``).

    Methods are synchronous and may block; hosts call them from one worker thread, so one
    store instance sees its calls in order. Every write method returns only once the data is
    committed (for write-behind batches too: the *caller* decides when to write).
    """

    url: str

    def load_many(self, ids: Sequence[str]) -> dict[str, Snapshot]:
        """Snapshots of those ``ids`` that exist, by id."""
        ...

    def save_many(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        """Write many snapshots in one transaction (or one pipeline)."""
        ...

    def commit(
        self, snapshot: Mapping[str, Any], *, registry: Mapping[str, Any] | None = None
    ) -> None:
        """Write one snapshot (and its registry entry) durably, atomically, before returning."""
        ...

    def commit_many(self, changes: Sequence[Change]) -> None:
        """Write several ``(snapshot, registry entry or None)`` durably in one atomic step.

        Hosts group the commits that wait at the same moment into one (group commit).
        """
        ...

    def delete_many(self, ids: Sequence[str]) -> None:
        """Forget the snapshots of ``ids``; missing ids are ignored."""
        ...

    def scan(self, *, after: str | None = None, limit: int = 1000) -> list[Snapshot]:
        """Up to ``limit`` snapshots in id order, starting after id ``after``."""
        ...

    def count(self) -> int:
        """How many twin snapshots the store holds."""
        ...

    def put_registry(self, entry: Mapping[str, Any]) -> None:
        """Durably write a registry entry (a JSON-ready dict with ``id``), replacing any."""
        ...

    def get_registry(self, device_id: str) -> dict[str, Any] | None:
        """The registry entry of ``device_id``, if any."""
        ...

    def list_registry(self, *, after: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to ``limit`` registry entries in id order, starting after id ``after``."""
        ...

    def put_item(self, kind: str, key: str, doc: Mapping[str, Any]) -> None:
        """Durably write a small document of another kind (tokens, ...), replacing any."""
        ...

    def get_item(self, kind: str, key: str) -> dict[str, Any] | None:
        """The document ``key`` of ``kind``, if any."""
        ...

    def list_items(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``, in key order."""
        ...

    def delete_item(self, kind: str, key: str) -> bool:
        """Forget document ``key`` of ``kind``; returns whether it existed."""
        ...

    def clear(self) -> None:
        """Remove everything this store holds (tests and ``twinfleet reset``)."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
