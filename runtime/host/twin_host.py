"""``TwinHost``: the parts of a host composed, behind the methods its callers call by name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import psutil

from twinfleet.models import ModelArtifacts, ModelRegistry, default_registry
from twinfleet.runtime.artifacts import StoreArtifacts
from twinfleet.runtime.events import EventSink
from twinfleet.runtime.messages import ApplyResult, DeviceMessage
from twinfleet.runtime.placement import Placement
from twinfleet.runtime.stores import StateStore
from twinfleet.runtime.telemetry import TelemetrySink
from twinfleet.twins import Twin
from twinfleet.twins.query import TwinSelector

from .activation import Activation
from .alarms import AlarmPolicy
from .applier import MessageApplier
from .commands import Commands
from .delays import DelaySamples
from .history import HistoryBuffer
from .ledger import CallLedger
from .models import ModelPolicy
from .outbox import Outbox
from .queries import Queries, QueryPage
from .residents import Residents
from .sequencing import BatchSequencer
from .settings import HostSettings
from .sweeps import Sweeper
from .writebehind import WriteBehind
from .writes import GroupCommit, TwinWrites, desired_document

__all__ = ["TwinHost"]

log = logging.getLogger(__name__)


class TwinHost:
    """Hosts many twins: activation, messages, durable writes, snapshots, passivation.

    Each job is a part of its own (see the package docstring); this class builds them around
    one :class:`Residents`, runs the periodic loops and answers calls by delegating to them.
    """

    def __init__(
        self,
        host_id: str,
        store: StateStore,
        *,
        settings: HostSettings | None = None,
        models: ModelRegistry | None = None,
        events: EventSink | None = None,
        telemetry: TelemetrySink | None = None,
        clock: Callable[[], float] = time.time,
        assignments: Mapping[str, Mapping[str, Any]] | None = None,
        alarm_rules: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.host_id = host_id
        self._settings = settings = settings or HostSettings()
        residents = self._residents = Residents(host_id, store, clock=clock)
        outbox = self._outbox = Outbox(events, residents)
        registry = models or default_registry(artifacts=ModelArtifacts(StoreArtifacts(store)))
        self._models = ModelPolicy(host_id, registry, assignments)
        self._alarms = AlarmPolicy(residents, outbox, alarm_rules)
        self._activation = Activation(
            residents,
            settings,
            self._models,
            self._alarms,
            on_activate=self._on_activate,
            on_deactivate=self._on_deactivate,
        )
        self._history = HistoryBuffer(
            residents,
            telemetry,
            activation=self._activation,
            retention_s=settings.history_retention_s,
        )
        self._delays = DelaySamples()
        self._applier = MessageApplier(
            residents,
            self._activation,
            models=self._models,
            history=self._history,
            outbox=outbox,
            delays=self._delays,
        )
        self._sequencer = BatchSequencer(timeout_s=settings.order_timeout_s, host_id=host_id)
        self._writes = TwinWrites(
            residents, self._activation, GroupCommit(residents), self._models, outbox
        )
        self._commands = Commands(residents, self._activation, self._writes, outbox)
        self._queries = Queries(residents, self._models)
        self._write_behind = WriteBehind(residents, self._history, settings)
        self._sweeper = Sweeper(
            residents, self._activation, self._commands, outbox, settings, delays=self._delays
        )
        self._calls = CallLedger(clock=clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the write-behind and sweep loops (idempotent)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._tasks or self._stopped:
            return
        loop = asyncio.get_running_loop()
        # Through this class's methods, not the parts': subclasses override them (sweep).
        self._tasks = [
            loop.create_task(self._every(self._settings.flush_interval_s, self.flush)),
            loop.create_task(self._every(self._settings.event_interval_s, self.send_events)),
            loop.create_task(self._every(self._settings.sweep_interval_s, self.sweep)),
        ]
        if self._history.sink is not None and self._settings.history_retention_s is not None:
            every = self._settings.retention_interval_s
            self._tasks.append(loop.create_task(self._every(every, self.expire_history)))

    async def _every(self, period: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await job()
            except Exception:  # a failing store must not kill the loop; the next round retries
                log.exception("host %s: periodic %s failed", self.host_id, job.__name__)

    async def stop(self) -> int:
        """Stop the loops, flush every dirty twin and close the store; return twins flushed."""
        if self._stopped and not self._tasks:
            return 0
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._stopped = True
        await self.send_events()
        flushed = await self.flush()
        await self._residents.run(self._residents.store.close)
        await self._history.close()
        self._residents.close()
        self._history.shutdown()
        return flushed

    def _on_activate(self, twin: Twin) -> None:
        """Hook: a twin became active (loaded or created)."""

    def _on_deactivate(self, twin: Twin) -> None:
        """Hook: a twin is about to be dropped from memory (already snapshotted)."""

    # -- device messages ----------------------------------------------------------------------

    async def apply(self, messages: Sequence[DeviceMessage]) -> ApplyResult:
        """Apply a batch of device messages; bad ones are rejected one by one, never the batch."""
        self._ensure_started()
        return await self._applier.apply(messages)

    async def apply_packed(
        self, blob: bytes, *, sender: str = "", seq: int = -1, first: int = 0
    ) -> ApplyResult:
        """``apply`` for a batch pickled by a router, in the router's order.

        Ray may run an async actor's calls in any order, so each router numbers its batches
        per host (``seq``); a batch waits for its predecessors. ``first`` is the router's oldest
        unanswered batch: where a host that has not heard from this router (or was restarted)
        starts counting. A predecessor that never comes is given up on after a timeout.
        """
        messages: list[DeviceMessage] = pickle.loads(blob)  # noqa: S301 - from our own router
        if seq < 0:
            return await self.apply(messages)
        async with self._sequencer.turn(sender, seq, first):
            return await self.apply(messages)

    async def delays(self, *, reset: bool = False) -> dict[str, float | int]:
        """Percentiles of sampled message delays (measurement to applied), in milliseconds."""
        return self._delays.percentiles(reset=reset)

    async def device_offline(self, twin_id: str, *, protocol: str | None = None) -> bool:
        """Mark a twin offline now (a last will); False if it was offline or does not exist."""
        self._ensure_started()
        return await self._sweeper.device_offline(twin_id, protocol=protocol)

    # -- reads --------------------------------------------------------------------------------

    async def get(self, twin_id: str) -> dict[str, Any]:
        """The twin document, or :class:`TwinNotFound`."""
        self._ensure_started()
        return (await self._activation.twin(twin_id)).document()

    async def desired(self, twin_id: str) -> dict[str, Any]:
        """``{"version", "desired", "delta"}``: what a device is told to be."""
        self._ensure_started()
        return desired_document(await self._activation.twin(twin_id))

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
        self._ensure_started()
        return await self._queries.query(
            flt, after=after, limit=limit, placement=placement, include_stored=include_stored
        )

    async def aggregate(self, by: str, metric: str | None = None) -> dict[str, list[float]]:
        """Per group of this host's active twins: ``[twins, online, anomalous, sum, n]``.

        ``by`` is ``family`` or ``tag:<key>``; ``sum`` and ``n`` are over the twins whose
        reported ``metric`` (a dotted path) is a number. Groups merge by adding.
        """
        return self._queries.aggregate(by, metric)

    async def training_history(
        self,
        *,
        family: str | None = None,
        twin_ids: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
        max_twins: int = 1_000,
    ) -> dict[str, list[tuple[float, dict[str, float]]]]:
        """Readings from history for training: the named twins this host owns, or (``family``)
        up to ``max_twins`` of its active twins of that family; per twin at most ``limit`` points
        (the oldest of the range), as ``(ts, {metric: value})`` oldest first. Reserved ``$`` series
        (anomaly scores) are left out. Queries run beside the event loop, not on it.
        """
        return await self._history.training_history(
            family=family,
            twin_ids=twin_ids,
            since=since,
            until=until,
            limit=limit,
            max_twins=max_twins,
        )

    # -- application writes -------------------------------------------------------------------

    async def patch_desired(
        self,
        twin_id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        device_type: str | None = None,
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch desired state, durably; creates the twin if it does not exist.

        A missing twin counts as version 0, so ``expected_version=0`` means "only if new".
        A repeated ``call_id`` is answered as the first time, without patching again.
        """
        self._ensure_started()
        return await self._calls.once(
            "patch_desired",
            call_id,
            lambda: self._writes.patch_desired(
                twin_id, patch, expected_version=expected_version, device_type=device_type
            ),
        )

    async def patch_tags(
        self,
        twin_id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch the twin's tags, durably (a repeated ``call_id``: the first answer)."""
        self._ensure_started()
        return await self._calls.once(
            "patch_tags",
            call_id,
            lambda: self._writes.patch_tags(twin_id, patch, expected_version=expected_version),
        )

    async def register(
        self, entry: Mapping[str, Any], *, call_id: str | None = None
    ) -> dict[str, Any]:
        """Create (or update type and tags of) the twin of a registry entry, durably.

        A repeated ``call_id`` is answered as the first time, without registering again.
        """
        self._ensure_started()
        return await self._calls.once("register", call_id, lambda: self._writes.register(entry))

    async def set_lifecycle(
        self,
        twin_id: str,
        state: str,
        *,
        registry: Mapping[str, Any],
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Suspend, resume or decommission a device, durably, with its registry entry.

        A repeated ``call_id`` is answered as the first time, without moving it again.
        """
        self._ensure_started()
        return await self._calls.once(
            "set_lifecycle",
            call_id,
            lambda: self._writes.set_lifecycle(twin_id, state, registry=registry),
        )

    async def set_model(
        self,
        twin_id: str,
        model: str | None,
        params: Mapping[str, Any] | None = None,
        *,
        trained: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Give one twin a model of its own (``model`` None: back to its family's), durably.

        ``trained`` (``{"id", "state"}``, from a training job) starts it from a trained state.
        """
        self._ensure_started()
        return await self._writes.set_model(twin_id, model, params, trained=trained)

    async def ack_alarm(self, twin_id: str, alarm_id: str, *, who: str) -> dict[str, Any]:
        """Acknowledge an open alarm of a twin, durably; the alarm as it is now."""
        self._ensure_started()
        return await self._writes.ack_alarm(twin_id, alarm_id, who=who)

    # -- family policy ------------------------------------------------------------------------

    async def set_family_model(
        self,
        family: str,
        assignment: Mapping[str, Any] | None,
        *,
        states: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Assign ``{"model", "params"}`` to a family (None: back to its built-in default).

        Active twins of the family without a model of their own switch now; the others when
        they are next activated. ``states`` (twin id -> ``{"id", "state"}``) are the trained
        states of twins a training fitted one by one (activated for it). Returns how many
        switched.
        """
        self._ensure_started()
        self._models.assign(family, assignment)
        residents = self._residents
        states = states or {}
        if states:
            await self._activation.activate([t for t in states if t not in residents.twins])
        now = residents.clock()
        changed = 0
        for twin in list(residents.twins.values()):
            own = states.get(twin.id)
            if twin.family.name == family and self._models.reconcile(twin, now, trained=own):
                residents.dirty.add(twin.id)
                changed += 1
        return changed

    async def set_family_alarm_rules(
        self, family: str, rules: Sequence[Mapping[str, Any]] | None
    ) -> int:
        """Judge a family's readings by ``rules`` (None: its built-in ones) from now on.

        Active twins switch now (alarms of rules that are gone clear), sleeping ones when they
        wake. Returns how many active twins had an alarm cleared by the change.
        """
        self._ensure_started()
        return self._alarms.set_family(family, rules)

    # -- commands -----------------------------------------------------------------------------

    async def send_command(
        self,
        twin_id: str,
        request: Mapping[str, Any],
        *,
        command_id: str | None = None,
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Queue a command durably, then wait up to its ``timeout_s`` for the device's answer.

        Returns the command record: final if the device answered in time, else queued or sent.
        A repeated ``call_id`` is answered with the first record, without queueing again.
        """
        self._ensure_started()
        return await self._calls.once(
            "send_command",
            call_id,
            lambda: self._commands.send(twin_id, request, command_id=command_id),
        )

    async def wait_command(
        self, twin_id: str, command_id: str, *, timeout_s: float
    ) -> dict[str, Any]:
        """The command record once final, or as it stands after ``timeout_s``."""
        return await self._commands.wait(twin_id, command_id, timeout_s=timeout_s)

    async def get_command(self, twin_id: str, command_id: str) -> dict[str, Any]:
        """The command record (``UnknownCommand`` if the twin has no such command)."""
        self._ensure_started()
        return await self._commands.get(twin_id, command_id)

    async def claim_commands(
        self, twin_id: str, *, protocol: str, ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Mark queued commands sent (durably) and return them for delivery; once each."""
        self._ensure_started()
        return await self._commands.claim(twin_id, protocol=protocol, ids=ids)

    async def command_response(
        self, twin_id: str, command_id: str, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record a device's answer to a command, durably, and wake whoever waits for it."""
        self._ensure_started()
        return await self._commands.respond(twin_id, command_id, response)

    # -- background work ----------------------------------------------------------------------

    async def send_events(self) -> int:
        """Hand the events so far to the event sink, in order; returns how many."""
        return await self._outbox.send()

    async def flush(self) -> int:
        """Write the snapshots of dirty twins in batches; return how many were written.

        Telemetry history waiting since the last flush is written first.
        """
        return await self._write_behind.flush()

    async def sweep(self) -> tuple[int, int]:
        """Mark silent twins offline and passivate idle ones; return (offline, passivated)."""
        return await self._sweeper.sweep()

    async def expire_history(self) -> int:
        """Delete history older than the retention (every host's: the sink is shared, and
        deleting is idempotent); how many points went. Influx sinks keep their own."""
        return await self._history.expire()

    # -- activation ---------------------------------------------------------------------------

    async def activate(self, ids: Sequence[str]) -> int:
        """Load these twins now (those with a snapshot); return how many are active after."""
        self._ensure_started()
        await self._activation.activate(ids)
        return sum(1 for i in ids if i in self._residents.twins)

    async def passivate(self, ids: Iterable[str]) -> int:
        """Snapshot and drop these twins from memory; return how many were dropped."""
        return await self._activation.passivate(ids)

    async def release(self, placement: Placement) -> int:
        """Passivate every twin this host no longer owns under ``placement`` (rebalancing)."""
        return await self._activation.release(placement)

    # -- introspection ------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """Counters and sizes of this host."""
        twins = self._residents.twins
        return {
            "host": self.host_id,
            "active": len(twins),
            "dirty": len(self._residents.dirty),
            "anomalous": sum(1 for t in twins.values() if t.anomalous),
            "online": sum(1 for t in twins.values() if t.online),
            "rss_bytes": psutil.Process().memory_info().rss,
            "pid": os.getpid(),
            "lag": self._delays.histograms(),
            "messages_by_protocol": self._delays.messages(),
            **self._residents.counters,
        }

    def active_ids(self) -> list[str]:
        """Ids of the twins in memory now (for tests and rebalancing)."""
        return list(self._residents.twins)
