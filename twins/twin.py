"""The twin: one device's state and the rules that change it. Pure Python, no I/O.

A :class:`Twin` is driven by one caller at a time (its host). Every accepted change raises
``version`` by one. Reported state is merged leaf by leaf with device timestamps, so an older
reading never overwrites a newer one; desired state and tags are JSON merge patches checked
against an optional expected version.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any, Literal, Protocol

import orjson

from twinfleet.errors import (
    Conflict,
    DeviceRefused,
    DocumentTooLarge,
    InvalidPatch,
    InvalidRequest,
    UnknownCommand,
    VersionConflict,
)

from . import snapshot as snapshots
from .alarms import AlarmRule, AlarmTracker
from .commands import FINAL_STATUSES, MAX_FINISHED_COMMANDS, CommandRequest, answer, expire
from .families import DeviceFamily, family_for
from .limits import MAX_DOCUMENT_BYTES, check_depth, parse_timestamp
from .merge import (
    INT_MAX,
    INT_MIN,
    delta,
    merge_patch,
    merge_timestamped,
    validate_values,
    visible_stamps,
)
from .presence import damping_after, is_silent

__all__ = ["LIFECYCLE_STATES", "MessageKind", "ModelSlot", "Twin", "TwinCheckpoint"]

LIFECYCLE_STATES = ("registered", "active", "suspended", "decommissioned")

MessageKind = Literal["telemetry", "reported"]


class ModelSlot(Protocol):
    """What a twin needs of its anomaly model (``twinfleet.models.AnomalyModel`` fits)."""

    name: str

    def update(self, values: Mapping[str, float], ts: float) -> tuple[float, bool, str | None]:
        """Score and learn a reading; returns ``(score, anomalous, metric)``."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON-ready state to rebuild the model from."""
        ...


ModelRestorer = Callable[[str, Mapping[str, Any]], ModelSlot]


