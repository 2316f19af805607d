"""The twin snapshot format: the keys ``Twin.snapshot()`` writes and the one reader of them.

A snapshot is the JSON-ready dict a store keeps for a twin. ``Twin.snapshot()`` writes it with
the key constants below; everything that reads one (``Twin.from_snapshot``, and the filters'
``matches_snapshot``, which run over whole store scans) goes through the accessors here, so a
key and its default are defined once. Keys, and what each reads as when it is missing::

    id            str, required
    version       int, required
    type          str; missing or null: "generic"
    tags          object; missing or null: {}
    reported      object; missing or null: {}      reported_ts  its stamp tree; {}
    desired       object; missing or null: {}      desired_ts   its stamp tree; {}
    created       float; missing: 0.0
    updated       float; missing: created
    online        bool; missing: false
    last_seen     float or null; missing: null
    protocol      str or null; missing: null
    anomaly       [score, anomalous, since]; missing or null: [0.0, false, null]
    model         {"name", "state", "info"} or null; missing: null
    commands      [command record, ...] or null; missing: null
    alarms        AlarmTracker.state() or null; missing: null (no alarms)
    lifecycle     str; missing or null: "active"

Snapshots written by older versions lack some of these keys, so every key but ``id`` and
``version`` may be missing. An accessor is a plain function of the dict: no copies, no
validation and no :class:`~twinfleet.twins.Twin` built, cheap enough for a filter check.
Values that are objects are returned as stored, not copied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "ALARMS",
    "ANOMALY",
    "COMMANDS",
    "CREATED",
    "DEFAULT_LIFECYCLE",
    "DEFAULT_TYPE",
    "DESIRED",
    "DESIRED_TS",
    "FIXED_FIELDS",
    "ID",
    "LAST_SEEN",
    "LIFECYCLE",
    "MODEL",
    "NO_ANOMALY",
    "ONLINE",
    "PROTOCOL",
    "REPORTED",
    "REPORTED_TS",
    "TAGS",
    "TYPE",
    "UPDATED",
    "VERSION",
    "Snapshot",
    "alarm_state",
    "anomaly",
    "commands",
    "created",
    "desired",
    "desired_ts",
    "firmware",
    "firmware_status",
    "last_seen",
    "lifecycle",
    "model_info",
    "model_name",
    "model_record",
    "model_state",
    "online",
    "protocol",
    "reported",
    "reported_ts",
    "tags",
    "twin_type",
    "updated",
]

Snapshot = Mapping[str, Any]
"""A twin snapshot, as ``Twin.snapshot()`` returns it and a store gives it back."""

ID: Final = "id"
VERSION: Final = "version"
TYPE: Final = "type"
TAGS: Final = "tags"
REPORTED: Final = "reported"
REPORTED_TS: Final = "reported_ts"
DESIRED: Final = "desired"
DESIRED_TS: Final = "desired_ts"
CREATED: Final = "created"
UPDATED: Final = "updated"
ONLINE: Final = "online"
LAST_SEEN: Final = "last_seen"
PROTOCOL: Final = "protocol"
ANOMALY: Final = "anomaly"
MODEL: Final = "model"
COMMANDS: Final = "commands"
ALARMS: Final = "alarms"
LIFECYCLE: Final = "lifecycle"

DEFAULT_TYPE: Final = "generic"
DEFAULT_LIFECYCLE: Final = "active"
NO_ANOMALY: Final[tuple[float, bool, None]] = (0.0, False, None)
"""``(score, anomalous, since)`` of a twin no model has judged."""


def twin_type(snap: Snapshot) -> str:
    """The device type."""
    return snap.get(TYPE) or DEFAULT_TYPE


def tags(snap: Snapshot) -> dict[str, Any]:
    """The tags (the stored object)."""
    return snap.get(TAGS) or {}


def reported(snap: Snapshot) -> dict[str, Any]:
    """The reported state (the stored object)."""
    return snap.get(REPORTED) or {}


def reported_ts(snap: Snapshot) -> dict[str, Any]:
    """The reported state's timestamp tree (the stored object)."""
    return snap.get(REPORTED_TS) or {}


def desired(snap: Snapshot) -> dict[str, Any]:
    """The desired state (the stored object)."""
    return snap.get(DESIRED) or {}


