"""``Residents``: the twins a host holds in memory, and what its parts share about them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from twinfleet.runtime.stores import StateStore
from twinfleet.twins import Twin

__all__ = ["COUNTERS", "Residents"]

P = ParamSpec("P")
R = TypeVar("R")

# What a host counts (``TwinHost.stats``), in the order it reports them.
COUNTERS = (
    "applied",
    "stale",
    "rejected",
    "activated",
    "created",
    "passivated",
    "snapshots",
    "flushes",
    "commits",
    "flush_errors",
    "offline",
    "events",
    "commands_queued",
    "commands_answered",
    "history_points",
    "history_dropped",
    "history_errors",
    "history_expired",
)


class Residents:
    """The active twins of one host, with what every part of the host shares about them.

    Which twins are in memory, when each was last used, which changed since their last
    snapshot (``dirty``), which have an application write under way; the host's clock, its
    counters, its store and the one thread store calls run on.
    """

    def __init__(self, host_id: str, store: StateStore, *, clock: Callable[[], float]) -> None:
        self.host_id = host_id
        self.store = store
        self.clock = clock
        self.twins: dict[str, Twin] = {}
        self.last_used: dict[str, float] = {}
        self.dirty: set[str] = set()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._write_locks: dict[str, asyncio.Lock] = {}
        self.io = ThreadPoolExecutor(1, thread_name_prefix=f"twinfleet-store-{host_id}")

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store call on the host's single store thread.

        One thread, so store calls happen in the order they were made: a write-behind
        snapshot can never overtake a later commit of the same twin.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.io, lambda: fn(*args, **kwargs))

    def write_lock(self, twin_id: str) -> asyncio.Lock:
        """The lock application writes to ``twin_id`` take turns on."""
        lock = self._write_locks.get(twin_id)
        if lock is None:
            lock = self._write_locks[twin_id] = asyncio.Lock()
        return lock

    def writing(self, twin_id: str) -> bool:
        """Whether an application write to ``twin_id`` is under way."""
        lock = self._write_locks.get(twin_id)
        return lock is not None and lock.locked()

    def drop(self, twin_id: str) -> Twin | None:
        """Take a (saved) twin out of memory; the twin, if it was there."""
        self._write_locks.pop(twin_id, None)
        self.last_used.pop(twin_id, None)
        return self.twins.pop(twin_id, None)

    def forget(self, twin_id: str) -> None:
        """Drop a twin from memory without saving it (one whose creation was not committed)."""
        self.twins.pop(twin_id, None)
        self.last_used.pop(twin_id, None)
        self.dirty.discard(twin_id)

    def close(self) -> None:
        """Stop the store thread once the calls queued on it are done."""
        self.io.shutdown(wait=True)
