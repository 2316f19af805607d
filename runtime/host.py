"""``TwinHost``: many virtual twins in one process, as plain (Ray-free) logic.

A host activates a twin on its first message or call (loading its snapshot), applies messages
one at a time per twin, commits application writes (desired, tags, registry) to the state store
before answering, snapshots reported and model state write-behind (dirty twins only, in
batches), sweeps presence, and passivates idle twins. ``runtime/actors.py`` turns it into a Ray
actor; unit tests drive it directly.

Concurrency: all methods run on one asyncio loop. Twin state only changes between awaits, so
each twin sees one message at a time. Store calls run on one worker thread, in order, so a
write-behind snapshot can never overtake a later commit of the same twin.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import functools
import logging
import os
import pickle
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import psutil

from twinfleet.errors import StoreUnavailable, VersionConflict
from twinfleet.models import ModelArtifacts, ModelRegistry, default_registry, prescore
from twinfleet.twins import (
    FINAL_STATUSES,
    CommandRequest,
    Twin,
    TwinfleetError,
    TwinNotFound,
    UnknownModel,
    family_for,
    parse_timestamp,
    validate_device_id,
)
from twinfleet.twins.alarms import AlarmRule, rules_from_documents
from twinfleet.twins.query import TwinSelector
from twinfleet.twins.twin import ModelSlot

from .artifacts import StoreArtifacts
from .events import Event, EventSink
from .messages import ApplyResult, DeviceMessage, Rejection
from .placement import Placement
from .stores import StateStore
from .telemetry import (
    ANOMALY_FLAG,
    ANOMALY_SCORE,
    HistoryUnavailable,
    Point,
    TelemetrySink,
    points_from_message,
)

__all__ = ["HostSettings", "QueryPage", "TwinHost", "desired_document"]

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


ALARM_RULES = "alarm-rules"  # store items: family -> {"family", "rules": [...]}
MODEL_ASSIGNMENT = "model-assignment"  # store items: family -> {"family", "model", "params"}
_YIELD_EVERY = 128  # messages applied between two turns of the event loop
# What an application write may change on a twin, put back if its commit fails.
_UNDONE = ("desired", "desired_ts", "tags", "type", "family", "model", "model_info", "alarms")
_PRESCORE_EVERY = 1024  # readings scored in one call by batch-scored models (a forest: ~6 ms/call)
_WRITE_CHUNK = 20_000  # history points per sink write
_HISTORY_CHUNK = 100  # twins per history query when training reads a family
_MAX_PENDING_POINTS = 1_000_000  # history kept while the sink is down (about 100 MB)
_SWEEP_STEP = 5000  # twins swept between two turns of the event loop


@dataclass(frozen=True, slots=True)
class HostSettings:
    """Timing and batching of one host."""

    flush_interval_s: float = 1.0
    idle_timeout_s: float = 600.0
    sweep_interval_s: float = 5.0
    flush_batch: int = 100
    load_batch: int = 1000
    event_interval_s: float = 0.05
    order_timeout_s: float = 10.0
    history_retention_s: float | None = 7 * 86_400.0  # embedded history kept; None: forever
    retention_interval_s: float = 300.0

    def __post_init__(self) -> None:
        for name in (
            "flush_interval_s",
            "idle_timeout_s",
            "sweep_interval_s",
            "order_timeout_s",
            "event_interval_s",
            "retention_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.flush_batch < 1 or self.load_batch < 1:
            raise ValueError("batch sizes must be at least 1")
        if self.history_retention_s is not None and self.history_retention_s <= 0:
            raise ValueError("history_retention_s must be positive (None: keep forever)")


@dataclass(frozen=True, slots=True)
class QueryPage:
    """Twins one host found for a query, in id order; ``live`` ids came from memory."""

    items: tuple[dict[str, Any], ...]
    live: frozenset[str]


def desired_document(twin: Twin) -> dict[str, Any]:
    """What the device is told: ``{"version", "desired", "delta"}`` (published retained)."""
    return {"version": twin.version, "desired": copy.deepcopy(twin.desired), "delta": twin.delta()}


class TwinHost:
    """Hosts many twins: activation, messages, durable writes, snapshots, passivation."""

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
        # family -> {"model", "params"}: the model its twins get unless a twin has its own
        self._assignments: dict[str, dict[str, Any]] = {
            family: dict(a) for family, a in (assignments or {}).items()
        }
        # family -> the alarm rules its twins follow instead of the built-in ones
        self._alarm_rules: dict[str, tuple[AlarmRule, ...]] = {
            family: rules_from_documents(rules) for family, rules in (alarm_rules or {}).items()
        }
        self._telemetry = telemetry
        self._points: list[Point] = []  # telemetry history waiting for the next flush
        self._history_failing = False
        self._events = events
        self._outbox: list[Event] = []
        self._delays: collections.deque[float] = collections.deque(maxlen=50_000)
        self._waiters: dict[tuple[str, str], list[asyncio.Future[dict[str, Any]]]] = {}
        self._store = store
        self._settings = settings or HostSettings()
        self._models = models or default_registry(artifacts=ModelArtifacts(StoreArtifacts(store)))
        self._batch_scoring = False  # whether any twin here has a batch-scored model
        self._clock = clock
        self._twins: dict[str, Twin] = {}
        self._last_used: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._io = ThreadPoolExecutor(1, thread_name_prefix=f"twinfleet-store-{host_id}")
        # Training's history reads, beside the store thread where the sink allows (its flush
        # writes would otherwise queue every read behind a second or more of writing).
        self._reads = (
            ThreadPoolExecutor(1, thread_name_prefix=f"twinfleet-history-{host_id}")
            if getattr(telemetry, "concurrent_reads", False)
            else self._io
        )
        self._activation = asyncio.Lock()
        self._write_locks: dict[str, asyncio.Lock] = {}
        self._commits: list[
            tuple[Mapping[str, Any], Mapping[str, Any] | None, asyncio.Future[None]]
        ] = []
        self._committer: asyncio.Task[None] | None = None
        self._turns: dict[str, int] = {}  # router -> sequence number of its next batch
        self._turn_changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._counters = dict.fromkeys(
            (
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
            ),
            0,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the write-behind and sweep loops (idempotent)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._tasks or self._stopped:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self._settings.flush_interval_s, self.flush)),
            loop.create_task(self._every(self._settings.event_interval_s, self.send_events)),
            loop.create_task(self._every(self._settings.sweep_interval_s, self.sweep)),
        ]
        if self._telemetry is not None and self._settings.history_retention_s is not None:
            every = self._settings.retention_interval_s
            self._tasks.append(loop.create_task(self._every(every, self.expire_history)))

    async def expire_history(self) -> int:
        """Delete history older than the retention (every host's: the sink is shared, and
        deleting is idempotent); how many points went. Influx sinks keep their own."""
        retention = self._settings.history_retention_s
        if self._telemetry is None or retention is None:
            return 0
        deleted: int = await self._run(self._telemetry.delete_before, self._clock() - retention)
        self._counters["history_expired"] += deleted
        return deleted

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
        await self._run(self._store.close)
        if self._telemetry is not None:
            await self._run(self._telemetry.close)
        self._io.shutdown(wait=True)
        self._reads.shutdown(wait=True)
        return flushed

    async def _run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store call on the host's single store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))

    # -- activation ---------------------------------------------------------------------------

    async def _activate(
        self, ids: Iterable[str], *, create: Mapping[str, str | None] | None = None
    ) -> None:
        """Make ``ids`` active: load snapshots, create twins listed in ``create`` (id -> type)."""
        async with self._activation:
            missing = [i for i in dict.fromkeys(ids) if i not in self._twins]
            if not missing:
                return
            step = self._settings.load_batch
            now = self._clock()
            for start in range(0, len(missing), step):
                chunk = missing[start : start + step]
                snaps = await self._run(self._store.load_many, chunk)
                for twin_id in chunk:
                    snap = snaps.get(twin_id)
                    if snap is not None:
                        twin = Twin.from_snapshot(snap, restore_model=self._restore_model)
                        self._twins[twin_id] = twin
                        # A model assigned while it slept: not a change anyone made to it.
                        if self._reconcile_model(twin, now, bump=False):
                            self._dirty.add(twin_id)
                        self._counters["activated"] += 1
                    elif create is not None and twin_id in create:
                        device_type = create[twin_id]
                        twin = Twin(twin_id, device_type=device_type, now=now)
                        self._reconcile_model(twin, now, bump=False)
                        self._twins[twin_id] = twin
                        self._dirty.add(twin_id)
                        self._counters["created"] += 1
                    else:
                        continue
                    self._last_used[twin_id] = now
                    self._apply_alarm_rules(self._twins[twin_id], now)
                    self._on_activate(self._twins[twin_id])

    def _on_activate(self, twin: Twin) -> None:
        """Hook: a twin became active (loaded or created)."""

    def _apply_alarm_rules(self, twin: Twin, now: float) -> bool:
        """Give ``twin`` its family's current alarm rules; alarms of removed rules clear."""
        rules = self._alarm_rules.get(twin.family.name)
        if rules is None and twin.alarm_rules is None and not twin.alarms.open:
            return False  # the common case: built-in rules, nothing to retire
        if not twin.set_alarm_rules(rules, now=now):
            return False
        self._dirty.add(twin.id)
        for alarm in twin.alarm_changes:
            self._emit("alarm", twin.id, dict(alarm))
        twin.alarm_changes = []
        return True

    async def set_family_alarm_rules(
        self, family: str, rules: Sequence[Mapping[str, Any]] | None
    ) -> int:
        """Judge a family's readings by ``rules`` (None: its built-in ones) from now on.

        Active twins switch now (alarms of rules that are gone clear), sleeping ones when they
        wake. Returns how many active twins had an alarm cleared by the change.
        """
        self._ensure_started()
        if rules is None:
            self._alarm_rules.pop(family, None)
        else:
            self._alarm_rules[family] = rules_from_documents(rules)
        now = self._clock()
        return sum(
            self._apply_alarm_rules(twin, now)
            for twin in list(self._twins.values())
            if twin.family.name == family
        )

    def _on_deactivate(self, twin: Twin) -> None:
        """Hook: a twin is about to be dropped from memory (already snapshotted)."""

    def _chosen_model(self, twin: Twin, trained: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{"name", "params", "source"}`` of the model ``twin`` should have now (and
        ``trained``, the id of the training it comes from, if it does)."""
        info = twin.model_info
        if info is not None and info.get("source") == "twin":
            chosen = {"name": info["name"], "params": info.get("params") or {}, "source": "twin"}
            if info.get("trained"):
                chosen["trained"] = info["trained"]
            return chosen
        assigned = self._assignments.get(twin.family.name)
        if assigned is not None:
            chosen = {
                "name": assigned["model"],
                "params": assigned.get("params") or {},
                "source": "family",
            }
            training = assigned.get("trained")
            if training:
                # A family-wide state serves every twin; a twin trained on its own readings
                # (or being given its state now) keeps that training; others start untrained.
                current = (twin.model_info or {}).get("trained")
                given = trained is not None and trained.get("id") == training["id"]
                if "state" in training or current == training["id"] or given:
                    chosen["trained"] = training["id"]
            return chosen
        return {"name": twin.family.default_model, "params": {}, "source": "default"}

    def _reconcile_model(
        self,
        twin: Twin,
        now: float,
        *,
        bump: bool = True,
        trained: Mapping[str, Any] | None = None,
    ) -> bool:
        """Give ``twin`` the model chosen for it if it has another; whether it changed.

        A twin keeps its model (and what it learnt) while name, parameters and version stay
        the same; a change of assignment, a new training or an upgraded plugin replaces it.
        A trained model's version is the spec's and the training's id (``1+3f9a...``); it
        starts from the trained state (``trained``, or its family assignment's).
        """
        chosen = self._chosen_model(twin, trained)
        name, params = chosen["name"], chosen["params"]
        try:
            version = self._models.spec(name).version
        except UnknownModel:
            if chosen["source"] == "default" or twin.model_info is None:
                log.warning("host %s: model %r is unknown; twin has none", self.host_id, name)
                if twin.model is None:
                    return False
                twin.set_model(None, now=now, bump=bump)
                return True
            # An assigned model that this host cannot make (plugin missing here): keep the old.
            log.warning("host %s: assigned model %r is unknown here", self.host_id, name)
            return False
        training = chosen.get("trained")
        if training:
            version = f"{version}+{training}"
        info = {**chosen, "version": version}
        current = twin.model_info
        if (
            twin.model is not None
            and current is not None
            and all(current.get(k) == info[k] for k in ("name", "params", "version"))
        ):
            if current.get("source") != info["source"]:
                twin.model_info = info  # same model, now by another rule: keep what it learnt
            return False
        legacy = twin.model is not None and current is None and info["source"] == "default"
        if legacy and twin.model is not None and twin.model.name == name and not params:
            twin.model_info = info  # a snapshot from before models were versioned
            return False
        model = self._new_model(twin, name, params, info, trained)
        if getattr(model, "batch_group", None) is not None:
            self._batch_scoring = True
        twin.set_model(model, now=now, info=info, bump=bump)
        return True

    def _new_model(
        self,
        twin: Twin,
        name: str,
        params: Mapping[str, Any],
        info: dict[str, Any],
        trained: Mapping[str, Any] | None,
    ) -> ModelSlot:
        """The model ``info`` describes: from its trained state when there is one."""
        training = info.get("trained")
        if training:
            state = None
            if trained is not None and trained.get("id") == training:
                state = trained.get("state")
            elif info["source"] == "family":
                state = self._assignments[twin.family.name]["trained"].get("state")
            if state is not None:
                try:
                    return self._models.restore(name, state)
                except (KeyError, ValueError, TypeError) as err:
                    log.warning("host %s: trained %s not restored: %s", self.host_id, name, err)
            # The trained state is out of reach: an untrained model, and a version that says so.
            info.pop("trained")
            info["version"] = info["version"].partition("+")[0]
        return self._models.create(name, params)

    async def aggregate(self, by: str, metric: str | None = None) -> dict[str, list[float]]:
        """Per group of this host's active twins: ``[twins, online, anomalous, sum, n]``.

        ``by`` is ``family`` or ``tag:<key>``; ``sum`` and ``n`` are over the twins whose
        reported ``metric`` (a dotted path) is a number. Groups merge by adding.
        """
        tag = by[4:] if by.startswith("tag:") else None
        groups: dict[str, list[float]] = {}
        for twin in self._twins.values():
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
        if self._telemetry is None:
            raise HistoryUnavailable("this platform keeps no telemetry history to train on")
        if twin_ids:
            await self._activate([t for t in twin_ids if t not in self._twins])
            chosen = [t for t in twin_ids if t in self._twins]
        else:
            chosen = [t.id for t in self._twins.values() if t.family.name == family][:max_twins]
        # The readings waiting for the sink belong in it too (a bounded share of them when
        # the sink is behind: training must not wait for the whole backlog).
        await self._write_history(most=5 * _WRITE_CHUNK)
        history: dict[str, list[tuple[float, dict[str, float]]]] = {}
        sink = self._telemetry
        for start in range(0, len(chosen), _HISTORY_CHUNK):
            # Many twins per query, and the IO thread free for flushes between the queries.
            read = functools.partial(
                sink.query_many,
                chosen[start : start + _HISTORY_CHUNK],
                since=since,
                until=until,
                limit=limit,
            )
            found = await asyncio.get_running_loop().run_in_executor(self._reads, read)
            for twin_id, points in found.items():
                readings: dict[float, dict[str, float]] = {}
                for point in points:
                    if not point.metric.startswith("$"):
                        readings.setdefault(point.ts, {})[point.metric] = point.value
                if readings:
                    history[twin_id] = sorted(readings.items())
        return history

    async def ack_alarm(self, twin_id: str, alarm_id: str, *, who: str) -> dict[str, Any]:
        """Acknowledge an open alarm of a twin, durably; the alarm as it is now."""

        def change(twin: Twin, now: float) -> bool:
            return twin.acknowledge_alarm(alarm_id, who=who, now=now)

        def alarm_of(twin: Twin) -> dict[str, Any]:
            return next(a for a in twin.alarms.alarms() if a["id"] == alarm_id)

        alarm: dict[str, Any] = await self._write(
            twin_id,
            change,
            answer=alarm_of,
            committed=lambda twin: self._emit("alarm", twin.id, dict(alarm_of(twin))),
        )
        return alarm

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
        if assignment is None:
            self._assignments.pop(family, None)
        else:
            self._assignments[family] = dict(assignment)
        states = states or {}
        if states:
            await self._activate([t for t in states if t not in self._twins])
        now = self._clock()
        changed = 0
        for twin in list(self._twins.values()):
            own = states.get(twin.id)
            if twin.family.name == family and self._reconcile_model(twin, now, trained=own):
                self._dirty.add(twin.id)
                changed += 1
        return changed

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
        if model is not None:
            self._models.checked(model, params)  # refuse bad names and params now

        def change(twin: Twin, now: float) -> bool:
            twin.model_info = (
                None
                if model is None
                else {"name": model, "params": dict(params or {}), "source": "twin"}
            )
            if twin.model_info is not None and trained is not None:
                twin.model_info["trained"] = trained["id"]
            return self._reconcile_model(twin, now, trained=trained) or True

        doc: dict[str, Any] = await self._write(twin_id, change)
        return doc

    def _restore_model(self, name: str, state: Mapping[str, Any]) -> ModelSlot:
        try:
            model = self._models.restore(name, state)
            if getattr(model, "batch_group", None) is not None:
                self._batch_scoring = True
            return model
        except (UnknownModel, ValueError, TypeError, KeyError):
            # A snapshot from a model that is gone (uninstalled plugin): start a fresh default.
            log.warning("host %s: cannot restore model %r; using a fresh ewma", self.host_id, name)
            return self._models.create("ewma")

    async def _twin(self, twin_id: str) -> Twin:
        twin = self._twins.get(twin_id)
        if twin is None:
            validate_device_id(twin_id)
            await self._activate([twin_id])
            twin = self._twins.get(twin_id)
            if twin is None:
                raise TwinNotFound(twin_id)
        self._last_used[twin_id] = self._clock()
        return twin

    async def activate(self, ids: Sequence[str]) -> int:
        """Load these twins now (those with a snapshot); return how many are active after."""
        self._ensure_started()
        await self._activate(ids)
        return sum(1 for i in ids if i in self._twins)

    # -- device messages ----------------------------------------------------------------------

    async def apply(self, messages: Sequence[DeviceMessage]) -> ApplyResult:
        """Apply a batch of device messages; bad ones are rejected one by one, never the batch."""
        self._ensure_started()
        twins = self._twins
        rejected: list[Rejection] = []
        protocols: list[str | None] = []  # of each rejected message, for its event
        new: dict[str, str | None] = {}
        refused: set[Any] = set()
        for msg in messages:
            if msg[0] not in twins and msg[0] not in new:
                try:
                    validate_device_id(msg[0])
                except TwinfleetError as err:
                    rejected.append(Rejection(str(msg[0]), err.code, err.message))
                    protocols.append(msg[4] if len(msg) > 4 else None)
                    refused.add(msg[0])
                    continue
                new[msg[0]] = msg[5] if len(msg) > 5 else None
        if new:
            await self._activate(new, create=new)
        now = self._clock()
        applied = stale = 0
        history = self._telemetry is not None
        dirty = self._dirty
        last_used = self._last_used
        missed: list[DeviceMessage] = []
        for n, msg in enumerate(messages):
            if n % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Let application calls in between: a big batch must not stall them.
                await asyncio.sleep(0)
            if self._batch_scoring and n % _PRESCORE_EVERY == 0:
                self._prescore(messages[n : n + _PRESCORE_EVERY])
            twin_id = msg[0]
            twin = twins.get(twin_id)
            if twin is None:
                if twin_id not in refused:
                    missed.append(msg)  # passivated while this batch yielded: load it again
                continue
            was_online = twin.online
            was_anomalous = twin.anomalous
            was_scored = twin.scored
            try:
                changed = twin.apply_message(msg[1], msg[2], now=now, ts=msg[3], protocol=msg[4])
            except TwinfleetError as err:
                rejected.append(Rejection(twin_id, err.code, err.message))
                protocols.append(msg[4])
                continue
            except (TypeError, ValueError, AttributeError) as err:
                rejected.append(Rejection(twin_id, "invalid_message", str(err)))
                protocols.append(msg[4])
                continue
            last_used[twin_id] = now
            scored = twin.scored != was_scored
            if history and (scored or msg[1] == "telemetry"):
                # valid: the twin has just parsed it
                when = parse_timestamp(msg[3] if msg[3] is not None else msg[2].get("ts", now))
                if msg[1] == "telemetry":
                    # History keeps every accepted reading, stale ones included.
                    self._points.extend(points_from_message(twin_id, msg[2], when))
                if scored:
                    self._record_score(twin, was_anomalous, when)
            if changed:
                applied += 1
                dirty.add(twin_id)
                if twin.anomalous != was_anomalous:
                    self._emit("anomaly", twin_id, self._anomaly_data(twin))
                if twin.alarm_changes:
                    for alarm in twin.alarm_changes:
                        self._emit("alarm", twin_id, dict(alarm))
                    twin.alarm_changes = []
            else:
                stale += 1
            if not was_online:
                dirty.add(twin_id)  # presence changed, even if no value did
                self._emit("presence", twin_id, self._presence_data(twin))
        self._sample_delays(messages, self._clock())
        if len(self._points) > _MAX_PENDING_POINTS:
            self._bound_history()
        for rejection, protocol in zip(rejected, protocols, strict=True):
            data = {"code": rejection.code, "message": rejection.message, "protocol": protocol}
            self._emit("rejected", rejection.device_id, data)
        counters = self._counters
        counters["applied"] += applied
        counters["stale"] += stale
        counters["rejected"] += len(rejected)
        if missed:
            more = await self.apply(missed)
            return ApplyResult(
                applied + more.applied, stale + more.stale, (*rejected, *more.rejected)
            )
        return ApplyResult(applied, stale, tuple(rejected))

    def _bound_history(self) -> None:
        """Drop the oldest waiting history points beyond the bound (counted): a sink that is
        down or slower than the devices must not grow a host without end."""
        excess = len(self._points) - _MAX_PENDING_POINTS
        if excess > 0:
            del self._points[:excess]
            self._counters["history_dropped"] += excess
            if not self._history_failing:
                log.warning("host %s: history sink behind, oldest points dropped", self.host_id)

    def _prescore(self, messages: Sequence[DeviceMessage]) -> None:
        """Score the readings of batch-scored models (one numpy call per group) ahead of time.

        Each model hands its verdict out when the twin applies that reading; a reading the twin
        takes otherwise (stale, say) is scored on its own then.
        """
        twins = self._twins
        readings: list[tuple[Any, dict[str, float]]] = []
        for msg in messages:
            twin = twins.get(msg[0])
            if twin is None or getattr(twin.model, "batch_group", None) is None:
                continue
            payload = msg[2]
            values = {k: v for k, v in payload.items() if type(v) in (float, int) and k != "ts"}
            if values:
                readings.append((twin.model, values))
        if readings:
            prescore(readings)

    def _record_score(self, twin: Twin, was_anomalous: bool, when: float) -> None:
        """Keep the model's verdict in history: every score, and each flip of the flag."""
        self._points.append(Point(twin.id, ANOMALY_SCORE, when, float(twin.anomaly_score)))
        if twin.anomalous != was_anomalous:
            self._points.append(Point(twin.id, ANOMALY_FLAG, when, 1.0 if twin.anomalous else 0.0))

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
        await self._await_turn(sender, seq, first)
        try:
            return await self.apply(messages)
        finally:
            await self._end_turn(sender, seq)

    async def _await_turn(self, sender: str, seq: int, first: int) -> None:
        turns = self._turns
        if sender not in turns:
            turns[sender] = first
        if turns[sender] >= seq:
            return
        async with self._turn_changed:
            try:
                await asyncio.wait_for(
                    self._turn_changed.wait_for(lambda: turns[sender] >= seq),
                    timeout=self._settings.order_timeout_s,
                )
            except TimeoutError:
                log.warning(
                    "host %s: batch %d of router %s waited %.0f s for batch %d; applying it",
                    self.host_id,
                    seq,
                    sender[:8],
                    self._settings.order_timeout_s,
                    turns[sender],
                )

    async def _end_turn(self, sender: str, seq: int) -> None:
        async with self._turn_changed:
            self._turns[sender] = max(self._turns[sender], seq + 1)
            self._turn_changed.notify_all()

    def _sample_delays(self, messages: Sequence[DeviceMessage], now: float) -> None:
        """Keep how long some messages took from measurement to applied (a few per batch)."""
        step = max(1, len(messages) // 16)
        for i in range(0, len(messages), step):
            msg = messages[i]
            ts = msg[3]
            if ts is None and isinstance(msg[2], dict):
                ts = msg[2].get("ts")
            if type(ts) is float and 0 <= now - ts < 3600:
                self._delays.append(now - ts)

    async def delays(self, *, reset: bool = False) -> dict[str, float | int]:
        """Percentiles of sampled message delays (measurement to applied), in milliseconds."""
        samples = sorted(self._delays)
        if reset:
            self._delays.clear()
        if not samples:
            return {"samples": 0}

        def pick(q: float) -> float:
            return round(1000 * samples[min(len(samples) - 1, int(q * len(samples)))], 2)

        return {
            "samples": len(samples),
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
            "max_ms": pick(1.0),
        }

    # -- application calls --------------------------------------------------------------------

    async def get(self, twin_id: str) -> dict[str, Any]:
        """The twin document, or :class:`TwinNotFound`."""
        self._ensure_started()
        return (await self._twin(twin_id)).document()

    async def patch_desired(
        self,
        twin_id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        device_type: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch desired state, durably; creates the twin if it does not exist.

        A missing twin counts as version 0, so ``expected_version=0`` means "only if new".
        """
        doc: dict[str, Any] = await self._write(
            twin_id,
            lambda twin, now: twin.patch_desired(patch, now=now, expected_version=expected_version),
            create_type=device_type,
            create=True,
            expected_version=expected_version,
            committed=lambda twin: self._emit("desired", twin.id, desired_document(twin)),
        )
        return doc

    async def desired(self, twin_id: str) -> dict[str, Any]:
        """``{"version", "desired", "delta"}``: what a device is told to be."""
        self._ensure_started()
        return desired_document(await self._twin(twin_id))

    async def device_offline(self, twin_id: str, *, protocol: str | None = None) -> bool:
        """Mark a twin offline now (a last will); False if it was offline or does not exist."""
        self._ensure_started()
        try:
            twin = await self._twin(twin_id)
        except TwinNotFound:
            return False
        if protocol is not None and twin.protocol not in (None, protocol):
            return False  # the device has moved to another protocol since
        if not twin.mark_offline(now=self._clock()):
            return False
        self._dirty.add(twin_id)
        self._counters["offline"] += 1
        self._emit("presence", twin_id, self._presence_data(twin))
        return True

    # -- commands -----------------------------------------------------------------------------

    async def send_command(
        self, twin_id: str, request: Mapping[str, Any], *, command_id: str | None = None
    ) -> dict[str, Any]:
        """Queue a command durably, then wait up to its ``timeout_s`` for the device's answer.

        Returns the command record: final if the device answered in time, else queued or sent.
        """
        command = CommandRequest(**request)
        cmd_id = command_id or uuid.uuid4().hex[:16]

        def change(twin: Twin, now: float) -> bool:
            twin.add_command(command, cmd_id, now=now)
            return True

        record: dict[str, Any] = await self._write(
            twin_id,
            change,
            answer=lambda twin: copy.deepcopy(twin.command(cmd_id)),
            committed=lambda twin: self._command_event(twin, twin.command(cmd_id)),
        )
        self._counters["commands_queued"] += 1
        if command.timeout_s <= 0 or record["status"] in FINAL_STATUSES:
            return record
        return await self.wait_command(twin_id, cmd_id, timeout_s=command.timeout_s)

    async def wait_command(
        self, twin_id: str, command_id: str, *, timeout_s: float
    ) -> dict[str, Any]:
        """The command record once final, or as it stands after ``timeout_s``."""
        twin = await self._twin(twin_id)
        record = twin.command(command_id)
        if record["status"] in FINAL_STATUSES or timeout_s <= 0:
            return copy.deepcopy(record)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault((twin_id, command_id), [])
        waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return copy.deepcopy((await self._twin(twin_id)).command(command_id))
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop((twin_id, command_id), None)

    async def get_command(self, twin_id: str, command_id: str) -> dict[str, Any]:
        """The command record (``UnknownCommand`` if the twin has no such command)."""
        self._ensure_started()
        twin = await self._twin(twin_id)
        self._expire_commands(twin)
        return copy.deepcopy(twin.command(command_id))

    async def claim_commands(
        self, twin_id: str, *, protocol: str, ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Mark queued commands sent (durably) and return them for delivery; once each."""
        claimed: list[dict[str, Any]] = []

        def change(twin: Twin, now: float) -> bool:
            claimed.extend(twin.claim_commands(ids, now=now))
            return bool(claimed)

        def committed(twin: Twin) -> None:
            for record in claimed:
                self._command_event(twin, record)

        try:
            await self._write(twin_id, change, answer=lambda twin: None, committed=committed)
        except TwinNotFound:
            return []
        return [{k: r[k] for k in ("id", "name", "params", "expires_at")} for r in claimed]

    async def command_response(
        self, twin_id: str, command_id: str, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record a device's answer to a command, durably, and wake whoever waits for it."""

        def change(twin: Twin, now: float) -> bool:
            return twin.answer_command(command_id, response, now=now)

        def committed(twin: Twin) -> None:
            self._counters["commands_answered"] += 1
            self._command_event(twin, twin.command(command_id))

        record: dict[str, Any] = await self._write(
            twin_id,
            change,
            answer=lambda twin: copy.deepcopy(twin.command(command_id)),
            committed=committed,
        )
        return record

    def _command_event(self, twin: Twin, record: Mapping[str, Any]) -> None:
        data = {**record, "protocol": twin.protocol, "online": twin.online}
        self._emit("command", twin.id, data)
        if record["status"] in FINAL_STATUSES:
            for future in self._waiters.pop((twin.id, record["id"]), []):
                if not future.done():
                    future.set_result(copy.deepcopy(dict(record)))

    def _expire_commands(self, twin: Twin) -> None:
        """Close a twin's commands whose time is up (written with its next snapshot)."""
        for record in twin.expire_commands(now=self._clock()):
            self._dirty.add(twin.id)
            self._command_event(twin, record)

    # -- events -------------------------------------------------------------------------------

    def _emit(self, kind: str, twin_id: str, data: Mapping[str, Any]) -> None:
        self._outbox.append(Event(kind, twin_id, data, self._clock()))

    @staticmethod
    def _presence_data(twin: Twin) -> dict[str, Any]:
        return {
            "online": twin.online,
            "protocol": twin.protocol,
            "pending_commands": twin.pending_commands(),
        }

    @staticmethod
    def _anomaly_data(twin: Twin) -> dict[str, Any]:
        return {
            "model": twin.model.name if twin.model is not None else None,
            "score": twin.anomaly_score,
            "anomalous": twin.anomalous,
            "since": twin.anomaly_since,
        }

    async def send_events(self) -> int:
        """Hand the events so far to the event sink, in order; returns how many."""
        if not self._outbox:
            return 0
        batch, self._outbox = self._outbox, []
        if self._events is not None:
            await self._events.publish(batch)
        self._counters["events"] += len(batch)
        return len(batch)

    async def patch_tags(
        self,
        twin_id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Merge-patch the twin's tags, durably."""
        doc: dict[str, Any] = await self._write(
            twin_id,
            lambda twin, now: twin.patch_tags(patch, now=now, expected_version=expected_version),
        )
        return doc

    async def register(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Create (or update type and tags of) the twin of a registry entry, durably."""
        device_type = entry.get("type")

        def change(twin: Twin, now: float) -> bool:
            changed = False
            if twin.version == 0 and not twin.reported:
                twin.lifecycle = "registered"  # created now: active on its first message
            if device_type and device_type != twin.type:
                twin.type = device_type
                twin.family = family_for(device_type)
                self._reconcile_model(twin, now)
                changed = True
            tags = entry.get("tags")
            if tags:
                changed = twin.patch_tags(tags, now=now) or changed
            return changed

        doc: dict[str, Any] = await self._write(
            validate_device_id(entry["id"]),
            change,
            create_type=device_type,
            create=True,
            registry=entry,
        )
        return doc

    async def set_lifecycle(
        self, twin_id: str, state: str, *, registry: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Suspend, resume or decommission a device, durably, with its registry entry."""
        doc: dict[str, Any] = await self._write(
            twin_id,
            lambda twin, now: twin.set_lifecycle(state, now=now),
            registry={**registry, "lifecycle": state},
        )
        return doc

    async def _write(
        self,
        twin_id: str,
        change: Callable[[Twin, float], bool],
        *,
        create_type: str | None = None,
        create: bool = False,
        expected_version: int | None = None,
        registry: Mapping[str, Any] | None = None,
        answer: Callable[[Twin], Any] = Twin.document,
        committed: Callable[[Twin], None] | None = None,
    ) -> Any:  # what ``answer`` returns: the twin document unless told otherwise
        """Apply ``change`` to a twin and commit it before answering; undo it if that fails.

        ``answer`` builds the reply from the twin, ``committed`` runs once the change is durable
        (events, waking waiters).

        Application writes to one twin take turns (device messages still flow meanwhile), so
        an undo never takes another acknowledged write with it.
        """
        self._ensure_started()
        validate_device_id(twin_id)
        lock = self._write_locks.get(twin_id)
        if lock is None:
            lock = self._write_locks[twin_id] = asyncio.Lock()
        async with lock:
            twin = self._twins.get(twin_id)
            if twin is None:
                await self._activate([twin_id])
                twin = self._twins.get(twin_id)
            created = twin is None
            if twin is None:
                if not create:
                    raise TwinNotFound(twin_id)
                if expected_version not in (None, 0):
                    raise VersionConflict(twin_id, expected_version, 0)
                await self._activate([twin_id], create={twin_id: create_type})
                twin = self._twins[twin_id]
            now = self._clock()
            self._last_used[twin_id] = now
            version, updated = twin.version, twin.updated
            undo = [getattr(twin, name) for name in _UNDONE]
            commands = copy.deepcopy(twin.commands)  # records change in place
            if not change(twin, now) and not created and registry is None:
                return answer(twin)
            bumped = twin.version - version
            snapshot = twin.snapshot()
            self._dirty.discard(twin_id)  # this commit covers everything up to now
            try:
                await self._commit(snapshot, registry)
            except Exception as err:
                if created:
                    self._forget(twin_id)
                else:
                    # Patches replace these containers rather than mutate them: this is exact.
                    for name, value in zip(_UNDONE, undo, strict=True):
                        setattr(twin, name, value)
                    twin.commands = commands
                    if twin.version == version + bumped:  # no device message meanwhile
                        twin.version, twin.updated = version, updated
                    self._dirty.add(twin_id)
                if isinstance(err, TwinfleetError):
                    raise
                raise StoreUnavailable(f"the state store could not commit: {err}") from err
            self._counters["commits"] += 1
            if committed is not None:
                committed(twin)
            return answer(twin)

    async def _commit(
        self, snapshot: Mapping[str, Any], registry: Mapping[str, Any] | None
    ) -> None:
        """Commit durably, together with the other commits waiting now (group commit).

        One transaction (one fsync) carries every commit that arrived while the previous one
        was being written, so many concurrent writers cost a few transactions, not one each.
        If it fails, it fails for all of them, and each undoes its own change.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commits.append((snapshot, registry, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._write_commits())
        await future

    async def _write_commits(self) -> None:
        while self._commits:
            batch, self._commits = self._commits, []
            try:
                await self._run(self._store.commit_many, [(s, r) for s, r, _ in batch])
            except Exception as err:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(err)
            else:
                for *_, future in batch:
                    if not future.done():
                        future.set_result(None)

    def _forget(self, twin_id: str) -> None:
        """Drop a twin from memory without saving it."""
        self._twins.pop(twin_id, None)
        self._last_used.pop(twin_id, None)
        self._dirty.discard(twin_id)

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
        if limit < 1:
            return QueryPage((), frozenset())
        live = sorted(
            twin_id
            for twin_id, twin in self._twins.items()
            if (after is None or twin_id > after) and flt.matches_twin(twin)
        )[:limit]
        found = {twin_id: self._twins[twin_id].document() for twin_id in live}
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
        # Past the limit-th live match, nothing stored can make the page any more.
        stop_at = live[-1] if len(live) >= limit else None
        found: dict[str, dict[str, Any]] = {}
        page_size = 1000
        cursor = after
        while True:
            page = await self._run(self._store.scan, after=cursor, limit=page_size)
            for snap in page:
                twin_id = snap["id"]
                if stop_at is not None and twin_id > stop_at:
                    return found
                if twin_id in self._twins or (
                    placement is not None and placement.owner(twin_id) != self.host_id
                ):
                    continue
                if flt.matches_snapshot(snap):
                    twin = Twin.from_snapshot(snap, restore_model=self._restore_model)
                    found[twin_id] = twin.document()
                    if len(found) >= limit:
                        return found
            if len(page) < page_size:
                return found
            cursor = page[-1]["id"]

    # -- background work ----------------------------------------------------------------------

    async def _write_history(self, most: int | None = None) -> None:
        """Write the telemetry history waiting for the sink, in chunks (kept if it fails).

        Only what waits now (and at most ``most`` points): points arriving meanwhile wait for
        the next round, so a sink slower than the devices cannot hold back what follows.
        """
        budget = len(self._points) if most is None else min(most, len(self._points))
        while budget > 0 and self._points and self._telemetry is not None:
            # In chunks: snapshots and history queries take turns on the IO thread meanwhile.
            budget -= _WRITE_CHUNK
            points = self._points[:_WRITE_CHUNK]
            del self._points[:_WRITE_CHUNK]
            try:
                await self._run(self._telemetry.write, points)
            except Exception as err:
                # Kept for the next flush (the sink may be restarting), up to a bound.
                self._points = points + self._points
                self._bound_history()
                self._counters["history_errors"] += 1
                if not self._history_failing:
                    log.warning(
                        "host %s: telemetry history not written, retrying: %s", self.host_id, err
                    )
                self._history_failing = True
                break
            else:
                self._counters["history_points"] += len(points)
                if self._history_failing:
                    log.warning("host %s: telemetry history written again", self.host_id)
                self._history_failing = False

    async def flush(self) -> int:
        """Write the snapshots of dirty twins in batches; return how many were written.

        Telemetry history waiting since the last flush is written first.
        """
        await self._write_history()
        written = 0
        while self._dirty:
            batch_ids = []
            for twin_id in self._dirty:
                batch_ids.append(twin_id)
                if len(batch_ids) >= self._settings.flush_batch:
                    break
            self._dirty.difference_update(batch_ids)
            snaps = [self._twins[i].snapshot() for i in batch_ids if i in self._twins]
            try:
                await self._run(self._store.save_many, snaps)
            except Exception:
                self._dirty.update(s["id"] for s in snaps)  # keep them dirty for the next round
                self._counters["flush_errors"] += 1
                raise
            written += len(snaps)
        if written:
            self._counters["snapshots"] += written
            self._counters["flushes"] += 1
        return written

    async def sweep(self) -> tuple[int, int]:
        """Mark silent twins offline and passivate idle ones; return (offline, passivated)."""
        now = self._clock()
        offline = 0
        for n, twin in enumerate(list(self._twins.values())):
            if n % _SWEEP_STEP == _SWEEP_STEP - 1:
                await asyncio.sleep(0)  # a sweep over many twins must not stall calls
            if (
                twin.online
                and twin.last_seen is not None
                and now - twin.last_seen > twin.family.offline_after_s
                and twin.mark_offline(now=now)
            ):
                self._dirty.add(twin.id)
                offline += 1
                self._emit("presence", twin.id, self._presence_data(twin))
            if twin.commands:
                self._expire_commands(twin)
        self._counters["offline"] += offline
        horizon = now - self._settings.idle_timeout_s
        idle = [i for i, used in self._last_used.items() if used < horizon]
        passivated = await self.passivate(idle) if idle else 0
        return offline, passivated

    async def passivate(self, ids: Iterable[str]) -> int:
        """Snapshot and drop these twins from memory; return how many were dropped."""
        ids = [i for i in ids if i in self._twins]
        if not ids:
            return 0
        dirty = [i for i in ids if i in self._dirty]
        step = self._settings.flush_batch
        for start in range(0, len(dirty), step):  # in batches: calls go on in between
            chunk = [i for i in dirty[start : start + step] if i in self._twins]
            snaps = [self._twins[i].snapshot() for i in chunk]
            self._dirty.difference_update(chunk)
            try:
                await self._run(self._store.save_many, snaps)
            except Exception:
                self._dirty.update(chunk)
                raise
        dropped = 0
        for twin_id in ids:
            if twin_id in self._dirty:
                continue  # changed while we were saving: keep it for the next sweep
            lock = self._write_locks.get(twin_id)
            if lock is not None and lock.locked():
                continue  # an application write is under way
            self._write_locks.pop(twin_id, None)
            twin = self._twins.pop(twin_id, None)
            self._last_used.pop(twin_id, None)
            if twin is not None:
                self._on_deactivate(twin)
                dropped += 1
        self._counters["passivated"] += dropped
        return dropped

    async def release(self, placement: Placement) -> int:
        """Passivate every twin this host no longer owns under ``placement`` (rebalancing)."""
        return await self.passivate(
            [i for i in list(self._twins) if placement.owner(i) != self.host_id]
        )

    async def stats(self) -> dict[str, Any]:
        """Counters and sizes of this host."""
        return {
            "host": self.host_id,
            "active": len(self._twins),
            "dirty": len(self._dirty),
            "anomalous": sum(1 for t in self._twins.values() if t.anomalous),
            "online": sum(1 for t in self._twins.values() if t.online),
            "rss_bytes": psutil.Process().memory_info().rss,
            "pid": os.getpid(),
            **self._counters,
        }

    def active_ids(self) -> list[str]:
        """Ids of the twins in memory now (for tests and rebalancing)."""
        return list(self._twins)