class Twin:
    """A device twin: reported, desired, tags, connectivity, firmware and anomaly state."""

    __slots__ = (
        "_size_bound",
        "alarm_changes",
        "alarm_rules",
        "alarms",
        "anomalous",
        "anomaly_score",
        "anomaly_since",
        "commands",
        "created",
        "desired",
        "desired_ts",
        "family",
        "id",
        "last_seen",
        "lifecycle",
        "model",
        "model_info",
        "online",
        "presence_damping",
        "protocol",
        "reported",
        "reported_ts",
        "scored",
        "tags",
        "type",
        "updated",
        "version",
        "windows",
    )

    def __init__(
        self,
        twin_id: str,
        *,
        device_type: str | None = None,
        tags: Mapping[str, Any] | None = None,
        model: ModelSlot | None = None,
        lifecycle: str = "active",
        now: float,
    ) -> None:
        if lifecycle not in LIFECYCLE_STATES:
            raise InvalidRequest(
                f"lifecycle {lifecycle!r} is not one of {LIFECYCLE_STATES}", field="lifecycle"
            )
        self.id = twin_id
        self.type = device_type or "generic"
        self.family: DeviceFamily = family_for(device_type)
        self.tags: dict[str, Any] = dict(tags) if tags else {}
        self.version = 0
        self.reported: dict[str, Any] = {}
        self.reported_ts: dict[str, Any] = {}
        self.desired: dict[str, Any] = {}
        self.desired_ts: dict[str, Any] = {}
        self.created = now
        self.updated = now
        self.online = False
        self.last_seen: float | None = None
        self.presence_damping = 1.0  # stretches the offline threshold of a flapping device
        self.protocol: str | None = None
        self.model = model
        self.anomaly_score = 0.0
        self.anomalous = False
        self.anomaly_since: float | None = None
        self.scored = 0  # readings its model has scored since activation (not saved)
        self.alarms = AlarmTracker()
        self.alarm_changes: list[dict[str, Any]] = []  # raised/cleared by the last message
        self.alarm_rules: tuple[AlarmRule, ...] | None = None  # None: its family's built-ins
        # How the model was chosen: {"name", "version", "params", "source": default|family|twin}
        self.model_info: dict[str, Any] | None = None
        self._size_bound = _EMPTY_STATE_BYTES
        self.commands: dict[str, dict[str, Any]] | None = None  # by id, oldest first
        self.lifecycle = lifecycle

    # -- device messages ----------------------------------------------------------------------

    def apply_message(
        self,
        kind: MessageKind,
        payload: Mapping[str, Any],
        *,
        now: float,
        ts: float | None = None,
        protocol: str | None = None,
        seen: float | None = None,
    ) -> int:
        """Apply a device's telemetry or reported patch; return how many leaves it changed.

        ``ts`` is the measurement time when the transport knows it; a ``ts`` key inside the
        payload wins. Stale leaves are skipped (the caller still stores them as history).
        ``seen`` is when the edge received the message (default ``now``): the device's
        ``last_seen``, which presence is judged by (:mod:`twinfleet.twins.presence`).
        """
        if not isinstance(payload, dict):
            raise InvalidPatch(f"a {kind} payload must be a JSON object", field="payload")
        if self.lifecycle != "active":
            if self.lifecycle != "registered":
                raise DeviceRefused(
                    f"device {self.id!r} is {self.lifecycle}: its messages are refused",
                    field="lifecycle",
                )
            self.lifecycle = "active"  # a registered device's first message
        if "ts" in payload:
            payload = dict(payload)
            ts = parse_timestamp(payload.pop("ts"))
        if ts is None:
            ts = now
        elif type(ts) is not float:
            ts = parse_timestamp(ts)
        # Fast path: numbers and short strings into keys that already exist, merged in place.
        # Anything that can grow the document (new keys, objects, lists, long strings, nulls)
        # is merged on a copy and size-checked first.
        grows = False
        growth = 0  # an upper bound of what replacing values in place adds to the state
        reported = self.reported
        for key, value in payload.items():
            kind_of = type(value)
            if kind_of is float:
                if not isfinite(value):
                    raise InvalidPatch(f"{kind}.{key} is not a finite number", field=key)
                growth += _MAX_NUMBER_BYTES
            elif kind_of is str:
                grows = grows or len(value) > _SHORT_STRING
                growth += 6 * len(value) + 2  # worst case: every character escaped
            elif kind_of is int:
                if not INT_MIN <= value <= INT_MAX:
                    raise InvalidPatch(f"{kind}.{key} is an integer beyond 64 bits", field=key)
                growth += _MAX_NUMBER_BYTES
            elif kind_of is bool:
                growth += 5
            else:
                validate_values({key: value}, field=kind)
                grows = True
            if key not in reported:
                if not key or "\x00" in key:
                    raise InvalidPatch(f"{kind} has a key that is empty or holds NUL", field=kind)
                grows = True
        if not grows:
            # The bound only rises on this path; measure exactly when it nears the limit.
            bound = self._size_bound + growth
            if bound > MAX_DOCUMENT_BYTES:
                bound = self._state_size() + growth
                grows = bound > MAX_DOCUMENT_BYTES
            if not grows:
                self._size_bound = bound
        numeric: dict[str, float] = {}
        if grows:
            if any(type(v) is dict or type(v) is list for v in payload.values()):
                check_depth(payload, base=1, field=kind)
            if kind == "telemetry":
                payload = {k: v for k, v in payload.items() if v is not None}
            accepted = self._merge_checked(payload, ts, numeric)
        else:
            accepted = merge_timestamped(reported, self.reported_ts, payload, ts, numeric)
        self._seen(now if seen is None or seen > now else seen)
        if protocol is not None:
            self.protocol = protocol
        if not accepted:
            return 0
        self.version += 1
        self.updated = now
        if numeric and self.model is not None:
            score, anomalous, _ = self.model.update(numeric, ts)
            self._record_verdict(score, anomalous, ts)
            self.scored += 1
        if numeric:
            rules = self.alarm_rules
            self.alarm_changes = self.alarms.observe(
                self.family.alarm_rules if rules is None else rules,
                anomalous=self.anomalous,
                values=numeric,
                ts=ts,
                twin_id=self.id,
            )
        return accepted

    def _merge_checked(
        self, payload: Mapping[str, Any], ts: float, numeric: dict[str, float]
    ) -> int:
        """Merge on copies, check the document size, then swap them in."""
        values = copy.deepcopy(self.reported)
        stamps = copy.deepcopy(self.reported_ts)
        accepted = merge_timestamped(values, stamps, payload, ts, numeric)
        self._check_size(reported=values)
        self.reported = values
        self.reported_ts = stamps
        return accepted

    def _record_verdict(self, score: float, anomalous: bool, ts: float) -> None:
        self.anomaly_score = score
        if anomalous and not self.anomalous:
            self.anomaly_since = ts
        elif not anomalous:
            self.anomaly_since = None
        self.anomalous = anomalous

    # -- application writes -------------------------------------------------------------------

    def patch_desired(
        self, patch: Mapping[str, Any], *, now: float, expected_version: int | None = None
    ) -> bool:
        """Merge-patch the desired state; return whether it changed."""
        self.check_version(expected_version)
        self._check_patch(patch, "desired")
        desired = copy.deepcopy(self.desired)
        stamps = copy.deepcopy(self.desired_ts)
        if not merge_patch(desired, patch):
            return False
        _restamp(stamps, desired, patch, now)
        self._check_size(desired=desired)
        self.desired = desired
        self.desired_ts = stamps
        self._bump(now)
        return True

    def patch_tags(
        self, patch: Mapping[str, Any], *, now: float, expected_version: int | None = None
    ) -> bool:
        """Merge-patch the tags; return whether they changed."""
        self.check_version(expected_version)
        self._check_patch(patch, "tags")
        tags = copy.deepcopy(self.tags)
        if not merge_patch(tags, patch):
            return False
        self._check_size(tags=tags)
        self.tags = tags
        self._bump(now)
        return True

    def set_model(
        self,
        model: ModelSlot | None,
        *,
        now: float,
        info: Mapping[str, Any] | None = None,
        bump: bool = True,
    ) -> None:
        """Give this twin another anomaly model (or none), forgetting the old verdict.

        ``info`` records how it was chosen (name, version, params, source); ``bump=False`` for
        a twin being created (its first version already includes the model).
        """
        self.model = model
        self.model_info = dict(info) if info is not None else None
        self.anomaly_score = 0.0
        self.anomalous = False
        self.anomaly_since = None
        if bump:
            self._bump(now)

    def set_alarm_rules(self, rules: tuple[AlarmRule, ...] | None, *, now: float) -> bool:
        """Judge readings by ``rules`` from now on (None: the family's built-ins); alarms of
        rules that are gone are cleared (they are the ``alarm_changes``). Whether the document
        changed."""
        self.alarm_rules = rules
        retired = self.alarms.retire(self.family.alarm_rules if rules is None else rules, now=now)
        self.alarm_changes = retired
        if retired:
            self._bump(now)
        return bool(retired)

    def acknowledge_alarm(self, alarm_id: str, *, who: str, now: float) -> bool:
        """An operator has seen alarm ``alarm_id``; whether that changed anything."""
        # A copy, changed: a write that fails to commit puts the old tracker back.
        self.alarms = AlarmTracker.from_state(self.alarms.state())
        _, news = self.alarms.acknowledge(alarm_id, who=who, now=now)
        if news:
            self._bump(now)
        return news

    def _seen(self, when: float) -> None:
        last = self.last_seen
        if last is not None:
            if when < last:
                return  # an older message (through another gateway, say) tells nothing new
            self.presence_damping = damping_after(
                self.presence_damping,
                gap=when - last,
                offline_after_s=self.family.offline_after_s,
                was_online=self.online,
            )
        self.last_seen = when
        self.online = True

    def silent(self, *, now: float, lag: float = 0.0) -> bool:
        """Whether this online device has been silent past its (damped) threshold at ``now``,
        not counting ``lag`` of the platform's own."""
        return self.online and is_silent(
            self.last_seen,
            now=now,
            offline_after_s=self.family.offline_after_s,
            lag=lag,
            damping=self.presence_damping,
        )

    def mark_offline(self, *, now: float) -> bool:
        """Count this twin as offline (silence or a last will); return whether that is news."""
        if not self.online:
            return False
        self.online = False
        self._bump(now)
        return True

    def set_lifecycle(self, state: str, *, now: float) -> bool:
        """Move the device to another lifecycle state; returns whether it changed."""
        if state not in LIFECYCLE_STATES:
            raise InvalidRequest(
                f"lifecycle {state!r} is not one of {LIFECYCLE_STATES}", field="lifecycle"
            )
        if state == self.lifecycle:
            return False
        if self.lifecycle == "decommissioned":
            raise InvalidRequest(
                f"device {self.id!r} is decommissioned for good", field="lifecycle"
            )
        self.lifecycle = state
        self._bump(now)
        return True

    def check_version(self, expected_version: int | None) -> None:
        """Raise :class:`VersionConflict` if ``expected_version`` is given and is not current."""
        if expected_version is not None and expected_version != self.version:
            raise VersionConflict(self.id, expected_version, self.version)

    def _bump(self, now: float) -> None:
        self.version += 1
        self.updated = now

    @staticmethod
    def _check_patch(patch: Mapping[str, Any], section: str) -> None:
        if not isinstance(patch, dict):
            raise InvalidPatch(f"a {section} patch must be a JSON object", field=section)
        validate_values(patch, field=section)
        check_depth(patch, base=1, field=section)

    def _check_size(
        self,
        *,
        reported: Mapping[str, Any] | None = None,
        desired: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        size = self._state_size(reported=reported, desired=desired, tags=tags)
        if size <= MAX_DOCUMENT_BYTES:
            self._size_bound = size
        else:
            raise DocumentTooLarge(
                f"the change would make the twin's state {size} bytes, over the "
                f"{MAX_DOCUMENT_BYTES} byte limit",
                field="reported" if reported is not None else "desired" if desired else "tags",
            )

    def _state_size(
        self,
        *,
        reported: Mapping[str, Any] | None = None,
        desired: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> int:
        """Bytes of the state the document limit counts, with any section replaced."""
        return len(
            orjson.dumps(
                (
                    self.reported if reported is None else reported,
                    self.desired if desired is None else desired,
                    self.tags if tags is None else tags,
                )
            )
        )

    # -- commands -----------------------------------------------------------------------------

    def add_command(
        self, request: CommandRequest, command_id: str, *, now: float
    ) -> dict[str, Any]:
        """Queue a command for the device; returns its record (the twin keeps it)."""
        if self.commands is None:
            self.commands = {}
        if command_id in self.commands:
            raise Conflict(f"command id {command_id!r} is taken", field="id")
        record = request.record(command_id, now=now)
        self.commands[command_id] = record
        finished = [k for k, r in self.commands.items() if r["status"] in FINAL_STATUSES]
        for key in finished[: max(0, len(finished) - MAX_FINISHED_COMMANDS)]:
            del self.commands[key]
        return record

    def command(self, command_id: str) -> dict[str, Any]:
        """The record of command ``command_id`` (``UnknownCommand`` if there is none)."""
        record = (self.commands or {}).get(command_id)
        if record is None:
            raise UnknownCommand(
                f"twin {self.id!r} has no command {command_id!r}", field="command_id"
            )
        return record

    def pending_commands(self) -> int:
        """How many commands wait for the device."""
        return sum(1 for r in (self.commands or {}).values() if r["status"] == "queued")

    def claim_commands(self, ids: Collection[str] | None, *, now: float) -> list[dict[str, Any]]:
        """Mark queued, unexpired commands (all, or those ``ids``) sent; return them."""
        claimed = []
        for record in (self.commands or {}).values():
            if record["status"] != "queued" or (ids is not None and record["id"] not in ids):
                continue
            if expire(record, now=now):
                continue
            record["status"] = "sent"
            record["sent_at"] = now
            claimed.append(record)
        return claimed

    def answer_command(self, command_id: str, response: Mapping[str, Any], *, now: float) -> bool:
        """Record the device's answer; False if the command was already final."""
        return answer(self.command(command_id), response, now=now)

    def expire_commands(self, *, now: float) -> list[dict[str, Any]]:
        """Close commands whose time is up; returns those that changed."""
        return [r for r in (self.commands or {}).values() if expire(r, now=now)]

    # -- what its host needs ------------------------------------------------------------------

    def checkpoint(self) -> TwinCheckpoint:
        """What an application write may change, as it is now (for :meth:`restore`)."""
        # Writes replace these containers rather than mutate them (commands aside, which
        # change in place): keeping the references is an exact copy, and a cheap one.
        return TwinCheckpoint(
            desired=self.desired,
            desired_ts=self.desired_ts,
            tags=self.tags,
            type=self.type,
            family=self.family,
            model=self.model,
            model_info=self.model_info,
            verdict=(self.anomaly_score, self.anomalous, self.anomaly_since),
            alarms=self.alarms,
            commands=copy.deepcopy(self.commands),
            lifecycle=self.lifecycle,
            version=self.version,
            updated=self.updated,
        )

    def restore(self, checkpoint: TwinCheckpoint, *, bumped: int) -> None:
        """Undo an application write that could not be made durable.

        ``bumped`` is how many versions the write added. Device messages may have arrived
        meanwhile: what they changed stays, and so do the version and the verdict they
        brought; a registered device they activated stays active.
        """
        self.desired = checkpoint.desired
        self.desired_ts = checkpoint.desired_ts
        self.tags = checkpoint.tags
        self.type = checkpoint.type
        self.family = checkpoint.family
        self.model = checkpoint.model
        self.model_info = checkpoint.model_info
        self.alarms = checkpoint.alarms
        self.commands = copy.deepcopy(checkpoint.commands)  # the checkpoint stays reusable
        if not (checkpoint.lifecycle == "registered" and self.lifecycle == "active"):
            self.lifecycle = checkpoint.lifecycle
        if self.version == checkpoint.version + bumped:  # no device message meanwhile
            self.version, self.updated = checkpoint.version, checkpoint.updated
            self.anomaly_score, self.anomalous, self.anomaly_since = checkpoint.verdict

    def drain_alarm_changes(self) -> list[dict[str, Any]]:
        """The alarms raised or cleared since last asked (each handed out once)."""
        changes, self.alarm_changes = self.alarm_changes, []
        return changes

    def set_type(self, device_type: str) -> bool:
        """Retype the device (its family follows); whether that changed anything.

        The caller gives it its new family's model (whose change raises the version).
        """
        if device_type == self.type:
            return False
        self.type = device_type
        self.family = family_for(device_type)
        return True

    def mark_registered(self) -> bool:
        """Make a twin nothing has happened to yet wait for its device's first message.

        Not a new version: a twin is created so. False if it has a past (a version or a
        reading), which it keeps.
        """
        if self.version != 0 or self.reported:
            return False
        self.lifecycle = "registered"
        return True

    def set_model_choice(self, info: Mapping[str, Any] | None) -> None:
        """Record how its model is chosen (``{"name", "params", "source", ...}``; None: by
        its family) without changing the model or the version (see :meth:`set_model`)."""
        self.model_info = dict(info) if info is not None else None

    # -- views --------------------------------------------------------------------------------

    def delta(self) -> dict[str, Any]:
        """Desired leaves that reported does not match yet."""
        return delta(self.desired, self.reported) if self.desired else {}

    def firmware(self) -> dict[str, Any]:
        """Firmware status derived from ``reported.firmware`` and ``desired.firmware``."""
        return snapshots.firmware_status(self.reported, self.desired)

    def document(self) -> dict[str, Any]:
        """The twin document of the external contract (a fresh, JSON-ready dict)."""
        return {
            "id": self.id,
            "type": self.type,
            "lifecycle": self.lifecycle,
            "tags": copy.deepcopy(self.tags),
            "version": self.version,
            "reported": copy.deepcopy(self.reported),
            "desired": copy.deepcopy(self.desired),
            "delta": copy.deepcopy(self.delta()),  # the delta shares objects with desired
            "metadata": {
                "reported": visible_stamps(self.reported, self.reported_ts),
                "desired": copy.deepcopy(self.desired_ts),
                "created": self.created,
                "updated": self.updated,
            },
            "connectivity": {
                "online": self.online,
                "last_seen": self.last_seen,
                "protocol": self.protocol,
            },
            "firmware": self.firmware(),
            "alarms": self.alarms.alarms(),
            "anomaly": {
                "model": self.model.name if self.model is not None else None,
                "version": (self.model_info or {}).get("version"),
                "source": (self.model_info or {}).get("source"),
                "score": self.anomaly_score,
                "anomalous": self.anomalous,
                "since": self.anomaly_since,
            },
        }

    # -- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to bring this twin back, model state included (JSON-ready)."""
        # snapshot.py reads these keys back, with defaults for older snapshots that lack some.
        return {
            snapshots.ID: self.id,
            snapshots.TYPE: self.type,
            snapshots.TAGS: self.tags,
            snapshots.VERSION: self.version,
            snapshots.REPORTED: self.reported,
            snapshots.REPORTED_TS: self.reported_ts,
            snapshots.DESIRED: self.desired,
            snapshots.DESIRED_TS: self.desired_ts,
            snapshots.CREATED: self.created,
            snapshots.UPDATED: self.updated,
            snapshots.ONLINE: self.online,
            snapshots.LAST_SEEN: self.last_seen,
            snapshots.PROTOCOL: self.protocol,
            snapshots.ANOMALY: [self.anomaly_score, self.anomalous, self.anomaly_since],
            snapshots.MODEL: None
            if self.model is None
            else snapshots.model_record(self.model.name, self.model.state(), self.model_info),
            snapshots.COMMANDS: list(self.commands.values()) if self.commands else None,
            snapshots.ALARMS: self.alarms.state()
            if self.alarms.streaks or self.alarms.open or self.alarms.cleared
            else None,
            snapshots.LIFECYCLE: self.lifecycle,
        }

    @classmethod
    def from_snapshot(
        cls, snap: Mapping[str, Any], *, restore_model: ModelRestorer | None = None
    ) -> Twin:
        """The twin :meth:`snapshot` described; ``restore_model`` rebuilds its model."""
        twin = cls.__new__(cls)
        twin.id = snap[snapshots.ID]
        twin.type = snapshots.twin_type(snap)
        twin.family = family_for(twin.type)
        twin.tags = snapshots.tags(snap)
        twin.version = int(snap[snapshots.VERSION])
        twin.reported = snapshots.reported(snap)
        twin.reported_ts = snapshots.reported_ts(snap)
        twin.desired = snapshots.desired(snap)
        twin.desired_ts = snapshots.desired_ts(snap)
        twin.created = snapshots.created(snap)
        twin.updated = snapshots.updated(snap)
        twin.online = snapshots.online(snap)
        twin.last_seen = snapshots.last_seen(snap)
        twin.presence_damping = 1.0
        twin.protocol = snapshots.protocol(snap)
        twin.anomaly_score, twin.anomalous, twin.anomaly_since = snapshots.anomaly(snap)
        twin.scored = 0
        twin.alarms = AlarmTracker.from_state(snapshots.alarm_state(snap))
        twin.alarm_changes = []
        twin.alarm_rules = None  # the host that activates it sets its family's current ones
        twin._size_bound = MAX_DOCUMENT_BYTES + 1  # unknown: measured on the first message
        twin.lifecycle = snapshots.lifecycle(snap)
        saved_commands = snapshots.commands(snap)
        twin.commands = {r["id"]: r for r in saved_commands} if saved_commands else None
        model_name = snapshots.model_name(snap)
        twin.model = (
            restore_model(model_name, snapshots.model_state(snap))
            if model_name is not None and restore_model is not None
            else None
        )
        twin.model_info = snapshots.model_info(snap) if twin.model is not None else None
        return twin

    def __repr__(self) -> str:
        return f"Twin({self.id!r}, type={self.type!r}, version={self.version})"


@dataclass(frozen=True, slots=True)
class TwinCheckpoint:
    """What an application write may change on a twin, as it was before (:meth:`Twin.checkpoint`).

    It shares the twin's containers (writes replace them rather than change them in place);
    ``commands``, which do change in place, is a copy.
    """

    desired: dict[str, Any]
    desired_ts: dict[str, Any]
    tags: dict[str, Any]
    type: str
    family: DeviceFamily
    model: ModelSlot | None
    model_info: dict[str, Any] | None
    verdict: tuple[float, bool, float | None]  # anomaly score, flag and since
    alarms: AlarmTracker
    commands: dict[str, dict[str, Any]] | None
    lifecycle: str
    version: int
    updated: float


_MAX_NUMBER_BYTES = 24  # the longest JSON number orjson writes for a float or 64-bit int
_EMPTY_STATE_BYTES = 16
_SHORT_STRING = 64  # a short string into an existing key cannot grow the document much


def _restamp(
    stamps: dict[str, Any], values: Mapping[str, Any], patch: Mapping[str, Any], now: float
) -> None:
    """Bring a stamp tree in line with ``values`` after ``patch``: touched leaves get ``now``."""
    for key, change in patch.items():
        if key not in values:
            stamps.pop(key, None)
        elif isinstance(change, dict) and isinstance(values[key], dict):
            child = stamps.get(key)
            if not isinstance(child, dict):
                child = stamps[key] = {}
            _restamp(child, values[key], change, now)
        else:
            stamps[key] = now
