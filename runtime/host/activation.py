"""``Activation``: bringing twins into a host's memory and dropping them again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from twinfleet.runtime.placement import Placement
from twinfleet.twins import Twin, TwinNotFound, validate_device_id

from .alarms import AlarmPolicy
from .models import ModelPolicy
from .residents import Residents
from .settings import HostSettings

__all__ = ["Activation"]


class Activation:
    """Loads twins from their snapshots (or creates them) and passivates them.

    A twin that wakes gets the model and alarm rules its family has now; ``on_activate`` and
    ``on_deactivate`` hear of each twin that comes and goes.
    """

    def __init__(
        self,
        residents: Residents,
        settings: HostSettings,
        models: ModelPolicy,
        alarms: AlarmPolicy,
        *,
        on_activate: Callable[[Twin], None],
        on_deactivate: Callable[[Twin], None],
    ) -> None:
        self._residents = residents
        self._settings = settings
        self._models = models
        self._alarms = alarms
        self._on_activate = on_activate
        self._on_deactivate = on_deactivate
        self._lock = asyncio.Lock()

    async def activate(
        self, ids: Iterable[str], *, create: Mapping[str, str | None] | None = None
    ) -> None:
        """Make ``ids`` active: load snapshots, create twins listed in ``create`` (id -> type)."""
        residents = self._residents
        twins = residents.twins
        async with self._lock:
            missing = [i for i in dict.fromkeys(ids) if i not in twins]
            if not missing:
                return
            step = self._settings.load_batch
            now = residents.clock()
            for start in range(0, len(missing), step):
                chunk = missing[start : start + step]
                snaps = await residents.run(residents.store.load_many, chunk)
                for twin_id in chunk:
                    snap = snaps.get(twin_id)
                    if snap is not None:
                        twin = Twin.from_snapshot(snap, restore_model=self._models.restore)
                        twins[twin_id] = twin
                        # A model assigned while it slept: not a change anyone made to it.
                        if self._models.reconcile(twin, now, bump=False):
                            residents.dirty.add(twin_id)
                        residents.counters["activated"] += 1
                    elif create is not None and twin_id in create:
                        twin = Twin(twin_id, device_type=create[twin_id], now=now)
                        self._models.reconcile(twin, now, bump=False)
                        twins[twin_id] = twin
                        residents.dirty.add(twin_id)
                        residents.counters["created"] += 1
                    else:
                        continue
                    residents.last_used[twin_id] = now
                    self._alarms.apply(twin, now)
                    self._on_activate(twin)

    async def twin(self, twin_id: str) -> Twin:
        """The twin, loaded if it sleeps (:class:`TwinNotFound` if it has no snapshot)."""
        residents = self._residents
        twin = residents.twins.get(twin_id)
        if twin is None:
            validate_device_id(twin_id)
            await self.activate([twin_id])
            twin = residents.twins.get(twin_id)
            if twin is None:
                raise TwinNotFound(twin_id)
        residents.last_used[twin_id] = residents.clock()
        return twin

    async def passivate(self, ids: Iterable[str]) -> int:
        """Snapshot and drop these twins from memory; return how many were dropped."""
        residents = self._residents
        twins = residents.twins
        ids = [i for i in ids if i in twins]
        if not ids:
            return 0
        dirty = [i for i in ids if i in residents.dirty]
        step = self._settings.flush_batch
        for start in range(0, len(dirty), step):  # in batches: calls go on in between
            chunk = [i for i in dirty[start : start + step] if i in twins]
            snaps = [twins[i].snapshot() for i in chunk]
            residents.dirty.difference_update(chunk)
            try:
                await residents.run(residents.store.save_many, snaps)
            except Exception:
                residents.dirty.update(chunk)
                raise
        dropped = 0
        for twin_id in ids:
            if twin_id in residents.dirty:
                continue  # changed while we were saving: keep it for the next sweep
            if residents.writing(twin_id):
                continue  # an application write is under way
            twin = residents.drop(twin_id)
            if twin is not None:
                self._on_deactivate(twin)
                dropped += 1
        residents.counters["passivated"] += dropped
        return dropped

    async def release(self, placement: Placement) -> int:
        """Passivate every twin this host no longer owns under ``placement`` (rebalancing)."""
        host_id = self._residents.host_id
        return await self.passivate(
            [i for i in list(self._residents.twins) if placement.owner(i) != host_id]
        )
