"""``Sweeper``: presence and idleness of a host's twins, checked now and then."""

from __future__ import annotations

import asyncio

from twinfleet.twins import TwinNotFound

from .activation import Activation
from .commands import Commands
from .delays import DelaySamples
from .outbox import Outbox, presence_data
from .residents import Residents
from .settings import HostSettings

__all__ = ["Sweeper"]

_SWEEP_STEP = 5000  # twins swept between two turns of the event loop


class Sweeper:
    """Marks silent twins offline (and those whose device left a last will), closes commands
    whose time is up, and passivates twins idle for longer than the idle timeout.

    Silence is judged by :mod:`twinfleet.twins.presence`: on the edges' clock, less this host's
    current lag for the twin's protocol, with each twin's flap damping.
    """

    def __init__(
        self,
        residents: Residents,
        activation: Activation,
        commands: Commands,
        outbox: Outbox,
        settings: HostSettings,
        *,
        delays: DelaySamples | None = None,
    ) -> None:
        self._residents = residents
        self._activation = activation
        self._commands = commands
        self._outbox = outbox
        self._settings = settings
        self._delays = delays or DelaySamples()

    async def sweep(self) -> tuple[int, int]:
        """Mark silent twins offline and passivate idle ones; return (offline, passivated)."""
        residents = self._residents
        now = residents.clock()
        offline = 0
        lags = self._delays.lags()
        for n, twin in enumerate(list(residents.twins.values())):
            if n % _SWEEP_STEP == _SWEEP_STEP - 1:
                await asyncio.sleep(0)  # a sweep over many twins must not stall calls
                now = residents.clock()
            if twin.silent(now=now, lag=lags.get(twin.protocol or "", 0.0)) and twin.mark_offline(
                now=now
            ):
                residents.dirty.add(twin.id)
                offline += 1
                self._outbox.emit("presence", twin.id, presence_data(twin))
            if twin.commands:
                self._commands.expire(twin)
        residents.counters["offline"] += offline
        horizon = now - self._settings.idle_timeout_s
        idle = [i for i, used in residents.last_used.items() if used < horizon]
        passivated = await self._activation.passivate(idle) if idle else 0
        return offline, passivated

    async def device_offline(self, twin_id: str, *, protocol: str | None = None) -> bool:
        """Mark a twin offline now (a last will); False if it was offline or does not exist."""
        residents = self._residents
        try:
            twin = await self._activation.twin(twin_id)
        except TwinNotFound:
            return False
        if protocol is not None and twin.protocol not in (None, protocol):
            return False  # the device has moved to another protocol since
        if not twin.mark_offline(now=residents.clock()):
            return False
        residents.dirty.add(twin_id)
        residents.counters["offline"] += 1
        self._outbox.emit("presence", twin_id, presence_data(twin))
        return True
