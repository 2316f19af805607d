"""Commands to devices: the request, its record and its lifecycle. Pure rules, no I/O.

Lifecycle: ``queued`` (accepted, waiting for the device) -> ``sent`` (a gateway delivered it)
-> ``succeeded`` | ``failed`` (the device answered). A command still queued when it expires is
``expired``; one sent and never answered by then is ``timed_out``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from twinfleet.errors import InvalidRequest

from .limits import check_depth
from .merge import validate_values

__all__ = [
    "FINAL_STATUSES",
    "MAX_COMMAND_NAME",
    "MAX_FINISHED_COMMANDS",
    "TIMEOUT_S_RANGE",
    "TTL_S_RANGE",
    "CommandRequest",
    "CommandStatus",
    "answer",
    "expire",
]

CommandStatus = Literal["queued", "sent", "succeeded", "failed", "timed_out", "expired"]
FINAL_STATUSES: Final = frozenset(("succeeded", "failed", "timed_out", "expired"))
MAX_FINISHED_COMMANDS: Final = 20  # finished records a twin keeps for later look-ups
MAX_COMMAND_NAME: Final = 64  # characters
TIMEOUT_S_RANGE: Final = (0.0, 300.0)  # seconds a sender may wait for the device's answer
TTL_S_RANGE: Final = (1.0, 30 * 86_400.0)  # seconds a command may wait for its device
_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_COMMAND_NAME}}}")


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """What an application asks a device to do, checked on construction."""

    name: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    timeout_s: float = 10.0
    ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise InvalidRequest(
                f"command name {self.name!r} must match {_NAME.pattern}", field="name"
            )
        if not isinstance(self.params, Mapping):
            raise InvalidRequest("command params must be a JSON object", field="params")
        params = dict(self.params)
        validate_values(params, field="params")
        check_depth(params, base=1, field="params")
        object.__setattr__(self, "params", MappingProxyType(params))
        for name, (low, high) in (("timeout_s", TIMEOUT_S_RANGE), ("ttl_s", TTL_S_RANGE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequest(f"{name} must be a number of seconds", field=name)
            if not low <= value <= high:
                raise InvalidRequest(f"{name} must lie between {low:g} and {high:g}", field=name)

    def record(self, command_id: str, *, now: float) -> dict[str, Any]:
        """The JSON-ready record of this command, queued at ``now``."""
        return {
            "id": command_id,
            "name": self.name,
            "params": dict(self.params),
            "status": "queued",
            "created": now,
            "expires_at": now + self.ttl_s,
            "timeout_s": self.timeout_s,
            "sent_at": None,
            "completed_at": None,
            "result": None,
            "error": None,
        }


def answer(record: dict[str, Any], response: Mapping[str, Any], *, now: float) -> bool:
    """Apply a device's answer ``{"status": "ok"|"error", ...}``; False if already final."""
    if record["status"] in FINAL_STATUSES:
        return False
    ok = response.get("status") == "ok"
    record["status"] = "succeeded" if ok else "failed"
    record["result"] = response.get("result") if ok else None
    record["error"] = None if ok else (response.get("error") or "the device reported an error")
    record["completed_at"] = now
    return True


def expire(record: dict[str, Any], *, now: float) -> bool:
    """Close a command whose time is up; returns whether its status changed."""
    if record["status"] in FINAL_STATUSES or now < record["expires_at"]:
        return False
    record["status"] = "expired" if record["status"] == "queued" else "timed_out"
    record["completed_at"] = now
    return True
