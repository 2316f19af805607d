"""``WriteBehind``: what changed in memory since the last snapshot, saved in batches."""

from __future__ import annotations

from .history import HistoryBuffer
from .residents import Residents
from .settings import HostSettings

__all__ = ["WriteBehind"]


class WriteBehind:
    """Saves the snapshots of dirty twins (reported state, presence, model state) and the
    telemetry history waiting for its sink: the changes not committed as they were made."""

    def __init__(
        self, residents: Residents, history: HistoryBuffer, settings: HostSettings
    ) -> None:
        self._residents = residents
        self._history = history
        self._settings = settings

    async def flush(self) -> int:
        """Write the snapshots of dirty twins in batches; return how many were written.

        Telemetry history waiting since the last flush is written first.
        """
        await self._history.write()
        residents = self._residents
        dirty = residents.dirty
        counters = residents.counters
        written = 0
        while dirty:
            batch_ids = []
            for twin_id in dirty:
                batch_ids.append(twin_id)
                if len(batch_ids) >= self._settings.flush_batch:
                    break
            dirty.difference_update(batch_ids)
            twins = residents.twins
            snaps = [twins[i].snapshot() for i in batch_ids if i in twins]
            try:
                await residents.run(residents.store.save_many, snaps)
            except Exception:
                dirty.update(s["id"] for s in snaps)  # keep them dirty for the next round
                counters["flush_errors"] += 1
                raise
            written += len(snaps)
        if written:
            counters["snapshots"] += written
            counters["flushes"] += 1
        return written