def desired_ts(snap: Snapshot) -> dict[str, Any]:
    """The desired state's timestamp tree (the stored object)."""
    return snap.get(DESIRED_TS) or {}


def created(snap: Snapshot) -> Any:
    """When the twin was created (epoch seconds)."""
    return snap.get(CREATED, 0.0)


def updated(snap: Snapshot) -> Any:
    """When the twin last changed (epoch seconds); its creation if never."""
    return snap.get(UPDATED, snap.get(CREATED, 0.0))


def online(snap: Snapshot) -> bool:
    """Whether the device counted as online."""
    return bool(snap.get(ONLINE, False))


def last_seen(snap: Snapshot) -> Any:
    """When the device was last heard from, or None."""
    return snap.get(LAST_SEEN)


def protocol(snap: Snapshot) -> Any:
    """The protocol the device last spoke, or None."""
    return snap.get(PROTOCOL)


def anomaly(snap: Snapshot) -> tuple[Any, bool, Any]:
    """The model's last verdict: ``(score, anomalous, since)``."""
    saved = snap.get(ANOMALY)
    if not saved:
        return NO_ANOMALY
    score, anomalous, since = saved
    return score, bool(anomalous), since


def model_record(
    name: str, state: Mapping[str, Any], info: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a snapshot keeps of a twin's model: its name, its state and how it was chosen."""
    return {"name": name, "state": state, "info": info}


def model_name(snap: Snapshot) -> str | None:
    """The saved model's name, or None for a twin without a model."""
    saved = snap.get(MODEL)
    return saved.get("name") if saved else None


def model_state(snap: Snapshot) -> Mapping[str, Any]:
    """The saved model's state, to rebuild it from ({} if none was saved)."""
    saved = snap.get(MODEL)
    return (saved.get("state") if saved else None) or {}


def model_info(snap: Snapshot) -> dict[str, Any] | None:
    """How the saved model was chosen (name, version, params, source), or None."""
    saved = snap.get(MODEL)
    return saved.get("info") if saved else None


def commands(snap: Snapshot) -> list[dict[str, Any]] | None:
    """The command records, oldest first, or None."""
    return snap.get(COMMANDS) or None


def alarm_state(snap: Snapshot) -> Mapping[str, Any] | None:
    """The alarm tracker's state (``AlarmTracker.state()``), or None for no alarms."""
    return snap.get(ALARMS) or None


def lifecycle(snap: Snapshot) -> str:
    """The lifecycle state."""
    return snap.get(LIFECYCLE) or DEFAULT_LIFECYCLE


def firmware_status(reported: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The document's ``firmware`` block, from ``reported.firmware`` and ``desired.firmware``.

    Shared by ``Twin.firmware`` and :func:`firmware`, so a live twin and its snapshot derive
    it by one rule.
    """
    have = reported.get("firmware")
    want = desired.get("firmware")
    current = have.get("version") if isinstance(have, dict) else None
    target = want.get("version") if isinstance(want, dict) else None
    reported_status = have.get("status") if isinstance(have, dict) else None
    if target is None or target == current:
        status = "up_to_date" if current is not None else "unknown"
    elif reported_status in ("downloading", "installing", "failed"):
        status = reported_status
    else:
        status = "pending"
    return {"current": current, "target": target, "status": status}


def firmware(snap: Snapshot) -> dict[str, Any]:
    """The saved twin's firmware status, as its document shows it."""
    return firmware_status(reported(snap), desired(snap))


FIXED_FIELDS: Final[Mapping[str, Callable[[Snapshot], Any]]] = MappingProxyType(
    {
        "connectivity.online": online,
        "connectivity.last_seen": last_seen,
        "connectivity.protocol": protocol,
        "firmware.current": lambda snap: firmware(snap)["current"],
        "firmware.target": lambda snap: firmware(snap)["target"],
        "firmware.status": lambda snap: firmware(snap)["status"],
        "anomaly.model": model_name,
        "anomaly.score": lambda snap: anomaly(snap)[0],
        "anomaly.anomalous": lambda snap: anomaly(snap)[1],
        "anomaly.since": lambda snap: anomaly(snap)[2],
        "metadata.created": created,
        "metadata.updated": updated,
    }
)
"""The twin document's fixed fields (``connectivity.online``...), each read from a snapshot."""
