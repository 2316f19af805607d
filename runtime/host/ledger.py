"""``CallLedger``: calls that are not idempotent, applied once however often they are sent.

A caller names each such call with a ``call_id`` and sends it again, with the same id, when it
cannot tell whether the first one arrived (a lost connection, a retried Ray task). The ledger
remembers recent ids with their outcome: a repeated id is answered with the first answer (or
the first error) without applying the call again, and one that arrives while the first is still
running waits for it. The first call runs in a task of its own, so a caller that gives up
(cancelled) does not leave the change half made for its resend.

Memory is bounded: finished calls are remembered for ``ttl_s`` or until ``capacity`` newer ones
finished, whichever comes first; calls still running are never forgotten. A ledger lives in
one host's memory: a host that restarts has forgotten them.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["CallLedger"]

R = TypeVar("R")


class _Call:
    """One call by id: the task running it, then its outcome."""

    __slots__ = ("error", "finished", "result", "settled", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.settled = False  # its outcome is kept (or it was cancelled and forgotten)
        self.finished = 0.0
        self.result: Any = None
        self.error: BaseException | None = None

    def replay(self) -> Any:
        """The first outcome again: a copy of its answer, or its error raised."""
        if self.error is not None:
            raise self.error
        return copy.deepcopy(self.result)


class CallLedger:
    """Remembers recent call ids with their outcome, to answer a resent call once."""

    def __init__(
        self,
        *,
        capacity: int = 10_000,
        ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or ttl_s <= 0:
            raise ValueError("a call ledger needs a positive capacity and ttl_s")
        self._capacity = capacity
        self._ttl_s = ttl_s
        self._clock = clock
        self._running: dict[tuple[str, str], _Call] = {}
        self._finished: collections.OrderedDict[tuple[str, str], _Call] = collections.OrderedDict()

    def __len__(self) -> int:
        """How many call ids it remembers (running and finished)."""
        self._forget_old()
        return len(self._running) + len(self._finished)

    async def once(
        self,
        method: str,
        call_id: str | None,
        call: Callable[[], Coroutine[Any, Any, R]],
    ) -> R:
        """``await call()``, unless call ``call_id`` of ``method`` ran already or is running:
        then its first outcome. Without a ``call_id``, just ``await call()``."""
        if call_id is None:
            return await call()
        key = (method, call_id)
        self._forget_old()
        while (known := self._running.get(key) or self._finished.get(key)) is not None:
            if not known.task.done():
                await asyncio.wait([known.task])  # not awaited: its error is raised by replay
            self._done(key, known)  # in case the task's own callback has not run yet
            if not known.task.cancelled():
                result: R = known.replay()
                return result
            # Cancelled (its host stopping) and so forgotten: nothing was decided; look again,
            # another resend may have started it anew meanwhile.
        task = asyncio.get_running_loop().create_task(call())
        entry = self._running[key] = _Call(task)
        task.add_done_callback(lambda _: self._done(key, entry))
        # Shielded: a caller that gives up does not cancel the call its resend will wait for.
        return await asyncio.shield(task)

    def _done(self, key: tuple[str, str], entry: _Call) -> None:
        """Keep the outcome of a call that finished (before its caller sees the answer)."""
        if entry.settled:
            return
        entry.settled = True
        if self._running.get(key) is entry:
            del self._running[key]
        if entry.task.cancelled():
            return
        entry.error = entry.task.exception()
        if entry.error is None:
            entry.result = copy.deepcopy(entry.task.result())  # the caller may change its copy
        entry.finished = self._clock()
        self._finished[key] = entry
        self._finished.move_to_end(key)
        self._forget_old()

    def _forget_old(self) -> None:
        finished = self._finished
        horizon = self._clock() - self._ttl_s
        while finished:
            entry = next(iter(finished.values()))
            if len(finished) <= self._capacity and entry.finished > horizon:
                break
            finished.popitem(last=False)
