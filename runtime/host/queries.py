"""``Queries``: finding a host's twins, in memory and in the store, and summing them up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twinfleet.runtime.placement import Placement
from twinfleet.twins import Twin
from twinfleet.twins.query import TwinSelector

from .models import ModelPolicy
from .residents import Residents

__all__ = ["Queries", "QueryPage"]

_SCAN_PAGE = 1000  # snapshots per store scan call


@dataclass(frozen=True, slots=True)
class QueryPage:
    """Twins one host found for a query, in id order; ``live`` ids came from memory."""

    items: tuple[dict[str, Any], ...]
    live: frozenset[str]


class Queries:
    """Reads over many twins of one host: selector queries and per-group aggregates."""

    def __init__(self, residents: Residents, models: ModelPolicy) -> None:
        self._residents = residents
        self._models = models

    async def query(
        self,
        flt: TwinSelector,
        *,
        after: str | None = None,
        limit: int = 100,
        placement: Placement | None = None,
        include_stored: bool = True,
    ) -> QueryPage:
        """Up to ``limit`` matching twins with id > ``after``, in id order.

        Active twins answer from memory; with ``include_stored`` the store is scanned for the
        passive twins this host owns under ``placement``.
        """
        if limit < 1:
            return QueryPage((), frozenset())
        twins = self._residents.twins
        live = sorted(
            twin_id
            for twin_id, twin in twins.items()
            if (after is None or twin_id > after) and flt.matches_twin(twin)
        )[:limit]
        found = {twin_id: twins[twin_id].document() for twin_id in live}
        if include_stored:
            found.update(await self._query_stored(flt, after, limit, placement, live))
        ids = sorted(found)[:limit]
        return QueryPage(tuple(found[i] for i in ids), frozenset(i for i in ids if i in live))

    async def _query_stored(
        self,
        flt: TwinSelector,
        after: str | None,
        limit: int,
        placement: Placement | None,
        live: list[str],
    ) -> dict[str, dict[str, Any]]:
        """Matching passive twins this host owns, scanning the store in id order."""
        residents = self._residents
        # Past the limit-th live match, nothing stored can make the page any more.
        stop_at = live[-1] if len(live) >= limit else None
        found: dict[str, dict[str, Any]] = {}
        cursor = after
        while True:
            page = await residents.run(residents.store.scan, after=cursor, limit=_SCAN_PAGE)
            for snap in page:
                twin_id = snap["id"]
                if stop_at is not None and twin_id > stop_at:
                    return found
                if twin_id in residents.twins or (
                    placement is not None and placement.owner(twin_id) != residents.host_id
                ):
                    continue
                if flt.matches_snapshot(snap):
                    twin = Twin.from_snapshot(snap, restore_model=self._models.restore)
                    found[twin_id] = twin.document()
                    if len(found) >= limit:
                        return found
            if len(page) < _SCAN_PAGE:
                return found
            cursor = page[-1]["id"]

    def aggregate(self, by: str, metric: str | None = None) -> dict[str, list[float]]:
        """Per group of the active twins: ``[twins, online, anomalous, sum, n]`` (see
        ``TwinHost.aggregate``)."""
        tag = by[4:] if by.startswith("tag:") else None
        groups: dict[str, list[float]] = {}
        for twin in self._residents.twins.values():
            key = twin.family.name if tag is None else twin.tags.get(tag)
            if key is None:
                continue
            group = groups.setdefault(str(key), [0.0, 0.0, 0.0, 0.0, 0.0])
            group[0] += 1
            group[1] += twin.online
            group[2] += twin.anomalous
            if metric is not None:
                value: Any = twin.reported
                for part in metric.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if type(value) in (int, float):
                    group[3] += value
                    group[4] += 1
        return groups
