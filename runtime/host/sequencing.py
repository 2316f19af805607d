"""``BatchSequencer``: each router's batches applied in the order the router sent them.

Ray may run an async actor's calls in any order, so a router numbers the batches it sends to a
host (``seq``: 0, 1, 2, ...) and each waits for its turn. ``first`` (the router's oldest batch
not yet answered) is where a host that has not heard from this router (new, or restarted)
starts counting. A predecessor that never comes (its call was lost) is given up on after
``timeout_s``; if it comes later it goes through at once. A router that restarts is a new
sender (routers name themselves afresh), counting from 0 beside the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

__all__ = ["BatchSequencer"]

log = logging.getLogger(__name__)


class BatchSequencer:
    """Turns for numbered batches, per sender: batch ``seq`` waits for ``0 .. seq - 1``."""

    def __init__(self, *, timeout_s: float, host_id: str = "") -> None:
        self._timeout_s = timeout_s
        self._host_id = host_id
        self._turns: dict[str, int] = {}  # sender -> sequence number of its next batch
        self._turn_changed = asyncio.Condition()

    def next_turn(self, sender: str) -> int | None:
        """The number of the batch ``sender`` is waiting for (None: never heard of it)."""
        return self._turns.get(sender)

    @contextlib.asynccontextmanager
    async def turn(self, sender: str, seq: int, first: int) -> AsyncIterator[None]:
        """Wait until batch ``seq`` of ``sender`` is next (or the timeout), then hold the turn
        until the block ends, when the next batch goes."""
        await self._wait_turn(sender, seq, first)
        try:
            yield
        finally:
            await self._end_turn(sender, seq)

    async def _wait_turn(self, sender: str, seq: int, first: int) -> None:
        turns = self._turns
        if sender not in turns:
            turns[sender] = first
        if turns[sender] >= seq:
            return
        async with self._turn_changed:
            try:
                await asyncio.wait_for(
                    self._turn_changed.wait_for(lambda: turns[sender] >= seq),
                    timeout=self._timeout_s,
                )
            except TimeoutError:
                log.warning(
                    "host %s: batch %d of router %s waited %.0f s for batch %d; applying it",
                    self._host_id,
                    seq,
                    sender[:8],
                    self._timeout_s,
                    turns[sender],
                )

    async def _end_turn(self, sender: str, seq: int) -> None:
        async with self._turn_changed:
            self._turns[sender] = max(self._turns[sender], seq + 1)
            self._turn_changed.notify_all()
